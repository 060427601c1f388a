"""The access layer for tenancy.

Every entry point (page, API, consumer, bridge) has its caller's Membership from
tenants.auth, then asks here and in the app's own access functions for objects.
Missing and foreign objects raise Http404 alike; a role too low raises
PermissionDenied.
"""

import uuid

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404

from tenants.models import Invitation, Membership, Tenant, User
from tenants.roles import MINIMUM_ROLE, Action, Role, role_allows


class TenantSuspended(PermissionDenied):
    """The tenant is suspended: its members may log in but not use it."""


def parse_code(code) -> uuid.UUID:
    """A public UUID code from a URL or payload; anything else is 'not found'."""
    if isinstance(code, uuid.UUID):
        return code
    try:
        return uuid.UUID(str(code))
    except (ValueError, TypeError, AttributeError):
        raise Http404("Not found.") from None


def membership_require(*, membership: Membership, action: str) -> Membership:
    """Check that the member's role allows the action in an active tenant."""
    if not membership.tenant.is_active:
        raise TenantSuspended(
            f"{membership.tenant.name} is suspended. Contact poolsaas support."
        )
    if not role_allows(membership.role, action):
        needed = MINIMUM_ROLE[Action(action)]
        raise PermissionDenied(
            f"This needs the {needed.label.lower()} role or higher; "
            f"you are {membership.get_role_display().lower()}."
        )
    return membership


def tenant_members(*, membership: Membership) -> QuerySet[Membership]:
    membership_require(membership=membership, action=Action.VIEW)
    return (
        Membership.objects.filter(tenant_id=membership.tenant_id)
        .select_related("user")
        .order_by("user__email")
    )


def member_get_for_user(*, membership: Membership, code, action: str) -> Membership:
    """Another membership of the caller's tenant, for team management."""
    try:
        target = Membership.objects.select_related("user", "tenant").get(
            tenant_id=membership.tenant_id, code=parse_code(code)
        )
    except Membership.DoesNotExist:
        raise Http404("Not found.") from None
    membership_require(membership=membership, action=action)
    return target


def invitations_pending(*, membership: Membership) -> QuerySet[Invitation]:
    from django.utils import timezone

    membership_require(membership=membership, action=Action.MANAGE)
    return Invitation.objects.filter(
        tenant_id=membership.tenant_id,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
        expires_at__gt=timezone.now(),
    ).select_related("invited_by")


def invitation_get_for_user(*, membership: Membership, code) -> Invitation:
    try:
        invitation = Invitation.objects.get(
            tenant_id=membership.tenant_id, code=parse_code(code)
        )
    except Invitation.DoesNotExist:
        raise Http404("Not found.") from None
    membership_require(membership=membership, action=Action.MANAGE)
    return invitation


def tenant_owner_count(*, tenant: Tenant) -> int:
    return Membership.objects.filter(tenant=tenant, role="owner").count()


def user_exists(*, email: str) -> bool:
    """Whether an account uses this e-mail (case-insensitive, as login does)."""
    return User.objects.filter(email__iexact=email.strip()).exists()


def user_sessions(*, user: User) -> QuerySet:
    """The user's browser sessions still open, most recently seen first."""
    from tenants.models import UserSession

    return UserSession.objects.filter(user=user, ended_at__isnull=True).order_by(
        "-last_seen_at"
    )


def user_session_get_for_user(*, user: User, code):
    """One of the user's own open sessions; anyone else's is "not found"."""
    row = user_sessions(user=user).filter(code=parse_code(code)).first()
    if row is None:
        raise Http404("Not found.")
    return row


def two_factor_enabled(*, user: User) -> bool:
    from tenants.models import TotpDevice

    return TotpDevice.objects.filter(user=user, confirmed=True).exists()


def two_factor_required_by(*, user: User) -> list[Tenant]:
    """The tenants that require this user's second factor (owners and admins of a
    tenant that turned the requirement on)."""
    return list(
        Tenant.objects.filter(
            require_two_factor=True,
            members__user=user,
            members__role__in=[Role.OWNER, Role.ADMIN],
        ).distinct()
    )


def two_factor_device(*, user: User):
    """The user's confirmed authenticator device, or None."""
    from tenants.models import TotpDevice

    return TotpDevice.objects.filter(user=user, confirmed=True).first()
