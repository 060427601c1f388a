"""Ingest benchmark: N simulated devices -> Mosquitto -> bridge -> PostgreSQL + Redis.

    .venv/bin/python bench/ingest.py [--devices 5000] [--rate 5000] [--duration 15]

Loopback only, bounded (about two minutes), in its own database (default
postgres://postgres@127.0.0.1:5432/poolsaas_bench, created when missing) with its own
tenant, pools and devices under a random topic prefix, all removed at the end.

Phases, each with the same load generator (raw MQTT 3.1.1 publishers in separate
processes that write pre-encoded PUBLISH packets, so that the generator costs little
CPU and the figures describe the broker and the consumer):
  1. ceiling: a bare paho subscriber (subscribe and count, nothing else) on the same
     broker, publishers at full speed;
  2. sustained: the bridge (`manage.py mqtt_bridge`, its own process) at --rate
     messages/s from --devices devices (each device every devices/rate seconds),
     measured as telemetry rows landing in PostgreSQL;
  3. latency: --latency-rate messages/s, channel-layer receivers (several processes,
     like dashboards) in --watch pool groups; each telemetry carries its send time
     (ms since the bench started, in `uptime`), so device publish -> pool.state on
     the channel layer is measured, next to the same for a bare paho subscriber.
  4. maximum: offered rates from --max-rates, each for 8 s, up to the first one the
     bridge does not keep up with (< 99 % stored, or rows still landing 2 s after
     the load); ratio vs the ceiling;
  5. with --rules: the maximum again while every device is under three alert rules
     that alerts_evaluate checks in another process, against the maximum without;
Bridge memory per device: its RSS with all devices loaded at the sustained rate minus
its RSS with no device, divided by the number of devices (the peak while overloaded,
queues included, is printed too).
"""

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    BridgeProcess,
    add_service_arguments,
    django_for_bench,
    mqtt_connect,
    pct,
    publish_packet,
    remove_fleet,
    seed_fleet,
)

EPOCH = time.time()  # latency stamps are ms since this instant


# --- raw MQTT publishing (cheap load generation) ------------------------------------


def telemetry(seq: int, stamp_ms: int) -> bytes:
    return json.dumps(
        {
            "ts": int(time.time()),
            "seq": seq,
            "temp": 24.5,
            "pump": True,
            "valve": 1,
            "timer": {"active": False, "remaining": 0, "mode": 1, "duration": 0},
            "rssi": -60,
            "uptime": stamp_ms,
            "mem_free": 81234,
            "fw": "ps1-bench",
            "switches": {"pump": 1, "valve": 1},
        },
        separators=(",", ":"),
    ).encode()


def publisher(host, port, topics, rate, duration, stamped, start_at, result):
    """One process: publish telemetry for `topics` round robin at `rate` msg/s
    (0: as fast as the socket takes it) for `duration` s, from `start_at`."""
    sock = mqtt_connect(host, port, f"bench-pub-{uuid.uuid4().hex[:8]}")
    offsets, chunks = [0], []
    if not stamped:
        for i, topic in enumerate(topics):
            chunks.append(publish_packet(topic, telemetry(i, 0)))
            offsets.append(offsets[-1] + len(chunks[-1]))
        buffer = memoryview(b"".join(chunks))
    time.sleep(max(0.0, start_at - time.time()))
    started = time.monotonic()
    sent, n = 0, len(topics)
    while True:
        elapsed = time.monotonic() - started
        if elapsed >= duration:
            break
        due = (int(rate * elapsed) - sent) if rate else 2000
        if due <= 0:
            time.sleep(0.002)
            continue
        due = min(due, n, 5000)
        i = sent % n
        if stamped:
            stamp = int((time.time() - EPOCH) * 1000)
            data = b"".join(
                publish_packet(topics[(i + k) % n], telemetry(sent + k, stamp))
                for k in range(due)
            )
            sock.sendall(data)
        else:
            j = i + due
            if j <= n:
                sock.sendall(buffer[offsets[i] : offsets[j]])
            else:
                sock.sendall(buffer[offsets[i] :])
                sock.sendall(buffer[: offsets[j - n]])
        sent += due
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    result.put((sent, time.monotonic() - started))


def run_publishers(host, port, topics, *, rate, duration, processes=2, stamped=False):
    """Start publisher processes; returns a function that waits and gives
    (messages sent, seconds)."""
    ctx = mp.get_context("fork")
    result = ctx.Queue()
    start_at = time.time() + 0.5
    parts = [topics[i::processes] for i in range(processes)]
    procs = [
        ctx.Process(
            target=publisher,
            args=(
                host,
                port,
                part,
                rate / processes,
                duration,
                stamped,
                start_at,
                result,
            ),
            daemon=True,
        )
        for part in parts
    ]
    for proc in procs:
        proc.start()

    def wait():
        totals = [result.get(timeout=duration + 30) for _ in procs]
        for proc in procs:
            proc.join(5)
        return sum(s for s, _ in totals), max(t for _, t in totals)

    return start_at, wait


# --- the ceiling: a bare subscriber -------------------------------------------------


def bare_subscriber(host, port, topic_filter, ready, result, run_for):
    import paho.mqtt.client as mqtt

    count = [0]
    c = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"bench-bare-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv311,
    )

    def on_message(client, userdata, message):
        count[0] += 1

    c.on_message = on_message
    c.on_connect = lambda client, *a: client.subscribe(topic_filter, 0)
    c.connect(host, port, 60)
    c.loop_start()
    time.sleep(0.5)
    ready.set()
    samples = []
    end = time.monotonic() + run_for
    while time.monotonic() < end:
        samples.append((time.monotonic(), count[0]))
        time.sleep(0.25)
    c.disconnect()
    c.loop_stop()
    result.put(samples)


def bare_latency(host, port, topic_filter, watched, warm_until, stop_at, result):
    """The MQTT-only baseline: publish -> a bare paho subscriber, same stamps."""
    import paho.mqtt.client as mqtt

    watched, latencies = set(watched), []
    c = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"bench-lat-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv311,
    )

    def on_message(client, userdata, message):
        now = time.time()
        if message.topic in watched and now >= warm_until:
            stamp = json.loads(message.payload)["uptime"]
            latencies.append((now - EPOCH) * 1000 - stamp)

    c.on_message = on_message
    c.on_connect = lambda client, *a: client.subscribe(topic_filter, 0)
    c.connect(host, port, 60)
    c.loop_start()
    time.sleep(max(0.0, stop_at - time.time()))
    c.disconnect()
    c.loop_stop()
    result.put(latencies)


def steady_rate(samples, *, trim=1.0):
    """Messages/s between the first and last change, trimming ramp-up and -down."""
    moving = [
        (t, c)
        for (t, c), (_, prev) in zip(samples[1:], samples, strict=False)
        if c != prev
    ]
    if len(moving) < 3:
        return 0.0
    start, end = moving[0][0] + trim, moving[-1][0] - trim
    inside = [(t, c) for t, c in samples if start <= t <= end]
    if len(inside) < 2:
        inside = moving
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


# --- the bridge process ---------------------------------------------------------------


def profile_name(profile: str, n: int) -> str:
    """PROFILE.<n>, or <stem>.<n>.svg for a flame graph (py-spy's format by name)."""
    if profile.endswith(".svg"):
        return f"{profile.removesuffix('.svg')}.{n}.svg"
    return f"{profile}.{n}"


class Bridges:
    """Several bridge processes sharing the platform broker (shared subscriptions),
    seen as one: RSS and counters summed."""

    def __init__(self, env, count, profile: str | None = None):
        self.members = [
            BridgeProcess(env, profile_name(profile, n) if profile else None)
            for n in range(count)
        ]

    def rss_kb(self) -> int:
        return sum(member.rss_kb() for member in self.members)

    def cpu_seconds(self) -> float:
        return sum(member.cpu_seconds() for member in self.members)

    def wait_stats(self, predicate, timeout=30.0):
        for member in self.members:
            member.wait_stats(predicate, timeout)

    @property
    def stats(self) -> dict:
        out: dict = {}
        for member in self.members:
            for key, value in member.stats.items():
                if isinstance(value, int | float):
                    out[key] = out.get(key, 0) + value
                else:
                    out.setdefault(key, value)
        return out

    @property
    def log(self) -> list[str]:
        return [line for member in self.members for line in member.log]

    def stop(self):
        for member in self.members:
            member.stop()


# --- set-up ---------------------------------------------------------------------------


def sample_count(tenant_id) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM devices_telemetrysample WHERE tenant_id = %s",
            [tenant_id],
        )
        return cursor.fetchone()[0]


def measure_rows(tenant_id, until_idle=3.0, limit=120.0, not_before=0.0):
    """(time, rows) every 0.25 s until no new rows for `until_idle` s (and not before
    `not_before`, the end of the load)."""
    samples, last_change = [], time.time()
    end = time.time() + limit
    prev = -1
    while time.time() < end:
        now, count = time.time(), sample_count(tenant_id)
        samples.append((now, count))
        if count != prev:
            prev, last_change = count, now
        elif now - last_change > until_idle and now > not_before:
            break
        time.sleep(0.25)
    return samples


def receiver_process(pool_codes, stop_at, warm_until, result):
    # Forked: the parent's database connection is inherited and left alone.
    try:
        result.put(asyncio.run(latency_receiver(pool_codes, stop_at, warm_until)))
    except Exception as exc:  # noqa: BLE001 - report, do not hang the bench
        print(f"latency receiver failed: {exc!r}")
        result.put([])


async def latency_receiver(pool_codes, stop_at, warm_until):
    from channels.layers import get_channel_layer
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from poolsaas.live.groups import pool_group, watch_announce

    layer = get_channel_layer()
    channel = await layer.new_channel()
    for code in pool_codes:
        await layer.group_add(pool_group(code), channel)
        await watch_announce(layer, pool_group(code))  # as a page does
    latencies = []

    async def collect():
        # One receive after another, never cancelled in between: channels-redis
        # shares one blocking pop per process, and cancelling it costs latency.
        while True:
            try:
                message = await layer.receive(channel)
            except RedisTimeoutError:
                continue  # an idle blocking pop timed out on the socket
            now = time.time()
            if message.get("type") != "pool.state" or now < warm_until:
                continue
            stamp = (message.get("state") or {}).get("uptime")
            if stamp:
                latencies.append((now - EPOCH) * 1000 - stamp)

    try:
        await asyncio.wait_for(collect(), max(0.0, stop_at - time.time()))
    except TimeoutError:
        pass
    for code in pool_codes:
        await layer.group_discard(pool_group(code), channel)
    return latencies


def busy_per_message(bridge, tenant, topics, rate: int) -> float:
    """The bridge's worker + writer seconds per accepted message at a fixed `rate`
    for 8 s (its own busy counters): steadier than the maximum on a loaded host."""

    def busy_accepted():
        st = bridge.stats
        return sum((st.get("busy") or {}).values()), st.get("accepted", 0)

    bridge.wait_stats(lambda st: st.get("inbox", 1) == 0, timeout=60)
    time.sleep(2.5)  # the next stats line, after the idle
    busy0, accepted0 = busy_accepted()
    host, port = os.environ["MQTT_URL"].removeprefix("mqtt://").split(":")
    start_at, wait = run_publishers(host, int(port), topics, rate=rate, duration=8.0)
    measure_rows(tenant.pk, until_idle=2.0, limit=90, not_before=start_at + 9)
    wait()
    time.sleep(2.5)
    busy1, accepted1 = busy_accepted()
    return (busy1 - busy0) / max(1, accepted1 - accepted0)


# --- alert rules (--rules) ---------------------------------------------------------

EVALUATOR = """
import sys, time, django
django.setup()
from alerts.services import alerts_evaluate
interval = float(sys.argv[1])
while True:
    started, cpu = time.monotonic(), time.process_time()
    alerts_evaluate()
    took = time.monotonic() - started
    print(f"evaluated {took:.3f} {time.process_time() - cpu:.3f}", flush=True)
    time.sleep(max(0.0, interval - took))
"""


def rules_maximum(args, env, tenant, find_maximum) -> tuple[float, list]:
    """The maximum phase with every device under three tenant-default rules and
    alerts_evaluate running in its own process meanwhile (as a Celery worker would);
    the rules are removed again afterwards. Returns the maximum and the run times."""
    from alerts.models import Alert, AlertRule, Kind

    # Rules that hold but do not fire on the bench's telemetry (24.5 °C, pump on).
    for kind, threshold in [
        (Kind.FREEZE_RISK, 4.0),
        (Kind.PUMP_RUNTIME, 20.0),
        (Kind.DEVICE_OFFLINE, 30.0),
    ]:
        AlertRule.objects.create(tenant=tenant, kind=kind, threshold=threshold)
    evaluator = subprocess.Popen(
        [sys.executable, "-c", EVALUATOR, str(args.rules_interval)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    took: list[tuple[float, float]] = []  # (wall s, CPU s) per run

    def read():
        for line in evaluator.stdout:
            took.append(tuple(float(f) for f in line.split()[1:3]))

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        while not took and time.monotonic() < deadline and evaluator.poll() is None:
            time.sleep(0.2)  # the first run creates the per-day rows: set-up
        first = len(took)
        highest = find_maximum("rules")
    finally:
        evaluator.terminate()
        evaluator.wait(10)
    fired = Alert.objects.filter(tenant=tenant).count()
    if fired:
        print(f"[rules] warning: {fired} alerts fired during the bench")
    AlertRule.objects.filter(tenant=tenant).delete()
    Alert.objects.filter(tenant=tenant).delete()
    return highest, took[first:]


def rules_compare(args, env, tenant, find_maximum, without: float) -> dict:
    """--rules: maxima without and with rules, alternating --rules-rounds times (the
    first without is the maximum phase's), medians and their ratio. The rules only
    exist during the passes with rules (the bridge never reads them anyway)."""
    withouts, withs, took = [without], [], []
    for round_ in range(args.rules_rounds):
        if round_:
            withouts.append(find_maximum("maximum"))
        highest, runs = rules_maximum(args, env, tenant, find_maximum)
        withs.append(highest)
        took += runs
    a, b = sorted(withouts)[len(withouts) // 2], sorted(withs)[len(withs) // 2]
    ratio = b / max(1.0, a)
    mean = sum(wall for wall, _ in took) / max(1, len(took))
    cpu = sum(c for _, c in took) / max(1, len(took))
    every = (
        f"every {args.rules_interval:g} s" if args.rules_interval else "back to back"
    )
    print(
        f"[rules] {args.devices} devices x 3 rules, evaluated {every} "
        f"({len(took)} runs during the load, {mean:.2f} s each, {cpu:.2f} s CPU; "
        f"at the 20 s beat {100 * cpu / 20:.1f} % of a core): highest rate kept "
        f"up with {b:,.0f} msg/s with rules vs {a:,.0f} without = {100 * ratio:.0f} % "
        f"(medians of {withs} and {withouts})"
    )
    return {
        "max_without_rules_s": round(a),
        "max_with_rules_s": round(b),
        "rules_ratio": round(ratio, 2),
        "rules_eval_s": round(mean, 2),
        "rules_eval_cpu_s": round(cpu, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=5000, help="sustained msg/s")
    parser.add_argument("--latency-rate", type=int, default=1000)
    parser.add_argument(
        "--max-rates",
        default="10000,15000,20000,25000,30000",
        help="maximum phase",
    )
    parser.add_argument("--duration", type=float, default=15.0, help="s per phase")
    parser.add_argument("--watch", type=int, default=400, help="pools watched")
    parser.add_argument(
        "--bridges", type=int, default=1, help="bridge processes (shared subscription)"
    )
    parser.add_argument(
        "--receivers", type=int, default=4, help="channel-layer receiver processes"
    )
    add_service_arguments(parser)
    parser.add_argument(
        "--profile",
        help="run each bridge under py-spy; its collapsed stacks go to PROFILE.<n> "
        "(a name ending in .svg: a flame graph, <stem>.<n>.svg)",
    )
    parser.add_argument(
        "--phases",
        default="ceiling,sustained,maximum,latency",
        help="comma-separated subset of ceiling,sustained,maximum,latency",
    )
    parser.add_argument(
        "--metering-pair",
        action="store_true",
        help="then the maximum again with usage metering off: the ratio",
    )
    parser.add_argument(
        "--rules",
        action="store_true",
        help="maximum again with every device under three alert rules while they "
        "are evaluated (issue 16), against the same run without rules",
    )
    parser.add_argument(
        "--rules-interval",
        type=float,
        default=0.0,
        help="s between evaluations; 0 (default): back to back, the worst case "
        "(Celery beat runs it every 20 s, longer than one step of the maximum phase)",
    )
    parser.add_argument("--rules-rounds", type=int, default=1)
    args = parser.parse_args()
    host, port = args.mqtt.split(":")
    port = int(port)

    env = django_for_bench(args.database_url, args.redis_url, host, port)
    from devices.services.brokers import broker_ensure_platform
    from tenants.models import Tenant

    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    print(f"ingest bench: {args.devices} devices under {prefix}/, broker {host}:{port}")
    print(f"database {args.database_url}, channel layer {args.redis_url}")

    # Stale rows of an interrupted run would make the bridge subscribe to them.
    Tenant.objects.filter(slug__startswith="bench-").delete()
    broker = broker_ensure_platform()
    bridge = Bridges(env, args.bridges, args.profile)
    tenant = None
    try:
        bridge.wait_stats(lambda s: True, timeout=90)  # start-up, on a loaded host
        time.sleep(1.5)
        rss_empty = bridge.rss_kb()
        # CPU from here on (start-up left out), per message accepted: steadier than
        # the maximum on a loaded host, which moves with what the others run.
        cpu_ready, accepted_ready = (
            bridge.cpu_seconds(),
            bridge.stats.get("accepted", 0),
        )

        ids = [f"ESP-{i:06X}" for i in range(args.devices)]
        topics = [f"{prefix}/{device_id}/telemetry" for device_id in ids]

        phases = set(args.phases.split(","))
        ceiling = sustained = maximum = unmetered = max_on = 0.0
        latencies: list = []
        rss_loaded = rss_peak = rss_empty
        # 1. the ceiling (before the devices exist, so the bridge is not subscribed).
        if "ceiling" in phases:
            ctx = mp.get_context("fork")
            ready, result = ctx.Event(), ctx.Queue()
            sub = ctx.Process(
                target=bare_subscriber,
                args=(
                    host,
                    port,
                    f"{prefix}/+/telemetry",
                    ready,
                    result,
                    args.duration + 4,
                ),
            )
            sub.start()
            ready.wait(10)
            _, wait = run_publishers(
                host, port, topics, rate=0, duration=min(10.0, args.duration)
            )
            sent, secs = wait()
            ceiling = steady_rate(result.get(timeout=60))
            sub.join(10)
            print(
                f"[ceiling] bare paho subscriber: {ceiling:,.0f} msg/s "
                f"(publishers sent {sent / secs:,.0f} msg/s)"
            )
        tenant, pools = seed_fleet(name="Bench", prefix=prefix, ids=ids, broker=broker)
        bridge.wait_stats(lambda s: s.get("devices") == args.devices, timeout=90)
        bridge.wait_stats(lambda s: all(s.get("connections", {0: 0}).values()))
        print(f"{args.bridges} bridge process(es) ready with {args.devices} devices")

        if "sustained" in phases:
            # 2. sustained at --rate.
            before = sample_count(tenant.pk)
            start_at, wait = run_publishers(
                host, port, topics, rate=args.rate, duration=args.duration
            )
            rows = measure_rows(
                tenant.pk,
                until_idle=3.0,
                limit=args.duration + 60,
                not_before=start_at + args.duration + 1,
            )
            sent, secs = wait()
            stored = rows[-1][1] - before
            sustained = steady_rate(rows)
            final = rows[-1][1]
            landed = next(t for t, c in rows if c == final)
            lag = landed - (start_at + secs)
            rss_loaded = bridge.rss_kb()
            print(
                f"[sustained] offered {sent / secs:,.0f} msg/s "
                f"from {args.devices} devices "
                f"for {secs:.0f} s: stored {stored:,} of {sent:,} "
                f"({100 * stored / max(1, sent):.1f} %), "
                f"rows landed at {sustained:,.0f}/s, "
                f"backlog drained {max(0.0, lag):.1f} s after the load"
            )

        if "latency" in phases:
            # 3. latency at --latency-rate with watched pools, on a settled bridge.
            bridge.wait_stats(lambda st: st.get("inbox", 1) == 0, timeout=60)
            time.sleep(2)
            rss_loaded = max(rss_loaded, bridge.rss_kb())
            watched = [p.code for p in pools[: args.watch]]
            watched_topics = topics[: args.watch]
            rest = topics[args.watch :]
            # The watched devices publish at the same per-device rate as the others.
            stop_at = time.time() + args.duration + 3
            warm_until = time.time() + 2.5
            # A channel-layer receiver does several Redis round trips per message, so
            # one process cannot take a few hundred per second: like dashboards, the
            # watchers are spread over processes, each in a share of the groups.
            ctx = mp.get_context("fork")
            receivers_out = ctx.Queue()
            receivers = [
                ctx.Process(
                    target=receiver_process,
                    args=(
                        watched[i :: args.receivers],
                        stop_at,
                        warm_until,
                        receivers_out,
                    ),
                    daemon=True,
                )  # fmt: skip
                for i in range(args.receivers)
            ]
            for receiver in receivers:
                receiver.start()
            ctx = mp.get_context("fork")
            bare_result = ctx.Queue()
            bare = ctx.Process(
                target=bare_latency,
                args=(
                    host,
                    port,
                    f"{prefix}/+/telemetry",
                    watched_topics,
                    warm_until,
                    stop_at,
                    bare_result,
                ),
                daemon=True,
            )
            bare.start()
            time.sleep(2.0)  # the bridge rereads watched groups every second
            _, wait = run_publishers(
                host,
                port,
                watched_topics + rest,
                rate=args.latency_rate,
                duration=args.duration,
                stamped=True,
            )
            sent, secs = wait()
            latencies = []
            for _ in receivers:
                latencies += receivers_out.get(timeout=args.duration + 30)
            for receiver in receivers:
                receiver.join(5)
            baseline = bare_result.get(timeout=30)
            bare.join(5)
            print(
                f"[latency] baseline, publish -> bare paho subscriber: "
                f"p50 {pct(baseline, 0.5):.1f} ms, p99 {pct(baseline, 0.99):.1f} ms"
            )
            print(
                f"[latency] {sent / secs:,.0f} msg/s, {len(latencies)} pool.state "
                f"messages received: device publish -> channel layer "
                f"p50 {pct(latencies, 0.5):.1f} "
                f"ms, p99 {pct(latencies, 0.99):.1f} ms, max "
                f"{max(latencies) if latencies else float('nan'):.1f} ms"
            )

        def find_maximum(label: str) -> float:
            """Raise the offered rate until the bridge stops keeping up."""
            nonlocal rss_peak
            highest = 0.0
            for rate in [int(r) for r in args.max_rates.split(",")]:
                before = sample_count(tenant.pk)
                start_at, wait = run_publishers(
                    host, port, topics, rate=rate, duration=8.0
                )
                rows = measure_rows(
                    tenant.pk, until_idle=3.0, limit=90, not_before=start_at + 9
                )
                sent, secs = wait()
                stored = rows[-1][1] - before
                kept = stored / max(1, sent)
                landed = next(t for t, c in rows if c == rows[-1][1])
                lag = max(0.0, landed - (start_at + secs))
                print(
                    f"[{label}] offered {sent / secs:,.0f} msg/s for {secs:.0f} s: "
                    f"stored {100 * kept:.1f} % at {steady_rate(rows):,.0f} rows/s, "
                    f"last row {lag:.1f} s after the load"
                )
                rss_peak = max(rss_peak, bridge.rss_kb())
                # Kept up: (almost) nothing lost and no backlog left behind.
                if kept < 0.99 or lag > 2.0:
                    break
                highest = sent / secs
            return highest

        with_rules = None
        if "maximum" in phases:
            # 4. maximum: raise the offered rate until the bridge stops keeping up
            # (less than 99 % of the messages stored).
            maximum = find_maximum("maximum")
            vs = (
                f"{100 * maximum / ceiling:.0f} % of the bare subscriber"
                if ceiling
                else "no ceiling measured (phase skipped)"
            )
            print(f"[maximum] highest rate kept up with: {maximum:,.0f} msg/s = {vs}")
            if args.rules:
                with_rules = rules_compare(args, env, tenant, find_maximum, maximum)
            rss_loaded = max(rss_loaded, bridge.rss_kb())
        if args.metering_pair:
            # Usage metering (billing.metering) on, then off, each on restarted and
            # warmed-up bridges: the bridge's busy time per message at a fixed rate,
            # and the maximum. Metering's cost is the ratio.
            rate = int(args.max_rates.split(",")[0])
            pair = {}
            for metered in (True, False):
                # Both on freshly started bridges, so that start-up costs alike.
                bridge.stop()
                bridge = Bridges(
                    dict(env, USAGE_METERING="true" if metered else "false"),
                    args.bridges,
                    None,
                )
                bridge.wait_stats(lambda s: s.get("devices") == args.devices)
                bridge.wait_stats(lambda s: all(s.get("connections", {0: 0}).values()))
                cpu_ready, accepted_ready = bridge.cpu_seconds(), 0  # the last pair's
                busy_per_message(bridge, tenant, topics, rate)  # warm-up
                busy = busy_per_message(bridge, tenant, topics, rate)
                top = find_maximum("metering " + ("on" if metered else "off"))
                pair[metered] = (busy, top)
            (busy_on, max_on), (busy_off, max_off) = pair[True], pair[False]
            unmetered = max_off
            print(
                f"[metering] busy per message at {rate:,} msg/s: with metering "
                f"{1e6 * busy_on:.1f} µs, without {1e6 * busy_off:.1f} µs "
                f"({100 * (busy_on / max(1e-9, busy_off) - 1):+.1f} %)"
            )
            print(
                f"[metering] maximum with metering {max_on:,.0f} msg/s, without "
                f"{max_off:,.0f} msg/s: ratio {max_on / max(1.0, max_off):.3f}"
            )
            maximum = maximum or max_on
        measure_rows(tenant.pk, until_idle=1.0)
        rss_loaded = max(rss_loaded, bridge.rss_kb() if "maximum" not in phases else 0)
        per_device = (rss_loaded - rss_empty) / args.devices
        print(
            f"[memory] bridge RSS {rss_empty / 1024:.1f} MiB without devices, "
            f"{rss_loaded / 1024:.1f} MiB with {args.devices} at the sustained rate: "
            f"{per_device:.2f} KiB per device (peak while overloaded "
            f"{max(rss_peak, rss_loaded) / 1024:.1f} MiB, queues included)"
        )
        stats = bridge.stats
        accepted = stats.get("accepted", 0) - accepted_ready
        cpu_per_message = (bridge.cpu_seconds() - cpu_ready) / max(1, accepted)
        print(
            f"[bridge] CPU {1e6 * cpu_per_message:.1f} µs per accepted message "
            f"(all threads, since the bridge was ready)"
        )
        print(
            f"[bridge] accepted {stats.get('accepted', 0):,}, malformed "
            f"{stats.get('malformed', 0)}, "
            f"unauthorised {stats.get('unauthorised', 0)}, "
            f"db errors {stats.get('db_errors', 0)}, inbox full waits "
            f"{stats.get('inbox_full', 0)}, busy s {stats.get('busy')}, "
            f"live {stats.get('live')}"
        )
        problems = [
            line for line in bridge.log if " ERROR " in line or "WARNING" in line
        ]
        if problems:
            print(
                f"bridge logged {len(problems)} warnings/errors, last: {problems[-3:]}"
            )
        print(
            "summary: "
            + json.dumps(
                {
                    "ceiling_msg_s": round(ceiling),
                    "sustained_rows_s": round(sustained),
                    "max_rows_s": round(maximum),
                    "ratio_vs_ceiling": round(maximum / ceiling, 2)
                    if ceiling
                    else None,
                    "latency_p50_ms": round(pct(latencies, 0.5), 1),
                    "latency_p99_ms": round(pct(latencies, 0.99), 1),
                    "kib_per_device": round(per_device, 2),
                    "cpu_us_per_msg": round(1e6 * cpu_per_message, 1),
                    "metering_ratio": round(max_on / unmetered, 3)
                    if unmetered
                    else None,
                    **(with_rules or {}),
                }
            )
        )
        return 0
    finally:
        bridge.stop()
        if tenant is not None:
            remove_fleet(tenant)
            print("bench data removed")


if __name__ == "__main__":
    sys.exit(main())
