"""The devices app's MQTT room: what device topics mean, and what the app publishes.

`DevicesRoom` (listed in settings.BRIDGE_ROOMS) handles every device -> cloud topic
of both protocols (firmware.protocol.DEVICE_TO_CLOUD): the pure half is
devices.mqtt.topics (state, samples, events, acknowledgements, config answers); its
batches go to devices.services.ingest.ingest_write and the command services. What
the app publishes (config/set sweeps, pending commands, clearing a removed device's
retained topics) is devices.mqtt.outgoing. See devices.bridge.rooms for the hooks.
"""

import logging
import time

from django.db import InterfaceError, OperationalError

from billing.metering import samples_metered
from devices.bridge.directory import LEGACY, iso
from devices.bridge.rooms import Context, Message, Outbox, Room
from devices.models import Command
from devices.mqtt.credentials import (
    CredentialsOutgoing,
    settle_rotation_acks,
    split_rotation_acks,
)
from devices.mqtt.outgoing import Outgoing
from devices.mqtt.topics import DeviceInfo, DeviceTopics, Effects
from devices.services.commands import command_ack, command_answer, command_complete
from devices.services.events import device_presence_event, event_payload
from devices.services.ingest import ingest_write
from firmware import protocol
from poolsaas.live import messages

logger = logging.getLogger(__name__)

# Effects kept for a retry while the database is away; beyond this the oldest drop
# (counted as retry_dropped and logged), so that an outage cannot exhaust memory.
MAX_RETRY_SAMPLES = 200_000
MAX_RETRY_EVENTS = 50_000
MAX_RETRY_ACKS = 20_000
# What a lost database connection raises: worth a retry, unlike a bad row.
DB_AWAY = (OperationalError, InterfaceError)


def pool_snapshot_messages(device: DeviceInfo) -> list[tuple[str, dict]]:
    """The live state of a device's pool, for its page and its tenant's overview."""
    state = dict(device.state)
    last_seen = iso(device.last_seen) if device.last_seen else None
    return [
        (
            device.pool_group,
            messages.pool_state(
                pool=device.pool_hex,
                state=state,
                online=device.online,
                last_seen=last_seen,
            ),
        ),
        (
            device.tenant_group,
            messages.tenant_pool(
                pool=device.pool_hex, online=device.online, state=state
            ),
        ),
    ]


def pool_event_message(
    device: DeviceInfo, *, ts: float, kind: str, message: str
) -> tuple[str, dict]:
    """An event the bridge recorded, as the pool page shows it."""
    event = event_payload(code=None, kind=kind, message=message, ts=iso(ts), actor=None)
    return device.pool_group, messages.pool_event(pool=device.pool_hex, event=event)


def command_answer_message(answer: tuple[DeviceInfo, dict]) -> tuple[str, dict] | None:
    """A ps1 device's ack as its pool page shows it, before the write (None for an
    ack that is not a command's, or a device without a pool)."""
    device, ack = answer
    command = command_answer(
        command_id=ack["id"],
        ok=ack["ok"],
        error=ack.get("error"),
        reason=ack.get("reason"),
    )
    if command is None or not device.pool_hex:
        return None
    return device.pool_group, messages.pool_command(
        pool=device.pool_hex, command=command
    )


def device_went_silent(device: DeviceInfo, out: Outbox) -> None:
    """Live side of the silence rule (devices_mark_silent wrote the event)."""
    device.online = False
    if out.live is None or not device.pool_hex:
        return
    kind, text, _ = device_presence_event(online=False, silent_for=device.silence_s)
    out.live.send_many(pool_snapshot_messages(device))
    out.live.send_events(
        [pool_event_message(device, ts=time.time(), kind=kind, message=text)]
    )


class DevicesRoom(CredentialsOutgoing, Outgoing, Room):
    name = "devices"
    suffixes = protocol.DEVICE_TO_CLOUD
    # Over quota, history is what goes; acks, events, status, config answers and
    # v3.1 pump/valve state (which settles its commands) still come through.
    sheddable = (protocol.TELEMETRY, protocol.TEMPERATURE_STATE)
    SHEDDABLE_PS1 = (protocol.PUMP_STATE, protocol.VALVE_STATE)

    def __init__(self) -> None:
        self.topics = DeviceTopics()
        Outgoing.__init__(self)
        CredentialsOutgoing.__init__(self)

    # --- publisher ---------------------------------------------------------------

    def doorbell(self, message: dict) -> bool:
        if self.credentials_doorbell(message):
            return False  # the credentials sweep runs in the publisher's sweep
        return Outgoing.doorbell(self, message)

    def publish(self, out: Outbox) -> None:
        try:
            self.sweep_credentials(out)
        except Exception:  # noqa: BLE001 - commands must not wait for rotations
            out.db_error()
            logger.exception("bridge credentials sweep failed; retrying")
        Outgoing.publish(self, out)

    # --- worker ------------------------------------------------------------------

    def handle(self, message: Message, ctx: Context) -> bool:
        return self.topics.handle(message, ctx)

    def sheds(self, message: Message) -> bool:
        if message.suffix in self.sheddable:
            return True
        # A ps1 device settles commands by its acks (which carry the state).
        return (
            message.suffix in self.SHEDDABLE_PS1 and message.device.protocol != LEGACY
        )

    def shed(self, message: Message, ctx: Context) -> None:
        # Still proof of life, so that the device stays online and takes commands.
        self.topics.seen(message)

    def updates(self, out: Outbox) -> None:
        effects = self.topics.effects
        pools, effects.pools = effects.pools, {}
        answers, effects.answers = effects.answers, []
        live = out.live
        if live is None:
            return
        if answers:
            # A device answered a command: its page is told now; the batch write
            # (command_ack) follows and says it again, whole.
            live.send_now(
                [m for m in map(command_answer_message, answers) if m is not None]
            )
        fresh = live.newly_watched()
        if not pools and not fresh:
            return
        watched = live.watched
        batch = []
        if fresh:
            # A page opened: what this bridge knows of its pools, which may be newer
            # than the snapshot the page got (a change the bridge skipped before it
            # heard of the page, or not yet written).
            sending = {device.pk for device in pools.values()}
            for device in out.directory.by_pk.values():
                if (
                    device.pool_hex
                    and device.last_seen
                    and device.pk not in sending
                    and (device.pool_group in fresh or device.tenant_group in fresh)
                ):
                    batch.extend(pool_snapshot_messages(device))
        for device in pools.values():
            # Nobody is looking at this pool or its tenant: nothing to build or send.
            if (
                watched is not None
                and device.pool_group not in watched
                and device.tenant_group not in watched
            ):
                live.counters["skipped"] += 1
                continue
            batch.extend(pool_snapshot_messages(device))
        live.send_many(batch)

    def pending(self) -> int:
        return len(self.topics.effects.samples)

    def drain(self) -> Effects:
        effects = self.topics.drain()
        effects.pools, effects.answers = {}, []
        return effects

    # --- writer ------------------------------------------------------------------

    def merge(self, held: Effects, newer: Effects, out: Outbox) -> Effects:
        for pk, write in newer.writes.items():
            kept = held.writes.get(pk)
            if kept is None:
                held.writes[pk] = write
                continue
            kept.delta.update(write.delta)
            for name in ("online", "last_seen", "firmware_version", "hardware_model"):
                if getattr(write, name) is not None:
                    setattr(kept, name, getattr(write, name))
            if write.config_version_applied is not None:
                kept.config_version_applied = write.config_version_applied

        def bounded(items: list, limit: int) -> list:
            excess = len(items) - limit
            if excess <= 0:
                return items
            out.counters["retry_dropped"] += excess
            logger.error("database away too long: dropped the %d oldest rows", excess)
            return items[excess:]

        held.samples = bounded(held.samples + newer.samples, MAX_RETRY_SAMPLES)
        held.events = bounded(held.events + newer.events, MAX_RETRY_EVENTS)
        held.acks = bounded(held.acks + newer.acks, MAX_RETRY_ACKS)
        held.completions = bounded(held.completions + newer.completions, MAX_RETRY_ACKS)
        return held

    def flush(self, batch: Effects, out: Outbox) -> None:
        """Write one batch (raises, with nothing written, when the database is away),
        then show its events and settle its commands."""
        dropped = ingest_write(
            writes=batch.writes,
            samples=batch.samples,
            events=batch.events,
            now=time.time(),
        )
        if dropped:
            # Refused rows (a device removed since the last refresh) are gone for
            # good; the rest of the batch is written.
            out.counters["rows_dropped"] += sum(dropped.values())
            batch.events = [e for e in batch.events if e[0].pk not in dropped]
        samples, written = batch.samples, batch.events
        # Written: from here on a retry of this batch (a raise) is only for what is
        # still unsettled, never the rows again.
        batch.writes, batch.samples, batch.events = {}, [], []
        if samples:
            samples_metered(samples=samples, dropped=dropped)
        if out.live is not None:
            events = [
                pool_event_message(device, ts=ts, kind=kind, message=message)
                for device, ts, kind, message, _ in written
                if device.pool_hex
            ]
            if events:
                out.live.send_events(events)
        self._settle_commands(batch)

    def _settle_commands(self, effects: Effects) -> None:
        """Settle the batch's acks and v3.1 completions. Those the database could
        not take (it went away after the rows were written) stay in `effects` and
        the flush raises, so the writer retries them with the next batch: an ack the
        bridge accepted is never dropped for an outage."""
        acks, rotations = split_rotation_acks(effects.acks)
        retry_acks, retry_completions, failed = [], [], None
        # A rotation's ack (a `k…` id) settles the rotation, never a command.
        try:
            settle_rotation_acks(rotations)
        except DB_AWAY as exc:
            retry_acks, failed = list(rotations), exc
        for device_pk, ack in acks:
            try:
                command_ack(
                    device_pk=device_pk,
                    command_id=ack["id"],
                    ok=ack["ok"],
                    error=ack.get("error"),
                    reason=ack.get("reason"),
                )
            except DB_AWAY as exc:
                retry_acks.append((device_pk, ack))
                failed = exc
            except Exception:  # noqa: BLE001
                logger.exception("cannot settle ack %s", ack.get("id"))
        for command_pk, device_pk in effects.completions:
            try:
                command = Command.objects.select_related("actor").get(pk=command_pk)
                command_complete(command=command)
            except Command.DoesNotExist:
                pass
            except DB_AWAY as exc:
                retry_completions.append((command_pk, device_pk))
                failed = exc
            except Exception:  # noqa: BLE001
                logger.exception("cannot complete command %s", command_pk)
        effects.acks, effects.completions = retry_acks, retry_completions
        if failed is not None:
            raise failed

    def stats(self) -> dict[str, int]:
        return {
            "published": self.published,
            "published_rung": self.published_rung,
            "resent": self.resent,
            "config_published": self.config_published,
            "credentials_published": self.credentials_published,
        }
