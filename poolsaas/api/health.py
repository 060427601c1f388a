"""What load balancers, Kubernetes and Prometheus ask the web process
(docs/operations.md).

- GET /api/health: liveness. No authentication, no database, no throttle: it says
  the web process answers. It is also the baseline of bench/api.py, the cheapest JSON
  view the same server stack can serve.
- GET /api/ready: readiness. The database and Redis (cache, Celery) and the channel
  layer's Redis each answer within READY_TIMEOUT seconds; 503 naming what failed
  otherwise. The body names checks and error kinds only, never a host or a secret.
- GET /metrics: Prometheus text (poolsaas.metrics). With METRICS_TOKEN set, only with
  `Authorization: Bearer <token>`; without it, only from this host and not through
  a proxy.
"""

import asyncio
import hmac

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from poolsaas import metrics as poolsaas_metrics

LOOPBACK = ("127.0.0.1", "::1")


@require_GET
def health(request):
    return JsonResponse({"status": "ok"})


def _database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        # A thread of the executor, not a request: nothing else closes it.
        connection.close()


async def _redis(url: str) -> None:
    timeout = settings.READY_TIMEOUT
    client = aioredis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout
    )
    try:
        await client.ping()
    finally:
        await client.aclose()


def _layer_urls() -> list[str]:
    # Every Redis layer names its servers in `hosts` (channels-redis's core layer,
    # poolsaas.live.layer's pub/sub one); the in-memory layer has none.
    config = settings.CHANNEL_LAYERS.get("default", {})
    urls = []
    for host in config.get("CONFIG", {}).get("hosts", []):
        address = host.get("address") if isinstance(host, dict) else host
        if isinstance(address, str):
            urls.append(address)
    return urls


async def _check(name: str, check) -> tuple[str, str]:
    try:
        await asyncio.wait_for(check, settings.READY_TIMEOUT)
    except TimeoutError:
        return name, "timeout"
    except Exception as exc:  # noqa: BLE001 - reported by kind, never by its text
        return name, f"unreachable ({type(exc).__name__})"
    return name, "ok"


async def ready(request):
    if request.method != "GET":
        return JsonResponse({"detail": "Method not allowed."}, status=405)
    checks = [_check("database", sync_to_async(_database, thread_sensitive=False)())]
    if settings.REDIS_URL:
        checks.append(_check("redis", _redis(settings.REDIS_URL)))
    for index, url in enumerate(_layer_urls()):
        suffix = "" if index == 0 else f"_{index + 1}"
        checks.append(_check(f"channel_layer{suffix}", _redis(url)))
    results = dict(await asyncio.gather(*checks))
    failed = sorted(name for name, state in results.items() if state != "ok")
    body = {"status": "ok" if not failed else "unavailable", "checks": results}
    if failed:
        body["failed"] = failed
    return JsonResponse(body, status=503 if failed else 200)


def metrics_allowed(request) -> tuple[bool, int]:
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode()), 401
    # No token: this host only, and not a request a proxy on this host forwarded.
    local = request.META.get("REMOTE_ADDR") in LOOPBACK
    return local and "HTTP_X_FORWARDED_FOR" not in request.META, 403


@require_GET
def metrics(request):
    allowed, status = metrics_allowed(request)
    if not allowed:
        response = JsonResponse(
            {"detail": "Metrics need the metrics token."}, status=status
        )
        if status == 401:
            response["WWW-Authenticate"] = "Bearer"
        return response
    body, content_type = poolsaas_metrics.exposition()
    return HttpResponse(body, content_type=content_type)
