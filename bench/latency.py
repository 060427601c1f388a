"""Dashboard latency through the real stack, with background traffic from other pools.

    .venv/bin/python bench/latency.py [--samples 60] [--background 1000]

Processes: daphne (the web app), `manage.py mqtt_bridge`, Mosquitto (the machine's, on
127.0.0.1:1883), Redis, PostgreSQL (its own database, default
postgres://postgres@127.0.0.1:5432/poolsaas_dash_bench, created when missing), Debian's
chromium driven by Playwright, a scripted ps1 device (a plain paho client, so its
timestamps are exact) and a background publisher process.

Measures, each --samples times:
  1. device publish -> browser-visible update: the device publishes telemetry with a
     new temperature; a MutationObserver in the pool page stamps when the new value
     is on screen;
  2. browser click -> device receipt: the page's pump switch is clicked; the device
     stamps when the command arrives (it then acknowledges, as a ps1 device does);
     and click -> answer visible: a MutationObserver stamps when the switch stops
     showing "pending" (the device's ack is on screen).
Both stamps come from the same system clock (browser Date.now(), Python time.time()).
Meanwhile --background messages/s of telemetry from --bg-devices other pools flow
through the same broker and bridge, and a channel-layer listener watches all of those
pools (as open browsers would), so the bridge broadcasts them too.
Also: the pools overview with 500 pools, server time (median of 20 requests through
Django's test client, in this process) and its query count.

Goal (issue 4): p99 under 100 ms for both; the overview under 100 ms with a constant
number of queries. Bounded: about a minute. Each run adds two tenants to the bench
database (the audit trail is append-only, so they stay: drop that database to clean
up); retained messages under its random prefix are cleared at the end.
"""

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import DaphneProcess, ensure_database, free_port  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/poolsaas_dash_bench"
PASSWORD = "bench-latency-password-1"  # noqa: S105 - a throwaway bench user
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pct(values, q):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def telemetry(seq, temp, pump=False, valve=1, rssi=-55):
    return json.dumps(
        {
            "ts": int(time.time()),
            "seq": seq,
            "temp": temp,
            "pump": pump,
            "valve": valve,
            "timer": {"active": False, "remaining": 0, "mode": 1, "duration": 0},
            "rssi": rssi,
            "uptime": 100 + seq,
            "mem_free": 80000,
            "fw": "ps1-bench",
            "switches": {"pump": 0, "valve": 0},
        },
        separators=(",", ":"),
    ).encode()


def mqtt_client(client_id):
    import paho.mqtt.client as mqtt

    return mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
    )


# --- background traffic (its own process) ------------------------------------------


def background(prefix, device_ids, rate, stop, sent):
    """Publish telemetry for the background devices at `rate` messages/s."""
    clients = []
    for i in range(4):
        c = mqtt_client(f"bench-bg-{i}-{uuid.uuid4().hex[:6]}")
        c.max_queued_messages_set(0)
        c.connect("127.0.0.1", 1883)
        c.loop_start()
        clients.append(c)
    for n, device_id in enumerate(device_ids):
        clients[n % 4].publish(f"{prefix}/{device_id}/status", b"online", 1, True)
    payloads = {}
    seq = 0
    start = time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - start) * rate)
        while seq < due:
            device_id = device_ids[seq % len(device_ids)]
            body = payloads.get(device_id)
            if body is None or seq % 50 == 0:
                body = payloads[device_id] = telemetry(seq, 20 + (seq % 90) / 10)
            clients[seq % 4].publish(f"{prefix}/{device_id}/telemetry", body, 0)
            seq += 1
        sent.value = seq
        time.sleep(0.005)
    for c in clients:
        c.disconnect()
        c.loop_stop()


# --- the scripted device under test ---------------------------------------------


class Device:
    """A ps1 device that stamps command receipt and answers like the firmware."""

    def __init__(self, prefix, device_id):
        from firmware import protocol as P

        self.P = P
        self.root = f"{prefix}/{device_id}"
        self.seq = 0
        self.pump = False
        self.temp = 20.0
        self.received = []  # (time.time() ms, command id)
        self.arrived = threading.Event()
        self.c = mqtt_client(device_id)
        self.c.will_set(f"{self.root}/status", b"offline", 1, True)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.ready = threading.Event()

    def start(self):
        self.c.connect("127.0.0.1", 1883, keepalive=30)
        self.c.loop_start()
        assert self.ready.wait(10), "device did not connect"
        return self

    def _on_connect(self, c, userdata, flags, reason_code, properties):
        c.subscribe(f"{self.root}/cmd", 1)
        c.publish(f"{self.root}/status", b"online", 1, True)
        self.publish()
        self.ready.set()

    def publish(self, temp=None):
        if temp is not None:
            self.temp = temp
        self.seq += 1
        self.c.publish(
            f"{self.root}/telemetry", telemetry(self.seq, self.temp, self.pump), 0
        )

    def _on_message(self, c, userdata, msg):
        now = time.time() * 1000
        command = self.P.parse_command(msg.payload)
        self.received.append((now, command["id"]))
        self.arrived.set()
        if command["op"] == "pump":
            self.pump = command["value"] == "ON"
        c.publish(f"{self.root}/ack", self.P.encode_ack(command["id"], True), 1)
        self.publish()

    def stop(self):
        self.c.publish(f"{self.root}/status", b"offline", 1, True).wait_for_publish(2)
        self.c.disconnect()
        self.c.loop_stop()


def clear_retained(prefix):
    topics = set()
    c = mqtt_client(f"bench-clear-{uuid.uuid4().hex[:6]}")
    c.on_message = lambda cl, u, m: m.retain and m.payload and topics.add(m.topic)
    c.connect("127.0.0.1", 1883)
    c.loop_start()
    c.subscribe(f"{prefix}/#")
    time.sleep(0.5)
    for topic in list(topics):  # the network thread may still add some
        c.publish(topic, b"", 1, True).wait_for_publish(2)
    c.disconnect()
    c.loop_stop()


# --- set-up ---------------------------------------------------------------------------


def make_world(prefix, bg_count):
    from devices.models import Device as DeviceRow
    from devices.models import Pool
    from devices.services.brokers import broker_ensure_platform
    from tenants.models import Membership, Tenant, User

    broker = broker_ensure_platform()
    tag = prefix[-8:]
    tenant = Tenant.objects.create(name=f"Bench {tag}", slug=f"bench-{tag}")
    email = f"operator-{tag}@bench.test"
    user = User.objects.create_user(email=email, password=PASSWORD)
    Membership.objects.create(tenant=tenant, user=user, role="operator")
    pool = Pool.objects.create(tenant=tenant, name="Bench pool")
    target_id = f"ESP-{uuid.uuid4().hex[:6].upper()}"
    DeviceRow.objects.create(
        tenant=tenant,
        pool=pool,
        broker=broker,
        device_id=target_id,
        topic_prefix=prefix,
    )
    other = Tenant.objects.create(name=f"Bench others {tag}", slug=f"bench-o-{tag}")
    pools = Pool.objects.bulk_create(
        Pool(tenant=other, name=f"Other {i:04d}") for i in range(bg_count)
    )
    bg_ids = [f"ESP-{i:06X}" for i in range(bg_count)]
    DeviceRow.objects.bulk_create(
        DeviceRow(tenant=other, pool=p, broker=broker, device_id=d, topic_prefix=prefix)
        for p, d in zip(pools, bg_ids, strict=True)
    )
    return tenant, other, email, pool, target_id, bg_ids, [p.code for p in pools]


def watch_groups(codes, stop):
    """A channel-layer listener in every background pool's group (open browsers)."""
    from channels.layers import get_channel_layer

    from poolsaas.live.groups import pool_group, watch_announce

    received = {"n": 0}

    async def run():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        for code in codes:
            await layer.group_add(pool_group(code), channel)
            await watch_announce(layer, pool_group(code))  # as a page does
        while not stop.is_set():
            try:
                await asyncio.wait_for(layer.receive(channel), 1)
                received["n"] += 1
            except TimeoutError:
                continue
            except Exception:  # noqa: BLE001 - keep draining whatever Redis does
                await asyncio.sleep(0.1)
        for code in codes:
            await layer.group_discard(pool_group(code), channel)

    thread = threading.Thread(target=lambda: asyncio.run(run()), daemon=True)
    thread.start()
    return thread, received


def overview_timing(other_tenant):
    """Server time of the pools overview with 500 pools (in-process test client)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from tenants.auth import SESSION_KEY
    from tenants.models import Membership, User

    user = User.objects.create_user(
        email=f"viewer-{other_tenant.slug}@bench.test", password=None
    )
    Membership.objects.create(tenant=other_tenant, user=user, role="viewer")
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    session = client.session
    session[SESSION_KEY] = other_tenant.code.hex
    session.save()
    client.get("/pools/")  # warm up
    times = []
    for _ in range(20):
        started = time.perf_counter()
        response = client.get("/pools/")
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    with CaptureQueriesContext(connection) as queries:
        client.get("/pools/", {"page": 3})
    return statistics.median(times), len(queries.captured_queries)


def breakdown(device_id, clicks):
    """Where a click's time goes: browser -> command stored (page, socket, consumer,
    command_send), stored -> claimed by the bridge (doorbell, sweep), claimed -> at
    the device (publish through Mosquitto)."""
    from devices.models import Command

    commands = list(
        Command.objects.filter(device__device_id=device_id, sent_at__isnull=False)
        .order_by("-created_at")
        .values_list("created_at", "sent_at")[: len(clicks)]
    )[::-1]
    stored, claimed, delivered = [], [], []
    for (click, receipt), (created, sent) in zip(clicks, commands, strict=False):
        created_ms, sent_ms = created.timestamp() * 1000, sent.timestamp() * 1000
        stored.append(created_ms - click)
        claimed.append(sent_ms - created_ms)
        delivered.append(receipt - sent_ms)
    return "  click breakdown p50/p99 ms: " + ", ".join(
        f"{name} {pct(values, 50):.0f}/{pct(values, 99):.0f}"
        for name, values in (
            ("browser->stored", stored),
            ("stored->claimed by bridge", claimed),
            ("claimed->device", delivered),
        )
    )


# --- the run -----------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--background", type=int, default=1000, help="messages/s")
    parser.add_argument("--bg-devices", type=int, default=500)
    args = parser.parse_args()

    os.environ.setdefault("DATABASE_URL", DEFAULT_DB)
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/6")
    os.environ["DEBUG"] = "true"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "poolsaas.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.db import connection

    prefix = f"bench-dash-{uuid.uuid4().hex[:8]}"
    tenant, other, email, pool, target_id, bg_ids, bg_codes = make_world(
        prefix, args.bg_devices
    )
    connection.close()
    env = {**os.environ, "LOG_LEVEL": "WARNING"}
    port = free_port()
    procs = []
    stop = mp.Event()
    thread_stop = threading.Event()
    device = None
    try:
        bridge = subprocess.Popen(
            [sys.executable, "manage.py", "mqtt_bridge", "--stats-interval", "3600"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        procs.append(bridge)
        web = DaphneProcess(env, port)
        procs.append(web.proc)
        web.wait_ready()
        device = Device(prefix, target_id).start()
        sent = mp.Value("l", 0)
        bg = mp.Process(
            target=background, args=(prefix, bg_ids, args.background, stop, sent)
        )
        bg.start()
        procs.append(bg)
        watcher, watched = watch_groups(bg_codes, thread_stop)

        from devices.models import Device as DeviceRow

        deadline = time.monotonic() + 30
        while not DeviceRow.objects.get(device_id=target_id).online:
            if time.monotonic() > deadline:
                raise RuntimeError("the bridge did not see the device")
            device.publish()
            time.sleep(0.5)

        from playwright.sync_api import sync_playwright

        base = f"http://127.0.0.1:{port}"
        publish_ms, click_ms, answer_ms = [], [], []
        clicks = []  # (browser click ms, device receipt ms)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.goto(f"{base}/login/")
            page.fill("#id_username", email)
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url("**/pools/")
            page.goto(f"{base}/pools/{pool.code.hex}/")
            page.wait_for_function(
                "() => document.getElementById('page-conn').textContent === 'live'"
                " && !document.getElementById('pump').disabled",
                timeout=20_000,
            )
            page.evaluate(
                """() => {
                  window.__seen = {};
                  const el = document.getElementById('temperature');
                  new MutationObserver(() => {
                    if (!(el.textContent in window.__seen)) {
                      window.__seen[el.textContent] = Date.now();
                    }
                  }).observe(el, {childList: true, characterData: true, subtree: true});
                  const pump = document.getElementById('pump');
                  new MutationObserver(() => {
                    if (!pump.classList.contains('pending')) {
                      window.__answered = window.__answered || Date.now();
                    }
                  }).observe(pump, {attributes: true, attributeFilter: ['class']});
                }"""
            )
            background_start = time.monotonic()
            sent_start = sent.value
            # 1. device publish -> visible. Spaced past the bridge's 0.25 s merge
            # window, so each sample is a first update after a quiet spell.
            for i in range(args.samples):
                temp = round(30 + i / 10, 1)
                t0 = time.time() * 1000
                device.publish(temp)
                label = f"{temp:.1f} °C"
                try:
                    page.wait_for_function(
                        f"() => window.__seen[{json.dumps(label)}] !== undefined",
                        timeout=5000,
                        polling=5,
                    )
                except Exception:  # noqa: BLE001 - counted as lost, the run goes on
                    publish_ms.append(float("inf"))
                    continue
                seen = page.evaluate(f"() => window.__seen[{json.dumps(label)}]")
                publish_ms.append(seen - t0)
                time.sleep(0.3)
            # 2. click -> device receipt, then wait for the device's confirmation.
            for _ in range(args.samples):
                device.arrived.clear()
                t_click = page.evaluate(
                    "() => { const t = Date.now(); window.__answered = 0;"
                    " document.getElementById('pump').click(); return t; }"
                )
                if not device.arrived.wait(5):
                    click_ms.append(float("inf"))
                    continue
                click_ms.append(device.received[-1][0] - t_click)
                clicks.append((t_click, device.received[-1][0]))
                try:
                    page.wait_for_function(
                        "() => !document.getElementById('pump').classList.contains"
                        "('pending')",
                        timeout=20_000,
                    )
                except Exception:  # noqa: BLE001 - counted as lost, the run goes on
                    answer_ms.append(float("inf"))
                    continue
                answer_ms.append(page.evaluate("() => window.__answered") - t_click)
                time.sleep(0.25)  # stay under the socket's 5 commands/s
            bg_rate = (sent.value - sent_start) / (time.monotonic() - background_start)
            browser.close()

        def line(name, values):
            lost = sum(1 for v in values if v == float("inf"))
            ok = [v for v in values if v != float("inf")]
            return (
                f"{name:<34} n={len(ok):>3}  p50 {pct(ok, 50):6.1f} ms  "
                f"p99 {pct(ok, 99):6.1f} ms  "
                f"max {max(ok, default=float('nan')):6.1f} ms  "
                f"lost {lost}"
            )

        print(f"background traffic: {bg_rate:,.0f} messages/s from {len(bg_ids)} pools")
        print(f"  (pool-group messages received by the watcher: {watched['n']:,})")
        print(line("device publish -> browser visible", publish_ms))
        print(line("browser click -> device receipt", click_ms))
        print(line("browser click -> answer visible", answer_ms))
        print(breakdown(target_id, clicks))
        overview_ms, overview_queries = overview_timing(other)
        print(
            f"pools overview, 500 pools: {overview_ms:.1f} ms server time (median), "
            f"{overview_queries} queries"
        )
    finally:
        thread_stop.set()
        stop.set()
        if device is not None:
            device.stop()
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            if isinstance(proc, subprocess.Popen):
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
            else:
                proc.join(5)
        clear_retained(prefix)


if __name__ == "__main__":
    main()
