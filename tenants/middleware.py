"""Resolves the current tenant of a logged-in user and fences off suspended tenants."""

from django.shortcuts import render
from django.urls import resolve
from django.urls.exceptions import Resolver404

from tenants.selectors import memberships_for_user

SESSION_KEY = "tenant_code"
# Pages a member of a suspended tenant still reaches.
_OPEN_URL_NAMES = {
    "login",
    "logout",
    "tenant_switch",
    "password_reset",
    "password_reset_done",
    "password_reset_confirm",
    "password_reset_complete",
    "invitation_accept",
}


class TenantMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.membership = None
        request.tenant = None
        request.memberships = []
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            memberships = list(memberships_for_user(user=user).order_by("tenant__name"))
            request.memberships = memberships
            wanted = request.session.get(SESSION_KEY)
            chosen = next((m for m in memberships if m.tenant.code.hex == wanted), None)
            chosen = chosen or (memberships[0] if memberships else None)
            if chosen is not None:
                request.membership = chosen
                request.tenant = chosen.tenant
                if not chosen.tenant.is_active and not self._is_open(request):
                    return render(
                        request,
                        "tenants/suspended.html",
                        {"tenant": chosen.tenant},
                        status=403,
                    )
        return self.get_response(request)

    @staticmethod
    def _is_open(request) -> bool:
        path = request.path_info
        if path.startswith(("/static/", "/admin/", "/api/", "/ws/")):
            # The API and sockets answer suspended tenants through the access layer.
            return True
        try:
            return resolve(path).url_name in _OPEN_URL_NAMES
        except Resolver404:
            return False
