"""Rotating a tenant broker's credentials without downtime.

The tenant admin stages a new username and password while the old ones keep working
(the tenant keeps both valid on their broker for a while). The bridge tries the staged
pair first on its next connect: when the broker takes it, the pair is promoted with a
compare-and-swap on `credentials_pending_since` (so a pair staged again meanwhile is
not overwritten by the one tried before); when the broker refuses it, the bridge goes
back to the current pair at once and the refusal is recorded for the page.

Secrets are write-only: they are encrypted at rest, copied column to column on
promotion (never decrypted for it) and no value reaches the audit trail or the log.
"""

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import TextField
from django.db.models.functions import Cast
from django.utils import timezone

from audit.services import audit_record
from devices.fields import StoredToken, secret_is_set
from devices.models import Broker
from devices.services.brokers.validation import _require_own_broker
from tenants.models import Membership
from tenants.roles import Action
from tenants.selectors import membership_require

MAX_SECRET_LENGTH = 200

# What the bridge writes when it promotes, and the fields a cancel or an address
# change clears.
_PENDING_CLEARED = {
    "pending_username": "",
    "pending_password": "",
    "credentials_pending_since": None,
    "credentials_refused_at": None,
}


def broker_credentials_state(*, broker: Broker) -> dict:
    """The rotation as pages and the API show it, without any secret."""
    pending = broker.credentials_pending_since
    return {
        "pending": pending is not None,
        "pending_since": pending,
        "refused_at": broker.credentials_refused_at if pending else None,
        "rotated_at": broker.credentials_rotated_at,
    }


def broker_credentials_stage(
    *, membership: Membership, broker: Broker, username: str, password: str
) -> Broker:
    """Stage a new username and password for the bridge to switch to.

    An empty username keeps the current one (a new password for the same user); the
    password is required. Staging again replaces what was staged, even while the
    bridge is trying it. Audited as `broker.credentials_staged`, without values.
    """
    membership_require(membership=membership, action=Action.MANAGE)
    _require_own_broker(membership, broker)
    errors = {}
    if not password:
        errors["password"] = "Type the new password."  # noqa: S105 - a message
    for name, value in (("username", username), ("password", password)):
        if len(value) > MAX_SECRET_LENGTH:
            errors[name] = f"At most {MAX_SECRET_LENGTH} characters."
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        broker = Broker.objects.select_for_update().get(pk=broker.pk)
        new_username = username or broker.username
        broker.pending_username = new_username
        broker.pending_password = password
        broker.credentials_pending_since = timezone.now()
        broker.credentials_refused_at = None
        broker.save(
            update_fields=[
                "pending_username",
                "pending_password",
                "credentials_pending_since",
                "credentials_refused_at",
            ]
        )
        audit_record(
            action="broker.credentials_staged",
            tenant=broker.tenant,
            actor=membership.user,
            target=broker,
            data={"username_changed": bool(username)},
        )
    return broker


def broker_credentials_cancel(*, membership: Membership, broker: Broker) -> Broker:
    """Forget the staged credentials; the current ones stay. Audited when there was
    something to forget."""
    membership_require(membership=membership, action=Action.MANAGE)
    _require_own_broker(membership, broker)
    with transaction.atomic():
        broker = Broker.objects.select_for_update().get(pk=broker.pk)
        if broker.credentials_pending_since is None:
            return broker
        _clear_pending(broker)
        broker.save(update_fields=list(_PENDING_CLEARED))
        audit_record(
            action="broker.credentials_rotation_cancelled",
            tenant=broker.tenant,
            actor=membership.user,
            target=broker,
        )
    return broker


def _clear_pending(broker: Broker) -> None:
    for name, value in _PENDING_CLEARED.items():
        setattr(broker, name, value)


def broker_credentials_clear_for_address_change(broker: Broker) -> bool:
    """Drop a staged pair when the broker's address moves (inside broker_update's
    transaction): like the current secrets, it was given for the old address.
    Returns whether there was one; the caller saves and audits."""
    if broker.credentials_pending_since is None and not secret_is_set(
        broker, "pending_password"
    ):
        return False
    _clear_pending(broker)
    return True


def broker_credentials_promote(*, broker_id: int, staged_at: datetime) -> bool:
    """The bridge logged in with the pair staged at `staged_at`: make it current.

    A compare-and-swap: nothing happens (False) when the pair was staged again,
    cancelled or cleared since the bridge read it (the row is locked, then
    checked). The stored tokens are copied as they are, never decrypted.
    Audited `broker.credentials_rotated` (no actor: the bridge).
    """
    now = timezone.now()
    with transaction.atomic():
        # Cast to text reads the stored tokens without decrypting them.
        staged = (
            Broker.objects.select_for_update()
            .filter(pk=broker_id, credentials_pending_since=staged_at)
            .annotate(
                raw_username=Cast("pending_username", TextField()),
                raw_password=Cast("pending_password", TextField()),
            )
            .values("raw_username", "raw_password")
            .first()
        )
        if staged is None:
            return False
        Broker.objects.filter(pk=broker_id).update(
            username=_token(staged["raw_username"]),
            password=_token(staged["raw_password"]),
            credentials_rotated_at=now,
            **_PENDING_CLEARED,
        )
        broker = Broker.objects.select_related("tenant").get(pk=broker_id)
        audit_record(
            action="broker.credentials_rotated",
            tenant=broker.tenant,
            actor=None,
            target=broker,
            data={"staged_at": staged_at.isoformat()},
        )
    return True


def _token(raw: str | None):
    # A bare string would be encrypted a second time; an empty secret is "".
    return StoredToken(raw) if raw else ""


def broker_credentials_refused(
    *, broker_id: int, staged_at: datetime, reason: str
) -> bool:
    """The broker refused the pair staged at `staged_at` (CONNACK not authorised):
    record it once, for the page, and keep the pair staged (the tenant may still
    be adding it on their side; staging again retries). Compare-and-swap as in
    broker_credentials_promote; `reason` is the broker's code, never a secret."""
    with transaction.atomic():
        done = Broker.objects.filter(
            pk=broker_id,
            credentials_pending_since=staged_at,
            credentials_refused_at__isnull=True,
        ).update(credentials_refused_at=timezone.now())
        if not done:
            return False
        broker = Broker.objects.select_related("tenant").get(pk=broker_id)
        audit_record(
            action="broker.credentials_refused",
            tenant=broker.tenant,
            actor=None,
            target=broker,
            data={"staged_at": staged_at.isoformat(), "reason": reason[:100]},
        )
    return True
