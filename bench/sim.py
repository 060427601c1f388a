"""Benchmark: can the simulator drive 5,000 devices at 1 telemetry message/s each?

Runs the real controller for every virtual device (tick + telemetry, as the simulator
does) and publishes each device's telemetry on its own topic
(`<prefix>/<device id>/telemetry`) to the loopback Mosquitto, spread evenly over each
second. A separate subscriber counts what the broker actually delivered.

Load mode: many virtual devices share one MQTT connection (FACTS.md: one Python process
tops out near 8,000 msg/s through 100 clients), spread over several processes. Topics,
payloads and rates are per device; the connection count is not. Loopback only; bounded.

    .venv/bin/python bench/sim.py [--devices 5000] [--rate 1] [--duration 20]
"""

import argparse
import multiprocessing as mp
import os
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import paho.mqtt.client as mqtt  # noqa: E402

from firmware import controller as ctl  # noqa: E402
from firmware import protocol as P  # noqa: E402
from firmware.sim import PoolModel, make_ids, parse_broker_url  # noqa: E402


def client(host, port, name):
    c = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=name,
        clean_session=True,
    )
    c.max_queued_messages_set(0)
    c.connect(host, port, 60)
    c.loop_start()
    return c


def worker(ids, args, sent, ready, go):
    host, port, _, _, _ = parse_broker_url(args.broker)
    conns = [client(host, port, f"bench-{ids[0]}-{n}") for n in range(args.connections)]
    now = [int(time.time())]
    devices = []
    for n, device_id in enumerate(ids):
        c = ctl.Controller(lambda: now[0], None)
        pool = PoolModel(seed=n)
        topic = P.topic(args.prefix, device_id, P.TELEMETRY)
        devices.append((c, pool, topic, conns[n % len(conns)]))
    ready.release()
    go.wait()
    t0 = time.monotonic()
    period = 1.0 / args.rate
    count = 0
    k = len(devices)
    end = t0 + args.duration
    while True:
        t = time.monotonic()
        if t >= end:
            break
        # Every device whose slot in the current period has come publishes now.
        due = int((t - t0) / period * k)
        while count < due:
            c, pool, topic, conn = devices[count % k]
            now[0] = int(time.time())
            c.tick(pool.step(1, now[0], c.pump))
            tel = c.telemetry(rssi=-60, uptime=count // k, mem_free=80000)
            conn.publish(topic, P.encode_telemetry(tel), qos=0)
            count += 1
            if count % 500 == 0:
                with sent.get_lock():
                    sent.value += 500
        time.sleep(0.002)
    with sent.get_lock():
        sent.value += count % 500
    time.sleep(0.5)
    for conn in conns:
        conn.disconnect()
        conn.loop_stop()


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
    p.add_argument("--prefix", default="bench-" + uuid.uuid4().hex[:6])
    p.add_argument("--min-ratio", type=float, default=0.95, help="pass threshold")
    args = p.parse_args(argv)
    host, port, _, _, _ = parse_broker_url(args.broker)
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("bench/sim.py only runs against a loopback broker")
    args.duration = min(args.duration, 300.0)
    target = args.devices * args.rate

    received = [0]
    lock = threading.Lock()

    def on_message(c, u, msg):
        with lock:
            received[0] += 1

    sub = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id="bench-sub-" + args.prefix,
    )
    sub.on_message = on_message
    sub.connect(host, port, 60)
    sub.subscribe(args.prefix + "/+/" + P.TELEMETRY, 0)
    sub.loop_start()

    ids = make_ids(args.devices)
    slices = [ids[i :: args.processes] for i in range(args.processes)]
    ctx = mp.get_context("fork")
    sent = ctx.Value("q", 0)
    ready = ctx.Semaphore(0)
    go = ctx.Event()
    procs = [
        ctx.Process(target=worker, args=(s, args, sent, ready, go), daemon=True)
        for s in slices
        if s
    ]
    for pr in procs:
        pr.start()
    for _ in procs:
        ready.acquire(timeout=60)
    print(
        f"load mode: {args.devices} virtual devices, each on its own topic, "
        f"multiplexed over {args.connections * len(procs)} MQTT connections "
        f"in {len(procs)} processes; target {target:,.0f} msg/s for {args.duration:g} s"
    )
    go.set()
    t0 = time.monotonic()
    time.sleep(args.warmup)
    with lock:
        r0 = received[0]
    s0 = sent.value
    t1 = time.monotonic()
    window = max(1.0, args.duration - args.warmup - 1.0)
    samples = []
    while time.monotonic() - t1 < window:
        time.sleep(1.0)
        with lock:
            samples.append(received[0])
    t2 = time.monotonic()
    with lock:
        r1 = received[0]
    s1 = sent.value
    for pr in procs:
        pr.join(args.duration + 30 - (time.monotonic() - t0))
    sub.disconnect()
    sub.loop_stop()

    elapsed = t2 - t1
    recv_rate = (r1 - r0) / elapsed
    sent_rate = (s1 - s0) / elapsed
    per_s = [b - a for a, b in zip([r0, *samples[:-1]], samples, strict=True)]
    worst = min(per_s) if per_s else 0
    ratio = recv_rate / target if target else 0
    print(f"published: {sent_rate:,.0f} msg/s")
    print(
        f"received:  {recv_rate:,.0f} msg/s by a subscriber ({ratio:.1%} of target); "
        f"slowest second {worst:,} msg"
    )
    ok = ratio >= args.min_ratio
    print(("PASS" if ok else "FAIL") + f": target {target:,.0f} msg/s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
