"""The live gateway sockets of each user, for the cap GATEWAY_MAX_SOCKETS_PER_USER.

A socket holds a *slot*: its user's client id (hashed, `consumer.client_group`), so
a reconnect with the same client id takes over its own slot instead of needing a
second one (the newer socket wins, as in MQTT). The slot records which socket owns
it; only the owner refreshes or frees it.

- With Redis (REDIS_URL set), shared by every web process: per user a sorted set
  `gateway:sockets:<user hex>` (member = slot, score = the Redis time until which it
  counts) and a hash `gateway:owners:<user hex>` (slot -> channel name). Each socket
  refreshes its slot every GATEWAY_HEARTBEAT_SECONDS; a slot not refreshed for
  GATEWAY_SOCKET_TTL seconds (its web process crashed) stops counting. Claims are one
  Lua script, so two processes cannot both take the last slot, and use Redis's clock,
  so the processes' clocks do not matter.
- Without (one process), the same in memory.

The functions block (Redis round trips): the consumer calls them in a thread.
"""

from __future__ import annotations

import functools
import logging
import threading
import time

from django.conf import settings

logger = logging.getLogger(__name__)

KEY_PREFIX = "gateway:"

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[3])
"""
_HOLD = """
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 1)
redis.call('EXPIRE', KEYS[2], math.ceil(ttl) + 1)
return 1
"""
# KEYS: sockets, owners; ARGV: slot, channel, ttl, cap
_CLAIM = (
    _NOW
    + """
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, slot in ipairs(stale) do
  redis.call('ZREM', KEYS[1], slot)
  redis.call('HDEL', KEYS[2], slot)
end
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
"""
    + _HOLD
)
# KEYS: sockets, owners; ARGV: slot, channel, ttl
_REFRESH = (
    _NOW
    + """
local owner = redis.call('HGET', KEYS[2], ARGV[1])
if owner and owner ~= ARGV[2] then
  return 0
end
"""
    + _HOLD
)
# KEYS: sockets, owners; ARGV: slot, channel
_RELEASE = """
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"""
# KEYS: sockets
_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return redis.call('ZCOUNT', KEYS[1], now, '+inf')
"""


def ttl() -> float:
    return float(getattr(settings, "GATEWAY_SOCKET_TTL", 60))


def heartbeat() -> float:
    return float(getattr(settings, "GATEWAY_HEARTBEAT_SECONDS", 20))


class MemorySockets:
    """One process's slots (without Redis the web process is the only one)."""

    def __init__(self) -> None:
        # user hex -> slot -> (channel, monotonic time until which it counts)
        self._slots: dict[str, dict[str, tuple[str, float]]] = {}
        self._lock = threading.Lock()

    def _live(self, user: str, now: float) -> dict[str, tuple[str, float]]:
        slots = {s: v for s, v in self._slots.get(user, {}).items() if v[1] > now}
        self._slots[user] = slots
        return slots

    def claim(self, user: str, slot: str, channel: str, *, cap: int, ttl: float):
        now = time.monotonic()
        with self._lock:
            slots = self._live(user, now)
            if slot not in slots and len(slots) >= cap:
                return False
            slots[slot] = (channel, now + ttl)
            return True

    def refresh(self, user: str, slot: str, channel: str, *, ttl: float) -> bool:
        now = time.monotonic()
        with self._lock:
            slots = self._live(user, now)
            owner = slots.get(slot, (channel, 0.0))[0]
            if owner != channel:
                return False
            slots[slot] = (channel, now + ttl)
            return True

    def release(self, user: str, slot: str, channel: str) -> None:
        with self._lock:
            slots = self._slots.get(user, {})
            if slots.get(slot, ("", 0.0))[0] == channel:
                del slots[slot]
            if not slots:
                self._slots.pop(user, None)

    def count(self, user: str) -> int:
        with self._lock:
            return len(self._live(user, time.monotonic()))


class RedisSockets:
    """The slots of every web process, in keys of our own."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._claim = self.client.register_script(_CLAIM)
        self._refresh = self.client.register_script(_REFRESH)
        self._release = self.client.register_script(_RELEASE)
        self._count = self.client.register_script(_COUNT)

    @staticmethod
    def keys(user: str) -> list[str]:
        return [f"{KEY_PREFIX}sockets:{user}", f"{KEY_PREFIX}owners:{user}"]

    def claim(self, user: str, slot: str, channel: str, *, cap: int, ttl: float):
        return bool(self._claim(self.keys(user), [slot, channel, ttl, cap]))

    def refresh(self, user: str, slot: str, channel: str, *, ttl: float) -> bool:
        return bool(self._refresh(self.keys(user), [slot, channel, ttl]))

    def release(self, user: str, slot: str, channel: str) -> None:
        self._release(self.keys(user), [slot, channel])

    def count(self, user: str) -> int:
        return int(self._count(self.keys(user)[:1]))


@functools.cache
def _registry_for(url: str) -> MemorySockets | RedisSockets:
    return RedisSockets(url) if url else MemorySockets()


def registry() -> MemorySockets | RedisSockets:
    """The registry of this process: Redis when REDIS_URL is set."""
    return _registry_for(getattr(settings, "REDIS_URL", "") or "")


def socket_claim(*, user: str, slot: str, channel: str, cap: int) -> bool:
    """Take `slot` for `channel` if the user has fewer than `cap` live slots (or
    holds this one already). Redis away: the socket is let in, and it says so."""
    try:
        return registry().claim(user, slot, channel, cap=cap, ttl=ttl())
    except Exception:  # noqa: BLE001 - the cap is a guard, not a gate to lock on
        logger.warning("gateway: socket cap not checked (Redis away)", exc_info=True)
        return True


def socket_refresh(*, user: str, slot: str, channel: str) -> bool:
    """Keep the slot counted; False when another socket owns it now."""
    try:
        return registry().refresh(user, slot, channel, ttl=ttl())
    except Exception:  # noqa: BLE001 - the next heartbeat tries again
        logger.warning("gateway: socket slot not refreshed", exc_info=True)
        return True


def socket_release(*, user: str, slot: str, channel: str) -> None:
    """Free the slot if `channel` still owns it (a crash frees it by expiry)."""
    try:
        registry().release(user, slot, channel)
    except Exception:  # noqa: BLE001 - it expires on its own
        logger.warning("gateway: socket slot not released", exc_info=True)
