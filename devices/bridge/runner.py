"""The running bridge: connections, a worker, a control loop and the live channel.

Threads and what they own:
- one paho network thread per broker (devices.bridge.connection): only enqueues;
- the worker: drains the inbox through IngestCore, hands pool snapshots to the live
  channel at once, and every `flush_interval` writes the collected state, samples
  and events in a few statements (devices.services.ingest) and settles command
  acknowledgements (devices.services.commands);
- the command thread: every `sweep_interval` (or at once when the doorbell rings)
  publishes the retained config/set of outdated ps1 devices (the pools the doorbell
  named at once, all of them every `refresh_interval`: `sweep_config`), expires
  overdue commands, claims and publishes pending ones, completes v3.1 commands from
  stored state;
- the control loop: every `refresh_interval` rebuilds the topic directory
  and reconciles broker connections (so broker and device changes need no restart);
  every `silence_interval` marks silent devices offline;
- the live channel (devices.bridge.live): the asyncio loop of the channel layer.
"""

import collections
import logging
import os
import queue
import socket
import threading
import time
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import close_old_connections, connection, reset_queries

from devices.bridge.connection import BrokerConnection, broker_fingerprint
from devices.bridge.core import LEGACY, DeviceInfo, Directory, Effects, IngestCore, iso
from devices.bridge.live import LiveChannel
from devices.broadcast import pool_group, tenant_group
from devices.fields import SecretDecryptionError
from devices.models import Command, Device, Pool
from devices.selectors import (
    brokers_for_bridge,
    commands_awaiting_state,
    commands_to_publish,
    devices_config_outdated,
    devices_for_bridge,
)
from devices.services.brokers import broker_ensure_platform, validate_broker_address
from devices.services.commands import (
    DOORBELL,
    command_ack,
    command_complete,
    command_fail,
    command_v31_done,
    commands_claim,
    commands_expire,
    commands_match_device_state,
)
from devices.services.ingest import devices_mark_silent, ingest_write
from devices.services.programs import CONFIG_PUBLISH, device_config_message
from firmware import protocol

logger = logging.getLogger(__name__)

MAX_BATCH = 5000
MAX_INBOX = 10000
MAX_PENDING_SAMPLES = 20000
# Effects kept for a retry while the database is away; beyond this the oldest drop
# (counted as retry_dropped and logged), so that an outage cannot exhaust memory.
MAX_RETRY_SAMPLES = 200_000
MAX_RETRY_EVENTS = 50_000
MAX_RETRY_ACKS = 20_000
# Seconds between two attempts to write a held batch: doubles up to the maximum.
RETRY_MIN_DELAY, RETRY_MAX_DELAY = 0.25, 5.0


class Bridge:
    def __init__(
        self,
        *,
        name: str | None = None,
        refresh_interval: float = 5.0,
        sweep_interval: float = 1.0,
        flush_interval: float = 0.5,
        silence_factor: float = 3.0,
        silence_interval: float = 5.0,
        broadcast_window: float = 0.25,
        share_group: str = "poolsaas",
        stats_interval: float = 60.0,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        keepalive: int = 30,
        reconnect_hold: float = 3.0,
        live: bool = True,
    ) -> None:
        self.name = (
            name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        )
        self.refresh_interval = refresh_interval
        self.sweep_interval = sweep_interval
        self.flush_interval = flush_interval
        self.silence_factor = silence_factor
        self.silence_interval = silence_interval
        self.share_group = share_group
        self.stats_interval = stats_interval
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self.keepalive = keepalive
        self.reconnect_hold = reconnect_hold
        self.core = IngestCore()
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.connections: dict[int, BrokerConnection] = {}
        self.platform_broker_id: int | None = None
        self.live = (
            LiveChannel(
                doorbell=DOORBELL,
                on_doorbell=self._on_doorbell,
                window=broadcast_window,
            )
            if live
            else None
        )
        self.flushes = 0
        self.published = 0
        self.db_errors = 0
        self._retry: Effects | None = None
        self.write_failures = 0
        self._retry_at = 0.0
        self._retry_delay = RETRY_MIN_DELAY
        self._publish_requests: collections.deque = collections.deque(maxlen=10000)
        # Pools whose configuration the doorbell announced (hex), and per device pk
        # the (version, connection, online since) its config/set was last published
        # for: each is published once, again only after a reconnect of either side.
        self._config_pools: collections.deque = collections.deque(maxlen=10000)
        self._config_sent: dict[int, tuple[int, float, float]] = {}
        self._next_config_sweep = 0.0
        self.config_published = 0
        self._to_write: queue.SimpleQueue = queue.SimpleQueue()
        self._writer_idle = threading.Event()
        self._writer_idle.set()
        self.busy = {"handle": 0.0, "write": 0.0}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._refreshed = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name="bridge-worker", daemon=True),
            threading.Thread(target=self._write, name="bridge-writer", daemon=True),
            threading.Thread(target=self._control, name="bridge-control", daemon=True),
            threading.Thread(
                target=self._commands, name="bridge-commands", daemon=True
            ),
        ]

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> "Bridge":
        if self.live is not None:
            self.live.start()
        for thread in self._threads:
            thread.start()
        return self

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Until the directory is built and every broker connection is up."""
        if not self._refreshed.wait(timeout):
            return False
        deadline = time.monotonic() + timeout
        for conn in list(self.connections.values()):
            if not conn.subscribed.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        # Inputs first, so that the worker and the writer drain what was received.
        for conn in list(self.connections.values()):
            conn.stop()
        for thread in self._threads:
            thread.join(10)
        if self.live is not None:
            self.live.stop()

    def wake(self) -> None:
        """Run the command sweep now (the doorbell does this from the channel layer)."""
        self._wake.set()

    def stats(self) -> dict:
        out = dict(self.core.counters)
        out.update(
            inbox=self.inbox.qsize(),
            flushes=self.flushes,
            published=self.published,
            config_published=self.config_published,
            db_errors=self.db_errors,
            busy={k: round(v, 2) for k, v in self.busy.items()},
            devices=len(self.core.directory.by_pk),
            connections={
                pk: c.connected.is_set() for pk, c in self.connections.items()
            },
            broker_faults={
                pk: dict(c.counters) for pk, c in self.connections.items() if c.counters
            },
        )
        if self.live is not None:
            out["live"] = dict(self.live.counters, **self.live.delays())
        return out

    def _enqueue(self, item: tuple) -> None:
        # Backpressure: past MAX_INBOX the network thread waits, the socket fills and
        # the broker holds (or, for QoS 0, drops) instead of this process growing.
        while self.inbox.qsize() >= MAX_INBOX and not self._stop.is_set():
            self.core.counters["inbox_full"] += 1
            time.sleep(0.002)
        self.inbox.put(item)

    def _on_doorbell(self, message: dict) -> None:
        if message.get("type") == CONFIG_PUBLISH and isinstance(
            message.get("pool"), str
        ):
            self._config_pools.append(message["pool"])
        self._wake.set()

    # --- worker ----------------------------------------------------------------------

    def _work(self) -> None:
        """Parse and route; hand the collected effects to the writer whenever it is
        idle. While the database is busy, effects keep accumulating (and per-device
        state writes merge), so batches grow instead of the worker waiting."""
        core = self.core
        last_flush = time.monotonic()
        while not self._stop.is_set() or not self.inbox.empty():
            if (
                len(core.effects.samples) >= MAX_PENDING_SAMPLES
                and not self._writer_idle.is_set()
                and not self._stop.is_set()
            ):
                # The database is behind: stop taking messages (the inbox fills,
                # then the socket) rather than queueing without bound in memory.
                core.counters["write_waits"] += 1
                self._writer_idle.wait(0.05)
                continue
            try:
                item = self.inbox.get(timeout=0.05)
            except queue.Empty:
                item = None
            if item is not None:
                started = time.perf_counter()
                core.handle(*item)
                for _ in range(MAX_BATCH):
                    try:
                        item = self.inbox.get_nowait()
                    except queue.Empty:
                        break
                    core.handle(*item)
                self._broadcast_batch()
                self.busy["handle"] += time.perf_counter() - started
            now = time.monotonic()
            if now - last_flush >= self.flush_interval and self._writer_idle.is_set():
                last_flush = now
                effects = core.drain()
                effects.pools = {}
                # A held batch is retried even when nothing new arrived.
                if effects or self._retry is not None:
                    self._writer_idle.clear()
                    self._to_write.put(effects)
        self._broadcast_batch()
        self._writer_idle.wait(30)
        self._to_write.put(core.drain())
        self._to_write.put(None)

    def _write(self) -> None:
        try:
            while True:
                effects = self._to_write.get()
                if effects is None:
                    if self._retry is not None:
                        self._flush(Effects(), now=True)  # a last try on the way out
                    break
                started = time.perf_counter()
                self._flush(effects)
                # With DEBUG on, Django keeps every query (with its parameters) of a
                # connection; a long-running thread must drop them like a request.
                reset_queries()
                self.busy["write"] += time.perf_counter() - started
                self._writer_idle.set()
        finally:
            self._writer_idle.set()
            connection.close()

    def _snapshot(self, device: DeviceInfo) -> list[tuple[str, dict]]:
        state = dict(device.state)
        last_seen = iso(device.last_seen) if device.last_seen else None
        return [
            (
                pool_group(device.pool_hex),
                {
                    "type": "pool.state",
                    "pool": device.pool_hex,
                    "state": state,
                    "online": device.online,
                    "last_seen": last_seen,
                },
            ),
            (
                tenant_group(device.tenant_hex),
                {
                    "type": "tenant.pool",
                    "pool": device.pool_hex,
                    "online": device.online,
                    "state": state,
                },
            ),
        ]

    def _broadcast_batch(self) -> None:
        effects = self.core.effects
        pools, effects.pools = effects.pools, {}
        if self.live is None or not pools:
            return
        watched = self.live.watched
        messages = []
        for device in pools.values():
            # Nobody is looking at this pool or its tenant: nothing to build or send.
            if (
                watched is not None
                and pool_group(device.pool_hex) not in watched
                and tenant_group(device.tenant_hex) not in watched
            ):
                self.live.counters["skipped"] += 1
                continue
            messages.extend(self._snapshot(device))
        self.live.send_many(messages)

    def _broadcast_events(self, events: list) -> None:
        if self.live is None:
            return
        messages = [
            (
                pool_group(device.pool_hex),
                {
                    "type": "pool.event",
                    "pool": device.pool_hex,
                    "event": {
                        "kind": kind,
                        "message": message,
                        "ts": iso(ts),
                        "actor": None,
                    },
                },
            )
            for device, ts, kind, message, _ in events
            if device.pool_hex
        ]
        if messages:
            self.live.send_events(messages)

    def _merge_retry(self, effects: Effects) -> Effects:
        old, self._retry = self._retry, None
        if old is None:
            return effects
        for pk, write in effects.writes.items():
            kept = old.writes.get(pk)
            if kept is None:
                old.writes[pk] = write
                continue
            kept.delta.update(write.delta)
            for name in ("online", "last_seen", "firmware_version"):
                if getattr(write, name) is not None:
                    setattr(kept, name, getattr(write, name))
            if write.config_version_applied is not None:
                kept.config_version_applied = write.config_version_applied
        old.samples = self._bounded(old.samples + effects.samples, MAX_RETRY_SAMPLES)
        old.events = self._bounded(old.events + effects.events, MAX_RETRY_EVENTS)
        old.acks = self._bounded(old.acks + effects.acks, MAX_RETRY_ACKS)
        old.completions = self._bounded(
            old.completions + effects.completions, MAX_RETRY_ACKS
        )
        return old

    def _bounded(self, items: list, limit: int) -> list:
        excess = len(items) - limit
        if excess <= 0:
            return items
        self.core.counters["retry_dropped"] += excess
        logger.error("database away too long: dropped the %d oldest rows", excess)
        return items[excess:]

    def _flush(self, effects: Effects, *, now: bool = False) -> None:
        effects = self._merge_retry(effects)
        effects.pools = {}
        if not effects:
            return
        if not now and time.monotonic() < self._retry_at:
            self._retry = effects  # the database failed just now: give it time
            return
        try:
            close_old_connections()
            dropped = ingest_write(
                writes=effects.writes,
                samples=effects.samples,
                events=effects.events,
                now=time.time(),
            )
        except Exception as exc:  # noqa: BLE001 - database away: keep and retry
            self.db_errors += 1
            self.write_failures += 1
            if self._retry_delay == RETRY_MIN_DELAY:
                logger.exception("bridge cannot write to the database; will retry")
            else:
                logger.warning("bridge still cannot write to the database: %s", exc)
            connection.close()
            self._retry = effects
            self._retry_at = time.monotonic() + self._retry_delay
            self._retry_delay = min(RETRY_MAX_DELAY, self._retry_delay * 2)
            return
        self._retry_at, self._retry_delay = 0.0, RETRY_MIN_DELAY
        self.flushes += 1
        if dropped:
            # Refused rows (a device removed since the last refresh) are gone for
            # good; the rest of the batch is written.
            self.core.counters["rows_dropped"] += sum(dropped.values())
            effects.events = [e for e in effects.events if e[0].pk not in dropped]
        self._broadcast_events(effects.events)
        self._settle_commands(effects)

    def _settle_commands(self, effects: Effects) -> None:
        for device_pk, ack in effects.acks:
            try:
                command_ack(
                    device_pk=device_pk,
                    command_id=ack["id"],
                    ok=ack["ok"],
                    error=ack.get("error"),
                    reason=ack.get("reason"),
                )
            except Exception:  # noqa: BLE001
                logger.exception("cannot settle ack %s", ack.get("id"))
        for command_pk, _device_pk in effects.completions:
            try:
                command = Command.objects.select_related("actor").get(pk=command_pk)
                command_complete(command=command)
            except Command.DoesNotExist:
                pass
            except Exception:  # noqa: BLE001
                logger.exception("cannot complete command %s", command_pk)

    # --- control ---------------------------------------------------------------------

    def _control(self) -> None:
        """Housekeeping: the topic directory and broker connections, silence, stats.
        Commands have a thread of their own, so that a slow refresh never holds up a
        command that the doorbell just announced."""
        next_refresh = next_silence = 0.0
        next_stats = time.monotonic() + self.stats_interval
        try:
            platform = broker_ensure_platform()
            self.platform_broker_id = platform.pk
        except Exception:  # noqa: BLE001
            logger.exception("cannot ensure the platform broker")
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                close_old_connections()
                if now >= next_refresh:
                    self.refresh()
                    next_refresh = now + self.refresh_interval
                if now >= next_silence:
                    self.sweep_silence()
                    next_silence = now + self.silence_interval
            except Exception:  # noqa: BLE001 - keep the bridge alive, retry next tick
                self.db_errors += 1
                logger.exception("bridge control loop failed; retrying")
                connection.close()
            if now >= next_stats:
                next_stats = now + self.stats_interval
                logger.info("bridge stats %s", self.stats())
            reset_queries()
            self._stop.wait(min(self.sweep_interval, self.refresh_interval))
        connection.close()

    def _commands(self) -> None:
        """Publish pending commands at once when the doorbell rings, and every
        `sweep_interval` anyway (the database is the queue of record)."""
        while not self._refreshed.wait(0.2):
            if self._stop.is_set():
                return
        while not self._stop.is_set():
            try:
                close_old_connections()
                self.sweep_commands()
            except Exception:  # noqa: BLE001 - keep the bridge alive, retry next tick
                self.db_errors += 1
                logger.exception("bridge command sweep failed; retrying")
                connection.close()
            reset_queries()
            self._wake.wait(self.sweep_interval)
            self._wake.clear()
        connection.close()

    def refresh(self) -> None:
        """Rebuild the topic directory and reconcile broker connections."""
        brokers = list(brokers_for_bridge())
        broker_ids = [b.pk for b in brokers]
        directory = Directory.build(
            devices_for_bridge(broker_ids=broker_ids),
            previous=self.core.directory,
            silence_factor=self.silence_factor,
        )
        self.core.directory = directory
        for broker in brokers:
            conn = self.connections.get(broker.pk)
            if conn is not None and conn.fingerprint != broker_fingerprint(broker):
                logger.info("broker %s changed; reconnecting", broker.name)
                conn.stop()
                del self.connections[broker.pk]
                conn = None
            if conn is not None and not conn.alive():
                # Its network thread ended: it would look connected forever.
                logger.error("connection to broker %s died; rebuilding", broker.name)
                conn.stop()
                del self.connections[broker.pk]
                conn = None
            if conn is None:
                if not broker.is_platform:
                    # A tenant's broker is checked again here, not only when it was
                    # saved: the name may resolve elsewhere by now.
                    try:
                        validate_broker_address(broker.host)
                    except ValidationError as exc:
                        logger.warning(
                            "broker %s not connected: %s", broker.name, exc.messages[0]
                        )
                        continue
                try:
                    conn = BrokerConnection(
                        broker=broker,
                        enqueue=self._enqueue,
                        client_id=f"poolsaas-bridge-{self.name}-{broker.pk}"[:64],
                        # Several bridges share the platform broker's traffic; a
                        # broker without $share (the embedded one) gets one bridge.
                        shared=broker.is_platform
                        and settings.MQTT_SHARED_SUBSCRIPTIONS,
                        share_group=self.share_group,
                        keepalive=self.keepalive,
                        min_backoff=self.min_backoff,
                        max_backoff=self.max_backoff,
                    )
                except SecretDecryptionError:
                    logger.error(
                        "cannot decrypt the credentials of broker %s; skipped",
                        broker.name,
                    )
                    continue
                except Exception:  # noqa: BLE001 - e.g. a bad CA certificate
                    logger.exception("cannot set up broker %s; skipped", broker.name)
                    continue
                conn.set_prefixes(set(directory.prefixes(broker.pk)))
                self.connections[broker.pk] = conn
                conn.start()
            else:
                conn.set_prefixes(set(directory.prefixes(broker.pk)))
        for pk in set(self.connections) - set(broker_ids):
            self.connections.pop(pk).stop()
        self._refreshed.set()

    def sweep_commands(self) -> None:
        try:
            self.sweep_config()
        except Exception:  # noqa: BLE001 - commands must not wait for configuration
            self.db_errors += 1
            logger.exception("bridge config sweep failed; retrying")
        commands_expire()
        # A snapshot: the control thread adds and removes connections meanwhile.
        connections = list(self.connections.items())
        connected = [pk for pk, c in connections if c.connected.is_set()]
        if connected:
            ready = [
                command
                for command in commands_to_publish(broker_ids=connected)
                if self._device_reachable(command.device)
            ]
            for command in commands_claim(commands=ready):
                self._publish(command)
        awaiting = commands_awaiting_state(broker_ids=list(self.connections))
        table: dict[int, list] = {}
        for row in awaiting:
            table.setdefault(row["device_id"], []).append(
                (row["pk"], row["expected"], row["sent_at"].timestamp())
            )
        self.core.awaiting = table
        commands_match_device_state(awaiting=awaiting)

    def sweep_config(self) -> None:
        """Publish the retained config/set of ps1 devices whose pool's configuration
        is newer than what they applied (the database is the record; the
        "config.publish" doorbell only makes it prompt, for the pools it names).

        Every `refresh_interval` all outdated devices are looked at: that covers a
        bridge (re)start, a broker reconnect, a doorbell that rang while no bridge
        listened, and a device that comes online (which also gets the retained
        message from the broker). A device that rejected a version is not sent it
        again until one of those changes, nor a newer version is saved."""
        now = time.monotonic()
        requested = set()
        while self._config_pools:
            requested.add(self._config_pools.popleft())
        full = now >= self._next_config_sweep
        if not full and not requested:
            return
        connections = dict(self.connections)
        connected = [pk for pk, c in connections.items() if c.connected.is_set()]
        if not connected:
            return
        if full:
            self._next_config_sweep = now + self.refresh_interval
        after = 0
        while True:
            devices = list(
                devices_config_outdated(
                    broker_ids=connected,
                    pool_codes=None if full else requested,
                    after=after,
                )
            )
            for device in devices:
                self._publish_config(device, connections[device.broker_id])
            if len(devices) < 500:
                break
            after = devices[-1].pk

    def _publish_config(self, device: Device, conn: BrokerConnection) -> None:
        info = self.core.directory.by_pk.get(device.pk)
        since = info.online_since if info is not None else 0.0
        sent = self._config_sent.get(device.pk)
        if sent == (device.pool.config_version, conn.connected_at, since):
            return
        try:
            version, topic, payload = device_config_message(device=device)
        except (protocol.ProtocolError, Pool.DoesNotExist) as exc:
            logger.error("config of pool %s cannot be sent: %s", device.pool_id, exc)
            self._config_sent[device.pk] = (
                device.pool.config_version,
                conn.connected_at,
                since,
            )
            return
        if not conn.publish(topic, payload, qos=1, retain=True):
            return  # not on the wire: the next sweep tries again
        self._config_sent[device.pk] = (version, conn.connected_at, since)
        self.config_published += 1

    def _device_reachable(self, device: Device) -> bool:
        """Right after the bridge (re)connects to a broker, hold a device's commands
        until it has spoken on this connection (both protocols publish on connect),
        so a command is not published before the device has resubscribed. After
        `reconnect_hold` seconds publish anyway; the timeout has the last word."""
        conn = self.connections.get(device.broker_id)
        if conn is None:
            return False
        if time.time() - conn.connected_at >= self.reconnect_hold:
            return True
        info = self.core.directory.by_pk.get(device.pk)
        return info is not None and info.last_live >= conn.connected_at

    def _publish(self, command: Command) -> None:
        device: Device = command.device
        conn = self.connections.get(device.broker_id)
        root = device.topic_root
        try:
            if device.protocol == LEGACY:
                suffix, payload = protocol.encode_v31_set(command.op, command.value)
            else:
                suffix = protocol.CMD
                payload = protocol.encode_command(
                    command.code.hex,
                    int(command.expires_at.timestamp()),
                    command.op,
                    command.value,
                )
        except protocol.ProtocolError as exc:
            command_fail(command=command, error=f"Cannot be sent to this device: {exc}")
            return
        if conn is None or not conn.publish(f"{root}/{suffix}", payload, qos=1):
            # Not on the wire: back to pending for the next sweep (or its timeout).
            Command.objects.filter(pk=command.pk, status=Command.Status.SENT).update(
                status=Command.Status.PENDING, sent_at=None
            )
            return
        self.published += 1
        expected = command.expected
        if device.protocol == LEGACY and expected:
            known = (device.state or {}).get(expected["kind"])
            if known is not None and command_v31_done(
                expected=expected,
                kind=expected["kind"],
                value=known,
                reported_at=None,
                sent_at=command.sent_at.timestamp(),
            ):
                command_complete(command=command, data={"already": True})

    def sweep_silence(self) -> None:
        directory = self.core.directory
        mine = set(self.connections)
        candidates = {
            pk: info.silence_s
            for pk, info in directory.by_pk.items()
            if info.broker_id in mine
        }
        for pk in devices_mark_silent(candidates=candidates):
            info = directory.by_pk.get(pk)
            if info is None:
                continue
            info.online = False
            if self.live is not None and info.pool_hex:
                self.live.send_many(self._snapshot(info))
                self.live.send_events(
                    [
                        (
                            pool_group(info.pool_hex),
                            {
                                "type": "pool.event",
                                "pool": info.pool_hex,
                                "event": {
                                    "kind": "offline",
                                    "message": "Device offline (silent)",
                                    "ts": iso(time.time()),
                                    "actor": None,
                                },
                            },
                        )
                    ]
                )
