"""Token-bucket rate limits for the API: per anonymous address, per user, per tenant.

A bucket holds up to a minute's worth of requests and refills continuously, so a client
may burst and then settle at its rate. Buckets live in Django's cache: Redis when
REDIS_URL is set (updated by one Lua script, so concurrent web workers cannot both take
the last token), the in-process LocMem cache otherwise.
"""

import math
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

DEFAULT_RATES = {"anon": 60, "user": 1200, "tenant": 600}

_LUA = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local data = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
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
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return {allowed, tostring(tokens)}
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


_clients: dict[int, object] = {}


def _redis_client():
    """The cache's Redis client, or None for other caches. Kept per cache backend:
    Django builds a new client object on every get_client() call."""
    if "redis" not in type(cache).__module__:
        return None
    backend = cache._cache
    client = _clients.get(id(backend))
    if client is None:
        client = _clients[id(backend)] = backend.get_client(None, write=True)
    return client


_scripts: dict[int, object] = {}


def bucket_take(*, key: str, per_minute: int, name: str) -> Bucket:
    """Take one token from the bucket `key` holding at most `per_minute` tokens."""
    per_minute = max(1, int(per_minute))
    rate = per_minute / 60.0
    now = time.time()
    full_key = cache.make_and_validate_key(f"ratelimit:{key}")
    client = _redis_client()
    if client is not None:
        script = _scripts.get(id(client))
        if script is None:
            script = _scripts[id(client)] = client.register_script(_LUA)
        allowed, tokens = script(keys=[full_key], args=[per_minute, rate, now])
        return Bucket(name, per_minute, bool(int(allowed)), float(tokens))
    with _local_lock:
        tokens, ts = cache.get(full_key) or (float(per_minute), now)
        tokens = min(per_minute, tokens + max(0.0, now - ts) * rate)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        cache.set(full_key, (tokens, now), timeout=math.ceil(per_minute / rate) + 1)
    return Bucket(name, per_minute, allowed, tokens)


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

    def allow_request(self, request, view) -> bool:
        key = self.bucket_key(request)
        if key is None:
            return True
        bucket = bucket_take(key=key, per_minute=self.rate(request), name=self.scope)
        buckets = getattr(request, "rate_buckets", None)
        if buckets is None:
            buckets = request.rate_buckets = []
        buckets.append(bucket)
        self.bucket = bucket
        return bucket.allowed

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
