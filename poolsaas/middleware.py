"""Request id and client address: one id per request, taken from a trusted proxy
header or made here, and the address of the client rather than of our own proxy.

Both are stored in a context variable so that services (the audit trail above all)
can read them without every call passing the request down.
"""

import ipaddress
import re
import uuid

from django.conf import settings

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
