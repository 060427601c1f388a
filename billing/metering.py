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

import atexit
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from operator import attrgetter, itemgetter

from django.conf import settings

logger = logging.getLogger(__name__)

PREFIX = "usage:"
# Buckets expire on their own if no roll-up ever runs (a week).
BUCKET_TTL = 7 * 24 * 3600

MESSAGES_IN = "messages_in"
# Of messages_in, those dropped because the tenant was over its message quota.
MESSAGES_DROPPED = "messages_dropped"
API_CALLS = "api_calls"
SAMPLES_STORED = "samples_stored"
# The MQTT gateway (gateway/usage.py): started minutes of its sockets, and PUBLISH
# packets to and from its clients.
GATEWAY_SOCKET_MINUTES = "socket_minutes:gateway"
GATEWAY_MESSAGES = "gateway_messages"
# The dashboard's JSON sockets (devices/consumers): started minutes, counted with the
# gateway's pure counting (gateway/usage.py).
DASHBOARD_SOCKET_MINUTES = "socket_minutes:dashboard"
# Bytes of OTA chunks (header included) the bridges served (ota.mqtt).
OTA_BYTES = "ota_bytes"
# A gauge, not a counter: devices heard from since midnight UTC, one row per day,
# taken from the devices' last_seen_at by the roll-up (nothing on the hot path).
ACTIVE_DEVICES = "active_devices"
GAUGES = (ACTIVE_DEVICES,)
COMMAND_SOURCES = ("page", "api", "websocket", "gateway", "scheduler")
# Command.source as the services store it -> the source metered.
_COMMAND_SOURCE = {"web": "page"}

# Tenant ids over their monthly message quota, written by the roll-up, read by the
# bridges every refresh: "1,5,9". Expires if the roll-up stops (then nobody is
# refused: enforcement fails open, metering does not stop).
OVER_QUOTA_KEY = "billing:over_quota"
OVER_QUOTA_TTL = 3600


def commands_out(source: str) -> str:
    source = _COMMAND_SOURCE.get(source, source)
    if source not in COMMAND_SOURCES:
        source = "other"
    return f"commands_out:{source}"


_client = None


def client():
    """The Redis client of metering, or None when metering is off."""
    global _client
    if not settings.REDIS_URL or not settings.USAGE_METERING:
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


_device_of = itemgetter(0)
_tenant_of = attrgetter("tenant_id")


def samples_metered(*, samples: Iterable[tuple], dropped: Mapping[int, int]) -> None:
    """Count a written batch of history samples, (device, ts, ...) tuples, per tenant,
    leaving out the devices whose rows the database refused."""
    if dropped:
        samples = [s for s in samples if s[0].pk not in dropped]
    # Counted in C (Counter over map): no Python step per sample on the writer's
    # path in the usual case, a batch without refused rows.
    stored = Counter(map(_tenant_of, map(_device_of, samples)))
    add_many({(tenant, SAMPLES_STORED): n for tenant, n in stored.items()})


def over_quota() -> frozenset[int]:
    """The tenants over their message quota (the roll-up's snapshot). Never raises:
    with Redis away nobody is refused."""
    r = client()
    if r is None:
        return frozenset()
    try:
        raw = r.get(OVER_QUOTA_KEY)
    except Exception:  # noqa: BLE001
        logger.warning("over-quota snapshot unreadable (Redis away)")
        return frozenset()
    if not raw:
        return frozenset()
    return frozenset(int(x) for x in raw.decode().split(",") if x)


def over_quota_publish(tenant_ids: Iterable[int]) -> None:
    r = client()
    if r is not None:
        value = ",".join(str(t) for t in sorted(set(tenant_ids)))
        r.set(OVER_QUOTA_KEY, value, ex=OVER_QUOTA_TTL)


class Batcher:
    """Counts added in memory and handed to Redis in one round trip at most every
    `interval` seconds, by a daemon thread (and at exit): for paths that run per
    request in many threads, such as API calls."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._counts: Counter = Counter()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def add(self, tenant_id: int, kind: str, n: int = 1) -> None:
        with self._lock:
            self._counts[(tenant_id, kind)] += n
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="usage-batcher", daemon=True
                )
                self._thread.start()
                atexit.register(self.flush)

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, Counter()
        if counts:
            add_many(counts)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()


batcher = Batcher()


def api_call(tenant_id: int) -> None:
    """One API request of a tenant (batched, see Batcher)."""
    batcher.add(tenant_id, API_CALLS)


def command_sent(tenant_id: int, source: str) -> None:
    """One command stored to go out to a device, by source (page, api, ...)."""
    add(tenant_id, commands_out(source))
