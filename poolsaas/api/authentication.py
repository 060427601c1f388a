"""JWT authentication bound to one tenant.

A token names its user (`sub` = user code) and its tenant (`tenant` = tenant code hex).
On every request the membership is looked up again through the access layer, so a member
removed from the tenant loses access at once, and the `role` claim, which is only a hint
for clients, is never trusted.

A token also dies with the login it came from: `pwd` (simplejwt's CHECK_REVOKE_TOKEN, a
digest of the password hash) ends it when the password changes, `ep` (the user's
token_epoch) when the user logs out their other sessions. `otp` says the login passed
a second factor; owners and admins of a tenant that requires one need it.
"""

from django.http import Http404
from django.utils import timezone
from rest_framework import exceptions
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.tokens import RefreshToken, Token

from poolsaas.api.errors import Suspended
from tenants.models import Membership, User
from tenants.selectors import membership_for_user, two_factor_required_for

TENANT_CLAIM = "tenant"
EPOCH_CLAIM = "ep"
OTP_CLAIM = "otp"
# When the login happened; rotation keeps it (and the expiry it set).
AUTH_TIME_CLAIM = "auth_time"


class TwoFactorRequired(exceptions.PermissionDenied):
    default_detail = (
        "This tenant requires two-factor authentication of owners and admins: log "
        "in again with your code (the otp field of POST /api/login)."
    )
    default_code = "two_factor_required"


def refresh_token_for(
    *, membership: Membership, second_factor: bool = False
) -> RefreshToken:
    """The refresh token of a new login of this membership (its access token is
    `.access_token`)."""
    user = membership.user
    refresh = RefreshToken.for_user(user)
    refresh[TENANT_CLAIM] = membership.tenant.code.hex
    # A hint for clients only; every request re-reads the membership.
    refresh["role"] = membership.role
    refresh[EPOCH_CLAIM] = user.token_epoch
    refresh[AUTH_TIME_CLAIM] = int(timezone.now().timestamp())
    if second_factor:
        refresh[OTP_CLAIM] = True
    return refresh


def token_user_check(*, user: User, token: Token) -> None:
    """AuthenticationFailed when the token's login has been ended since: the
    password changed, or the user logged out their other sessions."""
    from rest_framework_simplejwt.utils import get_md5_hash_password

    if token.get("pwd") != get_md5_hash_password(user.password):
        raise exceptions.AuthenticationFailed(
            "Your password was changed: log in again.", code="password_changed"
        )
    if token.get(EPOCH_CLAIM, 0) != user.token_epoch:
        raise exceptions.AuthenticationFailed(
            "This login was ended (logged out from another session): log in again.",
            code="session_ended",
        )


def membership_for_token(*, user: User, token: Token) -> Membership:
    """The caller's membership in the token's tenant.

    Raises AuthenticationFailed when the token has no tenant or the user is no longer
    a member of it, and Suspended (403) when the tenant is suspended. The WebSocket
    consumers use the same check.
    """
    tenant_code = token.get(TENANT_CLAIM)
    if not tenant_code:
        raise exceptions.AuthenticationFailed(
            "This token carries no tenant: log in again.", code="token_no_tenant"
        )
    try:
        membership = membership_for_user(user=user, tenant_code=tenant_code)
    except Http404:
        raise exceptions.AuthenticationFailed(
            "You are no longer a member of this tenant.", code="not_a_member"
        ) from None
    if not membership.tenant.is_active:
        raise Suspended(
            f"{membership.tenant.name} is suspended. Contact poolsaas support."
        )
    if two_factor_required_for(membership=membership) and not token.get(OTP_CLAIM):
        raise TwoFactorRequired()
    return membership


class TenantJWTAuthentication(JWTAuthentication):
    """Bearer JWT; sets request.membership and request.tenant from the token."""

    def get_user(self, validated_token):
        user = super().get_user(validated_token)
        token_user_check(user=user, token=validated_token)
        return user

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        user, token = result
        membership = membership_for_token(user=user, token=token)
        # Both the DRF request and the underlying Django request, so that anything
        # reading request.membership (middleware, logging) agrees.
        for target in (request, request._request):
            target.membership = membership
            target.tenant = membership.tenant
        return user, token
