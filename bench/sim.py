"""Benchmark: can the simulator drive 5,000 devices at 1 telemetry message/s each?

Runs the simulator's load mode (firmware.sim.load): every virtual device has the real
controller and a pool model, ticks and publishes its own telemetry on its own topic
(`<prefix>/<device id>/telemetry`), spread evenly over each second, to the loopback
Mosquitto. A separate subscriber counts what the broker actually delivered.

Load mode shares MQTT connections between devices (FACTS.md: one Python process tops out
near 8,000 msg/s through 100 clients; paho's select() also caps a process at ~300
clients): topics, payloads and rates are per device, the connection count is not.
Loopback only; bounded in time.

    .venv/bin/python bench/sim.py [--devices 5000] [--rate 1] [--duration 20]
"""

import argparse
import os
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import paho.mqtt.client as mqtt  # noqa: E402

from firmware import protocol as P  # noqa: E402
from firmware.sim import make_ids, parse_broker_url  # noqa: E402
from firmware.sim.load import LoadRun  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=5000)
    p.add_argument("--rate", type=float, default=1.0, help="messages/s per device")
    p.add_argument("--duration", type=float, default=20.0, help="seconds (max 300)")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--processes", type=int, default=max(2, min(4, os.cpu_count() or 2)))
    p.add_argument("--connections", type=int, default=25, help="per process")
    p.add_argument(
        "--broker", default=os.environ.get("MQTT_URL", "mqtt://127.0.0.1:1883")
    )
    p.add_argument("--min-ratio", type=float, default=0.95, help="pass threshold")
    args = p.parse_args(argv)
    host, port, _, user, pw = parse_broker_url(args.broker)
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("bench/sim.py only runs against a loopback broker")
    duration = min(max(args.duration, args.warmup + 2), 300.0)
    target = args.devices * args.rate
    prefix = "bench-" + uuid.uuid4().hex[:6]

    received = [0]
    lock = threading.Lock()

    def on_message(c, u, msg):
        with lock:
            received[0] += 1

    sub = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id="bench-sub-" + prefix,
    )
    if user:
        sub.username_pw_set(user, pw)
    sub.on_message = on_message
    sub.connect(host, port, 60)
    sub.subscribe(prefix + "/+/" + P.TELEMETRY, 0)
    sub.loop_start()

    run = LoadRun(
        make_ids(args.devices),
        broker=args.broker,
        prefix=prefix,
        interval=1.0 / args.rate,
        duration=duration,
        processes=args.processes,
        connections=args.connections,
    ).start()
    print(
        f"load mode: {args.devices} virtual devices, each with its own controller and "
        f"topics, multiplexed over {run.connections} MQTT connections in "
        f"{len(run.procs)} processes; target {target:,.0f} msg/s for {duration:g} s"
    )
    time.sleep(args.warmup)
    with lock:
        r0 = received[0]
    s0 = run.sent.value
    t1 = time.monotonic()
    samples = []
    while time.monotonic() - t1 < duration - args.warmup - 1.0:
        time.sleep(1.0)
        with lock:
            samples.append(received[0])
    t2 = time.monotonic()
    s1 = run.sent.value
    run.join(60)
    sub.disconnect()
    sub.loop_stop()
    # Leave no retained status behind in the shared broker.
    cleaner = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    if user:
        cleaner.username_pw_set(user, pw)
    cleaner.connect(host, port, 60)
    cleaner.loop_start()
    for device_id in run.ids:
        cleaner.publish(P.topic(prefix, device_id, P.STATUS), b"", 0, True)
    cleaner.disconnect()
    cleaner.loop_stop()

    elapsed = t2 - t1
    recv_rate = (samples[-1] - r0) / elapsed if samples else 0.0
    sent_rate = (s1 - s0) / elapsed
    per_s = [b - a for a, b in zip([r0, *samples[:-1]], samples, strict=True)]
    ratio = recv_rate / target if target else 0.0
    print(f"published: {sent_rate:,.0f} msg/s (handed to paho)")
    spread = sorted(per_s) or [0]
    print(
        f"received:  {recv_rate:,.0f} msg/s by a subscriber ({ratio:.1%} of target); "
        f"per-second counts min {spread[0]:,} / median {spread[len(spread) // 2]:,} / "
        f"max {spread[-1]:,} (scheduling jitter on a shared machine)"
    )
    ok = ratio >= args.min_ratio
    print(("PASS" if ok else "FAIL") + f": target {target:,.0f} msg/s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
