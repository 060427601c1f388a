"""The bridge's plug-in interface: rooms, and the dispatcher that routes to them.

The bridge owns connections, threads, batching and the directory; what a topic means
belongs to the app that owns it. Each app that speaks MQTT has a room (its `mqtt.py`,
a subclass of `Room`) listed in the setting BRIDGE_ROOMS (dotted paths of callables
returning a room). A room names the topics it handles as `suffixes`: MQTT topic
filters under a device's root (`<prefix>/<device id>/`), such as "telemetry" or
"ota/#". The bridge subscribes to them on every broker and routes each message, with
its device resolved by the directory, to the one room whose filter matches.

Hooks, each called from one bridge thread (rooms need no locks of their own unless
they share state between threads; `doorbell` may be called from any thread):
  handle(message, ctx)      worker: pure, parse and collect; True when accepted
  updates(out)              worker, after each burst of messages: live broadcasts
  pending()                 worker: rows collected so far (backpressure on the inbox)
  drain()                   worker, every flush_interval: the batch for `flush`
  flush(batch, out)         writer: write the batch; raise to have it kept and retried
  merge(held, newer, out)   writer: fold a newer batch into one held for a retry
  publish(out)              publisher, every sweep_interval and when a ring asks for it
  publish_now(out)          publisher, at once after each ring: what the rings carried
  doorbell(message)         the bridges' doorbell rang (poolsaas.live.groups.DOORBELL,
                            DOORBELL_GROUP); True when publish_now alone handles it,
                            otherwise the publisher runs its sweep now
  stats()                   counters merged into the bridge's stats
  sheds(message)            worker, only for a tenant over its message quota: True
                            to drop it (default: its suffix is in `sheddable`)
  shed(message, ctx)        worker: a message dropped that way; it is counted and
                            not handled (the room may note presence)
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.utils.module_loading import import_string

from devices.bridge.directory import DeviceInfo, Directory

if TYPE_CHECKING:
    from devices.bridge.live import LiveChannel

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Message:
    """One MQTT message for a device of ours (the directory vouched for it). Not
    frozen, for speed (one per message): rooms must not change it."""

    broker_id: int
    topic: str
    device: DeviceInfo
    suffix: str  # the topic after `<prefix>/<device id>/`
    payload: bytes
    received_at: float
    # A replay of retained state (old news), not something the device said now.
    retain: bool


@dataclass(slots=True)
class Context:
    """What `handle` may use: the bridge's message counters (shown in its stats)."""

    counters: Counter


class Outbox:
    """What the bridge offers rooms outside `handle`: its brokers, publishing, the
    directory, the live channel and its counters."""

    def __init__(self, bridge) -> None:
        self._bridge = bridge

    @property
    def directory(self) -> Directory:
        return self._bridge.dispatcher.directory

    @property
    def live(self) -> LiveChannel | None:
        return self._bridge.live

    @property
    def counters(self) -> Counter:
        return self._bridge.dispatcher.counters

    @property
    def reconnect_hold(self) -> float:
        return self._bridge.reconnect_hold

    @property
    def refresh_interval(self) -> float:
        return self._bridge.refresh_interval

    @property
    def instance(self) -> str:
        """This bridge process (a new one at each start), the claimer of what it
        claims."""
        return self._bridge.instance

    def brokers(self) -> dict[int, float | None]:
        """broker id -> when this bridge's connection to it came up (None: down),
        for every broker this bridge serves."""
        return {
            pk: conn.connected_at if conn.connected.is_set() else None
            for pk, conn in list(self._bridge.connections.items())
        }

    def publish(
        self, broker_id: int, topic: str, payload: bytes, *, qos=1, retain=False
    ) -> bool:
        """False when not on the wire (no connection, or it is down)."""
        conn = self._bridge.connections.get(broker_id)
        return conn is not None and conn.publish(topic, payload, qos=qos, retain=retain)

    def db_error(self) -> None:
        """Count a database failure of a room (the bridge's `db_errors`)."""
        self._bridge.db_errors += 1


class Room:
    """Base of every room: the hooks, each doing nothing by default."""

    name: str = "room"
    suffixes: tuple[str, ...] = ()
    # Suffixes under a device's root that the bridge publishes to the device: the
    # broker's per-device ACL lets it subscribe to them (devices.services.dynsec).
    device_subscriptions: tuple[str, ...] = ()
    # Suffixes dropped for a tenant over its monthly message quota (billing): the
    # bulk of the traffic, never what commands and safety need.
    sheddable: tuple[str, ...] = ()

    def handle(self, message: Message, ctx: Context) -> bool:
        raise NotImplementedError

    def updates(self, out: Outbox) -> None:
        return None

    def pending(self) -> int:
        return 0

    def drain(self) -> Any:
        return None

    def flush(self, batch: Any, out: Outbox) -> None:
        return None

    def merge(self, held: Any, newer: Any, out: Outbox) -> Any:
        return newer

    def publish(self, out: Outbox) -> None:
        return None

    def publish_now(self, out: Outbox) -> None:
        return None

    def doorbell(self, message: dict) -> bool:
        return False

    def stats(self) -> dict[str, int]:
        return {}

    def sheds(self, message: Message) -> bool:
        return message.suffix in self.sheddable

    def shed(self, message: Message, ctx: Context) -> None:
        return None


def _matches(parts: list[str], suffix: str) -> bool:
    levels = suffix.split("/")
    for i, part in enumerate(parts):
        if part == "#":
            return True
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(levels) == len(parts)


class Dispatcher:
    """Routes a message to its device (the directory) and its room (the suffix).

    `handle(broker_id, topic, payload, received_at, retain)` never raises: a topic of
    no device of ours counts as "unauthorised", one no room handles as "malformed",
    and a room's failure as "errors"."""

    def __init__(self, *, rooms: Iterable[Room], directory: Directory | None = None):
        self.directory = directory or Directory()
        self.rooms = list(rooms)
        self.counters: Counter = Counter()
        # Accepted device messages per tenant since the last drain (billing.metering),
        # counted here, where each message is processed once per bridge.
        self.usage: Counter = Counter()
        # Of those, dropped because the tenant is over its message quota.
        self.shed: Counter = Counter()
        # Tenant ids over their message quota: a snapshot the control thread
        # refreshes (billing.metering.over_quota), never a query per message.
        self.over_quota: frozenset[int] = frozenset()
        self.ctx = Context(counters=self.counters)
        self._exact: dict[str, Room] = {}
        self._patterns: list[tuple[list[str], Room]] = []
        for room in self.rooms:
            for topic_filter in room.suffixes:
                if "+" in topic_filter or "#" in topic_filter:
                    self._patterns.append((topic_filter.split("/"), room))
                elif topic_filter in self._exact:
                    raise ValueError(f"two rooms handle {topic_filter!r}")
                else:
                    self._exact[topic_filter] = room

    def suffixes(self) -> list[str]:
        """Every topic filter under a device root that some room handles."""
        out: list[str] = []
        for room in self.rooms:
            out += [s for s in room.suffixes if s not in out]
        return out

    def room_for(self, suffix: str) -> Room | None:
        room = self._exact.get(suffix)
        if room is not None:
            return room
        for parts, room in self._patterns:
            if _matches(parts, suffix):
                return room
        return None

    def handle(
        self,
        broker_id: int,
        topic: str,
        payload: bytes,
        received_at: float,
        retain: bool = False,
    ) -> bool:
        """Route one message; False (and a counter) when it is dropped."""
        counters = self.counters
        counters["received"] += 1
        try:
            device, suffix = self.directory.lookup(broker_id, topic)
            if device is None:
                counters["unauthorised"] += 1
                return False
            room = self.room_for(suffix)
            if room is None:
                counters["malformed"] += 1
                counters[f"malformed:{suffix[:20]}"] += 1
                return False
            message = Message(
                broker_id, topic, device, suffix, payload, received_at, retain
            )
            if (
                self.over_quota
                and device.tenant_id in self.over_quota
                and room.sheds(message)
            ):
                counters["over_quota"] += 1
                self.shed[device.tenant_id] += 1
                self.usage[device.tenant_id] += 1
                room.shed(message, self.ctx)
                return False
            if not room.handle(message, self.ctx):
                return False
        except Exception:  # noqa: BLE001 - one bad message must never stop the bridge
            counters["errors"] += 1
            logger.exception("bridge failed on a message on %r", topic[:200])
            return False
        counters["accepted"] += 1
        self.usage[device.tenant_id] += 1
        return True


def room_topics() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What the rooms of settings.BRIDGE_ROOMS add to a device's own topics: the
    suffixes a device publishes and those it subscribes to (class attributes; no room
    is built)."""
    published: list[str] = []
    subscribed: list[str] = []
    for path in settings.BRIDGE_ROOMS:
        room = import_string(path)
        published += [s for s in getattr(room, "suffixes", ()) if s not in published]
        subscribed += [
            s for s in getattr(room, "device_subscriptions", ()) if s not in subscribed
        ]
    return tuple(published), tuple(subscribed)


def rooms_from_settings() -> list[Room]:
    """The rooms of settings.BRIDGE_ROOMS, each built afresh (one set per bridge)."""
    return [import_string(path)() for path in settings.BRIDGE_ROOMS]
