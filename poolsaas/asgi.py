"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "poolsaas.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from poolsaas.routing import (  # noqa: E402
    gateway_urlpatterns,
    websocket_urlpatterns,
)

_pages_sockets = AllowedHostsOriginValidator(
    AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
)
# The MQTT gateway takes sockets from any Origin and never reads the session cookie:
# nothing ambient authenticates it, only the token of its CONNECT (docs/gateway.md).
_gateway_sockets = URLRouter(gateway_urlpatterns)


async def websocket_application(scope, receive, send):
    if scope.get("path") == "/mqtt":
        return await _gateway_sockets(scope, receive, send)
    return await _pages_sockets(scope, receive, send)


application = ProtocolTypeRouter(
    {"http": django_asgi_app, "websocket": websocket_application}
)
