"""Team writes: invitations, memberships and tenant status. Each state change lives
here once and is called by pages, the API and admin alike; each writes its own audit
event."""

import hashlib
import secrets

from django.conf import settings
from django.contrib.auth import password_validation
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.http import Http404
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from audit.services import audit_record
from billing.services import PlanLimitReached, plan_limit_check
from tenants.models import Invitation, Membership, Tenant, User
from tenants.roles import RANK, Action, Role, role_allows, role_at_least
from tenants.selectors import membership_require
from tenants.services.accounts import access_changed as _access_changed


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_same_tenant(membership: Membership, obj) -> None:
    # The access layer already scopes objects to the caller's tenant; this guards
    # callers that skipped it.
    if obj.tenant_id != membership.tenant_id:
        # What the access layer answers: not found (a 403 would confirm it exists).
        raise Http404("Not found.")


def _check_can_grant(actor: Membership, role: str) -> None:
    if RANK[Role(role)] > RANK[Role(actor.role)]:
        raise PermissionDenied("You cannot give a role higher than your own.")


def invitation_create(
    *, membership: Membership, email: str, role: str
) -> tuple[Invitation, str]:
    """Invite an e-mail address to the caller's tenant; mails a single-use link.

    Returns the invitation and the link's token (only its hash is stored).
    """
    membership_require(membership=membership, action=Action.MANAGE)
    _check_can_grant(membership, role)
    email = email.strip().lower()
    tenant = membership.tenant
    if Membership.objects.filter(tenant=tenant, user__email__iexact=email).exists():
        raise ValidationError({"email": "This person is already a member."})
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        # A new invitation replaces any pending one for the same address.
        Invitation.objects.filter(
            tenant=tenant, email__iexact=email, accepted_at__isnull=True
        ).update(revoked_at=timezone.now())
        # Members and pending invitations together within the plan.
        plan_limit_check(tenant=tenant, limit="members")
        invitation = Invitation.objects.create(
            tenant=tenant,
            email=email,
            role=role,
            token_hash=_token_hash(token),
            invited_by=membership.user,
            expires_at=timezone.now() + settings.INVITATION_TTL,
        )
        audit_record(
            action="invitation.created",
            tenant=tenant,
            actor=membership.user,
            target=invitation,
            data={"email": email, "role": role},
        )
        link = settings.SITE_URL.rstrip("/") + reverse(
            "invitation_accept", args=[token]
        )
        body = render_to_string(
            "tenants/email/invitation.txt",
            {"invitation": invitation, "link": link, "inviter": membership.user},
        )
        transaction.on_commit(
            lambda: send_mail(
                f"You are invited to {tenant.name} on poolsaas",
                body,
                None,
                [email],
            )
        )
    return invitation, token


def invitation_revoke(*, membership: Membership, invitation: Invitation) -> None:
    """Withdraw a pending invitation; its link stops working. No-op when used."""
    membership_require(membership=membership, action=Action.MANAGE)
    _check_same_tenant(membership, invitation)
    with transaction.atomic():
        updated = Invitation.objects.filter(
            pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True
        ).update(revoked_at=timezone.now())
        if updated:
            audit_record(
                action="invitation.revoked",
                tenant=invitation.tenant,
                actor=membership.user,
                target=invitation,
                data={"email": invitation.email},
            )


class InvitationInvalid(Exception):
    """The link is unknown, used, revoked or expired. The message says which.

    `kind` lets a page pick its status: "unknown", "used", "revoked", "expired",
    "suspended", "wrong_user" or "login_required".
    """

    def __init__(self, message: str, *, kind: str = "unknown"):
        super().__init__(message)
        self.kind = kind


def invitation_lookup(*, token: str) -> Invitation:
    invitation = (
        Invitation.objects.select_related("tenant")
        .filter(token_hash=_token_hash(token))
        .first()
    )
    if invitation is None:
        raise InvitationInvalid("This invitation link is not valid.")
    if invitation.accepted_at is not None:
        raise InvitationInvalid("This invitation has already been used.", kind="used")
    if invitation.revoked_at is not None:
        raise InvitationInvalid("This invitation was withdrawn.", kind="revoked")
    if invitation.expires_at <= timezone.now():
        raise InvitationInvalid(
            "This invitation has expired. Ask for a new one from your team's admin.",
            kind="expired",
        )
    if not invitation.tenant.is_active:
        # Joining would only lead to the suspended notice; nothing is created.
        raise InvitationInvalid(
            f"{invitation.tenant.name} is suspended, so its invitations cannot be "
            "accepted now. Contact poolsaas support.",
            kind="suspended",
        )
    return invitation


def invitation_accept(
    *,
    token: str,
    user: User | None = None,
    password: str = "",
    full_name: str = "",
) -> Membership:
    """Accept an invitation as the logged-in user, or create the invitee's account.

    Single use: the invitation row is locked, so two clicks cannot both succeed.
    """
    with transaction.atomic():
        invitation = invitation_lookup(token=token)
        invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
        if invitation.accepted_at is not None:
            raise InvitationInvalid(
                "This invitation has already been used.", kind="used"
            )
        if invitation.revoked_at is not None:
            raise InvitationInvalid("This invitation was withdrawn.", kind="revoked")
        if user is None:
            if User.objects.filter(email__iexact=invitation.email).exists():
                raise InvitationInvalid(
                    "An account with this e-mail exists: log in first, then open "
                    "the link again.",
                    kind="login_required",
                )
            # Same rules as every other password (settings.AUTH_PASSWORD_VALIDATORS).
            password_validation.validate_password(
                password, user=User(email=invitation.email, full_name=full_name)
            )
            user = User.objects.create_user(
                email=invitation.email, password=password, full_name=full_name
            )
        elif user.email.lower() != invitation.email.lower():
            raise InvitationInvalid(
                f"This invitation is for {invitation.email}; you are logged in as "
                f"{user.email}.",
                kind="wrong_user",
            )
        if not Membership.objects.filter(tenant=invitation.tenant, user=user).exists():
            try:
                # This invitation is already counted (pending): nothing to add.
                plan_limit_check(tenant=invitation.tenant, limit="members", adding=0)
            except PlanLimitReached as exc:
                raise InvitationInvalid(exc.messages[0], kind="plan_limit") from None
        membership, created = Membership.objects.get_or_create(
            tenant=invitation.tenant, user=user, defaults={"role": invitation.role}
        )
        invitation.accepted_at = timezone.now()
        invitation.accepted_by = user
        invitation.save(update_fields=["accepted_at", "accepted_by"])
        audit_record(
            action="invitation.accepted",
            tenant=invitation.tenant,
            actor=user,
            target=invitation,
            data={"role": membership.role, "new_member": created},
        )
    return membership


def _lock_team(actor: Membership, target: Membership) -> tuple[Membership, Membership]:
    """Serialise team changes of one tenant, then re-read both memberships.

    Locking the tenant row first (and only it) makes concurrent changes queue up
    instead of deadlocking on each other's membership rows; re-reading inside the
    lock sees what the change before us did (the actor may have just lost the
    owner role, the target may be gone).
    """
    Tenant.objects.select_for_update().only("pk").get(pk=actor.tenant_id)
    rows = {
        row.pk: row
        for row in Membership.objects.select_related("user", "tenant").filter(
            pk__in=[actor.pk, target.pk], tenant_id=actor.tenant_id
        )
    }
    if actor.pk not in rows:
        raise PermissionDenied("You are no longer a member of this team.")
    if target.pk not in rows:
        raise Http404("Not found.")
    return rows[actor.pk], rows[target.pk]


def _owner_count(tenant_id: int) -> int:
    # Only meaningful under _lock_team: every owner change holds that lock.
    return Membership.objects.filter(tenant_id=tenant_id, role=Role.OWNER).count()


def _check_may_change(actor: Membership, target: Membership, role: str) -> None:
    membership_require(membership=actor, action=Action.MANAGE)
    if target.role == Role.OWNER or role == Role.OWNER:
        membership_require(membership=actor, action=Action.OWN)
    _check_can_grant(actor, role)


def _revoke_invitations_beyond(
    target: Membership, *, role: str | None, actor: User
) -> None:
    """Withdraw the pending invitations `target`'s user made in this tenant that their
    new role (None: removed) could not make now.

    An invitation carries its inviter's authority: once that authority is gone (an
    admin removed or demoted, an owner demoted below owner) what they handed out
    must not outlive it, or a member removed for cause keeps a way back in.
    """
    pending = Invitation.objects.filter(
        tenant_id=target.tenant_id,
        invited_by_id=target.user_id,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
    )
    if role is not None and role_allows(role, Action.MANAGE):
        pending = pending.filter(
            role__in=[r for r in Role.values if RANK[Role(r)] > RANK[Role(role)]]
        )
    for invitation in pending:
        invitation.revoked_at = timezone.now()
        invitation.save(update_fields=["revoked_at"])
        audit_record(
            action="invitation.revoked",
            tenant=target.tenant,
            actor=actor,
            target=invitation,
            data={
                "email": invitation.email,
                "reason": "inviter removed" if role is None else "inviter demoted",
            },
        )


def _apply_role_change(target: Membership, role: str, *, actor: User) -> Membership:
    """Under the team lock: the last-owner rule, the change, its trail, the sockets."""
    if target.role == role:
        return target
    if target.role == Role.OWNER and _owner_count(target.tenant_id) <= 1:
        raise ValidationError(
            "A tenant needs at least one owner: make someone else owner first."
        )
    previous = target.role
    target.role = role
    target.save(update_fields=["role"])
    audit_record(
        action="membership.role_changed",
        tenant=target.tenant,
        actor=actor,
        target=target,
        data={"user": target.user.email, "from": previous, "to": role},
    )
    if RANK[Role(role)] < RANK[Role(previous)]:
        _revoke_invitations_beyond(target, role=role, actor=actor)
    _access_changed(target.user)
    return target


def _apply_remove(target: Membership, *, actor: User) -> None:
    if target.role == Role.OWNER and _owner_count(target.tenant_id) <= 1:
        raise ValidationError(
            "The last owner cannot be removed: make someone else owner first."
        )
    audit_record(
        action="membership.removed",
        tenant=target.tenant,
        actor=actor,
        target=target,
        data={"user": target.user.email, "role": target.role},
    )
    _revoke_invitations_beyond(target, role=None, actor=actor)
    target.delete()
    _access_changed(target.user)


def _check_role(role: str) -> None:
    if role not in Role.values:
        raise ValidationError({"role": "Choose owner, admin, operator or viewer."})


def membership_role_change(
    *, membership: Membership, target: Membership, role: str
) -> Membership:
    """Change a member's role. Owners are changed only by owners; never below one
    owner, even when two owners demote each other at the same moment. A demoted
    member's pending invitations above what they may now grant are withdrawn."""
    _check_same_tenant(membership, target)
    _check_role(role)
    # Checked before locking, so a plain refusal costs no lock...
    _check_may_change(membership, target, role)
    with transaction.atomic():
        actor, target = _lock_team(membership, target)
        # ...and again on fresh rows, which a concurrent change may have altered.
        _check_may_change(actor, target, role)
        return _apply_role_change(target, role, actor=actor.user)


def _lock_for_staff(target: Membership) -> Membership:
    # The same tenant-row lock as _lock_team, so staff and the team page queue up.
    Tenant.objects.select_for_update().only("pk").get(pk=target.tenant_id)
    row = (
        Membership.objects.select_related("user", "tenant").filter(pk=target.pk).first()
    )
    if row is None:
        raise Http404("Not found.")
    return row


def membership_role_change_by_staff(
    *, staff: User, target: Membership, role: str
) -> Membership:
    """Platform staff change a role (admin site): the team page's rules except the
    actor's own rank, the same trail, the same closing of sockets."""
    _check_role(role)
    with transaction.atomic():
        return _apply_role_change(_lock_for_staff(target), role, actor=staff)


def _check_may_remove(actor: Membership, target: Membership) -> None:
    if target.pk == actor.pk:
        # Anyone may leave, but not a suspended tenant (nothing changes there).
        membership_require(membership=actor, action=Action.VIEW)
        return
    membership_require(membership=actor, action=Action.MANAGE)
    if target.role == Role.OWNER:
        membership_require(membership=actor, action=Action.OWN)


def membership_remove(*, membership: Membership, target: Membership) -> None:
    """Remove a member from the tenant. Anyone may leave; admins remove others;
    the last owner stays, even when two owners remove each other at once. The
    removed member's pending invitations are withdrawn."""
    _check_same_tenant(membership, target)
    _check_may_remove(membership, target)
    with transaction.atomic():
        actor, target = _lock_team(membership, target)
        _check_may_remove(actor, target)
        _apply_remove(target, actor=actor.user)


def membership_remove_by_staff(*, staff: User, target: Membership) -> None:
    """Platform staff remove a member (admin site): the last owner stays."""
    with transaction.atomic():
        _apply_remove(_lock_for_staff(target), actor=staff)


def tenant_two_factor_set(*, membership: Membership, required: bool) -> Tenant:
    """An owner requires (or stops requiring) two-factor authentication of the
    tenant's owners and admins. Turning it on needs the owner's own second factor,
    so that nobody locks themselves out of the setting they just changed."""
    from tenants.selectors import two_factor_enabled

    membership_require(membership=membership, action=Action.OWN)
    if required and not two_factor_enabled(user=membership.user):
        raise ValidationError(
            "Set up two-factor authentication for yourself first (Account, "
            "Two-factor authentication)."
        )
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=membership.tenant_id)
        if tenant.require_two_factor == required:
            return tenant
        tenant.require_two_factor = required
        tenant.save(update_fields=["require_two_factor"])
        if required:
            # Their open sockets re-check: one from a login without the code ends.
            for member in Membership.objects.filter(
                tenant=tenant, role__in=[Role.OWNER, Role.ADMIN]
            ).select_related("user"):
                _access_changed(member.user)
        audit_record(
            action="tenant.two_factor_required"
            if required
            else "tenant.two_factor_optional",
            tenant=tenant,
            actor=membership.user,
            target=tenant,
            data={"required": required},
        )
    return tenant


def tenant_set_status(*, tenant: Tenant, status: str, actor: User | None) -> Tenant:
    """Suspend or reactivate a tenant (platform staff)."""
    if status not in Tenant.Status.values:
        raise ValidationError({"status": "Unknown status."})
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
        if tenant.status == status:
            return tenant
        previous = tenant.status
        tenant.status = status
        tenant.save(update_fields=["status"])
        audit_record(
            action="tenant.suspended"
            if status == "suspended"
            else "tenant.reactivated",
            tenant=tenant,
            actor=actor,
            target=tenant,
            data={"from": previous, "to": status},
        )
        for user in User.objects.filter(memberships__tenant=tenant):
            _access_changed(user)
    return tenant


def role_choices_for(membership: Membership) -> list[tuple[str, str]]:
    """The roles this member may hand out."""
    return [(r.value, r.label) for r in Role if role_at_least(membership.role, r.value)]
