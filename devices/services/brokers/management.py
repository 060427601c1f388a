"""A tenant's own brokers: add, change (secrets write-only, retyped when the address
moves), delete, and whether the secrets are set."""

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from devices.fields import secret_is_set
from devices.models import Broker
from devices.services.brokers.credentials import (
    broker_credentials_clear_for_address_change,
)
from devices.services.brokers.validation import (
    _broker_validate,
    _clean_fields,
    _require_own_broker,
)
from tenants.models import Membership
from tenants.roles import Action
from tenants.selectors import membership_require


def broker_create(
    *, membership: Membership, username: str = "", password: str = "", **fields
) -> Broker:
    """Add a tenant's own broker. Secrets are encrypted on save and never echoed."""
    membership_require(membership=membership, action=Action.MANAGE)
    fields = _clean_fields(fields)
    broker = Broker(
        tenant=membership.tenant, username=username, password=password, **fields
    )
    if username or password:
        broker.secrets_changed_at = timezone.now()
    with transaction.atomic():
        _broker_validate(broker).save()
        audit_record(
            action="broker.created",
            tenant=membership.tenant,
            actor=membership.user,
            target=broker,
            data={
                "host": broker.host,
                "port": broker.port,
                "tls": broker.use_tls,
                "secrets_set": [
                    name
                    for name, value in (("username", username), ("password", password))
                    if value
                ],
            },
        )
    return broker


# Where the bridge and the connection test send the stored username and password.
ADDRESS_FIELDS = ("host", "port", "use_tls", "ca_certificate")


def secrets_required_for_address_change(
    *, broker: Broker, changed: list[str], supplied: set[str]
) -> dict[str, str]:
    """Field errors when the broker's address changes but a stored secret was not
    typed again (or cleared) with it.

    The secrets were given for one address: sent as they are to a new host (by the
    bridge or the connection test), they would reach whoever runs it, and a tenant
    admin could read them by pointing the broker at a server of their own. Decrypts
    nothing. `supplied` names the secrets given in the same change ("" clears).
    """
    moved = [name for name in changed if name in ADDRESS_FIELDS]
    if not moved:
        return {}
    return {
        name: f"You changed the broker's {', '.join(moved).replace('_', ' ')}: "
        f"type the {name} again (or clear it), so that it is only ever sent to "
        "the address it was given for."
        for name in ("username", "password")
        if name not in supplied and secret_is_set(broker, name)
    }


def broker_update(
    *,
    membership: Membership,
    broker: Broker,
    username: str | None = None,
    password: str | None = None,
    **fields,
) -> Broker:
    """Change a broker's settings.

    username/password None means 'keep as it is', "" clears it. Changing the host,
    port, TLS or CA while keeping a stored secret is refused: it must be given
    again (secrets_required_for_address_change). Only the names of changed secrets
    reach the audit trail, never their values.
    """
    membership_require(membership=membership, action=Action.MANAGE)
    _require_own_broker(membership, broker)
    fields = _clean_fields(fields)
    with transaction.atomic():
        broker = Broker.objects.select_for_update().get(pk=broker.pk)
        changed = [
            name for name, value in fields.items() if getattr(broker, name) != value
        ]
        errors = secrets_required_for_address_change(
            broker=broker,
            changed=changed,
            supplied={
                name
                for name, value in (("username", username), ("password", password))
                if value is not None
            },
        )
        if errors:
            raise ValidationError(errors)
        for name, value in fields.items():
            setattr(broker, name, value)
        # A staged rotation was given for the old address too.
        rotation_cleared = any(
            name in ADDRESS_FIELDS for name in changed
        ) and broker_credentials_clear_for_address_change(broker)
        secrets_changed = []
        if username is not None and username != broker.username:
            broker.username = username
            secrets_changed.append("username")
        if password is not None and password != broker.password:
            broker.password = password
            secrets_changed.append("password")
        if secrets_changed:
            broker.secrets_changed_at = timezone.now()
        _broker_validate(broker).save()
        if changed:
            audit_record(
                action="broker.updated",
                tenant=broker.tenant,
                actor=membership.user,
                target=broker,
                data={"fields": changed}
                | ({"staged_credentials_cleared": True} if rotation_cleared else {}),
            )
        if secrets_changed:
            audit_record(
                action="broker.secret_changed",
                tenant=broker.tenant,
                actor=membership.user,
                target=broker,
                data={
                    "fields": secrets_changed,
                    "cleared": [
                        name for name in secrets_changed if getattr(broker, name) == ""
                    ],
                },
            )
    return broker


def broker_delete(*, membership: Membership, broker: Broker) -> None:
    """Delete a tenant's broker that no device uses any more."""
    membership_require(membership=membership, action=Action.MANAGE)
    _require_own_broker(membership, broker)
    with transaction.atomic():
        broker = Broker.objects.select_for_update().get(pk=broker.pk)
        in_use = broker.devices.count()
        if in_use:
            raise ValidationError(
                {
                    NON_FIELD_ERRORS: f"{broker.name} is used by {in_use} device(s): "
                    "move or remove them first."
                }
            )
        audit_record(
            action="broker.deleted",
            tenant=broker.tenant,
            actor=membership.user,
            target=broker,
            data={"host": broker.host, "port": broker.port},
        )
        broker.delete()


def broker_secrets_status(*, broker: Broker) -> dict[str, bool]:
    """Whether username and password are set, for pages that must not show them.

    Decrypts nothing: an empty secret is stored as no token at all.
    """
    return {
        "username": secret_is_set(broker, "username"),
        "password": secret_is_set(broker, "password"),
    }
