"""JWT authentication bound to one tenant.

A token names its user (`sub` = user code) and its tenant (`tenant` = tenant code hex).
On every request the membership is looked up again through the access layer, so a member
removed from the tenant loses access at once, and the `role` claim, which is only a hint
for clients, is never trusted.
"""

from django.http import Http404
from rest_framework import exceptions
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.tokens import Token

from poolsaas.api.errors import Suspended
from tenants.models import Membership, User
from tenants.selectors import membership_for_user

TENANT_CLAIM = "tenant"


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
    return membership


class TenantJWTAuthentication(JWTAuthentication):
    """Bearer JWT; sets request.membership and request.tenant from the token."""

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
