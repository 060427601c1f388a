"""Token-bucket rate limits for the API: per anonymous address, per user, per tenant.

A bucket holds up to a minute's worth of requests and refills continuously, so a client
may burst and then settle at its rate. Buckets live in Django's cache: Redis when
REDIS_URL is set (updated by one Lua script, so concurrent web workers cannot both take
the last token), the in-process LocMem cache otherwise.
"""

import logging
import math
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)

DEFAULT_RATES = {"anon": 60, "user": 1200, "tenant": 600}

# Takes one token from each bucket in KEYS, in order, and stops at the first that has
# none (the buckets after it keep theirs), all in one round trip. ARGV: now, then a
# capacity and a refill rate per key. Returns an allowed flag and the tokens left for
# each bucket it looked at.
_LUA = """
local now = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local capacity = tonumber(ARGV[2 * i])
  local rate = tonumber(ARGV[2 * i + 1])
  local data = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(data[1])
  local ts = tonumber(data[2])
  if tokens == nil or ts == nil then
    tokens = capacity
    ts = now
  end
  tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
  local allowed = 0
  if tokens >= 1 then
    tokens = tokens - 1
    allowed = 1
  end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('EXPIRE', key, math.ceil(capacity / rate) + 1)
  table.insert(out, allowed)
  table.insert(out, tostring(tokens))
  if allowed == 0 then
    break
  end
end
return out
"""

_local_lock = threading.Lock()


@dataclass(frozen=True)
class Bucket:
    """The outcome of taking one token: what the rate headers report."""

    name: str
    limit: int  # requests per minute, also the bucket's capacity
    allowed: bool
    tokens: float

    @property
    def remaining(self) -> int:
        return max(0, math.floor(self.tokens))

    @property
    def refill_per_second(self) -> float:
        return self.limit / 60.0

    @property
    def retry_after(self) -> float:
        """Seconds until one token is back."""
        return max(0.0, (1 - self.tokens) / self.refill_per_second)

    @property
    def reset(self) -> int:
        """Seconds until the bucket is full again."""
        return math.ceil((self.limit - self.tokens) / self.refill_per_second)


_clients: dict[str, object] = {}


def _redis_client():
    """One Redis client per process for the cache's server, or None for other caches.

    Not the cache backend's own client: Django builds a backend per thread and
    request context, and one client (with its connection pool) each would leave
    connections behind until Redis refuses new clients."""
    config = settings.CACHES[DEFAULT_CACHE_ALIAS]
    if not config["BACKEND"].endswith(".RedisCache"):
        return None
    location = config["LOCATION"]
    location = location if isinstance(location, str) else location[0]
    client = _clients.get(location)
    if client is None:
        import redis

        with _local_lock:
            client = _clients.get(location)
            if client is None:
                client = _clients[location] = redis.Redis.from_url(location)
    return client


_scripts: dict[int, object] = {}


@dataclass(frozen=True)
class Want:
    """One token wanted from the bucket `key`, which holds at most `per_minute`."""

    key: str
    per_minute: int
    name: str


def buckets_take(wants: list[Want]) -> list[Bucket]:
    """Take one token from each bucket in turn, stopping at the first that is empty:
    the answer ends with that refused bucket (the later ones are not touched). With
    Redis it is one round trip, whatever the number of buckets."""
    now = time.time()
    limits = [max(1, int(want.per_minute)) for want in wants]
    keys = [cache.make_and_validate_key(f"ratelimit:{want.key}") for want in wants]
    client = _redis_client()
    if client is not None:
        script = _scripts.get(id(client))
        if script is None:
            script = _scripts[id(client)] = client.register_script(_LUA)
        args = [now]
        for limit in limits:
            args += [limit, limit / 60.0]
        try:
            flat = script(keys=keys, args=args) if keys else []
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # Redis away (a restart): this process's own buckets meanwhile, so the
            # API keeps answering, still limited (per process), instead of a 500.
            _warn_fallback(exc)
            return _take_locally(wants, limits, keys, now, _fallback_get, _fallback_set)
        return [
            Bucket(want.name, limit, bool(int(allowed)), float(tokens))
            for want, limit, allowed, tokens in zip(
                wants, limits, flat[0::2], flat[1::2], strict=False
            )
        ]
    return _take_locally(wants, limits, keys, now, cache.get, cache.set)


def _take_locally(wants, limits, keys, now, get, put) -> list[Bucket]:
    taken = []
    with _local_lock:
        for want, limit, key in zip(wants, limits, keys, strict=True):
            rate = limit / 60.0
            tokens, ts = get(key) or (float(limit), now)
            tokens = min(limit, tokens + max(0.0, now - ts) * rate)
            allowed = tokens >= 1
            if allowed:
                tokens -= 1
            put(key, (tokens, now), timeout=math.ceil(limit / rate) + 1)
            taken.append(Bucket(want.name, limit, allowed, tokens))
            if not allowed:
                break
    return taken


# The buckets of this process while Redis is away: key -> (tokens, at).
_fallback: dict[str, tuple[float, float]] = {}
_fallback_warned = [0.0]


def _fallback_get(key: str):
    return _fallback.get(key)


def _fallback_set(key: str, value, timeout: int) -> None:
    if len(_fallback) > 100_000:
        _fallback.clear()  # an outage long enough to fill it: start again
    _fallback[key] = value


def _warn_fallback(exc: Exception) -> None:
    now = time.monotonic()
    if now - _fallback_warned[0] > 10:
        _fallback_warned[0] = now
        logger.warning("rate limits: Redis away (%s); this process's buckets", exc)


def bucket_take(*, key: str, per_minute: int, name: str) -> Bucket:
    """Take one token from the bucket `key` holding at most `per_minute` tokens."""
    return buckets_take([Want(key, per_minute, name)])[0]


def configured_rate(scope: str) -> int:
    rates = getattr(settings, "REST_FRAMEWORK", {}).get("DEFAULT_THROTTLE_RATES", {})
    value = rates.get(scope)
    if value is None:
        return DEFAULT_RATES[scope]
    if isinstance(value, int):
        return value
    # DRF's "N/min" notation; only per-minute rates make sense for a bucket.
    return int(str(value).split("/")[0])


class BucketThrottle(BaseThrottle):
    """A DRF throttle backed by a token bucket; remembers its bucket on the request
    so the view can report rate headers on every answer."""

    scope = ""
    label = ""

    def bucket_key(self, request) -> str | None:
        raise NotImplementedError

    def rate(self, request) -> int:
        return configured_rate(self.scope)

    def want(self, request) -> Want | None:
        key = self.bucket_key(request)
        if key is None:
            return None
        return Want(key, self.rate(request), self.scope)

    def allow_request(self, request, view) -> bool:
        return throttles_pass([self], request) is None

    def wait(self) -> float:
        return self.bucket.retry_after

    def message(self) -> str:
        return f"{self.label} limit of {self.bucket.limit} requests/minute reached"


class AnonThrottle(BucketThrottle):
    scope = "anon"
    label = "Anonymous"

    def bucket_key(self, request):
        if request.user and request.user.is_authenticated:
            return None
        return f"anon:{request.META.get('REMOTE_ADDR', '')}"


class UserThrottle(BucketThrottle):
    scope = "user"
    label = "User"

    def bucket_key(self, request):
        if not (request.user and request.user.is_authenticated):
            return None
        return f"user:{request.user.code.hex}"


class TenantThrottle(BucketThrottle):
    """The tenant's plan decides (Plan.api_requests_per_minute); no plan, the
    configured default."""

    scope = "tenant"
    label = "Tenant"

    def bucket_key(self, request):
        membership = getattr(request, "membership", None)
        if membership is None:
            return None
        return f"tenant:{membership.tenant.code.hex}"

    def rate(self, request) -> int:
        self.plan = plan = request.membership.tenant.plan
        if plan is not None:
            return plan.api_requests_per_minute
        return configured_rate(self.scope)

    def message(self) -> str:
        plan = getattr(self, "plan", None)
        if plan is None:
            return super().message()
        from billing.limits import upgrade_path

        return (
            f"Plan limit reached: the {plan.name} plan allows "
            f"{plan.api_requests_per_minute:,} API requests per minute. "
            + upgrade_path(plan, "api_rate")
        )


def throttles_pass(throttles: list[BucketThrottle], request) -> BucketThrottle | None:
    """Take a token from each throttle's bucket (one round trip for all of them) and
    remember the buckets on the request for the rate headers; the first throttle
    that refuses, or None when all allow."""
    wanting = [(t, want) for t in throttles if (want := t.want(request)) is not None]
    taken = buckets_take([want for _, want in wanting])
    buckets = getattr(request, "rate_buckets", None)
    if buckets is None:
        buckets = request.rate_buckets = []
    buckets.extend(taken)
    for (throttle, _), bucket in zip(wanting, taken, strict=False):
        throttle.bucket = bucket
        if not bucket.allowed:
            return throttle
    return None


def rate_headers(buckets: list[Bucket]) -> dict[str, str]:
    """X-RateLimit-* for the tightest of the buckets this request used."""
    if not buckets:
        return {}
    tightest = min(buckets, key=lambda b: (b.remaining, b.limit))
    return {
        "X-RateLimit-Limit": str(tightest.limit),
        "X-RateLimit-Remaining": str(tightest.remaining),
        "X-RateLimit-Reset": str(tightest.reset),
    }
