"""The devices room's half of a device credentials rotation (docs/protocol.md §7.3).

The bridge publishes each pending rotation's `cmd` (devices.services.
device_credentials.device_credentials_message) at every refresh while it is pending
and the device online, and at once when the "device.credentials" doorbell names the
device; the device's ack, whose id is a rotation's, is settled by
device_credentials_ack in the writer (it touches the database and dynamic security),
never by the command-ack path.
"""

import logging

from devices.bridge.rooms import Outbox
from devices.mqtt.outgoing import Sweep
from devices.selectors import devices_rotating_credentials
from devices.services.device_credentials import (
    device_credentials_ack,
    device_credentials_message,
    is_rotation_id,
)
from firmware import protocol
from poolsaas.live import messages

logger = logging.getLogger(__name__)


def split_rotation_acks(acks: list) -> tuple[list, list]:
    """(command acks, rotation acks) of a batch's `(device pk, ack)` pairs."""
    commands, rotations = [], []
    for pair in acks:
        (rotations if is_rotation_id(pair[1].get("id")) else commands).append(pair)
    return commands, rotations


def settle_rotation_acks(acks: list) -> None:
    for device_pk, ack in acks:
        try:
            device_credentials_ack(
                device_id=device_pk,
                rotation_id=ack["id"],
                ok=ack["ok"],
                reason=ack.get("reason") or ack.get("error") or "",
            )
        except Exception:  # noqa: BLE001 - the re-sent rotation brings the ack again
            logger.exception("cannot settle credentials ack %s", ack.get("id"))


class CredentialsOutgoing:
    """Mixed into devices.mqtt.DevicesRoom: publishing pending rotations."""

    def __init__(self) -> None:
        self.credentials_published = 0
        self.credentials_sweep = Sweep()  # requests: device pks

    def credentials_doorbell(self, message: dict) -> bool:
        if message.get("type") != messages.DEVICE_CREDENTIALS:
            return False
        device = message.get("device")
        if isinstance(device, int) and not isinstance(device, bool):
            self.credentials_sweep.requests.append(device)
        return True

    def sweep_credentials(self, out: Outbox) -> None:
        """Every `refresh_interval` all pending rotations of online devices; between
        those, only the devices the doorbell named."""
        due = self.credentials_sweep.due(out)
        if due is None:
            return
        full, requested, connected = due
        devices = devices_rotating_credentials(broker_ids=list(connected))
        if not full:
            devices = devices.filter(pk__in=requested)
        for device in devices:
            try:
                message = device_credentials_message(device)
            except protocol.ProtocolError as exc:
                logger.error("rotation of device %s cannot be sent: %s", device.pk, exc)
                continue
            if message is None:
                continue
            topic, payload = message
            if out.publish(device.broker_id, topic, payload, qos=1):
                self.credentials_published += 1
