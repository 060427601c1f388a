"""Resolves the caller of a page (tenants.auth), fences off suspended tenants and
sends owners and admins of a tenant that requires two-factor to set it up; keeps the
"where you're logged in" list in step with each browser session."""

from django.contrib import messages
from django.contrib.auth import SESSION_KEY as AUTH_SESSION_KEY
from django.contrib.auth import logout
from django.shortcuts import redirect, render
from django.urls import resolve
from django.urls.exceptions import Resolver404

from tenants.auth import caller_from_request, caller_two_factor_missing
from tenants.selectors import two_factor_enabled

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
    # The user's own account, not the tenant's.
    "login_two_factor",
    "account",
    "password_change",
    "sessions_end_others",
    "session_end",
    "account_two_factor",
    "two_factor_setup",
    "two_factor_confirm",
    "two_factor_recovery_renew",
    "two_factor_disable",
}
# Pages an owner or admin who still lacks a required second factor reaches.
_TWO_FACTOR_OPEN_URL_NAMES = {
    "login",
    "login_two_factor",
    "logout",
    "tenant_switch",
    "account_two_factor",
    "two_factor_setup",
    "two_factor_confirm",
}


class SessionTrackingMiddleware:
    """After each request of a logged-in browser session, keep its UserSession row
    (made at login, tenants.apps) in step: its key and "last seen"."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        session = getattr(request, "session", None)
        user = getattr(request, "user", None)
        # Only sessions that log someone in: an API call authenticated by a token
        # sets request.user too, but has no login session to list.
        if (
            session is not None
            and user is not None
            and user.is_authenticated
            and AUTH_SESSION_KEY in session
        ):
            from tenants.services import user_session_touch

            user_session_touch(request=request)
        return response


class TenantMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        caller = caller_from_request(request)
        request.caller = caller
        request.membership = caller.membership if caller else None
        request.tenant = caller.tenant if caller else None
        request.memberships = list(caller.memberships) if caller else []
        if caller is not None:
            if not caller.tenant.is_active and not self._is_open(request):
                return render(
                    request,
                    "tenants/suspended.html",
                    {"tenant": caller.tenant},
                    status=403,
                )
            refused = self._two_factor_missing(request, caller)
            if refused is not None:
                return refused
        return self.get_response(request)

    @staticmethod
    def _two_factor_missing(request, caller):
        """Owners and admins of a tenant that requires two-factor work only in a
        session that passed it; the others set it up (or log in again with it)."""
        if not caller_two_factor_missing(caller):
            return None
        path = request.path_info
        if path.startswith(("/static/", "/api/", "/ws/")):
            return None
        try:
            if resolve(path).url_name in _TWO_FACTOR_OPEN_URL_NAMES:
                return None
        except Resolver404:
            pass
        tenant = caller.tenant.name
        if two_factor_enabled(user=request.user):
            # A session from before the second factor: it logs in again, with it.
            logout(request)
            messages.info(
                request,
                f"{tenant} requires two-factor authentication: log in again with "
                "your code.",
            )
            return redirect("login")
        messages.info(
            request,
            f"{tenant} requires two-factor authentication of owners and admins: "
            "set it up to continue.",
        )
        return redirect("account_two_factor")

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
