"""The running bridge: connections, threads, batching and the directory.

The bridge knows no topic's meaning: every message goes through the dispatcher
(devices.bridge.rooms) to the room of the app that owns its topic, the rooms of
settings.BRIDGE_ROOMS (devices.mqtt for the device topics). Threads and what they
own:
- one paho network thread per broker (devices.bridge.connection): only enqueues;
- the worker and the writer (devices.bridge.worker): the inbox drained through the
  dispatcher, the rooms' live updates, their batches written every
  `flush_interval`, held and retried while the database is away;
- the publisher and the ringer (devices.bridge.publisher): every room's sweep every
  `sweep_interval`, and what a doorbell ring carried (a whole command) at once;
- the control loop (devices.bridge.control): every `refresh_interval` renews the
  leases on brokers served by one bridge (devices.services.leases), rebuilds the
  topic directory and reconciles broker connections; every `silence_interval` marks
  silent devices offline;
- the live channel (devices.bridge.live): the asyncio loop of the channel layer;
  whatever the services called from the other threads broadcast (OTA progress,
  command outcomes, events) is handed to it, not sent with a loop of its own.
"""

import os
import queue
import socket
import threading
import time
import uuid

from devices.bridge.connection import BrokerConnection
from devices.bridge.control import ControlThread
from devices.bridge.live import LiveChannel
from devices.bridge.publisher import PublisherThread
from devices.bridge.rooms import Dispatcher, Outbox, Room, rooms_from_settings
from devices.bridge.worker import RETRY_MIN_DELAY, WorkerThreads
from poolsaas.live.groups import DOORBELL, DOORBELL_GROUP, broadcast_through


class Bridge(WorkerThreads, PublisherThread, ControlThread):
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
        lease_ttl: float | None = None,
        live: bool = True,
        rooms: list[Room] | None = None,
    ) -> None:
        self.name = (
            name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        )
        # This process start, whatever its name: recorded on each command it claims,
        # alive while its heartbeat (each control tick) is renewed.
        self.instance = uuid.uuid4().hex
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
        # A lease outlives two missed renewals (one each refresh_interval), and a
        # slow refresh on a busy host.
        self.lease_ttl = (
            lease_ttl if lease_ttl is not None else max(3 * refresh_interval, 10.0)
        )
        # Three control ticks missed, and at least 5 s: another bridge then sends
        # again what this one had claimed (devices.services.commands).
        self.beat_ttl = max(3 * min(sweep_interval, refresh_interval), 5.0)
        self.leased: set[int] = set()
        self.leases_until = 0.0
        self.dispatcher = Dispatcher(
            rooms=rooms if rooms is not None else rooms_from_settings()
        )
        self.outbox = Outbox(self)
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.connections: dict[int, BrokerConnection] = {}
        self.platform_broker_id: int | None = None
        self.live = (
            LiveChannel(
                doorbell=DOORBELL,
                doorbell_group=DOORBELL_GROUP,
                on_doorbell=self._on_doorbell,
                window=broadcast_window,
            )
            if live
            else None
        )
        self.flushes = 0
        self.db_errors = 0
        # Rooms whose last `updates` failed (logged once until one succeeds).
        self._updates_failing: set[str] = set()
        self.write_failures = 0
        # room name -> its batch held for a retry while the database is away.
        self._retry: dict[str, object] = {}
        self._retry_at = 0.0
        self._retry_delay = RETRY_MIN_DELAY
        self._to_write: queue.SimpleQueue = queue.SimpleQueue()
        self._writer_idle = threading.Event()
        self._writer_idle.set()
        self.busy = {"handle": 0.0, "write": 0.0}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._sweep_asked = False
        self._rang = threading.Event()
        self._refreshed = threading.Event()
        self._threads = [
            self._thread(self._work, "bridge-worker"),
            self._thread(self._write, "bridge-writer"),
            self._thread(self._control, "bridge-control"),
            self._thread(self._publisher, "bridge-commands"),
            self._thread(self._ringer, "bridge-rings"),
        ]

    def _thread(self, target, name: str) -> threading.Thread:
        """A bridge thread; what the services it calls broadcast goes out through
        the live channel's loop and connection (broadcast_through)."""

        def run():
            if self.live is not None:
                broadcast_through(self.live.hand_over)
            target()

        return threading.Thread(target=run, name=name, daemon=True)

    def room(self, name: str) -> Room:
        """The room called `name` (KeyError when there is none)."""
        for room in self.dispatcher.rooms:
            if room.name == name:
                return room
        raise KeyError(name)

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
        self.release_leases()
        if self.live is not None:
            self.live.stop()

    def wake(self) -> None:
        """Run the publish sweep now (the doorbell does this from the channel layer)."""
        self._sweep_asked = True
        self._wake.set()

    def stats(self) -> dict:
        out = dict(self.dispatcher.counters)
        out.update(
            inbox=self.inbox.qsize(),
            flushes=self.flushes,
            published=0,
            db_errors=self.db_errors,
            busy={k: round(v, 2) for k, v in self.busy.items()},
            devices=len(self.dispatcher.directory.by_pk),
            connections={
                pk: c.connected.is_set() for pk, c in self.connections.items()
            },
            leased=sorted(self.leased),
            broker_faults={
                pk: dict(c.counters) for pk, c in self.connections.items() if c.counters
            },
        )
        for room in self.dispatcher.rooms:
            for key, value in room.stats().items():
                out[key] = out.get(key, 0) + value
        if self.live is not None:
            out["live"] = dict(self.live.counters, **self.live.delays())
        return out
