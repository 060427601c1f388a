"""The bridge's channel-layer side, on its own asyncio loop in a thread.

- Broadcasts: pool updates arrive from the worker as snapshots; each pool is sent at
  once if it was quiet for `window` seconds, otherwise once at the end of the window
  with the newest snapshot (a leading+trailing throttle: low latency for a device
  reporting now and then, bounded sends for a chatty one).
- Watched groups: group_send costs Redis round trips even for an empty group
  (FACTS.md: ~2,000/s), so the bridge reads which pool and tenant groups a page
  watches from our own registry (poolsaas.live.watch, every `watch_interval`) and
  skips the others; pages also announce a group on BRIDGES_GROUP the moment they join
  it, so it is sent to from its first update. A page that opens reads the state from
  the database and gets live updates from then on.
- Doorbell: receives on poolsaas.live.groups.DOORBELL (one bridge takes each ring)
  and, in DOORBELL_GROUP, on a channel of its own (every bridge hears it), and hands
  each ring to the bridge (new commands, whole; "config.publish" for a pool whose
  configuration changed; a removed device's retained topics to clear). Its loop also
  carries `send_now`: a device's answer to a command, ahead of every broadcast.
"""

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable

from channels.layers import (
    DEFAULT_CHANNEL_LAYER,
    InMemoryChannelLayer,
    channel_layers,
    get_channel_layer,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from poolsaas.live import watch
from poolsaas.live.groups import BRIDGES_GROUP

logger = logging.getLogger(__name__)

# Seconds between two joins of the doorbell group (well under its expiry).
GROUP_REJOIN = 600.0


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


class LiveChannel:
    def __init__(
        self,
        *,
        doorbell: str | None,
        on_doorbell: Callable[[dict], None],
        doorbell_group: str | None = None,
        window: float = 0.25,
        watch_interval: float = 1.0,
    ) -> None:
        self.doorbell = doorbell
        self.doorbell_group = doorbell_group
        self.on_doorbell = on_doorbell
        # Set once the doorbell listens (its channel is in doorbell_group).
        self.doorbell_ready = threading.Event()
        # Join doorbell_group again at the next receive (Redis was away).
        self._rejoin = False
        self.window = window
        self.watch_interval = watch_interval
        self.loop = asyncio.new_event_loop()
        self.layer = None
        self.watched: set[str] | None = None  # None: unknown, send to every group
        self.counters = {"sent": 0, "skipped": 0, "merged": 0, "failed": 0}
        self._last: dict[tuple[str, str | None], float] = {}
        self._delays: collections.deque = collections.deque(maxlen=2000)
        self._pending: dict[tuple[str, str | None], dict] = {}
        self._announced: dict[str, float] = {}
        # Groups that became watched since the worker last asked: their pools'
        # current state is sent once, so that an update skipped while the bridge did
        # not know of the page yet is not lost to it.
        self._fresh: collections.deque = collections.deque(maxlen=10_000)
        self._queue: asyncio.Queue | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="bridge-live", daemon=True
        )
        self._tasks: list[asyncio.Task] = []
        self._doorbell_thread = threading.Thread(
            target=self._run_doorbell, name="bridge-doorbell", daemon=True
        )
        self._doorbell_loop: asyncio.AbstractEventLoop | None = None
        self._doorbell_layer = None
        self._doorbell_task: asyncio.Task | None = None

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)

    def stop(self) -> None:
        if not self.loop.is_running():
            return

        def cancel():
            for task in self._tasks:
                task.cancel()

        self.loop.call_soon_threadsafe(cancel)
        self._thread.join(3)
        doorbell_loop, task = self._doorbell_loop, self._doorbell_task
        if (
            doorbell_loop is not None
            and task is not None
            and doorbell_loop.is_running()
        ):
            doorbell_loop.call_soon_threadsafe(task.cancel)
            self._doorbell_thread.join(3)

    def send_many(self, messages: list[tuple[str, dict]]) -> None:
        """Thread-safe: queue (group, message) pairs for sending."""
        if messages and self._queue is not None:
            self.loop.call_soon_threadsafe(
                self._queue.put_nowait, (time.monotonic(), messages)
            )

    def delays(self) -> dict:
        """Handed over by the worker -> group_send done, recent p50/p99 in ms."""
        recent = sorted(self._delays)
        if not recent:
            return {}
        return {
            "p50_ms": round(recent[len(recent) // 2] * 1000, 1),
            "p99_ms": round(recent[int(len(recent) * 0.99)] * 1000, 1),
        }

    def send_events(self, messages: list[tuple[str, dict]]) -> None:
        """Thread-safe: send each message (no merging: events are all distinct)."""
        if messages and self._queue is not None:
            self.loop.call_soon_threadsafe(self._send_all, messages)

    def hand_over(self, messages: list[tuple[str, dict]]) -> None:
        """send_events for other code's broadcasts (groups.broadcast_through):
        RuntimeError when the loop does not run, so that the caller sends them
        itself rather than lose them."""
        if self._queue is None or not self.loop.is_running():
            raise RuntimeError("the live channel is not running")
        self.send_events(messages)

    def send_now(self, messages: list[tuple[str, dict]]) -> None:
        """Thread-safe: send each message ahead of every queued broadcast, on the
        doorbell's own loop and Redis connection (a device's answer to a command must
        not wait behind thousands of state updates). Falls back to send_events where
        there is no doorbell (an in-memory layer)."""
        loop, layer = self._doorbell_loop, self._doorbell_layer
        if not messages:
            return
        if loop is None or layer is None or not loop.is_running():
            self.send_events(messages)
            return

        def start():
            for group, message in messages:
                loop.create_task(self._urgent(layer, group, message))

        loop.call_soon_threadsafe(start)

    async def _urgent(self, layer, group: str, message: dict) -> None:
        try:
            await layer.group_send(group, message)
            self.counters["sent"] += 1
        except Exception:  # noqa: BLE001 - the write path says it again
            self.counters["failed"] += 1
            logger.debug("urgent group_send to %s failed", group, exc_info=True)

    def _send_all(self, messages: list[tuple[str, dict]]) -> None:
        for group, message in messages:
            self._send(group, message)

    # --- the loop --------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            try:
                self.loop.run_until_complete(self._close_layer())
            except Exception:  # noqa: BLE001, S110 - shutting down
                pass
            self.loop.close()

    async def _close_layer(self) -> None:
        close = getattr(self.layer, "close_pools", None)
        if close is not None:
            await close()

    async def _main(self) -> None:
        self.layer = get_channel_layer()
        self._queue = asyncio.Queue()
        # FACTS.md: ~50 group_sends in flight is where channels-redis peaks.
        self._inflight = asyncio.Semaphore(50)
        self._batch: list[tuple[str, dict, float | None]] = []
        self._many = getattr(self.layer, "group_send_many", None)
        self._ready.set()
        if self.layer is None:
            return
        self._tasks = [
            asyncio.ensure_future(self._sender()),
            asyncio.ensure_future(self._watcher()),
        ]
        registry = watch.registry()
        registry.listeners.append(self._heard_of)
        if self._shared_layer():
            self._tasks.append(asyncio.ensure_future(self._watch_notices()))
            if self.doorbell:
                self._doorbell_thread.start()
        try:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            registry.listeners.remove(self._heard_of)

    def _shared_layer(self) -> bool:
        """A layer other processes share (not the in-memory one, whose every
        instance is an island: the doorbell's own layer would hear nothing)."""
        return not isinstance(self.layer, InMemoryChannelLayer)

    def _heard_of(self, group: str) -> None:
        """A group registered in this process (the in-memory registry calls it from
        the web side's threads): watched from now on."""
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self._mark_watched, group)

    def _mark_watched(self, group: str) -> None:
        self._announced[group] = time.monotonic()
        watched = self.watched
        if watched is not None:
            if group not in watched:
                self._fresh.append(group)
            watched.add(group)

    def newly_watched(self) -> set[str]:
        """Groups that became watched since the last call (the worker thread)."""
        fresh = set()
        while self._fresh:
            try:
                fresh.add(self._fresh.popleft())
            except IndexError:
                break
        return fresh

    def _run_doorbell(self) -> None:
        """The doorbell on a loop and a layer of its own: on the sender's loop it
        waited behind every broadcast, which delayed commands by up to 300 ms."""
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        self._doorbell_layer = layer
        self._doorbell_loop = loop
        task = loop.create_task(self._doorbell(layer))
        try:
            loop.run_until_complete(task)
        except asyncio.CancelledError:
            pass
        finally:
            close = getattr(layer, "close_pools", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(close())
            loop.close()

    async def _doorbell(self, layer) -> None:
        self._doorbell_task = asyncio.current_task()
        listeners = [self._rings(lambda: layer.receive(self.doorbell))]
        if self.doorbell_group:
            listeners.append(self._group_rings(layer))
        else:
            self.doorbell_ready.set()
        # All of them to the end (return_exceptions), so the group is left cleanly.
        await asyncio.gather(*listeners, return_exceptions=True)

    async def _group_rings(self, layer) -> None:
        """Rings to every bridge: on a channel of this bridge's in doorbell_group,
        joined again every GROUP_REJOIN seconds (channels-redis forgets a group
        membership after its group_expiry, a day by default)."""
        channel = await layer.new_channel("bridge-doorbell.")
        joined = None
        try:
            while joined is None:
                try:
                    await layer.group_add(self.doorbell_group, channel)
                    joined = time.monotonic()
                except Exception:  # noqa: BLE001 - Redis away: try again
                    logger.warning("cannot join the doorbell group", exc_info=True)
                    await asyncio.sleep(1)
            logger.info("bridge doorbell listening on %s", self.doorbell_group)
            self.doorbell_ready.set()

            waiting: asyncio.Future | None = None

            async def receive():
                nonlocal joined, waiting
                # Also after Redis was away: a restarted Redis has forgotten the
                # group, and rings would go nowhere until the next rejoin.
                if self._rejoin or time.monotonic() - joined > GROUP_REJOIN:
                    await layer.group_add(self.doorbell_group, channel)
                    joined, self._rejoin = time.monotonic(), False
                # Waited for, never cancelled while idle: the pub/sub layer forgets a
                # channel whose receive is cancelled (poolsaas/live/layer.py).
                if waiting is None:
                    waiting = asyncio.ensure_future(layer.receive(channel))
                    # Read even when nobody awaits it any more (the bridge stopping
                    # closes the connection under it): no "exception never retrieved".
                    waiting.add_done_callback(_retrieve)
                done, _ = await asyncio.wait({waiting}, timeout=GROUP_REJOIN)
                if not done:
                    raise RedisTimeoutError
                task, waiting = waiting, None
                return task.result()

            await self._rings(receive)
        finally:
            # Leaving: rings must not pile up on a channel nobody reads.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    layer.group_discard(self.doorbell_group, channel), 2
                )

    async def _rings(self, receive: Callable) -> None:
        """Hand every message `receive()` gets to the bridge, for as long as it runs."""
        while True:
            try:
                message = await receive()
                self.on_doorbell(message)
            except asyncio.CancelledError:
                raise
            except RedisTimeoutError:
                continue  # an idle blocking pop; nothing wrong
            except Exception:  # noqa: BLE001 - Redis away: the DB sweep carries on
                self._rejoin = True
                logger.warning("doorbell receive failed; retrying", exc_info=True)
                await asyncio.sleep(1)

    async def _watcher(self) -> None:
        while True:
            try:
                found = await asyncio.to_thread(watch.watched_groups)
                # A group announced during the read may have been missed by it.
                now = time.monotonic()
                self._announced = {
                    g: t for g, t in self._announced.items() if now - t < 5
                }
                previous, self.watched = self.watched, found | set(self._announced)
                if previous is not None:
                    self._fresh.extend(self.watched - previous)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - unknown: fall back to sending all
                self.watched = None
                logger.warning("cannot list watched groups", exc_info=True)
            await asyncio.sleep(self.watch_interval)

    async def _watch_notices(self) -> None:
        """Pages announce the groups they join (poolsaas.live.groups.watch_announce),
        so a pool is sent to from its first update, not after the next read."""
        channel = await self.layer.new_channel("bridge-watch.")
        await self.layer.group_add(BRIDGES_GROUP, channel)
        while True:
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except RedisTimeoutError:
                continue
            except Exception:  # noqa: BLE001 - Redis away: the scan carries on
                logger.warning("watch notice receive failed; retrying", exc_info=True)
                await asyncio.sleep(1)
                continue
            group = message.get("group")
            if isinstance(group, str):
                self._mark_watched(group)

    async def _sender(self) -> None:
        while True:
            queued_at, batch = await self._queue.get()
            now = time.monotonic()
            for group, message in batch:
                # Merge only updates of the same pool: a tenant's overview group
                # carries every pool of the tenant, and each must get through.
                key = (group, message.get("pool"))
                last = self._last.get(key, 0.0)
                if now - last >= self.window and key not in self._pending:
                    self._last[key] = now
                    self._send(group, message, queued_at)
                else:
                    if key in self._pending:
                        self.counters["merged"] += 1
                    else:
                        delay = max(0.0, last + self.window - now)
                        self.loop.call_later(delay, self._flush_pending, key)
                    self._pending[key] = message
            if len(self._last) > 50000:
                cutoff = now - self.window
                self._last = {k: t for k, t in self._last.items() if t > cutoff}

    def _flush_pending(self, key: tuple[str, str | None]) -> None:
        message = self._pending.pop(key, None)
        if message is not None:
            self._last[key] = time.monotonic()
            self._send(key[0], message)

    def _send(self, group: str, message: dict, queued_at: float | None = None) -> None:
        watched = self.watched
        if watched is not None and group not in watched:
            self.counters["skipped"] += 1
            return
        if self._many is None:
            asyncio.ensure_future(self._group_send(group, message, queued_at))
            return
        # A layer that pipelines (poolsaas.live.layer): every send of this turn of
        # the loop goes out in one round trip.
        if not self._batch:
            self.loop.call_soon(self._send_batch)
        self._batch.append((group, message, queued_at))

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            asyncio.ensure_future(self._group_send_many(batch))

    async def _group_send_many(self, batch: list) -> None:
        try:
            async with self._inflight:
                await self._many([(group, message) for group, message, _ in batch])
            self.counters["sent"] += len(batch)
            done = time.monotonic()
            for _, _, queued_at in batch:
                if queued_at is not None:
                    self._delays.append(done - queued_at)
        except Exception:  # noqa: BLE001 - live updates are best effort
            self.counters["failed"] += len(batch)
            logger.debug("group_send_many of %d failed", len(batch), exc_info=True)

    async def _group_send(
        self, group: str, message: dict, queued_at: float | None = None
    ) -> None:
        try:
            async with self._inflight:
                await self.layer.group_send(group, message)
            self.counters["sent"] += 1
            if queued_at is not None:
                self._delays.append(time.monotonic() - queued_at)
        except Exception:  # noqa: BLE001 - live updates are best effort
            self.counters["failed"] += 1
            logger.debug("group_send to %s failed", group, exc_info=True)
