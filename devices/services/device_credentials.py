"""Rotating a device's MQTT password on the platform broker without downtime
(docs/protocol.md §7.3).

1. `device_credentials_rotate`: a second dynamic-security client for the device,
   `<device id>~<generation>`, with a fresh password, the same role and the same
   bound client id; the pair is stored encrypted as pending, with a rotation id
   `k<generation>-<8 hex>` that is also the `cmd` id.
2. The bridge sends `device_credentials_message(device)` on `<root>/cmd` (QoS 1, not
   retained) and again at every refresh while the rotation is pending and the
   device is online; the device tries the new pair and acks with the same id.
3. `device_credentials_ack` (the bridge's ack handler, for `k…` ids): ok → the old
   client is deleted and the pending pair becomes current; not ok → the pending
   client is deleted and the failure kept for the page.

`device_credentials_reissue` (not a rotation) gives a platform device a fresh
password at once, for the platform's own simulated devices (`make run`).

Until the device confirms, both pairs work, so it is never locked out. Every step
is a compare-and-swap on the rotation id under the device's row lock, so a late or
repeated ack, a cancel, or a second rotation cannot promote the wrong pair.
"""

import logging
import secrets
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404
from django.utils import timezone

from audit.services import audit_record
from devices.models import Device
from devices.services import dynsec
from firmware import protocol
from poolsaas.live import messages
from poolsaas.live.groups import doorbell_ring_now
from tenants.models import Membership
from tenants.roles import Action
from tenants.selectors import membership_require

logger = logging.getLogger(__name__)

OP = "credentials"
# How long the device may take to learn the new pair (the cmd's `exp`).
ROTATION_TTL = timedelta(hours=24)
_ROTATION_ID_PREFIX = "k"
_FAILURE_MAX = 200


def is_rotation_id(value: object) -> bool:
    """Whether an ack id is a credentials rotation's (`k<n>-<8 hex>`), which goes to
    device_credentials_ack and not to the command-ack path."""
    if not isinstance(value, str) or not value.startswith(_ROTATION_ID_PREFIX):
        return False
    generation, _, tail = value[1:].partition("-")
    return (
        generation.isdigit()
        and len(tail) == 8
        and all(c in "0123456789abcdef" for c in tail)
    )


def _pending_fields() -> dict:
    return {
        "pending_mqtt_username": "",
        "pending_mqtt_password": "",
        "credentials_rotation_id": "",
        "credentials_rotation_started_at": None,
    }


def _locked(device: Device) -> Device:
    return (
        Device.objects.select_for_update(of=("self",))
        .select_related("broker", "tenant")
        .get(pk=device.pk)
    )


def _credentials_failed(exc: dynsec.DynsecError) -> ValidationError:
    logger.warning("dynamic security: %s", exc)
    return ValidationError(
        "The platform broker could not change the device's credentials now; "
        "nothing was changed. Try again in a minute."
    )


def device_credentials_state(*, device: Device) -> dict:
    """The rotation as pages and the API show it, without any secret."""
    started = device.credentials_rotation_started_at
    return {
        "pending": bool(device.credentials_rotation_id),
        "started_at": started,
        "expires_at": started + ROTATION_TTL if started else None,
        "confirmed_at": device.credentials_rotated_at,
        "failed_at": device.credentials_rotation_failed_at,
        "failure": device.credentials_rotation_failure,
    }


def _check_rotatable(device: Device) -> None:
    if not (device.broker.is_platform and dynsec.dynsec_enabled()):
        raise ValidationError(
            "Only devices on the platform broker have credentials of ours to "
            "rotate; change a device's credentials on your own broker there."
        )
    if device.protocol != Device.Protocol.POOLSAAS:
        raise ValidationError(
            "Only devices with poolsaas firmware can learn new credentials over "
            "MQTT; a v3.1 device gets new ones by replacing it."
        )


def device_credentials_rotate(*, membership: Membership, device: Device) -> Device:
    """Start a rotation (admins): the new pair is made on the broker and stored as
    pending; the old one keeps working until the device confirms. Refused while one
    is pending (cancel it first). The bridge is rung after commit."""
    membership_require(membership=membership, action=Action.MANAGE)
    if device.tenant_id != membership.tenant_id:
        raise Http404("No such device.")
    with transaction.atomic():
        device = _locked(device)
        _check_rotatable(device)
        if device.credentials_rotation_id:
            raise ValidationError(
                "A rotation of this device's credentials is already pending: "
                "wait for the device, or cancel it first."
            )
        generation = device.credentials_generation + 1
        username = dynsec.rotation_username(device.device_id, generation)
        rotation_id = f"{_ROTATION_ID_PREFIX}{generation}-{secrets.token_hex(4)}"
        try:
            password = dynsec.dynsec_device_client_add(
                device_id=device.device_id,
                username=username,
                prefix=device.topic_prefix,
            )
        except dynsec.DynsecError as exc:
            raise _credentials_failed(exc) from None
        device.credentials_generation = generation
        device.pending_mqtt_username = username
        device.pending_mqtt_password = password
        device.credentials_rotation_id = rotation_id
        device.credentials_rotation_started_at = timezone.now()
        device.credentials_rotation_failed_at = None
        device.credentials_rotation_failure = ""
        device.save(
            update_fields=[
                "credentials_generation",
                *_pending_fields(),
                "credentials_rotation_failed_at",
                "credentials_rotation_failure",
            ]
        )
        audit_record(
            action="device.credentials_rotation_started",
            tenant=device.tenant,
            actor=membership.user,
            target=device,
            data={
                "device_id": device.device_id,
                "rotation": rotation_id,
                "username": username,
            },
        )
        device_pk = device.pk
        transaction.on_commit(lambda: _ring(device_pk))
    return device


def _ring(device_pk: int) -> None:
    # Best effort: the bridge's refresh sends the rotation anyway.
    doorbell_ring_now(messages.device_credentials(device=device_pk))


def device_credentials_message(device: Device) -> tuple[str, bytes] | None:
    """What the bridge publishes (QoS 1, not retained) for a pending rotation, or
    None: nothing pending, the device offline, or the rotation past its `exp`.

    The same id and `exp` every time, so a device that already answered acks again
    with its first result instead of switching twice. Decrypts the new password;
    the payload must go nowhere but the device's `cmd` topic."""
    started = device.credentials_rotation_started_at
    if not device.credentials_rotation_id or started is None or not device.online:
        return None
    expires = started + ROTATION_TTL
    if timezone.now() >= expires:
        return None
    value = {
        "username": device.pending_mqtt_username,
        "password": device.pending_mqtt_password,
    }
    exp = int(expires.timestamp())
    payload = protocol.encode_command(
        device.credentials_rotation_id, exp, OP, value, device_id=device.device_id
    )
    return f"{device.topic_root}/cmd", payload


def device_credentials_confirm(*, device: Device, rotation_id: str) -> bool:
    """The device logged in with the pending pair and said so: delete the old
    client and make the pending pair current. False (nothing changed) when
    `rotation_id` is not the pending rotation (a late or repeated ack, a cancel)."""
    with transaction.atomic():
        device = _locked(device)
        if not rotation_id or device.credentials_rotation_id != rotation_id:
            return False
        old = device.mqtt_login
        new = device.pending_mqtt_username
        device.mqtt_username = new
        device.mqtt_password = device.pending_mqtt_password
        device.credentials_rotated_at = timezone.now()
        for name, value in _pending_fields().items():
            setattr(device, name, value)
        device.save(
            update_fields=[
                "mqtt_username",
                "mqtt_password",
                "credentials_rotated_at",
                *_pending_fields(),
            ]
        )
        audit_record(
            action="device.credentials_rotated",
            tenant=device.tenant,
            actor=None,
            target=device,
            data={"device_id": device.device_id, "rotation": rotation_id, "old": old},
        )
        # Last, inside the transaction: if the broker cannot delete the old client,
        # nothing is promoted and the next ack (the bridge sends the rotation
        # again) retries.
        dynsec.dynsec_device_client_delete(device_id=device.device_id, username=old)
    return True


def device_credentials_fail(*, device: Device, rotation_id: str, reason: str) -> bool:
    """The device could not log in with the pending pair (it stayed on the old one):
    delete the pending client and keep the failure for the page. False when
    `rotation_id` is not the pending rotation."""
    reason = (reason or "failed")[:_FAILURE_MAX]
    with transaction.atomic():
        device = _locked(device)
        if not rotation_id or device.credentials_rotation_id != rotation_id:
            return False
        pending = device.pending_mqtt_username
        for name, value in _pending_fields().items():
            setattr(device, name, value)
        device.credentials_rotation_failed_at = timezone.now()
        device.credentials_rotation_failure = reason
        device.save(
            update_fields=[
                *_pending_fields(),
                "credentials_rotation_failed_at",
                "credentials_rotation_failure",
            ]
        )
        audit_record(
            action="device.credentials_rotation_failed",
            tenant=device.tenant,
            actor=None,
            target=device,
            data={
                "device_id": device.device_id,
                "rotation": rotation_id,
                "reason": reason,
            },
        )
        if pending:
            dynsec.dynsec_device_client_delete(
                device_id=device.device_id, username=pending
            )
    return True


def device_credentials_ack(
    *, device_id: int, rotation_id: str, ok: bool, reason: str = ""
) -> bool:
    """The bridge's entry for an ack whose id is a rotation's (is_rotation_id).

    `device_id` is the Device row's primary key, as the bridge's directory maps the
    ack's topic to it. Returns whether the ack matched the pending rotation. A
    DynsecError propagates: the bridge logs it and the re-sent rotation retries."""
    device = Device.objects.filter(pk=device_id).first()
    if device is None:
        return False
    if ok:
        return device_credentials_confirm(device=device, rotation_id=rotation_id)
    return device_credentials_fail(
        device=device, rotation_id=rotation_id, reason=reason
    )


def device_credentials_cancel(*, membership: Membership, device: Device) -> Device:
    """Give up a pending rotation (admins): the pending client is deleted, the old
    pair stays. Only for a device that does not answer: refused while the device is
    online, since the bridge is then sending it the new pair and it may already be
    logged in with it (deleting that client would lock it out); an online device
    confirms or fails the rotation itself, and the sweep expires it after `exp`."""
    membership_require(membership=membership, action=Action.MANAGE)
    if device.tenant_id != membership.tenant_id:
        raise Http404("No such device.")
    with transaction.atomic():
        device = _locked(device)
        if not device.credentials_rotation_id:
            return device
        if device.online:
            raise ValidationError(
                "The device is online and may already be using the new "
                "credentials, so the rotation cannot be cancelled now: wait for the "
                "device to confirm or refuse them, or cancel once it is offline."
            )
        rotation_id = device.credentials_rotation_id
        pending = device.pending_mqtt_username
        for name, value in _pending_fields().items():
            setattr(device, name, value)
        device.save(update_fields=list(_pending_fields()))
        audit_record(
            action="device.credentials_rotation_cancelled",
            tenant=device.tenant,
            actor=membership.user,
            target=device,
            data={"device_id": device.device_id, "rotation": rotation_id},
        )
        try:
            dynsec.dynsec_device_client_delete(
                device_id=device.device_id, username=pending
            )
        except dynsec.DynsecError as exc:
            raise _credentials_failed(exc) from None
    return device


def device_credentials_expire_stale(*, now=None) -> int:
    """Expire every rotation pending past its `exp` (start + ROTATION_TTL; Celery
    beat): the pending client is deleted, the pending pair cleared and the expiry
    kept as the failure for the page; audited `device.credentials_rotation_expired`.
    The device had until `exp` to switch; after it, it no longer takes the cmd. A
    broker error leaves that rotation pending for the next sweep. Returns how many
    expired."""
    cutoff = (now or timezone.now()) - ROTATION_TTL
    stale = list(
        Device.objects.exclude(credentials_rotation_id="")
        .filter(credentials_rotation_started_at__lte=cutoff)
        .values_list("pk", "credentials_rotation_id")
    )
    expired = 0
    for pk, rotation_id in stale:
        try:
            expired += _expire_one(pk, rotation_id, cutoff)
        except dynsec.DynsecError as exc:
            logger.warning(
                "expiring rotation %s: dynamic security: %s", rotation_id, exc
            )
    return expired


def _expire_one(pk: int, rotation_id: str, cutoff) -> bool:
    with transaction.atomic():
        device = _locked(Device(pk=pk))
        started = device.credentials_rotation_started_at
        if device.credentials_rotation_id != rotation_id or not started:
            return False  # confirmed, failed or cancelled meanwhile
        if started > cutoff:
            return False
        pending = device.pending_mqtt_username
        for name, value in _pending_fields().items():
            setattr(device, name, value)
        device.credentials_rotation_failed_at = timezone.now()
        device.credentials_rotation_failure = "expired: the device did not answer"
        device.save(
            update_fields=[
                *_pending_fields(),
                "credentials_rotation_failed_at",
                "credentials_rotation_failure",
            ]
        )
        audit_record(
            action="device.credentials_rotation_expired",
            tenant=device.tenant,
            actor=None,
            target=device,
            data={"device_id": device.device_id, "rotation": rotation_id},
        )
        # Last, inside the transaction: a broker error rolls the expiry back.
        if pending:
            dynsec.dynsec_device_client_delete(
                device_id=device.device_id, username=pending
            )
    return True


def device_credentials_usernames(device: Device) -> list[str]:
    """Every dynamic-security username the device may hold (for revoking)."""
    names = [device.device_id, device.mqtt_login]
    if device.credentials_rotation_id:
        names.append(
            dynsec.rotation_username(device.device_id, device.credentials_generation)
        )
    return list(dict.fromkeys(names))


def device_credentials_reissue(
    *, device: Device, config: dynsec.DynsecConfig | None = None
) -> str:
    """Give a platform-broker device a new password (its dynamic-security client and
    role recreated, client id bound) and store it encrypted; returns the password.

    For the platform itself, not a tenant: `make run` gives its simulated devices
    real credentials on the dynamic-security Mosquitto it starts. Audited without
    an actor. Any earlier password stops working at once.
    """
    if not device.broker.is_platform:
        raise ValidationError("Only devices on the platform broker get credentials.")
    try:
        # Clients of an earlier rotation go first: they are bound to the same id.
        others = [
            name
            for name in device_credentials_usernames(device)
            if name != device.device_id
        ]
        if others:
            dynsec.dynsec_device_delete(
                device_id=device.device_id, usernames=others, config=config
            )
        password = dynsec.dynsec_device_create(
            device_id=device.device_id, prefix=device.topic_prefix, config=config
        )
    except dynsec.DynsecError as exc:
        raise _credentials_failed(exc) from None
    with transaction.atomic():
        device.mqtt_password = password
        device.mqtt_username = ""
        device.pending_mqtt_username = ""
        device.pending_mqtt_password = ""
        device.credentials_rotation_id = ""
        device.credentials_rotation_started_at = None
        device.save(
            update_fields=[
                "mqtt_password",
                "mqtt_username",
                "pending_mqtt_username",
                "pending_mqtt_password",
                "credentials_rotation_id",
                "credentials_rotation_started_at",
            ]
        )
        audit_record(
            action="device.credentials_issued",
            tenant=device.tenant,
            actor=None,
            target=device,
            data={"device_id": device.device_id, "reason": "platform"},
        )
    return password
