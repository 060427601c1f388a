"""Our middleware: request id and client address, the Permissions-Policy header, and
the product's 404 page under DEBUG.

The request id is taken from a trusted proxy header or made here, the address is the
client's rather than our own proxy's. Both are stored in a context variable so that
services (the audit trail above all) can read them without every call passing the
request down.
"""

import ipaddress
import re
import uuid

from django.conf import settings
from django.http import Http404
from django.urls import Resolver404, resolve
from django.views.defaults import page_not_found

from poolsaas.request_context import RequestContext, bind_request_context

_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        client_ip = _client_ip(request.META)
        if client_ip:
            # Rewritten here, early, so that the login throttle (django-axes), the
            # API throttles and the audit trail all key on the same address.
            request.META["REMOTE_ADDR"] = client_ip
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        context = RequestContext(
            request_id=request_id,
            ip=request.META.get("REMOTE_ADDR") or None,
            user_agent=request.headers.get("User-Agent", "")[:400],
        )
        with bind_request_context(context):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


def _client_ip(meta) -> str | None:
    """REMOTE_ADDR, or behind TRUSTED_PROXY_COUNT proxies the address the outermost
    of them saw (counted from the right of X-Forwarded-For: entries further left
    come from the client and can say anything)."""
    peer = meta.get("REMOTE_ADDR") or None
    count = settings.TRUSTED_PROXY_COUNT
    if count <= 0:
        return peer
    hops = [hop.strip() for hop in meta.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    hops = [hop for hop in hops if hop]
    if len(hops) < count:
        return peer
    candidate = hops[-count]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return peer


class PermissionsPolicyMiddleware:
    """Sends PERMISSIONS_POLICY as the Permissions-Policy header: the browser features
    named there (camera, geolocation…) are refused to our pages and to any frame."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.header = ", ".join(
            f"{feature}=({' '.join(origins)})"
            for feature, origins in settings.PERMISSIONS_POLICY.items()
        )

    def __call__(self, request):
        response = self.get_response(request)
        if self.header:
            response.headers.setdefault("Permissions-Policy", self.header)
        return response


class NotFoundPageMiddleware:
    """The product's own 404 page also under DEBUG, where Django would answer with its
    technical page that lists every URL of the site (`make run` runs with DEBUG on).

    With DEBUG off Django already renders templates/404.html (handler404). The API has
    its own error shape: DRF answers its views' 404s, poolsaas.api.errors.api_not_found
    the unknown paths, so /api/ is left alone.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if self._applies(request):
            try:
                resolve(request.path_info, getattr(request, "urlconf", None))
            except Resolver404 as exc:
                # Unknown paths never reach a view, so process_exception misses them.
                return page_not_found(request, exc)
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, Http404) and self._applies(request):
            return page_not_found(request, exception)
        return None

    @staticmethod
    def _applies(request) -> bool:
        return settings.DEBUG and not request.path_info.startswith("/api/")
