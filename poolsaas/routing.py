"""WebSocket routes; each app adds its consumers here."""

from django.urls import path

from devices.consumers import PoolConsumer, TenantConsumer

websocket_urlpatterns: list = [
    path("ws/pools/<str:code>/", PoolConsumer.as_asgi()),
    path("ws/tenant/", TenantConsumer.as_asgi()),
]
