"""What the metrics cost the bridge's hot path (poolsaas.metrics), in one run.

    DEBUG=true .venv/bin/python bench/metrics_cost.py [--messages 200000] [--rounds 7]

No broker, no database: the bridge's pure dispatch (devices.bridge.rooms.Dispatcher
with the devices room, as the worker runs it) over pre-built telemetry messages of
1,000 devices, in bursts of 1,000 (the worker takes up to 5,000). Rounds alternate
(A B C A B C ...) so that a busy machine slows each variant alike; the medians and
their ratios to A are printed:
  A  dispatch only (the counters the bridge always kept: plain dict increments);
  B  A + what this branch adds per burst: metrics.burst_started (a histogram
     observation) and one write-time observation (the writer's, per flush);
  C  A + a prometheus-client Counter.inc() per message (what the bridge does not
     do: shown for scale).
Times are CPU time of this process (time.process_time), which a loaded machine
disturbs far less than wall-clock time. Then each addition alone (100,000 calls),
as a share of one message's dispatch, and one scrape of the bridge's collector.
"""

import argparse
import json
import os
import statistics
import sys
import time
import types
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "poolsaas.settings")
os.environ.setdefault("DEBUG", "true")

import django  # noqa: E402

django.setup()

from prometheus_client import Counter, generate_latest  # noqa: E402

from devices.bridge.directory import Directory  # noqa: E402
from devices.bridge.rooms import Dispatcher  # noqa: E402
from devices.mqtt import DevicesRoom  # noqa: E402
from poolsaas import metrics  # noqa: E402

DEVICES, BURST = 1000, 1000
BROKER = 1


def directory() -> Directory:
    rows = [
        {
            "pk": pk,
            "broker_id": BROKER,
            "topic_prefix": "devices",
            "device_id": f"ESP-{pk:06d}",
            "protocol": "ps1",
            "tenant_id": 1 + pk % 10,
            "tenant__code": uuid.UUID(int=1 + pk % 10),
            "pool_id": pk,
            "pool__code": uuid.UUID(int=10_000 + pk),
            "pool__settings": {"telemetry_interval": 30},
            "online": True,
            "state": {},
        }
        for pk in range(1, DEVICES + 1)
    ]
    return Directory.build(rows)


def messages(count: int) -> list[tuple]:
    now = time.time()
    out = []
    for i in range(count):
        pk = 1 + i % DEVICES
        body = {
            "ts": int(now),
            "seq": i,
            "temp": 20 + (i % 100) / 10,
            "pump": bool(i % 2),
            "valve": 1,
            "timer": {"active": False, "remaining": 0, "mode": 1, "duration": 0},
            "rssi": -60,
            "uptime": i,
            "mem_free": 80000,
            "fw": "ps1-0.1.0",
            "switches": {"pump": 1, "valve": 1},
        }
        out.append(
            (
                BROKER,
                f"devices/ESP-{pk:06d}/telemetry",
                json.dumps(body).encode(),
                now,
                False,
            )
        )
    return out


PER_MESSAGE = Counter("bench_messages_in", "bench only: a counter per message")


def run(variant: str, items: list[tuple], directory: Directory) -> float:
    room = DevicesRoom()
    dispatcher = Dispatcher(rooms=[room], directory=directory)
    handle = dispatcher.handle
    holder = types.SimpleNamespace()
    inc = PER_MESSAGE.inc
    started = time.process_time()
    for at in range(0, len(items), BURST):
        burst = items[at : at + BURST]
        if variant == "B":
            metrics.burst_started(holder, burst[0][3])
        for item in burst:
            handle(*item)
            if variant == "C":
                inc()
        room.drain()
        if variant == "B":
            metrics.WRITE_SECONDS.observe(0.001)
    return time.process_time() - started


def unit_costs(repeat: int = 100_000) -> tuple[float, float]:
    """CPU seconds of one per-burst hook (B's additions) and of one Counter.inc()."""
    holder = types.SimpleNamespace()
    now = time.time()
    started = time.process_time()
    for _ in range(repeat):
        metrics.burst_started(holder, now)
        metrics.WRITE_SECONDS.observe(0.001)
    hook = (time.process_time() - started) / repeat
    inc = PER_MESSAGE.inc
    started = time.process_time()
    for _ in range(repeat):
        inc()
    return hook, (time.process_time() - started) / repeat


def scrape_cost(directory: Directory, repeat: int = 200) -> float:
    room = DevicesRoom()
    dispatcher = Dispatcher(rooms=[room], directory=directory)
    dispatcher.counters.update(received=10**6, accepted=10**6 - 5, malformed=5)
    conn = types.SimpleNamespace(
        connected=types.SimpleNamespace(is_set=lambda: True), connects=1, counters={}
    )
    bridge = types.SimpleNamespace(
        dispatcher=dispatcher,
        connections={pk: conn for pk in range(1, 101)},
        flushes=1,
        db_errors=0,
        inbox=types.SimpleNamespace(qsize=lambda: 0, empty=lambda: True),
        _retry={},
        leased=set(range(2, 101)),
        platform_broker_id=1,
        live=None,
    )
    registry = metrics.bridge_registry(bridge)
    started = time.process_time()
    for _ in range(repeat):
        generate_latest(registry)
    return (time.process_time() - started) / repeat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    built = directory()
    items = messages(args.messages)
    times: dict[str, list[float]] = {"A": [], "B": [], "C": []}
    run("A", items[: BURST * 5], built)  # warm-up
    for _ in range(args.rounds):
        for variant in times:
            times[variant].append(run(variant, items, built))
    base = statistics.median(times["A"])
    load = os.getloadavg()[0]
    print(f"{args.messages} messages x {args.rounds} rounds, load {load:.1f}")
    for variant, label in (
        ("A", "dispatch, counters as before"),
        ("B", "+ this branch's per-burst metrics"),
        ("C", "+ a prometheus Counter.inc() per message"),
    ):
        median = statistics.median(times[variant])
        print(
            f"  {variant} {label:42s} {median / args.messages * 1e6:6.2f} us/msg"
            f" (CPU)  ratio {median / base:.3f}"
        )
    hook, inc = unit_costs()
    per_message = base / args.messages
    print(
        f"  per-burst hook alone: {hook * 1e6:.2f} us per burst of {BURST} = "
        f"{hook / BURST / per_message * 100:.4f} % of a message's dispatch"
    )
    print(
        f"  Counter.inc() alone: {inc * 1e6:.3f} us = "
        f"{inc / per_message * 100:.2f} % of a message's dispatch"
    )
    print(
        f"  one scrape of the bridge collector (100 brokers): "
        f"{scrape_cost(built) * 1000:.2f} ms"
    )


if __name__ == "__main__":
    main()
