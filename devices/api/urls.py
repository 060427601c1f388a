from django.urls import path
from rest_framework.routers import SimpleRouter

from devices.api.views import brokers, commands, devices, events, pools, programs

router = SimpleRouter()
router.register("brokers", brokers.BrokerViewSet, basename="broker")
router.register("pools", pools.PoolViewSet, basename="pool")
router.register("devices", devices.DeviceViewSet, basename="device")
router.register("commands", commands.CommandViewSet, basename="command")

urlpatterns = [
    path(
        "pools/<str:pool_code>/commands/",
        commands.PoolCommandViewSet.as_view({"get": "list", "post": "create"}),
        name="pool-commands",
    ),
    path(
        "pools/<str:pool_code>/events/",
        events.PoolEventViewSet.as_view({"get": "list"}),
        name="pool-events",
    ),
    path(
        "pools/<str:pool_code>/programs/",
        programs.PoolProgramsViewSet.as_view(
            {"get": "programs", "put": "programs_put"}
        ),
        name="pool-programs",
    ),
    *router.urls,
]
