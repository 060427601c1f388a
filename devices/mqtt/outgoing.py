"""What the devices app publishes through the bridge (the publisher thread): the
retained config/set of outdated ps1 devices, pending commands, and the clearing of a
removed device's retained topics. The database is the record of each; the doorbell
(poolsaas.live.messages: command.new, config.publish, device.retained_clear) only
makes it prompt.

A command.new ring carries the command's topic and payload: `publish_now` claims it
(command_claim, one conditional UPDATE) and publishes it without a sweep, on the
broker connection of this bridge that serves its device; a ring for a device of
another bridge's broker is left to that bridge, and a lost ring to the next sweep.

Each sweep also sends again the commands whose claimer, a bridge process, died
before they were known to be on the wire (commands_orphaned, commands_reclaim; the
rules are in devices.services.commands)."""

import collections
import logging
import time

from django.utils import timezone

from devices.bridge.directory import LEGACY
from devices.bridge.rooms import Outbox
from devices.models import Command, Device
from devices.selectors import (
    commands_awaiting_state,
    commands_orphaned,
    commands_to_publish,
    devices_config_outdated,
)
from devices.services.commands import (
    MAX_CLAIMS,
    RECLAIM_GRACE,
    command_claim,
    command_complete,
    command_fail,
    command_release,
    command_v31_done,
    command_wire,
    commands_claim,
    commands_expire,
    commands_match_device_state,
    commands_reclaim,
)
from devices.services.programs import devices_config_messages
from firmware import protocol
from poolsaas.live import messages
from poolsaas.request_context import command_log_context

logger = logging.getLogger(__name__)


class Sweep:
    """A publishing sweep that runs in full every `refresh_interval` and, in between,
    only for what the doorbell named (the database is the record; a lost ring costs
    at most one interval)."""

    def __init__(self) -> None:
        self.requests: collections.deque = collections.deque(maxlen=10000)
        self.next_full = 0.0

    def due(self, out: Outbox) -> tuple[bool, set, dict[int, float]] | None:
        """(full, what the doorbell named, connected broker id -> connected at), or
        None when there is nothing to do now."""
        now = time.monotonic()
        requested = set()
        while self.requests:
            requested.add(self.requests.popleft())
        full = now >= self.next_full
        if not full and not requested:
            return None
        connected = {pk: at for pk, at in out.brokers().items() if at is not None}
        if not connected:
            return None
        if full:
            self.next_full = now + out.refresh_interval
        return full, requested, connected


class Outgoing:
    """The publishing half of devices.mqtt.DevicesRoom."""

    def __init__(self) -> None:
        self.published = 0
        # Of those, published straight from the doorbell's ring (no sweep), and
        # sent again after their claimer died.
        self.published_rung = 0
        self.resent = 0
        self.config_published = 0
        self._publish_requests: collections.deque = collections.deque(maxlen=10000)
        # command.new rings that carry the command, for publish_now.
        self._rung: collections.deque = collections.deque(maxlen=10000)
        # The config sweep's requests are pool codes (hex); per device pk the
        # (version, connection, online since) its config/set was last published for:
        # each is published once, again only after a reconnect of either side.
        self.config_sweep = Sweep()
        self._config_sent: dict[int, tuple[int, float, float]] = {}

    def doorbell(self, message: dict) -> bool:
        """Take a ring; True when publish_now alone handles it (no sweep needed)."""
        kind = message.get("type")
        if kind == messages.COMMAND_NEW and isinstance(message.get("payload"), bytes):
            self._rung.append(message)
            return True
        if kind == messages.CONFIG_PUBLISH and isinstance(message.get("pool"), str):
            self.config_sweep.requests.append(message["pool"])
        elif kind == messages.RETAINED_CLEAR:
            # onboarding.retained_clear_request: a removed device's topics.
            self._publish_requests.append(message)
        return False

    def publish_now(self, out: Outbox) -> None:
        """The commands the doorbell carried: claimed and published at once."""
        brokers = None
        while self._rung:
            message = self._rung.popleft()
            if brokers is None:
                brokers = out.brokers()
            with command_log_context(message.get("command")):
                try:
                    self._publish_rung(message, out, brokers)
                except Exception:  # noqa: BLE001 - the sweep publishes it instead
                    out.db_error()
                    logger.exception("cannot publish a rung command; the sweep will")

    def _publish_rung(self, message: dict, out: Outbox, brokers: dict) -> None:
        command_id, topic, payload = (
            message.get("command"),
            message.get("topic"),
            message["payload"],
        )
        info = out.directory.by_pk.get(message.get("device"))
        if info is None or not (isinstance(topic, str) and isinstance(command_id, str)):
            return  # not a device of this bridge's brokers: its own bridge publishes
        device, suffix = out.directory.lookup(info.broker_id, topic)
        if device is not info or suffix != protocol.CMD:
            logger.warning("ignored a command ring for %r", topic[:200])
            return
        try:
            carried = protocol.parse_command(payload)["id"]
        except protocol.ProtocolError:
            carried = None
        if carried != command_id:
            logger.warning("ignored a command ring whose payload is not its command")
            return
        if not self._device_reachable(info, out, brokers):
            return  # after a reconnect: the sweep publishes once the device spoke
        if not command_claim(
            command_id=command_id, device_pk=info.pk, claimer=out.instance
        ):
            return  # another bridge, an earlier ring or a sweep took it (or expired)
        if not out.publish(info.broker_id, topic, payload, qos=1):
            command_release(command_id=command_id, claimer=out.instance)
            return
        self.published += 1
        self.published_rung += 1

    def publish(self, out: Outbox) -> None:
        """Every sweep: retained clears, configuration, expiry, pending commands,
        v3.1 commands completed by the state the device already reports."""
        while self._publish_requests:
            self._retained_clear(self._publish_requests.popleft(), out)
        try:
            self.sweep_config(out)
        except Exception:  # noqa: BLE001 - commands must not wait for configuration
            out.db_error()
            logger.exception("bridge config sweep failed; retrying")
        commands_expire()
        brokers = out.brokers()
        connected = [pk for pk, at in brokers.items() if at is not None]
        if connected:
            # What is pending, and what dead bridges had claimed, in their order.
            orphans = commands_orphaned(
                broker_ids=connected,
                sent_before=timezone.now() - RECLAIM_GRACE,
                max_claims=MAX_CLAIMS,
            )
            ready = sorted(
                [*orphans, *commands_to_publish(broker_ids=connected)],
                key=lambda command: command.created_at,
            )
            for command in ready:
                if not self._device_reachable(command.device, out, brokers):
                    continue
                if command.status == Command.Status.SENT:
                    if commands_reclaim(
                        commands=[command], claimer=out.instance
                    ) and self._publish_command(command, out):
                        self.resent += 1
                elif commands_claim(commands=[command], claimer=out.instance):
                    self._publish_command(command, out)
        awaiting = commands_awaiting_state(broker_ids=list(brokers))
        table: dict[int, list] = {}
        for row in awaiting:
            table.setdefault(row["device_id"], []).append(
                (row["pk"], row["expected"], row["sent_at"].timestamp())
            )
        self.topics.awaiting = table
        commands_match_device_state(awaiting=awaiting)

    def sweep_config(self, out: Outbox) -> None:
        """Publish the retained config/set of ps1 devices whose pool's configuration
        is newer than what they applied (the database is the record; the
        "config.publish" doorbell only makes it prompt, for the pools it names).

        Every `refresh_interval` all outdated devices are looked at: that covers a
        bridge (re)start, a broker reconnect, a doorbell that rang while no bridge
        listened, and a device that comes online (which also gets the retained
        message from the broker). A device that rejected a version is not sent it
        again until one of those changes, nor a newer version is saved."""
        due = self.config_sweep.due(out)
        if due is None:
            return
        full, requested, connected = due
        after = 0
        while True:
            # Keys first (three columns): an outdated device that was already sent
            # its config/set for this version and connection is most of them, and
            # building its model (with pool and broker) every sweep cost as much
            # CPU as a tenth of the ingest (docs/capacity.md, the profile).
            keys = list(
                devices_config_outdated(
                    broker_ids=list(connected),
                    pool_codes=None if full else requested,
                    after=after,
                ).values_list("pk", "broker_id", "pool__config_version")
            )
            due = [
                pk
                for pk, broker_id, version in keys
                if self._config_sent.get(pk)
                != self._config_key(pk, broker_id, version, out, connected)
            ]
            if due:
                devices = devices_config_outdated(
                    broker_ids=list(connected), pks=due, limit=len(due)
                )
                self._publish_configs(list(devices), out, connected)
            if len(keys) < 500:
                break
            after = keys[-1][0]

    @staticmethod
    def _config_key(pk, broker_id, version, out: Outbox, connected) -> tuple:
        """What a device's config/set is published once for: (version, connection,
        online since)."""
        info = out.directory.by_pk.get(pk)
        since = info.online_since if info is not None else 0.0
        return (version, connected[broker_id], since)

    def _retained_clear(self, message: dict, out: Outbox) -> None:
        """Empty retained publishes on every topic of a removed device
        (onboarding.retained_clear_request); the device row is already gone."""
        root, broker_id = message.get("root"), message.get("broker")
        prefix, _, device_id = root.rpartition("/") if isinstance(root, str) else "//"
        if not (protocol.is_valid_prefix(prefix) and protocol.is_valid_id(device_id)):
            logger.warning("ignored a retained-clear request for %r", root)
            return
        suffixes = protocol.DEVICE_TO_CLOUD + protocol.DEVICE_SUBSCRIPTIONS
        if out.brokers().get(broker_id) is None or not all(
            out.publish(broker_id, f"{root}/{suffix}", b"", qos=1, retain=True)
            for suffix in suffixes
        ):
            logger.warning("retained messages of %s not cleared: broker down", root)
            return
        self.published += 1

    def _publish_configs(self, devices: list[Device], out: Outbox, connected) -> None:
        """One page of the sweep: the config/set of each device not yet sent this
        (version, connection, online since), built for the whole page at once."""
        due: dict[int, tuple[Device, tuple[int, float, float]]] = {}
        for device in devices:
            key = self._config_key(
                device.pk, device.broker_id, device.pool.config_version, out, connected
            )
            if self._config_sent.get(device.pk) != key:
                due[device.pk] = (device, key)
        if not due:
            return
        built = devices_config_messages(devices=[device for device, _ in due.values()])
        for pk, (device, key) in due.items():
            message = built[pk]
            if isinstance(message, Exception):
                logger.error(
                    "config of pool %s cannot be sent: %s", device.pool_id, message
                )
                self._config_sent[pk] = key
                continue
            version, topic, payload = message
            if not out.publish(device.broker_id, topic, payload, qos=1, retain=True):
                continue  # not on the wire: the next sweep tries again
            self._config_sent[pk] = (version, *key[1:])
            self.config_published += 1

    def _device_reachable(self, device, out: Outbox, brokers: dict) -> bool:
        """Right after the bridge (re)connects to a broker, hold a device's commands
        until it has spoken on this connection (both protocols publish on connect),
        so a command is not published before the device has resubscribed. After
        `reconnect_hold` seconds publish anyway; the timeout has the last word.
        `device`: a Device or the directory's DeviceInfo (its pk and broker_id)."""
        connected_at = brokers.get(device.broker_id)
        if connected_at is None:
            return False
        if time.time() - connected_at >= out.reconnect_hold:
            return True
        info = out.directory.by_pk.get(device.pk)
        return info is not None and info.last_live >= connected_at

    def _publish_command(self, command: Command, out: Outbox) -> bool:
        """Publish a command this bridge claimed; True when it went on the wire."""
        device: Device = command.device
        expected = command.expected
        known = None
        if device.protocol == LEGACY and expected:
            known = (device.state or {}).get(expected["kind"])
        already = known is not None and command_v31_done(
            expected=expected,
            kind=expected["kind"],
            value=known,
            reported_at=None,
            sent_at=command.sent_at.timestamp(),
        )
        if already and command.claims > 1:
            # Claimed again: the first claim may have reached the device, whose
            # state shows it done; a v3.1 set is not sent twice for nothing.
            command_complete(command=command, data={"already": True})
            return False
        try:
            topic, payload = command_wire(command)
        except protocol.ProtocolError as exc:
            command_fail(command=command, error=f"Cannot be sent to this device: {exc}")
            return False
        if not out.publish(device.broker_id, topic, payload, qos=1):
            # Not on the wire: back to pending for the next sweep (or its timeout).
            command_release(command_id=command.code.hex, claimer=out.instance)
            return False
        self.published += 1
        if already:
            command_complete(command=command, data={"already": True})
        return True
