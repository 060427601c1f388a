"""API benchmark: concurrent clients -> an ASGI server -> Django REST API -> PostgreSQL.

    .venv/bin/python bench/api.py [--rate 200] [--duration 10] [--clients 16]
        [--server daphne[,uvicorn,granian,hypercorn]] [--db-pool]

Loopback only and bounded (about two minutes a server): the server (daphne unless
--server names others; each named one is measured in turn, the whole set of runs
below, in the same run) serves poolsaas.asgi on a free 127.0.0.1 port, with its own
database (default postgres://postgres@127.0.0.1:5432/poolsaas_bench_api, created when
missing; set BENCH_DATABASE_URL to change it) and its own tenant, pools and devices,
removed at the end. Throttle buckets live in Redis (BENCH_REDIS_URL, default db 13)
with limits raised out of the way, so the figures include the bucket round trips but
no 429s.

Scenarios (each request carries a logged-in owner's bearer token):
  1. pool list      GET /api/v1/pools/                 (50 pools with devices)
  2. device state   GET /api/v1/devices/{code}/state/
  3. telemetry week GET /api/v1/pools/{code}/telemetry/?start=-7d (a week of
                    one-minute samples, 10,080 rows, folded into 672 buckets in SQL)
A bare JSON view (GET /api/health: no login, no database, the same middleware and
server) is run closed-loop before and after the scenarios; each endpoint's maximum is
printed as a ratio to the mean of the two, the figure that survives a noisy machine.
Each runs open-loop at a fixed rate (requests scheduled every 1/rate s, spread over
--clients keep-alive connections); latency counts from the scheduled instant, so a
server that falls behind shows it (no coordinated omission). For the pool list and the
device state a closed-loop run then finds the maximum throughput, and when the goal
rate was out of reach, a last run shows the latency at 70 % of that maximum.
The load average is printed: other work on the machine changes the figures. With
several servers, a last table sets them side by side (docs/capacity.md, "Which
server for HTTP").

Goal on this machine: p99 < 100 ms at 200 requests/s for the pool list and the device
state, each at >= 0.5 of the bare JSON view's maximum, and a week of telemetry in
under 150 ms.
"""

import argparse
import datetime as dt
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    ASGI_SERVERS,
    AsgiServerProcess,
    ensure_database,
    free_port,
    loopback_url,
    server_environment,
)

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/poolsaas_bench_api"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"
TENANT_SLUG = "bench-api"


def pool_settings() -> dict[str, str]:
    """Django's psycopg connection pool (DB_POOL_MAX_SIZE, see settings): one pool per
    process instead of a new PostgreSQL backend per request."""
    return {"DB_POOL_MAX_SIZE": "8"}


def seed(pools: int) -> dict:
    """A tenant with an owner, `pools` pools with devices, a week of one-minute
    telemetry on the first device. Returns the codes and a token."""
    from django.db import transaction
    from django.utils import timezone

    from devices.models import Device, Pool
    from devices.services.brokers import broker_ensure_platform
    from poolsaas.api.testing import tokens_for
    from telemetry.models import TelemetrySample
    from tenants.models import Membership, Tenant, User

    cleanup()
    broker = broker_ensure_platform()
    with transaction.atomic():
        tenant = Tenant.objects.create(name="Bench API", slug=TENANT_SLUG)
        user = User.objects.filter(email="bench-api@bench.test").first()
        user = user or User.objects.create_user(email="bench-api@bench.test")
        membership = Membership.objects.create(tenant=tenant, user=user, role="owner")
        devices = []
        for i in range(pools):
            pool = Pool.objects.create(tenant=tenant, name=f"Bench pool {i:03}")
            devices.append(
                Device.objects.create(
                    tenant=tenant,
                    pool=pool,
                    broker=broker,
                    topic_prefix=f"bench-api-{tenant.code.hex[:8]}",
                    device_id=f"ESP-{i:06X}",
                    online=True,
                    last_seen_at=timezone.now(),
                    state={
                        "pump": True,
                        "valve": 1,
                        "temperature": 26.5,
                        "wifi": {"status": "connected", "rssi": -60},
                    },
                )
            )
        now = timezone.now().replace(second=0, microsecond=0)
        first = devices[0]
        TelemetrySample.objects.bulk_create(
            (
                TelemetrySample(
                    tenant=tenant,
                    device=first,
                    ts=now - dt.timedelta(minutes=m),
                    temperature=24 + (m % 120) / 60,
                    pump=(m // 60) % 3 != 0,
                    valve=1 + (m // 180) % 2,
                    rssi=-60,
                )
                for m in range(7 * 24 * 60)
            ),
            batch_size=2000,
        )
    return {
        "token": str(tokens_for(membership).access_token),
        "pool": first.pool.code.hex,
        "device": first.code.hex,
        "start": (now - dt.timedelta(days=7)).isoformat(),
        "end": (now + dt.timedelta(minutes=1)).isoformat(),
    }


def cleanup() -> None:
    from audit.models import AuditChain
    from devices.models import Device, Pool
    from telemetry.models import TelemetrySample
    from tenants.models import Tenant

    for tenant in Tenant.objects.filter(slug=TENANT_SLUG):
        TelemetrySample.objects.filter(tenant=tenant).delete()
        Device.objects.filter(tenant=tenant).delete()
        Pool.objects.filter(tenant=tenant).delete()
        # Audit events are append-only and PROTECT their tenant; the bench writes
        # none (token issued directly, reads only), so the tenant can go.
        if not tenant.audit_events.exists():
            AuditChain.objects.filter(key=tenant.code.hex).delete()
            tenant.delete()


def servers_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ASGI_SERVERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"choose from {', '.join(ASGI_SERVERS)}, not {', '.join(unknown)}"
        )
    return names


def wait_ready(port: int, token: str, servers, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for server in servers:
            if server.proc.poll() is not None:
                raise SystemExit(f"{server.server} exited before answering")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request(
                "GET", "/api/v1/tenant/", headers={"Authorization": f"Bearer {token}"}
            )
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return
            raise SystemExit(f"server answered {response.status} to the bench token")
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not come up within 30 s")


class Result:
    def __init__(self, name: str):
        self.name = name
        self.latencies: list[float] = []
        self.errors = 0
        self.elapsed = 0.0

    def p99_ms(self) -> float:
        lat = sorted(self.latencies)
        if not lat:
            return float("nan")
        return lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000

    def line(self) -> str:
        lat = sorted(self.latencies)
        if not lat:
            return f"{self.name:<34} no answers ({self.errors} errors)"
        p50 = statistics.median(lat) * 1000
        p99 = self.p99_ms()
        rate = len(lat) / self.elapsed if self.elapsed else 0
        return (
            f"{self.name:<34} {rate:8.1f} req/s   p50 {p50:7.1f} ms   "
            f"p99 {p99:7.1f} ms   max {lat[-1] * 1000:7.1f} ms   "
            f"n={len(lat)} errors={self.errors}"
        )


def run(
    *,
    name: str,
    ports: list[int],
    path: str,
    token: str,
    clients: int,
    total: int,
    rate: float | None,
    timeout: float = 10.0,
) -> Result:
    """`total` GETs of `path` over `clients` keep-alive connections; open-loop at
    `rate` requests/s, or as fast as they answer (closed loop) when rate is None."""
    result = Result(name)
    lock = threading.Lock()
    counter = iter(range(total))
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    start = time.perf_counter()

    def worker(port: int):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            scheduled = start + i / rate if rate else time.perf_counter()
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                ok = False
            done = time.perf_counter()
            with lock:
                if ok:
                    result.latencies.append(done - scheduled)
                else:
                    result.errors += 1
        conn.close()

    threads = [
        threading.Thread(target=worker, args=(ports[i % len(ports)],))
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.elapsed = time.perf_counter() - start
    return result


def measure_bare(ports: list[int], token: str, args) -> float:
    """The closed-loop maximum of GET /api/health, the cheapest JSON view on the
    same server stack (same processes, middleware, client): the baseline each
    endpoint's maximum is divided by, measured in the same run."""
    result = run(
        name="bare JSON view, max (closed loop)",
        ports=ports,
        path="/api/health",
        token=token,
        clients=args.clients,
        total=int(400 * args.duration),
        rate=None,
    )
    print(result.line(), flush=True)
    if result.errors or not result.latencies:
        raise SystemExit("the bare JSON view failed")
    return len(result.latencies) / result.elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--pools", type=int, default=50)
    parser.add_argument("--telemetry-rate", type=float, default=20.0)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="daphne processes, each on its own port; clients spread over them as "
        "a load balancer would",
    )
    parser.add_argument(
        "--server",
        type=servers_list,
        default=["daphne"],
        help="the ASGI server(s), comma-separated, each measured in turn in the "
        f"same run (one of {', '.join(ASGI_SERVERS)}; default daphne)",
    )
    parser.add_argument(
        "--db-pool",
        action="store_true",
        help="use Django's psycopg connection pool (needs psycopg-pool installed)",
    )
    args = parser.parse_args()
    args.workers = max(1, min(args.workers, 4))
    args.duration = min(args.duration, 30.0)  # bounded, whatever is asked

    db_url = loopback_url(os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB), "database")
    if not db_url.startswith("postgres"):
        raise SystemExit("The API benchmark runs on PostgreSQL.")
    redis_url = loopback_url(os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS), "Redis")
    env = server_environment(db_url, redis_url, cache_prefix="bench-api")
    if args.db_pool:
        env.update(pool_settings())
    os.environ.update(env)
    ensure_database(db_url)

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.core.cache import cache

    cache.clear()
    fixture = seed(args.pools)
    from django.db import connections

    connections.close_all()
    summaries = []
    try:
        for server in args.server:
            summaries.append(measure_server(server, env, fixture, args, db_url))
    finally:
        cleanup()
    if len(summaries) > 1:
        first = summaries[0]
        print(f"\nservers side by side (maxima relative to {first['server']}'s):")
        for summary in summaries:
            print(
                f"  {summary['server']:<10} bare {summary['bare']:7.1f} req/s "
                f"({summary['bare'] / first['bare']:.2f})"
                + "".join(
                    f"   {name} {value:6.1f} req/s "
                    f"({value / first['maxima'][name]:.2f}, "
                    f"ratio {value / summary['bare']:.2f}, "
                    f"p99@{args.rate:.0f}/s {summary['p99'][name]:.0f} ms)"
                    for name, value in summary["maxima"].items()
                )
            )


def measure_server(server: str, env: dict, fixture: dict, args, db_url: str) -> dict:
    """Every scenario and the bare view, against `server` (args.workers processes):
    the endpoints' maxima, their ratios to the bare view, p99 at the goal rate."""
    ports = [free_port() for _ in range(args.workers)]
    server_log = tempfile.TemporaryFile()
    servers = [
        AsgiServerProcess(env, port, server, stderr=server_log) for port in ports
    ]
    port = ports[0]
    results = []
    try:
        for each in ports:
            wait_ready(each, fixture["token"], servers)
        token = fixture["token"]
        scenarios = [
            ("pool list", "/api/v1/pools/", args.rate),
            ("device state", f"/api/v1/devices/{fixture['device']}/state/", args.rate),
            (
                "telemetry week (672 buckets)",
                f"/api/v1/pools/{fixture['pool']}/telemetry/?start="
                f"{fixture['start'].replace('+', '%2B')}&end="
                f"{fixture['end'].replace('+', '%2B')}",
                args.telemetry_rate,
            ),
        ]
        # Sanity: the telemetry answer really is a week in buckets.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(
            "GET", scenarios[2][1], headers={"Authorization": f"Bearer {token}"}
        )
        body = json.loads(conn.getresponse().read())
        conn.close()
        samples = sum(b["samples"] for b in body["buckets"])
        print(
            f"\n== {server}\ntelemetry check: {len(body['buckets'])} buckets of "
            f"{body['resolution']} s, {samples} samples"
        )
        for name, path, _ in scenarios:  # warm up connections and caches
            run(
                name=name,
                ports=ports,
                path=path,
                token=token,
                clients=4,
                total=40,
                rate=None,
            )
        print(
            f"{args.workers} {server} process(es) on 127.0.0.1, PostgreSQL "
            f"{urlparse(db_url).path[1:]}"
            f"{' with a connection pool' if args.db_pool else ''}, "
            f"{args.clients} clients, open loop for {args.duration:.0f} s each; "
            f"load average before: {load_average()}"
        )
        bare = [measure_bare(ports, token, args)]
        maxima = {}
        p99 = {}
        for name, path, rate in scenarios:
            result = run(
                name=f"{name} @ {rate:.0f}/s",
                ports=ports,
                path=path,
                token=token,
                clients=args.clients if rate >= 50 else 4,
                total=int(rate * args.duration),
                rate=rate,
            )
            results.append(result)
            print(result.line(), flush=True)
            if rate < 50:
                continue
            p99[name] = result.p99_ms()
            # What this machine sustains right now: the closed-loop maximum, then
            # the latency at 70 % of it (when the goal rate was out of reach).
            ceiling = run(
                name=f"{name}, max (closed loop)",
                ports=ports,
                path=path,
                token=token,
                clients=args.clients,
                total=int(min(rate * 1.5, 400) * args.duration),
                rate=None,
            )
            results.append(ceiling)
            print(ceiling.line(), flush=True)
            achieved = len(result.latencies) / result.elapsed if result.elapsed else 0
            maximum = len(ceiling.latencies) / ceiling.elapsed if ceiling.elapsed else 0
            maxima[name] = maximum
            if achieved < rate * 0.9 and maximum:
                sustained = round(maximum * 0.7)
                result = run(
                    name=f"{name} @ {sustained}/s (70 % of max)",
                    ports=ports,
                    path=path,
                    token=token,
                    clients=args.clients,
                    total=int(sustained * args.duration),
                    rate=sustained,
                )
                results.append(result)
                print(result.line(), flush=True)
        bare.append(measure_bare(ports, token, args))
        baseline = statistics.mean(bare)
        print(
            f"{server}: bare JSON view max: {bare[0]:.1f} req/s before, "
            f"{bare[1]:.1f} after; ratio to their mean {baseline:.1f} (goal >= 0.5), "
            f"p99 at {args.rate:.0f} req/s offered (goal <= 100 ms):"
        )
        for name, maximum in maxima.items():
            print(f"  {name:<14} {maximum / baseline:.2f}   p99 {p99[name]:.0f} ms")
        print(f"load average after: {load_average()}")
    finally:
        for each in servers:
            each.stop()
    if any(r.errors for r in results):
        server_log.seek(0)
        sys.stderr.write(server_log.read()[-4000:].decode(errors="replace"))
        raise SystemExit(f"some requests to {server} failed")
    return {"server": server, "bare": baseline, "maxima": maxima, "p99": p99}


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
