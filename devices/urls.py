from django.urls import path
from django.views.generic import RedirectView

from devices.views import brokers as broker_views
from devices.views import devices as device_views
from devices.views import pool_page, programs
from devices.views import pools as pool_views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="pools"), name="home"),
    path("pools/", pool_views.pools, name="pools"),
    path("pools/add/", pool_views.pool_add, name="pool_add"),
    path("pools/<str:code>/settings/", pool_views.pool_settings, name="pool_settings"),
    path("brokers/", broker_views.brokers, name="brokers"),
    path("brokers/add/", broker_views.broker_add, name="broker_add"),
    path("brokers/<str:code>/edit/", broker_views.broker_edit, name="broker_edit"),
    path(
        "brokers/<str:code>/delete/", broker_views.broker_delete, name="broker_delete"
    ),
    path("brokers/<str:code>/test/", broker_views.broker_test, name="broker_test"),
    # The live dashboard; after "pools/add/" on purpose. The pool's history page,
    # pools/<code>/history/, is the telemetry app's (telemetry/urls.py).
    path("pools/<str:code>/", pool_page.pool_detail, name="pool_detail"),
    path("pools/<str:code>/programs/", programs.pool_programs, name="pool_programs"),
    path(
        "pools/<str:code>/device/replace/",
        device_views.device_replace,
        name="device_replace",
    ),
    path("devices/", device_views.devices, name="devices"),
    path("devices/add/", device_views.device_add, name="device_add"),
    path(
        "devices/<str:code>/remove/", device_views.device_remove, name="device_remove"
    ),
]
