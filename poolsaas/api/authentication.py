"""The API's Bearer authentication: the caller as tenants.auth resolves it.

A token names its user and its tenant; on every request tenants.auth reads the user and
the membership again, so a member removed from the tenant, a changed password or an
ended login loses access at once, and the `role` claim (a hint for clients) is never
trusted. Here only the header is read and each refusal is given the API's status and
error code.
"""

from rest_framework import HTTP_HEADER_ENCODING, exceptions
from rest_framework.authentication import BaseAuthentication

from poolsaas.api.errors import Suspended
from tenants import auth


class TwoFactorRequired(exceptions.PermissionDenied):
    default_detail = (
        "This tenant requires two-factor authentication of owners and admins: log "
        "in again with your code (the otp field of POST /api/login)."
    )
    default_code = "two_factor_required"


def api_refusal(exc: Exception) -> exceptions.APIException:
    """The API's answer to a refusal of tenants.auth."""
    if isinstance(exc, auth.NotAuthenticated | auth.NotAMember):
        return exceptions.AuthenticationFailed(exc.message, code=exc.code)
    if isinstance(exc, auth.TwoFactorRequired):
        return TwoFactorRequired()
    if isinstance(exc, auth.TenantSuspended):
        return Suspended(*exc.args)
    raise TypeError(f"not a refusal of tenants.auth: {exc!r}")


class TenantJWTAuthentication(BaseAuthentication):
    """Bearer access token; sets request.caller, request.membership, request.tenant."""

    www_authenticate_realm = "api"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if isinstance(header, bytes):
            header = header.decode(HTTP_HEADER_ENCODING)
        parts = header.split()
        if not parts or parts[0] != "Bearer":
            # Not ours: anonymous, as far as this class can tell.
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Authorization header must contain two space-delimited values",
                code="bad_authorization_header",
            )
        try:
            caller = auth.caller_from_access_token(parts[1])
        except (
            auth.NotAuthenticated,
            auth.NotAMember,
            auth.TwoFactorRequired,
            auth.TenantSuspended,
        ) as exc:
            raise api_refusal(exc) from None
        # Both the DRF request and the underlying Django request, so that anything
        # reading request.membership (middleware, logging) agrees.
        for target in (request, request._request):
            target.caller = caller
            target.membership = caller.membership
            target.tenant = caller.tenant
        return caller.user, caller.token

    def authenticate_header(self, request) -> str:
        return f'Bearer realm="{self.www_authenticate_realm}"'
