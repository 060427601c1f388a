"""Faults one tenant (its devices, its broker, its DNS) must not turn against the
others: a row the database refuses, a broker that sends what MQTT forbids or more
than we hold, a broker name that resolves elsewhere on the second look.

The ingest tests run on both databases; the bridge tests use the real bridge, the
machine's Mosquitto (or a private one) and PostgreSQL.
"""

import contextlib
import socket
import threading
import time

import pytest
from django.db import connection

from devices.bridge.connection import MAX_PACKET_BYTES
from devices.bridge.directory import Directory
from devices.models import Broker, Device, DeviceEvent
from devices.selectors import devices_for_bridge
from devices.services.brokers import broker_test_connection
from devices.services.ingest import ingest_write
from devices.services.onboarding import device_remove
from devices.tests import test_bridge
from devices.tests.mqtt_driver import DevicesCore
from devices.tests.test_bridge import Publisher, esp_id, make_device, wait_for
from devices.tests.test_bridge_ingest import telemetry
from firmware import protocol
from telemetry.models import TelemetrySample

# The bridge tests' fixtures, shared.
make_bridge = test_bridge.make_bridge
prefix = test_bridge.prefix
tls_broker = test_bridge.tls_broker


def _core(*devices):
    brokers = sorted({d.broker_id for d in devices})
    return DevicesCore(Directory.build(devices_for_bridge(broker_ids=brokers)))


def _report(core, device, temp, at):
    root = f"devices/{device.device_id}"
    core.handle(device.broker_id, f"{root}/telemetry", telemetry(temp=temp), at)
    core.handle(
        device.broker_id,
        f"{root}/event",
        protocol.encode_event(0, "boot", {"reason": "x"}),
        at,
    )


def _write(effects):
    return ingest_write(
        writes=effects.writes,
        samples=effects.samples,
        events=effects.events,
        now=time.time(),
    )


# --- defect 1: a refused row must not hold back anybody else's ----------------------


@pytest.mark.django_db(transaction=True)
def test_rows_of_a_removed_device_are_dropped_and_the_rest_written(device_a, device_b):
    core = _core(device_a, device_b)
    now = time.time()
    for i in range(3):
        _report(core, device_a, 20 + i, now + i)
        _report(core, device_b, 30 + i, now + i)
    effects = core.drain()
    # Removed after the bridge built its directory: its rows fail the foreign keys.
    gone = device_b.pk
    device_b.delete()

    dropped = _write(effects)

    assert set(dropped) == {gone} and dropped[gone] >= 4
    assert TelemetrySample.objects.filter(device=device_a).count() == 3
    assert DeviceEvent.objects.filter(device=device_a, kind="device.boot").exists()
    assert Device.objects.get(pk=device_a.pk).state["temperature"] == 22
    assert not TelemetrySample.objects.filter(device_id=gone).exists()


@pytest.mark.django_db(transaction=True)
def test_a_value_the_database_refuses_costs_only_its_device(device_a, device_b):
    """Whatever else the database may refuse (here a number JSON cannot hold, which
    the protocol parser would never let through): found device by device, the
    others' rows are written."""
    core = _core(device_a, device_b)
    now = time.time()
    _report(core, device_a, 21, now)
    _report(core, device_b, 31, now)
    effects = core.drain()
    info_b = core.directory.by_pk[device_b.pk]
    effects.events.append((info_b, now, "device.error", "x", {"n": float("inf")}))

    dropped = _write(effects)

    assert set(dropped) == {device_b.pk}
    assert TelemetrySample.objects.filter(device=device_a).count() == 1
    assert DeviceEvent.objects.filter(device=device_a).exists()
    assert not DeviceEvent.objects.filter(device=device_b).exists()
    assert not TelemetrySample.objects.filter(device=device_b).exists()


def bridge_test(*marks):
    """The real bridge, the machine's Mosquitto and a database that other threads
    write to (PostgreSQL, or the SQLite file of the embedded default)."""

    def apply(test):
        for mark in (pytest.mark.mqtt, pytest.mark.django_db(transaction=True), *marks):
            test = mark(test)
        return test

    return apply


@bridge_test()
def test_removing_a_publishing_device_does_not_stop_anybody_elses_ingest(
    make_bridge,
    prefix,
    alice,
    pool_a,
    pool_b,
    platform_broker,
):
    removed = make_device(pool_a, prefix, esp_id(), broker=platform_broker)
    other = make_device(pool_b, prefix, esp_id(), broker=platform_broker)
    # No refresh after the first: the removed device stays in the bridge's
    # directory, as it does for up to 5 s in production.
    bridge = make_bridge(refresh_interval=3600)
    assert bridge.wait_ready()
    pub = Publisher()
    try:
        for device in (removed, other):
            pub.pub(f"{prefix}/{device.device_id}/telemetry", telemetry(temp=20.0))
        wait_for(
            lambda: TelemetrySample.objects.filter(device=other).count() == 1,
            what="first sample",
        )
        device_remove(membership=alice, device=removed)
        for i in range(1, 4):
            # The removed device keeps publishing, in the same batches as tenant B.
            pub.pub(f"{prefix}/{removed.device_id}/telemetry", telemetry(temp=30.0))
            pub.pub(f"{prefix}/{other.device_id}/telemetry", telemetry(temp=20.0 + i))
            wait_for(
                lambda i=i: (
                    TelemetrySample.objects.filter(device=other).count() == i + 1
                ),
                what=f"tenant B's sample {i + 1}",
            )
    finally:
        pub.close()
    assert Device.objects.get(pk=other.pk).state["temperature"] == 23.0
    assert bridge.stats()["rows_dropped"] >= 1
    assert bridge.held("devices") is None


@contextlib.contextmanager
def _database_refusing_connections():
    """The test database refuses every new connection, as a database that is down
    does (the bridge opens one per flush); this test's own connection stays open."""
    import psycopg

    params = connection.settings_dict
    name = params["NAME"]
    admin = psycopg.connect(
        host=params["HOST"],
        port=params["PORT"] or 5432,
        user=params["USER"],
        password=params["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )
    try:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        yield
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.close()


@bridge_test(pytest.mark.postgres_only)
def test_a_database_outage_keeps_the_batch_until_the_database_is_back(
    make_bridge,
    prefix,
    pool_a,
    platform_broker,
):
    device = make_device(pool_a, prefix, esp_id(), broker=platform_broker)
    bridge = make_bridge()
    assert bridge.wait_ready()
    pub = Publisher()
    try:
        with _database_refusing_connections():
            pub.pub(f"{prefix}/{device.device_id}/telemetry", telemetry(temp=26.5))
            wait_for(
                lambda: (
                    bridge.held("devices") is not None
                    and bridge.held("devices").samples
                ),
                what="the batch held for a retry",
            )
            held = bridge.write_failures
            wait_for(lambda: bridge.write_failures > held + 1, what="retried")
            assert not TelemetrySample.objects.filter(device=device).exists()
        wait_for(
            lambda: TelemetrySample.objects.filter(
                device=device, temperature=26.5
            ).exists(),
            what="the held sample written",
        )
    finally:
        pub.close()
    assert TelemetrySample.objects.filter(device=device).count() == 1


# --- defect 8 and packet bounds: a tenant broker sends what MQTT forbids, or a lot


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (128 if n else 0))
        if not n:
            return bytes(out)


def raw_publish(topic: bytes, payload: bytes, *, qos: int = 0, mid: int = 1) -> bytes:
    """A PUBLISH packet as bytes: paho refuses to build one with a bad topic."""
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += mid.to_bytes(2, "big")
    body += payload
    return bytes([0x30 | qos << 1]) + _remaining_length(len(body)) + body


class InjectingProxy:
    """The tenant's broker: the real Mosquitto, behind a relay that can slip packets
    of our making into what the broker sends the bridge. The relay forwards whole
    MQTT packets, so an injected one always lands between two packets."""

    def __init__(self):
        self.listener = socket.create_server((test_bridge.HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._down: list[socket.socket] = []
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection((test_bridge.HOST, test_bridge.PORT))
            self._sockets += [down, up]
            with self._lock:
                self._down.append(down)
                self.accepted += 1
            threading.Thread(target=self._pipe, args=(down, up), daemon=True).start()
            threading.Thread(target=self._packets, args=(up, down), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _packets(self, src, dst):
        reader = src.makefile("rb")
        try:
            while header := reader.read(1):
                length, shift, raw = 0, 0, b""
                while True:
                    byte = reader.read(1)
                    raw += byte
                    length |= (byte[0] & 127) << shift
                    shift += 7
                    if not byte[0] & 128:
                        break
                packet = header + raw + reader.read(length)
                with self._lock:
                    dst.sendall(packet)
        except (OSError, IndexError):
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def inject(self, packet: bytes) -> None:
        with self._lock:
            self._down[-1].sendall(packet)

    def close(self):
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def tenant_broker(pool_b, settings):
    """Tenant B's own broker, reached through an InjectingProxy."""
    settings.BROKER_ALLOW_PRIVATE_HOSTS = True
    proxy = InjectingProxy()
    broker = Broker.objects.create(
        tenant=pool_b.tenant,
        name="Globex own",
        host=test_bridge.HOST,
        port=proxy.port,
        use_tls=False,
    )
    broker.proxy = proxy
    yield broker
    proxy.close()


def _up(bridge, broker):
    wait_for(
        lambda: (
            broker.pk in bridge.connections
            and bridge.connections[broker.pk].subscribed.is_set()
        ),
        what="the tenant broker's connection",
    )
    return bridge.connections[broker.pk]


def _lands(pub, prefix, device, temp):
    pub.pub(f"{prefix}/{device.device_id}/telemetry", telemetry(temp=temp))
    wait_for(
        lambda: Device.objects.get(pk=device.pk).state.get("temperature") == temp,
        what=f"telemetry {temp}",
    )


@bridge_test()
def test_a_topic_that_is_not_utf8_is_dropped_and_the_connection_lives(
    make_bridge, prefix, pool_b, tenant_broker
):
    device = make_device(pool_b, prefix, esp_id(), broker=tenant_broker)
    bridge = make_bridge()
    conn = _up(bridge, tenant_broker)
    root = f"{prefix}/{device.device_id}".encode()
    # Mosquitto itself would refuse such a topic; a tenant's broker need not.
    tenant_broker.proxy.inject(raw_publish(root + b"/\xff\xfe", telemetry()))
    tenant_broker.proxy.inject(raw_publish(b"\xc3\x28/telemetry", b"{}"))
    wait_for(lambda: conn.counters["bad_topic"] == 2, what="counted")
    pub = Publisher()
    try:
        _lands(pub, prefix, device, 22.5)
    finally:
        pub.close()
    assert bridge.connections[tenant_broker.pk] is conn
    assert conn.alive() and conn.connected.is_set() and conn.connects == 1
    assert bridge.stats()["broker_faults"][tenant_broker.pk]["bad_topic"] == 2


@bridge_test()
def test_a_malformed_packet_costs_only_a_reconnect(
    make_bridge, prefix, pool_b, tenant_broker
):
    device = make_device(pool_b, prefix, esp_id(), broker=tenant_broker)
    bridge = make_bridge()
    conn = _up(bridge, tenant_broker)
    # A PUBLISH too short to hold its own topic length.
    tenant_broker.proxy.inject(b"\x30\x01\x00")
    wait_for(lambda: conn.connects == 2 and conn.subscribed.is_set(), what="back")
    pub = Publisher()
    try:
        _lands(pub, prefix, device, 23.5)
    finally:
        pub.close()
    assert bridge.connections[tenant_broker.pk] is conn and conn.alive()


@bridge_test(
    pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning"),
)
def test_a_dead_network_thread_is_noticed_and_the_connection_rebuilt(
    make_bridge, prefix, pool_b, tenant_broker
):
    device = make_device(pool_b, prefix, esp_id(), broker=tenant_broker)
    bridge = make_bridge()
    conn = _up(bridge, tenant_broker)

    def die(*args, **kwargs):
        raise SystemExit  # past every guard: what an unforeseen failure would do

    conn.client.loop = die
    wait_for(lambda: not conn.alive(), what="the thread gone")
    assert not conn.connected.is_set()  # says what is true
    rebuilt = wait_for(
        lambda: (
            bridge.connections.get(tenant_broker.pk) is not conn
            and _up(bridge, tenant_broker)
        ),
        what="a new connection",
    )
    pub = Publisher()
    try:
        _lands(pub, prefix, device, 24.5)
    finally:
        pub.close()
    assert rebuilt.alive()


@bridge_test()
def test_packets_over_the_bound_are_skipped_acknowledged_and_never_held(
    make_bridge, prefix, pool_b, settings
):
    settings.BROKER_ALLOW_PRIVATE_HOSTS = True
    # Tenant B's broker is the machine's Mosquitto itself, straight.
    broker = Broker.objects.create(
        tenant=pool_b.tenant,
        name="Globex own",
        host=test_bridge.HOST,
        port=test_bridge.PORT,
        use_tls=False,
    )
    device = make_device(pool_b, prefix, esp_id(), broker=broker)
    bridge = make_bridge()
    conn = _up(bridge, broker)
    held = []
    read = conn.client._read

    def watched(bufsize):
        # What paho is holding of the packet being read, at every read.
        held.append(len(conn.client._in_packet["packet"]))
        return read(bufsize)

    conn.client._read = watched
    big = b"x" * (MAX_PACKET_BYTES * 4)
    pub = Publisher()
    try:
        # More than Mosquitto keeps in flight (20): unacknowledged, they would
        # stop every later delivery on this connection.
        for _ in range(25):
            pub.pub(f"{prefix}/{device.device_id}/telemetry", big, qos=1)
        pub.pub(f"{prefix}/{device.device_id}/event", big, qos=0)
        _lands(pub, prefix, device, 25.5)
        wait_for(lambda: conn.counters["oversize"] == 26, what="counted")
    finally:
        pub.close()
    assert max(held) <= MAX_PACKET_BYTES
    assert conn.connects == 1 and conn.connected.is_set()
    assert bridge.stats().get("malformed", 0) == 0  # never reached the parser


@bridge_test()
def test_a_qos2_delivery_we_never_asked_for_ends_only_that_connection(
    make_bridge, prefix, pool_b, tenant_broker
):
    device = make_device(pool_b, prefix, esp_id(), broker=tenant_broker)
    bridge = make_bridge()
    conn = _up(bridge, tenant_broker)
    topic = f"{prefix}/{device.device_id}/telemetry".encode()
    # paho would keep each until its PUBREL, which this broker never sends. (One
    # write: the bridge hangs up after the first.)
    tenant_broker.proxy.inject(
        b"".join(raw_publish(topic, telemetry(), qos=2, mid=m) for m in (1, 2, 3))
    )
    wait_for(lambda: conn.connects >= 2 and conn.subscribed.is_set(), what="back")
    assert not conn.client._in_messages
    pub = Publisher()
    try:
        _lands(pub, prefix, device, 26.5)
    finally:
        pub.close()


# --- defect 6: DNS rebinding ---------------------------------------------------------

REBIND = "mqtt.rebind.test"
PUBLIC = "93.184.215.14"  # any public address: it is only ever vetted, never reached


@pytest.fixture
def resolver(monkeypatch):
    """DNS (the third party here) for made-up names: `answers[name]` lists what
    successive look-ups answer, the last one repeating. Other names resolve as
    usual."""
    real = socket.getaddrinfo
    answers: dict[str, list[str]] = {}
    asked: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        asked.append(host)
        queue = answers[host]
        address = queue.pop(0) if len(queue) > 1 else queue[0]
        return [
            (
                socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                (address, port),
            )
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    getaddrinfo.answers, getaddrinfo.asked = answers, asked
    return getaddrinfo


@pytest.mark.mqtt
@pytest.mark.django_db
def test_the_connection_test_connects_only_to_the_address_it_vetted(
    resolver, settings, pool_b
):
    settings.BROKER_ALLOW_PRIVATE_HOSTS = False
    # Public to the check, our own loopback (where a broker listens) to the connect.
    resolver.answers[REBIND] = [PUBLIC, "127.0.0.1"]
    broker = Broker.objects.create(
        tenant=pool_b.tenant,
        name="rebinding",
        host=REBIND,
        port=test_bridge.PORT,
        use_tls=False,
    )
    result = broker_test_connection(broker=broker, timeout=3)
    assert not result.ok
    assert "loopback network address" in result.message
    assert "127.0.0.1" not in result.message
    assert len(resolver.asked) == 2


@pytest.mark.mqtt
@pytest.mark.django_db
def test_tls_still_checks_the_broker_name_not_the_address(
    resolver, settings, pool_b, tls_broker
):
    settings.BROKER_ALLOW_PRIVATE_HOSTS = True
    resolver.answers[REBIND] = ["127.0.0.1"]
    resolver.answers["localhost"] = ["127.0.0.1"]

    def test(host):
        broker = Broker.objects.create(
            tenant=pool_b.tenant,
            name=f"TLS {host}",
            host=host,
            port=tls_broker.port,
            use_tls=True,
            ca_certificate=tls_broker.ca,
            username="bridge",
            password="bridge-secret",
        )
        return broker_test_connection(broker=broker, timeout=3)

    # The certificate names localhost and 127.0.0.1: reached through its address,
    # the other name must still fail the host name check (and SNI carries it).
    assert test("localhost").ok
    refused = test(REBIND)
    assert not refused.ok and "certificate" in refused.message


@bridge_test()
def test_the_bridge_connects_only_to_the_address_it_vetted(
    make_bridge, prefix, resolver, settings, pool_b
):
    settings.BROKER_ALLOW_PRIVATE_HOSTS = False
    resolver.answers[REBIND] = [PUBLIC, "127.0.0.1"]
    broker = Broker.objects.create(
        tenant=pool_b.tenant,
        name="rebinding",
        host=REBIND,
        port=test_bridge.PORT,
        use_tls=False,
    )
    make_device(pool_b, prefix, esp_id(), broker=broker)
    bridge = make_bridge()
    wait_for(lambda: broker.pk in bridge.connections, what="a connection built")
    conn = bridge.connections[broker.pk]
    # The refresh's check saw the public address; every attempt is checked again.
    wait_for(lambda: conn.counters["address_refused"] >= 3, what="refused again")
    assert conn.connects == 0 and not conn.connected.is_set()


@bridge_test()
def test_a_reconnect_is_vetted_too(make_bridge, prefix, resolver, settings, pool_b):
    settings.BROKER_ALLOW_PRIVATE_HOSTS = True
    resolver.answers[REBIND] = ["127.0.0.1"]
    broker = Broker.objects.create(
        tenant=pool_b.tenant,
        name="rebinding",
        host=REBIND,
        port=test_bridge.PORT,
        use_tls=False,
    )
    make_device(pool_b, prefix, esp_id(), broker=broker)
    bridge = make_bridge()
    conn = _up(bridge, broker)
    # From now on the name's address is one we refuse...
    settings.BROKER_ALLOW_PRIVATE_HOSTS = False
    # ...and the broker drops the bridge (a client taking over its client id).
    thief = test_bridge.client(conn.client._client_id.decode())
    thief.connect(test_bridge.HOST, test_bridge.PORT)
    thief.loop_start()
    try:
        wait_for(lambda: not conn.connected.is_set(), what="dropped")
    finally:
        thief.disconnect()
        thief.loop_stop()
    wait_for(lambda: conn.counters["address_refused"] >= 2, what="reconnect refused")
    assert conn.connects == 1 and not conn.connected.is_set()
