from django.urls import path
from rest_framework.routers import SimpleRouter

from devices.api import views

router = SimpleRouter()
router.register("brokers", views.BrokerViewSet, basename="broker")
router.register("pools", views.PoolViewSet, basename="pool")
router.register("devices", views.DeviceViewSet, basename="device")
router.register("commands", views.CommandViewSet, basename="command")

urlpatterns = [
    path(
        "pools/<str:pool_code>/commands/",
        views.PoolCommandViewSet.as_view({"get": "list", "post": "create"}),
        name="pool-commands",
    ),
    path(
        "pools/<str:pool_code>/events/",
        views.PoolEventViewSet.as_view({"get": "list"}),
        name="pool-events",
    ),
    path(
        "pools/<str:pool_code>/programs/",
        views.PoolProgramsViewSet.as_view({"get": "programs", "put": "programs_put"}),
        name="pool-programs",
    ),
    *router.urls,
]
