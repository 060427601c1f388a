"""Which channel-layer groups have a page watching them: a registry of our own.

The bridge skips broadcasts to groups nobody watches (FACTS.md: a group_send costs
Redis round trips even for an empty group). It learns who watches from this registry,
never from the channel layer's own keys:

- with Redis (REDIS_URL set), one sorted set under WATCH_KEY: member = group name,
  score = the time (epoch seconds) until which it counts as watched;
- without (the in-memory layer: web and bridge in one process), a dict in memory.

A page's socket holds its group while the task that announced it runs
(`groups.watch_announce` calls `hold`); a thread of each web process touches every
held group every WATCH_REFRESH seconds, so a group stops counting WATCH_TTL seconds
after its last page closed or its web process died.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable

from django.conf import settings

logger = logging.getLogger(__name__)

WATCH_KEY = "poolsaas:watch"
WATCH_TTL = 30.0
WATCH_REFRESH = 10.0


class MemoryRegistry:
    """One process's registry (the in-memory channel layer is one process too)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()
        self.listeners: list[Callable[[str], None]] = []

    def touch(self, groups: Iterable[str], ttl: float = WATCH_TTL) -> None:
        until = time.time() + ttl
        groups = list(groups)
        with self._lock:
            for group in groups:
                self._until[group] = max(until, self._until.get(group, 0.0))
        for listener in list(self.listeners):
            for group in groups:
                listener(group)

    def watched(self) -> set[str]:
        now = time.time()
        with self._lock:
            self._until = {g: t for g, t in self._until.items() if t > now}
            return set(self._until)


class RedisRegistry:
    """The registry shared by every web process and bridge, in a key we own."""

    def __init__(self, url: str, key: str = WATCH_KEY) -> None:
        import redis

        self.key = key
        self.client = redis.Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self.listeners: list[Callable[[str], None]] = []

    def touch(self, groups: Iterable[str], ttl: float = WATCH_TTL) -> None:
        now = time.time()
        mapping = {group: now + ttl for group in groups}
        if not mapping:
            return
        with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(self.key, mapping, gt=True)
            pipe.zremrangebyscore(self.key, "-inf", now)
            # Gone altogether once no process has touched it for a while.
            pipe.expire(self.key, int(ttl * 2) + 1)
            pipe.execute()

    def watched(self) -> set[str]:
        members = self.client.zrangebyscore(self.key, time.time(), "+inf")
        return {m.decode() for m in members}


@functools.cache
def registry() -> MemoryRegistry | RedisRegistry:
    """The registry of this process (chosen once, by REDIS_URL)."""
    url = getattr(settings, "REDIS_URL", "")
    return RedisRegistry(url) if url else MemoryRegistry()


def watched_groups() -> set[str]:
    """Groups watched now (blocking: the bridge calls it from a worker thread)."""
    return registry().watched()


# --- holding groups while a page's socket is open -----------------------------------

_held: dict[str, set[asyncio.Task]] = {}
_held_lock = threading.Lock()
_refresher: threading.Thread | None = None


def _release(group: str, task: asyncio.Task) -> None:
    with _held_lock:
        tasks = _held.get(group)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del _held[group]


def _refresh_forever() -> None:
    while True:
        time.sleep(WATCH_REFRESH)
        with _held_lock:
            groups = [
                g for g, tasks in _held.items() if any(not t.done() for t in tasks)
            ]
        try:
            registry().touch(groups)
        except Exception:  # noqa: BLE001 - the next round tries again
            logger.warning("cannot refresh watched groups", exc_info=True)


def hold(group: str, task: asyncio.Task) -> None:
    """Keep `group` watched until `task` (a socket's application) ends."""
    global _refresher
    with _held_lock:
        _held.setdefault(group, set()).add(task)
        if _refresher is None:
            _refresher = threading.Thread(
                target=_refresh_forever, name="live-watch", daemon=True
            )
            _refresher.start()
    task.add_done_callback(functools.partial(_release, group))
