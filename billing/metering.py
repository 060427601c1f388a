"""Usage counters: cheap on the hot paths, rolled up into PostgreSQL by Celery beat.

Hot paths add to a Redis hash per minute bucket, `usage:<minute>`, field
`<tenant id>:<kind>` (HINCRBY, pipelined: the bridge adds a whole batch in one round
trip). The bucket is the minute of the *write* (not of the message), so a bucket is
never written once its minute has passed: a bucket older than the current minute is
closed and complete. `rollup` copies each closed bucket into UsageCounter rows with
an upsert that *sets* the value (not adds), then deletes the bucket: a roll-up that
runs twice, or on two workers at once, writes the same value twice and counts once.

Without REDIS_URL (the embedded default) metering is off. What Redis losing its data
can cost is stated in docs/billing.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from django.conf import settings

logger = logging.getLogger(__name__)

PREFIX = "usage:"
# Buckets expire on their own if no roll-up ever runs (a week).
BUCKET_TTL = 7 * 24 * 3600

MESSAGES_IN = "messages_in"
API_CALLS = "api_calls"
SAMPLES_STORED = "samples_stored"
# The MQTT gateway (gateway/usage.py): started minutes of its sockets, and PUBLISH
# packets to and from its clients.
GATEWAY_SOCKET_MINUTES = "socket_minutes:gateway"
GATEWAY_MESSAGES = "gateway_messages"
COMMAND_SOURCES = ("page", "api", "websocket", "gateway", "scheduler")


def commands_out(source: str) -> str:
    return f"commands_out:{source}"


_client = None


def client():
    """The Redis client of metering, or None when metering is off."""
    global _client
    if not settings.REDIS_URL:
        return None
    if _client is None:
        import redis

        _client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
        )
    return _client


def minute_of(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // 60)


def add_many(counts: Mapping[tuple[int, str], int], *, now: float | None = None):
    """Add {(tenant id, kind): n} to the current minute bucket in one round trip.
    Never raises: metering must not stop the path it counts (a failure is logged and
    those counts are lost, see docs/billing.md)."""
    counts = {key: n for key, n in counts.items() if n}
    r = client()
    if r is None or not counts:
        return
    key = f"{PREFIX}{minute_of(now)}"
    try:
        pipe = r.pipeline(transaction=False)
        for (tenant_id, kind), n in counts.items():
            pipe.hincrby(key, f"{tenant_id}:{kind}", n)
        pipe.expire(key, BUCKET_TTL)
        pipe.execute()
    except Exception:  # noqa: BLE001 - Redis away: counts lost, path unharmed
        logger.warning("usage counters not recorded (Redis away)", exc_info=True)


def add(tenant_id: int, kind: str, n: int = 1, *, now: float | None = None) -> None:
    add_many({(tenant_id, kind): n}, now=now)


def current(tenant_id: int, kind: str, *, now: float | None = None) -> int:
    """This minute's count so far (not yet rolled up)."""
    r = client()
    if r is None:
        return 0
    value = r.hget(f"{PREFIX}{minute_of(now)}", f"{tenant_id}:{kind}")
    return int(value or 0)
