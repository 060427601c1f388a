"""Adding, replacing and removing a pool's device (admins and owners).

On the platform broker with dynamic security enabled, adding a device creates its own
MQTT client (username = device id, random password, ACL limited to its topics) and
removing it deletes that client, which also disconnects it. The password is returned
once, inside the provisioning bundle, and stored only encrypted.

Ids on the platform broker are shared by every tenant, so adding one there needs the
device's claim code (devices/services/claims.py): the answer for a wrong code is the
same whether the id is free or another tenant's, and a row registered before claims
by somebody who could not prove anything is released to whoever proves they hold the
device. On a tenant's own broker the namespace is the tenant's alone: no code.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import Http404
from django.utils import timezone

from audit.services import audit_record
from billing.services import plan_limit_check
from devices.models import (
    DEVICE_ID_RE,
    NATIVE_DEVICE_ID_RE,
    Broker,
    Device,
    Pool,
)
from devices.services import dynsec
from devices.services.claims import claim_code_matches
from devices.services.device_credentials import device_credentials_usernames
from devices.services.events import pool_event_record
from devices.services.programs import config_publish_request
from devices.services.provisioning import bundle_build
from poolsaas.live import messages
from poolsaas.live.groups import doorbell_ring_now
from tenants.models import Membership
from tenants.roles import Action
from tenants.selectors import membership_require

PROTOCOLS = (Device.Protocol.POOLSAAS, Device.Protocol.LEGACY)

logger = logging.getLogger(__name__)


def retained_clear_request(*, device: Device) -> None:
    """After commit, have a bridge clear the removed device's retained messages
    (status, state, config/set with the tenant's programs and time zone), so the
    next device with this id, whoever owns it, starts from nothing.

    Best effort, as the doorbell is: with no bridge running nothing is cleared, and
    the next owner's configuration replaces config/set anyway."""
    message = messages.retained_clear(broker=device.broker_id, root=device.topic_root)
    transaction.on_commit(lambda: doorbell_ring_now(message))


def _check_pool(membership: Membership, pool: Pool) -> None:
    membership_require(membership=membership, action=Action.MANAGE)
    if pool.tenant_id != membership.tenant_id:
        raise Http404("No such pool.")


BROKER_CHOICE_ERROR = "Pick the platform broker or one of your own brokers."


def _platform_broker() -> Broker:
    from devices.services.brokers import broker_ensure_platform

    return Broker.objects.filter(is_platform=True).first() or broker_ensure_platform()


def _resolve_broker(membership: Membership, broker: Broker | None) -> Broker:
    if broker is None:
        return _platform_broker()
    if not broker.is_platform and broker.tenant_id != membership.tenant_id:
        raise Http404("No such broker.")
    return broker


def device_broker_choose(*, membership: Membership, code: Any = None) -> Broker:
    """The broker a new device of this tenant uses, named by its code: the page and
    the API both ask here, so they accept the same ones.

    No code is the platform broker (the default for new devices); a code may name
    the platform broker or one of the tenant's own. Any other (another tenant's,
    made up, malformed) is the same field error, which says nothing of other tenants.
    """
    from devices.selectors import brokers_usable_by_member

    membership_require(membership=membership, action=Action.MANAGE)
    if code is None or not str(code).strip():
        return _platform_broker()
    try:
        wanted = uuid.UUID(str(code).strip())
    except ValueError:
        raise ValidationError({"broker": BROKER_CHOICE_ERROR}) from None
    broker = brokers_usable_by_member(membership=membership).filter(code=wanted).first()
    if broker is None:
        raise ValidationError({"broker": BROKER_CHOICE_ERROR})
    return broker


def device_id_clean(*, device_id: Any, protocol: str) -> str:
    """The device id as stored, or ValidationError({"device_id": ...}).

    Our firmware's id is ESP- and the last six hex digits of its MAC (typed in lower
    case, it is upper-cased); a v3.1 device keeps whatever id it was built with.
    """
    if protocol not in PROTOCOLS:
        raise ValidationError(
            {"protocol": "The protocol must be ps1 (poolsaas firmware) or v3.1."}
        )
    if not isinstance(device_id, str) or not device_id.strip():
        raise ValidationError({"device_id": "Enter the device id."})
    device_id = device_id.strip()
    if protocol == Device.Protocol.POOLSAAS:
        device_id = device_id.upper()
        if not NATIVE_DEVICE_ID_RE.match(device_id):
            raise ValidationError(
                {
                    "device_id": "A poolsaas device id is ESP- followed by the 6 "
                    "hex digits printed on the device (for example ESP-A1B2C3)."
                }
            )
    elif not DEVICE_ID_RE.match(device_id):
        raise ValidationError(
            {
                "device_id": "A device id is 1 to 64 letters, digits, '-' or '_' "
                "(for example esp32-pool-01)."
            }
        )
    return device_id


def _uses_dynsec(broker: Broker) -> bool:
    return broker.is_platform and dynsec.dynsec_enabled()


CLAIM_MISMATCH = (
    "This claim code does not match the device id. Both are printed on the "
    "device's label and shown on its set-up page (for a v3.1 device, ask support "
    "for its code)."
)


def _check_claim(*, broker: Broker, device_id: str, claim_code: Any) -> bool:
    """On the platform broker, ValidationError unless the claim code matches.

    Checked before anything is looked up, so the answer is the same for a free id
    and for one another tenant uses. Returns whether a claim was proved."""
    if _uses_dynsec(broker) and device_id in dynsec.reserved_usernames():
        raise ValidationError({"device_id": f"{device_id} is a reserved name."})
    if not broker.is_platform:
        return False
    if not claim_code_matches(device_id=device_id, code=claim_code):
        raise ValidationError({"claim_code": CLAIM_MISMATCH})
    return True


def _check_free(
    *,
    membership: Membership,
    broker: Broker,
    device_id: str,
    claimed: bool = False,
    exclude_pk: int | None = None,
) -> Device | None:
    """ValidationError unless `device_id` can be given to a new device on `broker`;
    returns another tenant's unclaimed row that the proved claim releases."""
    taken = Device.objects.filter(broker=broker, device_id=device_id)
    if not broker.is_platform:
        # On a tenant's broker the identity is (broker, prefix, id); on the platform
        # broker the id is also the MQTT username, so it must be unique there.
        taken = taken.filter(topic_prefix=broker.topic_prefix)
    if exclude_pk is not None:
        taken = taken.exclude(pk=exclude_pk)
    holder = taken.only("pk", "tenant_id", "claimed_at").first()
    if holder is None:
        return None
    if holder.tenant_id == membership.tenant_id:
        # A tenant's own broker, or the tenant's own device: nothing foreign shown.
        raise ValidationError(
            {
                "device_id": f"{device_id} is already one of your devices. "
                "Remove it from its pool first, or check the id."
            }
        )
    if claimed and holder.claimed_at is None:
        return holder
    # Only somebody holding the claim code gets here: the device's holder may know
    # that somebody else registered it.
    raise ValidationError(
        {
            "device_id": f"{device_id} is registered to another account, which "
            "proved it held the device. Its owner there must remove it first; if "
            "the device was passed on to you, ask support."
        }
    )


def _release(*, holder: Device) -> None:
    """Remove another tenant's unclaimed row of an id the caller proved it holds;
    audited in that tenant. Its credentials go with it (inside the transaction)."""
    holder = (
        Device.objects.select_for_update(of=("self",))
        .select_related("broker", "pool", "tenant")
        .get(pk=holder.pk)
    )
    audit_record(
        action="device.released",
        tenant=holder.tenant,
        actor=None,
        target=holder,
        data={
            "device_id": holder.device_id,
            "pool": holder.pool.code.hex if holder.pool else None,
            "reason": "claimed by the holder of its claim code",
        },
    )
    if holder.pool is not None:
        pool_event_record(
            pool=holder.pool,
            kind="device.released",
            message=f"Device {holder.device_id} was claimed by its holder and "
            "removed from this pool",
            data={"device_id": holder.device_id},
        )
    holder.delete()
    retained_clear_request(device=holder)
    _revoke(holder)


def _credentials_failed(exc: dynsec.DynsecError) -> ValidationError:
    return ValidationError(
        f"The platform broker could not update the device's credentials ({exc}). "
        "Nothing was changed; try again in a moment."
    )


def _create(
    *,
    membership: Membership,
    pool: Pool,
    broker: Broker,
    device_id: str,
    protocol: str,
    claimed: bool = False,
) -> tuple[Device, str | None]:
    """Insert the device and issue its credentials (inside the caller's transaction).

    The row goes in first: its unique constraint makes a concurrent add of the same
    id wait and then fail, before it could touch the broker's clients.
    """
    device = Device(
        tenant=pool.tenant,
        pool=pool,
        broker=broker,
        device_id=device_id,
        topic_prefix=broker.topic_prefix,
        protocol=protocol,
        claimed_at=timezone.now() if claimed else None,
    )
    try:
        with transaction.atomic():
            device.save()
    except IntegrityError:
        # A concurrent add of the same id won the race.
        raise ValidationError(
            {"device_id": f"{device_id} was registered a moment ago; try again."}
        ) from None
    password = None
    if _uses_dynsec(broker):
        try:
            password = dynsec.dynsec_device_create(
                device_id=device_id, prefix=device.topic_prefix
            )
        except dynsec.ReservedName:
            raise ValidationError(
                {"device_id": f"{device_id} is a reserved name."}
            ) from None
        except dynsec.DynsecError as exc:
            raise _credentials_failed(exc) from None
        device.mqtt_password = password
        device.save(update_fields=["mqtt_password"])
    return device, password


def _bundle(device: Device, broker: Broker, password: str | None) -> dict | None:
    # A v3.1 device cannot read a bundle; it only gets one when it was given
    # credentials of ours that someone must type into it.
    if device.protocol == Device.Protocol.LEGACY and password is None:
        return None
    return bundle_build(device=device, broker=broker, password=password or "")


def device_add(
    *,
    membership: Membership,
    pool: Pool,
    device_id: str,
    broker: Broker | None = None,
    protocol: str = Device.Protocol.POOLSAAS,
    claim_code: str | None = None,
) -> tuple[Device, dict | None]:
    """Add a device to a pool that has none; returns (device, provisioning bundle).

    `broker` is the platform broker (default) or one of the tenant's own; the
    platform broker needs the device's `claim_code` (module docstring). The bundle
    holds the new password in clear: show it once, never store it. It is None for a
    v3.1 device that got no credentials of ours (its own broker's are set on it).
    """
    _check_pool(membership, pool)
    broker = _resolve_broker(membership, broker)
    device_id = device_id_clean(device_id=device_id, protocol=protocol)
    if Device.objects.filter(pool=pool).exists():
        raise ValidationError(
            {"pool": "This pool already has a device; replace it instead."}
        )
    claimed = _check_claim(broker=broker, device_id=device_id, claim_code=claim_code)
    holder = _check_free(
        membership=membership, broker=broker, device_id=device_id, claimed=claimed
    )

    with transaction.atomic():
        plan_limit_check(tenant=pool.tenant, limit="devices")
        if holder is not None:
            _release(holder=holder)
        device, password = _create(
            membership=membership,
            pool=pool,
            broker=broker,
            device_id=device_id,
            protocol=protocol,
            claimed=claimed,
        )
        audit_record(
            action="device.added",
            tenant=pool.tenant,
            actor=membership.user,
            target=device,
            data={
                "pool": pool.code.hex,
                "device_id": device_id,
                "protocol": protocol,
                "broker": broker.code.hex,
                "credentials": "issued" if password else "none",
                "claimed": claimed,
                "released_from_another_tenant": holder is not None,
            },
        )
        pool_event_record(
            pool=pool,
            kind="device.added",
            message=f"Device {device_id} added by {membership.user.email}",
            data={"device_id": device_id},
            actor=membership.user,
        )
        # A new ps1 device needs the pool's configuration (programs, time zone).
        config_publish_request(pool=pool)
    return device, _bundle(device, broker, password)


def _revoke(device: Device) -> None:
    if _uses_dynsec(device.broker):
        try:
            dynsec.dynsec_device_delete(
                device_id=device.device_id,
                # A rotated or half-rotated device has a second client.
                usernames=device_credentials_usernames(device),
            )
        except dynsec.DynsecError as exc:
            raise _credentials_failed(exc) from None


def device_remove(*, membership: Membership, device: Device) -> None:
    """Remove a device: its broker credentials are revoked (which disconnects it) and
    its row is deleted, with its history and commands.

    If the broker cannot revoke the credentials, nothing is removed (ValidationError),
    so a device never keeps access that the dashboard says it no longer has.
    """
    membership_require(membership=membership, action=Action.MANAGE)
    if device.tenant_id != membership.tenant_id:
        raise Http404("No such device.")
    with transaction.atomic():
        device = (
            Device.objects.select_for_update(of=("self",))
            .select_related("broker", "pool", "tenant")
            .get(pk=device.pk)
        )
        pool = device.pool
        audit_record(
            action="device.removed",
            tenant=device.tenant,
            actor=membership.user,
            target=device,
            data={
                "pool": pool.code.hex if pool else None,
                "device_id": device.device_id,
                "protocol": device.protocol,
            },
        )
        if pool is not None:
            pool_event_record(
                pool=pool,
                kind="device.removed",
                message=f"Device {device.device_id} removed by {membership.user.email}",
                data={"device_id": device.device_id},
                actor=membership.user,
            )
        device.delete()
        retained_clear_request(device=device)
        # Last, so that a failure rolls everything back.
        _revoke(device)


def device_replace(
    *,
    membership: Membership,
    pool: Pool,
    device_id: str,
    protocol: str | None = None,
    claim_code: str | None = None,
) -> tuple[Device, dict | None]:
    """Put a new device on a pool in place of the current one (a broken controller, or
    an upgrade from v3.1 to our firmware with protocol="ps1").

    The new device uses the old one's broker (and protocol unless given); the old one
    is removed and its credentials revoked. Returns (new device, bundle) as
    device_add does. Without a current device this is device_add.
    """
    _check_pool(membership, pool)
    old = Device.objects.select_related("broker").filter(pool=pool).first()
    if old is None:
        return device_add(
            membership=membership,
            pool=pool,
            device_id=device_id,
            protocol=protocol or Device.Protocol.POOLSAAS,
            claim_code=claim_code,
        )
    protocol = protocol or old.protocol
    device_id = device_id_clean(device_id=device_id, protocol=protocol)
    if device_id == old.device_id:
        raise ValidationError(
            {"device_id": f"{device_id} is already this pool's device."}
        )
    broker = old.broker
    claimed = _check_claim(broker=broker, device_id=device_id, claim_code=claim_code)
    holder = _check_free(
        membership=membership, broker=broker, device_id=device_id, claimed=claimed
    )

    with transaction.atomic():
        if holder is not None:
            _release(holder=holder)
        old = Device.objects.select_for_update().get(pk=old.pk)
        old_id = old.device_id
        old.delete()
        retained_clear_request(device=old)
        device, password = _create(
            membership=membership,
            pool=pool,
            broker=broker,
            device_id=device_id,
            protocol=protocol,
            claimed=claimed,
        )
        _revoke(old)
        audit_record(
            action="device.replaced",
            tenant=pool.tenant,
            actor=membership.user,
            target=device,
            data={
                "pool": pool.code.hex,
                "old_device_id": old_id,
                "device_id": device_id,
                "protocol": protocol,
                "credentials": "issued" if password else "none",
            },
        )
        pool_event_record(
            pool=pool,
            kind="device.replaced",
            message=f"Device {old_id} replaced by {device_id} "
            f"({membership.user.email})",
            data={"old_device_id": old_id, "device_id": device_id},
            actor=membership.user,
        )
        config_publish_request(pool=pool)
    return device, _bundle(device, broker, password)
