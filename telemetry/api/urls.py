from django.urls import re_path

from telemetry.api import views

urlpatterns = [
    # The pattern the router gave it when it was an action of PoolViewSet.
    re_path(
        r"^pools/(?P<code>[^/.]+)/telemetry/$",
        views.PoolTelemetryViewSet.as_view({"get": "telemetry"}),
        name="pool-telemetry",
    ),
]
