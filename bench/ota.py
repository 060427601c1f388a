"""OTA benchmark: a campaign updating --devices simulated devices with a --size bundle
through the real bridge, Mosquitto and PostgreSQL.

    .venv/bin/python bench/ota.py [--devices 200] [--size 262144] [--profile FILE]

Loopback only, bounded (a few minutes at most), in its own database (default
postgres://postgres@127.0.0.1:5432/poolsaas_otabench, created when missing) with its
own tenant, devices and release under a random topic prefix, all removed at the end.

- Devices: firmware.sim load mode (2 processes, 25 shared MQTT connections each),
  every device taking the update through the board's own firmware/updater.py into a
  folder of its own (chunks pulled by index, hashed as written, verified, unpacked,
  swapped by otaboot, `succeeded` reported by the "rebooted" new version).
- Campaign: rollout rate unlimited (every device offered at the first step). The
  Celery beat step (`ota.advance_campaigns`) is called here every 0.5 s, in this
  process, not by a Celery worker: the figures are about the transfer.
- Bridge: `manage.py mqtt_bridge` (one process; `--profile`: under py-spy), with the
  OTA budgets from --chunks-per-s / --device-chunks-per-s (the settings
  OTA_CHUNKS_PER_S, OTA_DEVICE_CHUNKS_PER_S) and a broadcast window of 50 ms.
- Bare broker: a paho publisher and a paho subscriber (another process) moving the
  same chunks (devices x chunks, 8-byte header + 4 KB, QoS 0, one topic per device)
  through the same Mosquitto in the same run: MB/s at the subscriber.
- Telemetry: --telemetry-rate (50) stamped messages/s from the same devices all along
  (raw MQTT publisher), received as pool.state on the channel layer by watchers of
  --watch pools (as pages do); p50/p99 in the 15 s before the campaign and during it.
"""

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    BridgeProcess,
    ensure_database,
    loopback_url,
    mqtt_connect,
    pct,
    publish_packet,
    remove_fleet,
    seed_fleet,
    varint,
)
from bench.ingest import EPOCH, telemetry  # noqa: E402

CHUNK = 4096
HEADER = 8


def bundle(size: int) -> bytes:
    """A PSB1 bundle of exactly `size` bytes: a config module and padding."""
    from firmware.tools.bundle import pack

    head = {"config.py": b'FW_VERSION = "ps1-2.0.0"\n'}
    base = len(pack({**head, "pad.py": b""}))
    pad = size - base - len(str(size))  # the size line grows with the number
    data = pack({**head, "pad.py": b"#" * pad})
    pad += size - len(data)
    data = pack({**head, "pad.py": b"#" * pad})
    assert len(data) == size, len(data)
    return data


# --- the bare broker: paho publisher -> paho subscriber -----------------------------


def bare_subscriber(host, port, topic_filter, expected, ready, result, count):
    import paho.mqtt.client as mqtt

    got = {"n": 0, "bytes": 0, "first": None, "last": None}
    done = threading.Event()

    def on_message(client, userdata, message):
        now = time.monotonic()
        if got["first"] is None:
            got["first"] = now
        got["n"] += 1
        got["bytes"] += len(message.payload) - HEADER
        got["last"] = now
        if got["n"] % 50 == 0:
            count.value = got["n"]
        if got["n"] >= expected:
            done.set()

    c = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"otabench-bare-sub-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv311,
    )
    c.on_message = on_message
    c.on_connect = lambda client, *a: client.subscribe(topic_filter, 0)
    c.connect(host, port, 60)
    c.loop_start()
    time.sleep(0.5)
    ready.set()
    done.wait(90)
    count.value = got["n"]
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()
    result.put(got)


def bare_broker(host, port, prefix, ids, data) -> dict:
    """The same chunks (every device, every index) through a bare paho pair, at
    most IN_FLIGHT on the way at once (what 200 devices asking for windows of 4
    have at most: the broker drops QoS 0 messages beyond its queue otherwise)."""
    import paho.mqtt.client as mqtt

    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    ctx = mp.get_context("fork")
    ready, result, count = ctx.Event(), ctx.Queue(), ctx.Value("q", 0)
    expected = len(ids) * len(chunks)
    in_flight = 4 * len(ids)
    sub = ctx.Process(
        target=bare_subscriber,
        args=(
            host,
            port,
            f"{prefix}-bare/+/ota/chunk",
            expected,
            ready,
            result,
            count,
        ),
        daemon=True,
    )
    sub.start()
    ready.wait(20)
    pub = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"otabench-bare-pub-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv311,
    )
    pub.max_queued_messages_set(0)
    pub.connect(host, port, 60)
    pub.loop_start()
    started = time.monotonic()
    # As the bridge serves them: every device's next chunk in turn.
    sent = 0
    limit = time.monotonic() + 90
    for index, chunk in enumerate(chunks):
        for device_id in ids:
            while sent - count.value >= in_flight and time.monotonic() < limit:
                time.sleep(0.0005)
            sent += 1
            payload = (1).to_bytes(4, "big") + index.to_bytes(4, "big") + chunk
            pub.publish(f"{prefix}-bare/{device_id}/ota/chunk", payload, qos=0)
    sent_s = time.monotonic() - started
    got = result.get(timeout=90)
    sub.join(10)
    pub.disconnect()
    pub.loop_stop()
    span = (got["last"] or 0) - (got["first"] or 0)
    return {
        "sent": expected,
        "received": got["n"],
        "mb_s": got["bytes"] / 1e6 / span if span > 0 else float("nan"),
        "publish_s": sent_s,
    }


# --- telemetry latency: a stamped publisher, channel-layer receivers ---------------


def telemetry_publisher(host, port, topics, rate, stop, result):
    sock = mqtt_connect(host, port, f"otabench-tel-{uuid.uuid4().hex[:8]}")
    started, sent, n = time.monotonic(), 0, len(topics)
    while not stop.is_set():
        due = int(rate * (time.monotonic() - started)) - sent
        if due <= 0:
            time.sleep(0.002)
            continue
        stamp = int((time.time() - EPOCH) * 1000)
        sock.sendall(
            b"".join(
                publish_packet(topics[(sent + k) % n], telemetry(sent + k, stamp))
                for k in range(min(due, 500))
            )
        )
        sent += min(due, 500)
    sock.sendall(b"\xe0\x00")
    sock.close()
    result.put(sent)


def receiver_process(pool_codes, stop_at, result):
    try:
        result.put(asyncio.run(receive(pool_codes, stop_at)))
    except Exception as exc:  # noqa: BLE001 - report, do not hang the bench
        print(f"latency receiver failed: {exc!r}")
        result.put([])


async def receive(pool_codes, stop_at):
    """(stamp ms, latency ms) of every pool.state for the watched pools."""
    from channels.layers import get_channel_layer
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from poolsaas.live.groups import pool_group, watch_announce

    layer = get_channel_layer()
    channel = await layer.new_channel()
    for code in pool_codes:
        await layer.group_add(pool_group(code), channel)
        await watch_announce(layer, pool_group(code))
    seen = []

    async def collect():
        while True:
            try:
                message = await layer.receive(channel)
            except RedisTimeoutError:
                continue
            if message.get("type") != "pool.state":
                continue
            stamp = (message.get("state") or {}).get("uptime")
            if stamp:
                seen.append((stamp, (time.time() - EPOCH) * 1000 - stamp))

    try:
        await asyncio.wait_for(collect(), max(0.0, stop_at - time.time()))
    except TimeoutError:
        pass
    return seen


def clear_retained(host, port, topics) -> None:
    """The load devices' retained `status` (a shared broker keeps it otherwise)."""
    sock = mqtt_connect(host, port, f"otabench-clear-{uuid.uuid4().hex[:8]}")
    for topic in topics:
        body = len(topic.encode()).to_bytes(2, "big") + topic.encode()
        sock.sendall(b"\x31" + varint(len(body)) + body)  # PUBLISH, retain, empty
    sock.sendall(b"\xe0\x00")
    sock.close()


# --- the run --------------------------------------------------------------------------


def main() -> int:  # noqa: PLR0915 - one straight run, phase after phase
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--size", type=int, default=256 * 1024)
    parser.add_argument("--chunks-per-s", type=int, default=None)
    parser.add_argument("--device-chunks-per-s", type=int, default=None)
    parser.add_argument("--telemetry-rate", type=int, default=50)
    parser.add_argument("--watch", type=int, default=100)
    parser.add_argument("--baseline-s", type=float, default=15.0)
    parser.add_argument("--limit-s", type=float, default=240.0)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/poolsaas_otabench",
        ),
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/3"),
    )
    parser.add_argument("--mqtt", default="127.0.0.1:1883")
    parser.add_argument("--profile", help="run the bridge under py-spy (raw stacks)")
    args = parser.parse_args()
    host, port = args.mqtt.split(":")
    port = int(port)
    loopback_url(f"mqtt://{host}:{port}", "the broker")
    loopback_url(args.database_url, "the database")
    loopback_url(args.redis_url, "Redis")
    work = Path(tempfile.mkdtemp(prefix="otabench-"))
    env = dict(
        os.environ,
        DEBUG="true",
        DATABASE_URL=args.database_url,
        REDIS_URL=args.redis_url,
        MQTT_URL=f"mqtt://{host}:{port}",
        DJANGO_SETTINGS_MODULE="poolsaas.settings",
        LOG_LEVEL="INFO",
        MEDIA_ROOT=str(work / "media"),
        OTA_SECRET=f"otabench-{uuid.uuid4().hex}",
    )
    if args.chunks_per_s is not None:
        env["OTA_CHUNKS_PER_S"] = str(args.chunks_per_s)
    if args.device_chunks_per_s is not None:
        env["OTA_DEVICE_CHUNKS_PER_S"] = str(args.device_chunks_per_s)
    os.environ.update(env)
    ensure_database(args.database_url)
    import django

    django.setup()
    from django.conf import settings
    from django.core.files.base import ContentFile
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from devices.services.brokers import broker_ensure_platform
    from firmware.sim.load import LoadRun
    from ota.models import Campaign, DeviceUpdate, Release
    from ota.services import campaign_set_state, device_ota_key, release_create
    from ota.tasks import advance_campaigns
    from tenants.models import Tenant

    load0 = os.getloadavg()
    prefix = f"otab-{uuid.uuid4().hex[:8]}"
    # What an interrupted run left behind.
    for stale in Tenant.objects.filter(slug__startswith="otab-"):
        remove_fleet(stale)
    Release.objects.filter(hardware_model="esp32", version="2.0.0").delete()
    print(
        f"ota bench: {args.devices} devices x {args.size} B under {prefix}/, broker "
        f"{host}:{port}, budgets {settings.OTA_CHUNKS_PER_S} chunks/s in all, "
        f"{settings.OTA_DEVICE_CHUNKS_PER_S} per device; load average {load0[0]:.2f}"
    )
    data = bundle(args.size)
    ids = [f"ESP-{0xB00000 + i:06X}" for i in range(args.devices)]
    bare = bare_broker(host, port, prefix, ids, data)
    print(
        f"[bare] paho publisher -> Mosquitto -> paho subscriber, the same "
        f"{bare['sent']} chunks: {bare['mb_s']:.1f} MB/s "
        f"(received {bare['received']}/{bare['sent']})"
    )

    broker = broker_ensure_platform()
    tenant, pools = seed_fleet(name="OTA bench", prefix=prefix, ids=ids, broker=broker)
    release = release_create(
        upload=ContentFile(data, name="bench.bin"),
        version="2.0.0",
        hardware_model="esp32",
    )
    campaign = None
    run = None
    stop_tel = mp.get_context("fork").Event()
    bridge = BridgeProcess(env, args.profile, ("--broadcast-window", "0.05"))
    try:
        bridge.wait_stats(lambda st: st.get("devices") == args.devices, timeout=120)
        bridge.wait_stats(lambda st: all(st.get("connections", {0: 0}).values()))
        ota = {i: {"key": device_ota_key(i).hex()} for i in ids}
        run = LoadRun(
            ids,
            broker=f"mqtt://{host}:{port}",
            prefix=prefix,
            interval=3600,  # their own telemetry out of the way: the stamped one
            processes=2,
            connections=25,
            ota=ota,
            ota_dir=str(work / "boards"),
        ).start()
        time.sleep(2)

        # Telemetry all along; receivers until the bound.
        ctx = mp.get_context("fork")
        stop_at = time.time() + args.baseline_s + args.limit_s + 10
        rec_out = ctx.Queue()
        watched = [p.code for p in pools[: args.watch]]
        receivers = [
            ctx.Process(
                target=receiver_process,
                args=(watched[i::2], stop_at, rec_out),
                daemon=True,
            )
            for i in range(2)
        ]
        for r in receivers:
            r.start()
        time.sleep(2.0)  # the bridge rereads watched groups every second
        tel_out = ctx.Queue()
        tel = ctx.Process(
            target=telemetry_publisher,
            args=(
                host,
                port,
                [f"{prefix}/{i}/telemetry" for i in ids],
                args.telemetry_rate,
                stop_tel,
                tel_out,
            ),
            daemon=True,
        )
        tel.start()
        base_from = (time.time() - EPOCH) * 1000 + 2000
        time.sleep(args.baseline_s + 2)
        base_to = (time.time() - EPOCH) * 1000

        campaign = Campaign.objects.create(
            tenant=tenant,
            release=release,
            target_all=True,
            rate_per_minute=1_000_000,  # unlimited: every device at the first step
            abort_after=args.devices + 1,
            retries=0,
        )
        cpu0 = bridge.cpu_seconds()
        sent0 = bridge.stats.get("ota_chunks_sent", 0)
        # Audited like any start: the bench's tenant row stays behind (with its
        # audit trail, append-only); everything else of it is removed.
        campaign_set_state(campaign, "start")
        started = time.monotonic()
        camp_from = (time.time() - EPOCH) * 1000
        samples = []  # (t, chunks sent by the bridge)
        final = 0
        deadline = started + args.limit_s
        next_step = 0.0
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_step:
                advance_campaigns()
                next_step = now + 0.5
            samples.append((now, bridge.stats.get("ota_chunks_sent", 0)))
            updates = DeviceUpdate.objects.filter(campaign=campaign)
            final = updates.filter(state__in=DeviceUpdate.FINAL).count()
            if final >= args.devices:
                break
            time.sleep(0.25)
        total = time.monotonic() - started
        camp_to = (time.time() - EPOCH) * 1000
        cpu = bridge.cpu_seconds() - cpu0
        load1 = os.getloadavg()
        time.sleep(1.5)  # the last stats line
        states = dict(
            DeviceUpdate.objects.filter(campaign=campaign)
            .values_list("state")
            .annotate(n=django.db.models.Count("pk"))
        )
        sent = bridge.stats.get("ota_chunks_sent", 0) - sent0
        moving = [
            t for (t, c), (_, p) in zip(samples[1:], samples, strict=False) if c != p
        ]
        span = (moving[-1] - moving[0]) if len(moving) > 1 else total
        payload_mb = args.devices * args.size / 1e6
        bridge_mb_s = sent * CHUNK / 1e6 / max(span, 1e-9)
        print(
            f"[campaign] {final}/{args.devices} final in {total:.1f} s {states}: "
            f"{payload_mb:.1f} MB, {payload_mb / total:.2f} MB/s over the campaign; "
            f"the bridge sent {sent} chunks ({sent * CHUNK / 1e6:.1f} MB) at "
            f"{bridge_mb_s:.2f} MB/s while sending ({span:.1f} s) = "
            f"{bridge_mb_s / bare['mb_s']:.2f} of the bare broker; bridge CPU "
            f"{cpu:.1f} s ({100 * cpu / total:.0f} % of a core), deferred "
            f"{bridge.stats.get('ota_deferred')}"
        )
        time.sleep(3)  # telemetry after the campaign is not counted
        stop_tel.set()
        tel_sent = tel_out.get(timeout=30)
        seen = []
        for _ in receivers:
            seen += rec_out.get(timeout=args.limit_s + 60)
        base = [lat for stamp, lat in seen if base_from <= stamp < base_to]
        during = [lat for stamp, lat in seen if camp_from <= stamp < camp_to]
        b99, d99 = pct(base, 0.99), pct(during, 0.99)
        print(
            f"[telemetry] {args.telemetry_rate} msg/s ({tel_sent} sent), "
            f"{args.watch} pools watched: device -> channel layer without OTA "
            f"p50 {pct(base, 0.5):.1f} ms p99 {b99:.1f} ms ({len(base)}); during "
            f"the campaign p50 {pct(during, 0.5):.1f} ms p99 {d99:.1f} ms "
            f"({len(during)}): {d99 / b99:.2f} x"
        )
        run.stop()
        done = run.ota_done or {}
        resumed = [d for d in done.values() if d.get("dropped_at") is not None]
        on_new = sum(d["version"] == "2.0.0" for d in done.values())
        print(
            f"[devices] {on_new}/{len(done)} run 2.0.0 (simulators' own view); "
            f"{len(resumed)} had a link drop"
        )
        print(
            f"load average {load0[0]:.2f} at the start, {load1[0]:.2f} at the end of "
            f"the campaign ({os.cpu_count()} cores)"
        )
        print(
            "summary: "
            + json.dumps(
                {
                    "devices": args.devices,
                    "size": args.size,
                    "final": final,
                    "succeeded": states.get("succeeded", 0),
                    "total_s": round(total, 1),
                    "bridge_mb_s": round(bridge_mb_s, 2),
                    "bare_mb_s": round(bare["mb_s"], 2),
                    "ratio": round(bridge_mb_s / bare["mb_s"], 2),
                    "tel_p99_base_ms": round(b99, 1),
                    "tel_p99_ota_ms": round(d99, 1),
                    "tel_ratio": round(d99 / b99, 2),
                    "chunks_per_s": settings.OTA_CHUNKS_PER_S,
                    "device_chunks_per_s": settings.OTA_DEVICE_CHUNKS_PER_S,
                    "load": [round(load0[0], 2), round(load1[0], 2)],
                }
            )
        )
        return 0
    finally:
        stop_tel.set()
        if run is not None:
            run.stop()
        bridge.stop()
        clear_retained(host, port, [f"{prefix}/{i}/status" for i in ids])
        remove_fleet(tenant)
        release.file.delete(save=False)
        Release.objects.filter(pk=release.pk).delete()
        shutil.rmtree(work, ignore_errors=True)
        print("bench data removed")


if __name__ == "__main__":
    sys.exit(main())
