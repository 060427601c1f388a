"""Gateway benchmark: device publish -> MQTT gateway client, beside the JSON socket.

    .venv/bin/python bench/gateway.py [--clients 500] [--rate 1000] [--seconds 30]

Processes, all on loopback: daphne (the web app, serving the gateway's `/mqtt` and the
JSON socket `/ws/pools/<code>/`), `manage.py mqtt_bridge`, the machine's Mosquitto
(127.0.0.1:1883), Redis (channel layer), PostgreSQL (its own database, default
postgres://postgres@127.0.0.1:5432/poolsaas_bench_gateway, created when missing;
BENCH_DATABASE_URL / BENCH_REDIS_URL change them), a device publisher process and this
process, the load generator.

The world: --clients v3.1 devices, one per pool, in tenants of --per-tenant pools, and
one user per pool. One user logs in with `POST /api/login`, whose answer gives the
gateway's URL (`mqttGateway`) and the JSON socket's (`liveUrl`); the others' tokens are
minted the way the login mints them (tenants.auth.refresh_token_for), since 500
password hashes would only time the hasher. Each gateway client is an MQTT 3.1.1 client
over WebSocket (subprotocol `mqtt`) with its user's access token as the password,
subscribed to the five v3.1 topics of its pool's device (one SUBSCRIBE with five
filters). --json-clients JSON sockets (Bearer token, as an integrator's script)
watch pools spread over the same pools, so the same `pool.state` messages reach both
kinds of socket in the same daphne process, and each message seen by both gives a
per-message difference too.

The devices publish `temperature/state` at --rate messages/s in all, round robin (each
device every clients/rate s: 0.5 s by default, longer than the bridge's 0.25 s
broadcast window, so no update is merged away), as raw pre-encoded MQTT PUBLISH packets
from a separate process (bench/_common.py), cheap enough not to compete.

Timestamps: the v3.1 payload of `temperature/state` is the bare number (`25.3`), and
the gateway rebuilds it from the bridge's state, so no send time can ride in it. Values
are matched instead: a device's n-th message carries the temperature (n mod 1000) / 10,
the publisher records the wall-clock send time of every message, and a receipt of value
v on device d is the latest message of d with that value sent before the receipt
(ambiguous only if a message took 1000 of its device's periods, 500 s by default). The
JSON socket's `state.temperature` is matched the same way. One clock (time.time()) on
one machine; a socket counts a value once (a state message that repeats it, for another
change, is not a new delivery). Messages sent during the first --warmup s are not
measured; then --seconds of them are, and the run stops by itself.

The load generator: every socket in one asyncio loop (the `websockets` library, no
compression, and a few lines of MQTT encoding: CONNECT, SUBSCRIBE, PINGREQ out; CONNACK,
SUBACK, PUBLISH in). It prints its own CPU share and its event loop's lag (a 10 ms
ticker): a receipt is stamped when the loop gets to it, so a loop lag near the
latencies would mean the generator, not the gateway, is measured.

Figures: p50/p99 of device publish -> gateway client (all clients) and -> JSON socket,
the gateway's on exactly the messages the JSON sockets got, and the difference at p99,
both of all clients and of the same messages, plus the per-message difference (the
gateway's receipt of a message minus the JSON socket's). Goal (issue 13): the gateway
adds under 10 ms at p99 over the JSON socket, judged on the same messages: a backlog
anywhere upstream (bridge, Redis, daphne's channel-layer intake) delays both kinds of
socket alike, and the p99 of 500 clients' messages against 50 sockets' is then mostly
the difference between two samples. Messages sent in the window that no socket got
(merged by the bridge's 0.25 s window, or dropped by channels-redis when daphne's
inbox, one Redis key of `capacity` messages for all its sockets, is full) are counted.
--profile FILE runs daphne under py-spy (collapsed stacks in FILE, summarised by
bench/profile_summary.py FILE). Data: the bench tenants are removed at the end, except
the one the login user is in (its audit trail is append-only; drop the bench database
to clean up).
"""

import argparse
import array
import asyncio
import http.client
import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    BridgeProcess,
    DaphneProcess,
    ensure_database,
    free_port,
    loopback_url,
    mqtt_connect,
    pct,
    publish_packet,
    server_environment,
    utf8,
    varint,
)

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/poolsaas_bench_gateway"
DEFAULT_REDIS = "redis://127.0.0.1:6379/7"
SLUG = "bench-gw-"
EMAIL_DOMAIN = "gw.bench.test"
PASSWORD = "bench-gateway-password-1"  # noqa: S105 - a throwaway bench user
VALUES = 1000  # distinct temperatures per device: 0.0 .. 99.9
KEEPALIVE = 60
CONNECTING = 20  # handshakes in flight
DRAIN_LIMIT = 60.0  # s after the window, for the last messages
ATTEMPTS = 3  # per socket, to connect


# --- the world ----------------------------------------------------------------------


def cleanup() -> None:
    """Remove earlier runs' bench tenants (those without an audit trail) and users."""
    from django.db.models import ProtectedError

    from audit.models import AuditChain
    from devices.models import Device, Pool
    from telemetry.models import TelemetrySample
    from tenants.models import Tenant, User

    for tenant in Tenant.objects.filter(slug__startswith=SLUG):
        TelemetrySample.objects.filter(tenant=tenant).delete()
        Device.objects.filter(tenant=tenant).delete()
        Pool.objects.filter(tenant=tenant).delete()
        if not tenant.audit_events.exists():
            AuditChain.objects.filter(key=tenant.code.hex).delete()
            tenant.delete()
    for user in User.objects.filter(email__endswith=f"@{EMAIL_DOMAIN}"):
        try:
            user.delete()
        except ProtectedError:
            pass  # the login user of a kept tenant


def seed(clients: int, per_tenant: int, prefix: str) -> list[dict]:
    """Tenants, one pool + v3.1 device + operator per client. Returns per client:
    user, membership, pool code, device id."""
    from devices.models import Device, Pool
    from devices.services.brokers import broker_ensure_platform
    from tenants.models import Membership, Tenant, User

    broker = broker_ensure_platform()
    tag = prefix[-8:]
    tenants = [
        Tenant.objects.create(name=f"Bench gateway {tag} {t}", slug=f"{SLUG}{tag}-{t}")
        for t in range(math.ceil(clients / per_tenant))
    ]
    owner_of = [tenants[i // per_tenant] for i in range(clients)]
    pools = Pool.objects.bulk_create(
        Pool(tenant=owner_of[i], name=f"Bench pool {i:04d}") for i in range(clients)
    )
    ids = [f"ESP-{i:06X}" for i in range(clients)]
    Device.objects.bulk_create(
        Device(
            tenant=owner_of[i],
            pool=pools[i],
            broker=broker,
            device_id=ids[i],
            topic_prefix=prefix,
            protocol=Device.Protocol.LEGACY,
        )
        for i in range(clients)
    )
    users = []
    for i in range(clients):
        user = User(email=f"dash-{tag}-{i}@{EMAIL_DOMAIN}")
        user.set_unusable_password()
        users.append(user)
    users = User.objects.bulk_create(users)
    users[0].set_password(PASSWORD)
    users[0].save(update_fields=["password"])
    memberships = Membership.objects.bulk_create(
        Membership(tenant=owner_of[i], user=users[i], role="operator")
        for i in range(clients)
    )
    return [
        {
            "email": users[i].email,
            "user_hex": users[i].code.hex,
            "membership": memberships[i],
            "pool": pools[i].code.hex,
            "device": ids[i],
        }
        for i in range(clients)
    ]


def login(port: int, email: str) -> dict:
    """POST /api/login, as a dashboard does."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "POST",
        "/api/login",
        body=json.dumps({"email": email, "password": PASSWORD}),
        headers={"Content-Type": "application/json"},
    )
    response = conn.getresponse()
    body = response.read()
    conn.close()
    if response.status != 200:
        raise SystemExit(f"login answered {response.status}: {body[:300]!r}")
    return json.loads(body)


# --- the devices (their own process) ------------------------------------------------


def temperature_key(seq: int) -> int:
    """The tenths of a degree a device's message number `seq` carries."""
    return seq % VALUES


def publisher(host, port, topics, rate, duration, go, result):
    """Publish `temperature/state` for `topics` round robin at `rate` msg/s for
    `duration` s once `go` is set; sends back every message's send time."""
    n = len(topics)
    sent_at = array.array("d")
    go.wait(600)
    sock = mqtt_connect(host, port, f"bench-gw-pub-{uuid.uuid4().hex[:8]}")
    cpu0 = time.process_time()
    started = time.monotonic()
    sent = 0
    while True:
        elapsed = time.monotonic() - started
        if elapsed >= duration:
            break
        due = min(int(rate * elapsed) - sent, 2 * n)
        if due <= 0:
            time.sleep(0.001)
            continue
        data = b"".join(
            publish_packet(
                topics[k % n], f"{temperature_key(k // n) / 10:.1f}".encode()
            )
            for k in range(sent, sent + due)
        )
        now = time.time()
        sock.sendall(data)
        sent_at.extend([now] * due)
        sent += due
    elapsed = time.monotonic() - started
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    result.put((sent_at.tobytes(), elapsed, time.process_time() - cpu0))


# --- MQTT over WebSocket, the few packets a subscriber needs -------------------------


def connect_packet(client_id: str, username: str, password: str) -> bytes:
    flags = 0x80 | 0x40 | 0x02  # username, password, clean session
    body = utf8("MQTT") + bytes([4, flags]) + KEEPALIVE.to_bytes(2, "big")
    body += utf8(client_id) + utf8(username) + utf8(password)
    return b"\x10" + varint(len(body)) + body


def subscribe_packet(packet_id: int, filters: list[str]) -> bytes:
    body = packet_id.to_bytes(2, "big")
    for topic_filter in filters:
        body += utf8(topic_filter) + b"\x00"
    return b"\x82" + varint(len(body)) + body


PINGREQ = b"\xc0\x00"


def packets(buffer: bytearray):
    """Cut whole MQTT packets (first byte, body) off the front of `buffer`."""
    out = []
    while len(buffer) >= 2:
        length, shift, i = 0, 0, 1
        while True:
            if i >= len(buffer):
                return out
            byte = buffer[i]
            length |= (byte & 0x7F) << shift
            shift += 7
            i += 1
            if not byte & 0x80:
                break
        if len(buffer) < i + length:
            return out
        out.append((buffer[0], bytes(buffer[i : i + length])))
        del buffer[: i + length]
    return out


class Receipts:
    """What the sockets of one kind received: (receive time, device, value)."""

    def __init__(self):
        self.times = array.array("d")
        self.devices = array.array("i")
        self.keys = array.array("i")

    def add(self, at: float, device: int, key: int) -> None:
        self.times.append(at)
        self.devices.append(device)
        self.keys.append(key)


async def gateway_client(url, user, index, device, topics, receipts, sockets, live):
    from websockets.asyncio.client import connect

    ws = await connect(
        url,
        subprotocols=["mqtt"],
        compression=None,
        ping_interval=None,
        max_size=None,
        open_timeout=30,
    )
    client_id = user.get("client_id") or f"dashboard-{user['user_hex']}-{index:04x}"
    buffer = bytearray()
    try:
        await ws.send(connect_packet(client_id, user["email"], user["token"]))
        stage = "connack"
        while stage != "live":
            buffer += await ws.recv()
            for first, body in packets(buffer):
                kind = first >> 4
                if kind == 2:  # CONNACK
                    if body[1] != 0:
                        raise RuntimeError(f"CONNACK {body[1]} for client {index}")
                    await ws.send(subscribe_packet(1, topics))
                    stage = "suback"
                elif kind == 9:  # SUBACK
                    if 0x80 in body[2:]:
                        raise RuntimeError(f"SUBACK refused for {index}: {body!r}")
                    stage = "live"
    except BaseException:
        ws.transport.abort()
        raise
    sockets.append(ws)
    live.add(device)
    temperature_topic = next(t for t in topics if t.endswith("/temperature/state"))
    last = -1

    async def read():
        nonlocal last
        async for frame in ws:
            buffer.extend(frame)
            for first, body in packets(buffer):
                if first >> 4 != 3 or first & 0x01:  # not a PUBLISH, or retained
                    continue
                at = time.time()
                size = int.from_bytes(body[:2], "big")
                if body[2 : 2 + size].decode() != temperature_topic:
                    continue
                start = 2 + size + (2 if first & 0x06 else 0)
                key = round(float(body[start:]) * 10)
                if key != last:
                    last = key
                    receipts.add(at, device, key)

    return asyncio.ensure_future(read())


async def json_client(url, token, origin, device, receipts, sockets, live):
    from websockets.asyncio.client import connect

    ws = await connect(
        url,
        additional_headers={"Authorization": f"Bearer {token}"},
        origin=origin,
        open_timeout=30,
        compression=None,
        ping_interval=None,
        max_size=None,
    )
    try:
        snapshot = json.loads(await ws.recv())
        if snapshot.get("type") != "snapshot":
            raise RuntimeError(f"JSON socket said {snapshot}")
    except BaseException:
        ws.transport.abort()
        raise
    sockets.append(ws)
    live.add(device)
    last = -1

    async def read():
        nonlocal last
        async for text in ws:
            at = time.time()
            message = json.loads(text)
            if message.get("type") != "state":
                continue
            temperature = (message.get("state") or {}).get("temperature")
            if temperature is None:
                continue
            key = round(temperature * 10)
            if key != last:
                last = key
                receipts.add(at, device, key)

    return asyncio.ensure_future(read())


async def gathered(factories, limit, failures):
    """Run the coroutine factories with at most `limit` at once, each tried up to
    ATTEMPTS times (a loaded machine times handshakes out); what still fails is
    appended to `failures` and left out of the results."""
    gate = asyncio.Semaphore(limit)

    async def one(factory):
        for attempt in range(ATTEMPTS):
            async with gate:
                try:
                    return await asyncio.wait_for(factory(), 60)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    if attempt == ATTEMPTS - 1:
                        failures.append(exc)
        return None

    results = await asyncio.gather(*(one(f) for f in factories))
    return [r for r in results if r is not None]


async def pinger(sockets, stop):
    """PINGREQ on every gateway socket, well inside the keepalive."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), KEEPALIVE / 3)
        except TimeoutError:
            for ws in list(sockets):
                try:
                    await ws.send(PINGREQ)
                except Exception:  # noqa: BLE001, S112 - a closed socket stops reading
                    continue


async def loop_lag(samples, stop, period=0.01):
    """How late the load generator's loop wakes up (ms), every `period` s."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + period
        await asyncio.sleep(period)
        samples.append((loop.time() - due) * 1000)


# --- matching ------------------------------------------------------------------------


def latencies(receipts, sent_at, devices, window):
    """{(device, seq): latency ms} of the receipts whose message was sent in
    `window` (start, end): each receipt matched to its device's latest message with
    that value sent before it."""
    start, end = window
    sent = len(sent_at)
    out = {}
    for at, device, key in zip(
        receipts.times, receipts.devices, receipts.keys, strict=True
    ):
        # Message numbers of `device` with this value: key, key + VALUES, ...
        seq = key + VALUES * ((sent // devices) // VALUES + 1)
        while seq >= 0:
            k = seq * devices + device
            if k < sent and sent_at[k] <= at:
                break
            seq -= VALUES
        if seq < 0:
            continue  # a value it never sent (cannot happen) or sent after: skip
        sent_time = sent_at[seq * devices + device]
        if start <= sent_time < end:
            out[(device, seq)] = (at - sent_time) * 1000
    return out


def line(name, values):
    if not values:
        return f"{name:<36} no messages"
    return (
        f"{name:<36} n={len(values):>6}  p50 {pct(values, 0.5):6.1f} ms  "
        f"p99 {pct(values, 0.99):6.1f} ms  max {max(values):7.1f} ms"
    )


# --- the run -------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=500, help="gateway clients")
    parser.add_argument("--rate", type=float, default=1000.0, help="device msg/s")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--json-clients", type=int, default=50, help="JSON sockets")
    parser.add_argument("--per-tenant", type=int, default=10, help="pools per tenant")
    parser.add_argument("--mqtt", default="127.0.0.1:1883")
    parser.add_argument("--profile", help="run daphne under py-spy, stacks to PROFILE")
    args = parser.parse_args()
    args.seconds = min(args.seconds, 300.0)  # bounded, whatever is asked
    args.json_clients = max(0, min(args.json_clients, args.clients))
    host, mqtt_port = args.mqtt.split(":")
    loopback_url(f"mqtt://{host}", "The broker")

    db_url = loopback_url(os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB), "database")
    redis_url = loopback_url(os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS), "Redis")
    port = free_port()
    env = server_environment(db_url, redis_url, cache_prefix="bench-gw")
    env.update(
        MQTT_URL=f"mqtt://{host}:{mqtt_port}", SITE_URL=f"http://127.0.0.1:{port}"
    )
    os.environ.update(env)
    ensure_database(db_url)
    import django

    django.setup()
    from django.core.cache import cache
    from django.core.management import call_command
    from django.db import connections

    from gateway import topics as gateway_topics
    from tenants.auth import refresh_token_for

    call_command("migrate", verbosity=0)
    cache.clear()  # login lockouts and rate buckets of earlier runs
    cleanup()
    prefix = f"bench-gw-{uuid.uuid4().hex[:8]}"
    world = seed(args.clients, args.per_tenant, prefix)
    for entry in world[1:]:
        entry["token"] = str(
            refresh_token_for(membership=entry["membership"]).access_token
        )
    connections.close_all()

    device_topics = [f"{prefix}/{w['device']}/temperature/state" for w in world]
    ctx = mp.get_context("fork")
    go, result = ctx.Event(), ctx.Queue()
    duration = args.warmup + args.seconds
    pub = ctx.Process(
        target=publisher,
        args=(host, int(mqtt_port), device_topics, args.rate, duration, go, result),
        daemon=True,
    )
    pub.start()

    bridge = BridgeProcess({**env, "LOG_LEVEL": "INFO"})  # its stats lines
    web = None
    try:
        bridge.wait_stats(lambda s: s.get("devices") == args.clients, timeout=60)
        bridge.wait_stats(lambda s: all(s.get("connections", {0: 0}).values()))
        # daphne's log: the layer's resyncs (a socket that fell behind) are counted.
        web_log = tempfile.TemporaryFile("w+")
        web = DaphneProcess(env, port, profile=args.profile, stderr=web_log)
        web.wait_ready()
        answer = login(port, world[0]["email"])
        world[0]["token"], world[0]["client_id"] = answer["token"], answer["clientId"]
        gateway_url, live_url = answer["mqttGateway"], answer["liveUrl"]
        tenants = math.ceil(args.clients / args.per_tenant)
        print(
            f"gateway bench: {args.clients} gateway clients at {gateway_url}, "
            f"{args.json_clients} JSON sockets at {live_url}pools/<code>/; "
            f"{args.clients} v3.1 devices in {tenants} tenants under {prefix}/, "
            f"{args.rate:,.0f} msg/s, "
            f"{args.warmup:g} s warm-up + {args.seconds:g} s measured"
        )
        figures = asyncio.run(
            run_clients(args, world, prefix, gateway_url, live_url, port, go, web,
                        bridge, gateway_topics)
        )  # fmt: skip
        sent_bytes, pub_elapsed, pub_cpu = result.get(timeout=duration + 60)
        pub.join(10)
        web_log.seek(0)
        figures["resyncs"] = sum(1 for row in web_log if "resynchronised" in row)
        report(args, figures, sent_bytes, pub_elapsed, pub_cpu, bridge)
    finally:
        if web is not None:
            web.stop()
        bridge.stop()
        if pub.is_alive():
            pub.terminate()
        cleanup()
    if args.profile:
        print(
            f"daphne's stacks: .venv/bin/python bench/profile_summary.py {args.profile}"
        )
    return 0


async def run_clients(
    args, world, prefix, gateway_url, live_url, port, go, web, bridge, gateway_topics
):
    gw, js = Receipts(), Receipts()
    gw_sockets, js_sockets, lag, failures = [], [], [], []
    gw_live, js_live = set(), set()  # devices whose socket is live
    stop = asyncio.Event()
    # Pinging from the first socket on: connecting them all takes a while.
    tasks = [asyncio.ensure_future(pinger(gw_sockets, stop))]
    started = time.monotonic()
    readers = await gathered(
        [
            (
                lambda i=i: gateway_client(
                    gateway_url,
                    world[i],
                    i,
                    i,
                    gateway_topics.device_topics(prefix, world[i]["device"], "v3.1"),
                    gw,
                    gw_sockets,
                    gw_live,
                )
            )
            for i in range(args.clients)
        ],
        CONNECTING,
        failures,
    )
    gw_connect = time.monotonic() - started
    started = time.monotonic()
    watched = [
        round(j * args.clients / args.json_clients) for j in range(args.json_clients)
    ]
    readers += await gathered(
        [
            (
                lambda i=i: json_client(
                    f"{live_url}pools/{world[i]['pool']}/",
                    world[i]["token"],
                    f"http://127.0.0.1:{port}",
                    i,
                    js,
                    js_sockets,
                    js_live,
                )
            )
            for i in watched
        ],
        CONNECTING,
        failures,
    )
    js_connect = time.monotonic() - started
    print(
        f"connected: {len(gw_sockets)} gateway clients (CONNECT + SUBSCRIBE) in "
        f"{gw_connect:.1f} s, {len(js_sockets)} JSON sockets in {js_connect:.1f} s"
        + (
            f"; {len(failures)} failed {ATTEMPTS} times, e.g. {failures[0]!r}"
            if failures
            else ""
        )
    )
    tasks.append(asyncio.ensure_future(loop_lag(lag, stop)))
    await asyncio.sleep(2.0)  # the bridge rereads its watched groups every second
    go.set()
    t0 = time.time()
    window = (t0 + args.warmup, t0 + args.warmup + args.seconds)
    await asyncio.sleep(args.warmup)
    lag.clear()
    cpu = (time.process_time(), web.cpu_seconds(), bridge.cpu_seconds(), time.time())
    load_before = os.getloadavg()[0]
    await asyncio.sleep(args.seconds)
    cpu_after = (time.process_time(), web.cpu_seconds(), bridge.cpu_seconds())
    wall = time.time() - cpu[3]
    lag_window = list(lag)
    # The last messages of the window land: until nothing new came for 3 s (a
    # backlog somewhere shows as latency), at most DRAIN_LIMIT s.
    drain_end = time.monotonic() + DRAIN_LIMIT
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < drain_end and time.monotonic() - quiet_since < 3.0:
        await asyncio.sleep(0.5)
        count = len(gw.times) + len(js.times)
        if count != seen:
            seen, quiet_since = count, time.monotonic()
    stop.set()
    closed = sum(1 for ws in gw_sockets if ws.close_code is not None)
    # Stop reading first: what arrives while the sockets close is not measured.
    for reader in readers + tasks:
        reader.cancel()
    await asyncio.gather(*readers, *tasks, return_exceptions=True)
    await asyncio.gather(
        *(asyncio.wait_for(ws.close(), 10) for ws in gw_sockets + js_sockets),
        return_exceptions=True,
    )
    return {
        "gw": gw,
        "js": js,
        "window": window,
        "gw_live": gw_live,
        "js_live": js_live,
        "closed": closed,
        "lag": lag_window,
        "wall": wall,
        "cpu": {
            "generator": (cpu_after[0] - cpu[0]) / wall,
            "daphne": (cpu_after[1] - cpu[1]) / wall,
            "bridge": (cpu_after[2] - cpu[2]) / wall,
        },
        "load": (load_before, os.getloadavg()[0]),
    }


def report(args, figures, sent_bytes, pub_elapsed, pub_cpu, bridge):
    sent_at = array.array("d")
    sent_at.frombytes(sent_bytes)
    n = args.clients
    window = figures["window"]
    gw = latencies(figures["gw"], sent_at, n, window)
    js = latencies(figures["js"], sent_at, n, window)
    gw_live, js_live = figures["gw_live"], figures["js_live"]
    in_window = sum(1 for t in sent_at if window[0] <= t < window[1])
    in_window_gw = sum(
        1
        for k, t in enumerate(sent_at)
        if window[0] <= t < window[1] and k % n in gw_live
    )
    in_window_watched = sum(
        1
        for k, t in enumerate(sent_at)
        if window[0] <= t < window[1] and k % n in js_live
    )
    same = [key for key in js if key in gw]  # one message, seen on both sockets
    gw_same, js_same = [gw[k] for k in same], [js[k] for k in same]
    per_message = [gw[k] - js[k] for k in same]
    cpu = figures["cpu"]
    print(
        f"devices sent {len(sent_at):,} messages at {len(sent_at) / pub_elapsed:,.0f}"
        f" msg/s ({in_window:,} in the measured {args.seconds:g} s: "
        f"{in_window / args.seconds:,.0f} msg/s)"
    )
    print(
        f"received in the window: gateway {len(gw):,} of {in_window_gw:,} "
        f"({100 * len(gw) / max(1, in_window_gw):.1f} %), JSON {len(js):,} of "
        f"{in_window_watched:,} ({100 * len(js) / max(1, in_window_watched):.1f} %); "
        f"gateway sockets closed by the server: {figures['closed']}"
    )
    print(line("device publish -> gateway client", list(gw.values())))
    print(line("device publish -> JSON socket", list(js.values())))
    print(line("  gateway, the JSON sockets' messages", gw_same))
    print(line("  JSON, the same messages", js_same))
    gw_p99, js_p99 = pct(list(gw.values()), 0.99), pct(list(js.values()), 0.99)
    added_all = gw_p99 - js_p99
    added = pct(gw_same, 0.99) - pct(js_same, 0.99)
    verdict = "met" if added < 10 else "MISSED"
    if not same:
        verdict = "not measured (no message reached both kinds of socket)"
    print(
        f"difference at p99: all gateway clients - JSON {added_all:+.1f} ms (ratio "
        f"{gw_p99 / js_p99:.2f}); the same messages {added:+.1f} ms; per message "
        f"(gateway - JSON receipt of one message) p50 {pct(per_message, 0.5):+.1f} ms"
        f", p99 {pct(per_message, 0.99):+.1f} ms"
    )
    print(
        f"goal: the gateway adds < 10 ms at p99 over the JSON socket (same "
        f"messages): {verdict}"
    )
    lag = figures["lag"]
    print(
        f"CPU over the window (share of one core; 2 cores, shared): daphne "
        f"{100 * cpu['daphne']:.0f} %, bridge {100 * cpu['bridge']:.0f} %, "
        f"load generator {100 * cpu['generator']:.0f} % (loop lag p50 "
        f"{pct(lag, 0.5):.1f} ms, p99 {pct(lag, 0.99):.1f} ms), device publisher "
        f"{100 * pub_cpu / pub_elapsed:.0f} %; load average "
        f"{figures['load'][0]:.1f} -> {figures['load'][1]:.1f}"
    )
    stats = bridge.stats
    # channels-redis drops a group message for a process whose inbox (all its sockets'
    # channels share one Redis key) holds `capacity` messages, and logs it.
    dropped = sum(1 for entry in bridge.log if "over capacity" in entry)
    # The pub/sub layer (poolsaas/live/layer.py) drops only a whole backlog of a
    # socket that fell behind, and hands it a resync (its full state) instead.
    resyncs = figures.get("resyncs", 0)
    print(
        f"bridge: accepted {stats.get('accepted', 0):,}, live {stats.get('live')}; "
        f"group sends that found daphne's inbox full (dropped): {dropped:,}; "
        f"sockets resynchronised after falling behind: {resyncs:,}"
    )
    print(
        "summary: "
        + json.dumps(
            {
                "clients": n,
                "rate": round(in_window / args.seconds),
                "gateway_p50_ms": round(pct(list(gw.values()), 0.5), 1),
                "gateway_p99_ms": round(gw_p99, 1),
                "json_p50_ms": round(pct(list(js.values()), 0.5), 1),
                "json_p99_ms": round(js_p99, 1),
                "added_p99_ms": round(added, 1),
                "added_p99_all_ms": round(added_all, 1),
                "received": round(len(gw) / max(1, in_window_gw), 3),
                "daphne_cpu": round(cpu["daphne"], 2),
                "generator_cpu": round(cpu["generator"], 2),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
