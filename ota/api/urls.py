from django.urls import path
from rest_framework.routers import SimpleRouter

from ota.api import views

router = SimpleRouter()
router.register("releases", views.ReleaseViewSet, basename="ota-release")
router.register("campaigns", views.CampaignViewSet, basename="ota-campaign")

urlpatterns = [
    path(
        "devices/<str:device_code>/updates/",
        views.DeviceHistoryViewSet.as_view({"get": "list"}),
        name="ota-device-updates",
    ),
    path(
        "pools/<str:pool_code>/consent/",
        views.PoolConsentViewSet.as_view({"get": "list"}),
        name="ota-pool-consent",
    ),
    path(
        "pools/<str:pool_code>/consent/<str:campaign>/",
        views.PoolConsentViewSet.as_view({"post": "answer"}),
        name="ota-pool-consent-answer",
    ),
    *router.urls,
]
