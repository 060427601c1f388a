"""WebSocket routes; each app adds its consumers here."""

from django.urls import path

from devices.consumers import PoolConsumer, TenantConsumer
from gateway.consumer import GatewayConsumer

websocket_urlpatterns: list = [
    path("ws/pools/<str:code>/", PoolConsumer.as_asgi()),
    path("ws/tenant/", TenantConsumer.as_asgi()),
]

# The MQTT gateway: no session and no Origin check (asgi.py routes it around both),
# since only the token in its CONNECT authenticates it (docs/gateway.md).
gateway_urlpatterns: list = [
    path("mqtt", GatewayConsumer.as_asgi()),
]
