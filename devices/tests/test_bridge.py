"""The bridge end to end: real Mosquitto, real PostgreSQL and Redis, bridge in-process.

Every test uses its own random topic prefix and share group, so parallel runs on the
machine's broker never see each other's messages; retained messages are cleared
afterwards. Broker restarts use a private Mosquitto on a spare loopback port.
"""

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from audit.models import AuditEvent
from devices.bridge.runner import Bridge
from devices.models import Broker, Command, Device, DeviceEvent
from devices.services.commands import command_send
from devices.tests.test_bridge_core import MALFORMED, telemetry
from firmware import protocol
from firmware.sim import VirtualDevice
from telemetry.models import TelemetrySample

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.django_db(transaction=True),
]

HOST, PORT = "127.0.0.1", 1883


def wait_for(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.03)
    raise AssertionError(f"timed out waiting for {what}")


def client(client_id=None, port=PORT) -> mqtt.Client:
    c = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id or f"bridge-test-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv311,
    )
    return c


class Publisher:
    """A plain client publishing whatever a test wants."""

    def __init__(self, port=PORT):
        self.c = client(port=port)
        self.c.connect(HOST, port)
        self.c.loop_start()

    def pub(self, topic, payload, qos=1, retain=False):
        self.c.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(3)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def clear_retained(prefix, port=PORT):
    """Delete every retained message under the prefix (Mosquitto persists them)."""
    topics = set()
    c = client(port=port)
    c.on_message = lambda cl, u, m: m.retain and m.payload and topics.add(m.topic)
    try:
        c.connect(HOST, port)
    except OSError:
        return
    c.loop_start()
    c.subscribe(f"{prefix}/#")
    time.sleep(0.3)
    for t in topics:
        c.publish(t, b"", qos=1, retain=True).wait_for_publish(2)
    c.disconnect()
    c.loop_stop()


class V31Device:
    """A scripted v3.1 device: a plain paho client speaking exactly the v3.1 topics."""

    def __init__(self, prefix, device_id, port=PORT, respond=True):
        self.root = f"{prefix}/{device_id}"
        self.port = port
        self.respond = respond
        self.pump, self.valve = "OFF", "1"
        self.sets: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.c = client(device_id, port)
        self.c.will_set(f"{self.root}/wifi/state", protocol.WIFI_DISCONNECTED, 0, True)
        self.c.reconnect_delay_set(1, 1)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_disconnect = lambda *a: self.connected.clear()

    def pub(self, suffix, payload):
        self.c.publish(f"{self.root}/{suffix}", payload, qos=0, retain=True)

    def _on_connect(self, c, userdata, flags, reason_code, properties):
        self.pub("pump/state", self.pump)
        self.pub("valve/state", self.valve)
        self.pub("temperature/state", "25.3")
        self.pub(
            "wifi/state",
            '{"status":"connected","ssid":"home","ip":"10.0.0.9","rssi":-55,'
            '"quality":"good"}',
        )
        c.subscribe([(f"{self.root}/{s}", 1) for s in protocol.V31_CLOUD_TO_DEVICE])
        self.connected.set()

    def _on_message(self, c, userdata, msg):
        suffix = msg.topic[len(self.root) + 1 :]
        self.sets.append((suffix, bytes(msg.payload)))
        if not self.respond:
            return
        text = msg.payload.decode().upper()
        if suffix == "pump/set":
            self.pump = (
                ("OFF" if self.pump == "ON" else "ON") if text == "TOGGLE" else text
            )
            self.pub("pump/state", self.pump)
        elif suffix == "valve/set":
            self.valve = text
            self.pub("valve/state", self.valve)

    def start(self):
        self.c.connect_async(HOST, self.port, keepalive=5)
        self.c.loop_start()
        assert self.connected.wait(5)
        return self

    def kill(self):
        """Lose power: no DISCONNECT, so the broker publishes the will."""
        sock = self.c.socket()
        self.c._thread_terminate = True
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.c.loop_stop()

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def prefix():
    value = f"bt-{uuid.uuid4().hex[:10]}"
    yield value
    clear_retained(value)


@pytest.fixture
def make_bridge(settings):
    bridges = []

    def make(**options):
        params = dict(
            refresh_interval=0.3,
            sweep_interval=0.1,
            flush_interval=0.1,
            silence_interval=0.2,
            broadcast_window=0.05,
            min_backoff=0.1,
            max_backoff=0.5,
            share_group=f"bt{uuid.uuid4().hex[:8]}",
            stats_interval=3600,
        )
        params.update(options)
        bridge = Bridge(**params).start()
        bridges.append(bridge)
        return bridge

    yield make
    for bridge in bridges:
        bridge.stop()


def make_device(pool, prefix, device_id, *, broker, proto="ps1", online=False):
    return Device.objects.create(
        tenant=pool.tenant,
        pool=pool,
        broker=broker,
        device_id=device_id,
        topic_prefix=prefix,
        protocol=proto,
        online=online,
    )


def esp_id():
    return f"ESP-{uuid.uuid4().hex[:6].upper()}"


def status(command):
    command.refresh_from_db()
    return command.status


# --- devices are seen, stored and switched ----------------------------------------


def test_v31_device_seen_stored_and_switched(
    make_bridge, prefix, alice, pool_a, platform_broker
):
    device_id = f"esp32-{uuid.uuid4().hex[:6]}"
    device = make_device(
        pool_a, prefix, device_id, broker=platform_broker, proto="v3.1"
    )
    bridge = make_bridge()
    assert bridge.wait_ready()
    v31 = V31Device(prefix, device_id).start()
    try:
        wait_for(lambda: Device.objects.get(pk=device.pk).online, what="online")
        wait_for(
            lambda: TelemetrySample.objects.filter(device=device, temperature=25.3),
            what="temperature sample",
        )
        device.refresh_from_db()
        assert device.state["temperature"] == 25.3
        assert device.state["pump"] is False
        assert device.state["wifi"]["ssid"] == "home"

        command = command_send(membership=alice, pool=pool_a, op="pump", value="ON")
        wait_for(lambda: status(command) == "done", what="command done")
        assert ("pump/set", b"ON") in v31.sets
        assert AuditEvent.objects.filter(
            action="command.sent", target_code=str(command.code)
        ).exists()
        assert DeviceEvent.objects.filter(kind="command.done", device=device).exists()
        wait_for(lambda: Device.objects.get(pk=device.pk).state["pump"] is True)

        toggle = command_send(membership=alice, pool=pool_a, op="pump", value="TOGGLE")
        wait_for(lambda: status(toggle) == "done", what="toggle done")
        assert v31.pump == "OFF"
    finally:
        v31.stop()


def test_ps1_device_completes_on_ack(
    make_bridge, prefix, alice, pool_a, platform_broker
):
    device_id = esp_id()
    device = make_device(pool_a, prefix, device_id, broker=platform_broker)
    bridge = make_bridge()
    assert bridge.wait_ready()
    with VirtualDevice(
        device_id, prefix=prefix, clean_session=True, reconnect_delay=(1, 2)
    ) as sim:
        sim.wait_connected()
        wait_for(lambda: Device.objects.get(pk=device.pk).online, what="online")
        wait_for(lambda: TelemetrySample.objects.filter(device=device).exists())
        wait_for(
            lambda: DeviceEvent.objects.filter(device=device, kind="device.boot"),
            what="boot event",
        )
        command = command_send(
            membership=alice,
            pool=pool_a,
            op="timer",
            value={"mode": 2, "duration": 600},
        )
        wait_for(lambda: status(command) == "done", what="ack")
        cmds = [json.loads(p) for s, p in sim.received if s == "cmd"]
        assert cmds[0]["id"] == command.code.hex and cmds[0]["op"] == "timer"
        assert cmds[0]["exp"] == int(command.expires_at.timestamp())
        wait_for(
            lambda: (
                Device.objects.get(pk=device.pk).state.get("timer", {}).get("active")
            )
        )
        device.refresh_from_db()
        assert device.state["valve"] == 2 and device.state["pump"] is True
        assert device.firmware_version


@pytest.mark.redis  # the bridge and the test share a channel layer
def test_doorbell_wakes_the_bridge(make_bridge, prefix, alice, pool_a, platform_broker):
    """With a slow sweep, only the channel-layer doorbell can publish this fast."""
    device_id = esp_id()
    make_device(pool_a, prefix, device_id, broker=platform_broker)
    bridge = make_bridge(sweep_interval=30)
    assert bridge.wait_ready()
    with VirtualDevice(device_id, prefix=prefix, clean_session=True) as sim:
        sim.wait_connected()
        wait_for(lambda: Device.objects.get(device_id=device_id).online)
        time.sleep(0.5)  # let the doorbell listener subscribe
        command = command_send(membership=alice, pool=pool_a, op="pump", value="ON")
        wait_for(lambda: status(command) == "done", timeout=5, what="doorbell")


# --- isolation and bad input --------------------------------------------------------


def test_foreign_and_unknown_topics_change_nothing(
    make_bridge, prefix, pool_a, pool_b, platform_broker
):
    device_a = make_device(pool_a, prefix, esp_id(), broker=platform_broker)
    # Tenant B's device lives on tenant B's own broker (here: the same Mosquitto).
    broker_b = Broker.objects.create(
        tenant=pool_b.tenant, name="Globex broker", host=HOST, port=PORT, use_tls=False
    )
    device_b = make_device(pool_b, prefix, esp_id(), broker=broker_b)
    bridge = make_bridge()
    assert bridge.wait_ready()
    pub = Publisher()
    try:
        # B's device id on the platform broker: not B's broker, so not B's device.
        pub.pub(f"{prefix}/{device_b.device_id}/telemetry", telemetry(temp=99.0))
        pub.pub(f"{prefix}/ESP-000000/telemetry", telemetry())
        # Received on both connections (same Mosquitto): each must keep to its own.
        wait_for(lambda: bridge.stats().get("unauthorised", 0) >= 3, what="counts")
        pub.pub(f"{prefix}/{device_a.device_id}/telemetry", telemetry(temp=20.5))
        wait_for(lambda: Device.objects.get(pk=device_a.pk).state.get("temperature"))
    finally:
        pub.close()
    time.sleep(0.3)
    device_b.refresh_from_db()
    device_a.refresh_from_db()
    # Tenant B's broker connection delivered B's own message to B's device only.
    assert device_b.state.get("temperature") == 99.0
    assert device_a.state["temperature"] == 20.5
    assert TelemetrySample.objects.filter(device=device_a).count() == 1
    assert not TelemetrySample.objects.filter(device__device_id="ESP-000000").exists()
    # A's message seen on B's connection, B's on the platform's, ESP-000000 on both.
    assert bridge.stats()["unauthorised"] == 4


def test_malformed_payloads_are_counted_and_the_bridge_keeps_serving(
    make_bridge, prefix, pool_a, platform_broker
):
    device = make_device(pool_a, prefix, esp_id(), broker=platform_broker)
    bridge = make_bridge()
    assert bridge.wait_ready()
    pub = Publisher()
    root = f"{prefix}/{device.device_id}"
    subscribed = {s for s in protocol.DEVICE_TO_CLOUD}
    sent = [(s, p) for s, p in MALFORMED if s in subscribed]
    try:
        for suffix, payload in sent:
            pub.pub(f"{root}/{suffix}", payload)
        pub.pub(f"{root}/telemetry", telemetry(temp=21.0))
        wait_for(lambda: bridge.stats().get("accepted", 0) >= 1, what="good message")
        wait_for(lambda: bridge.stats().get("malformed") == len(sent), what="counts")
    finally:
        pub.close()
    time.sleep(0.2)
    assert bridge.stats()["malformed"] == len(sent)
    assert bridge.stats()["accepted"] == 1
    wait_for(lambda: Device.objects.get(pk=device.pk).state.get("temperature") == 21.0)
    assert TelemetrySample.objects.filter(device=device).count() == 1


# --- online / offline ---------------------------------------------------------------


def test_offline_from_last_will(make_bridge, prefix, pool_a, pool_b, platform_broker):
    ps1 = make_device(pool_a, prefix, esp_id(), broker=platform_broker)
    v31_id = f"esp32-{uuid.uuid4().hex[:6]}"
    v31 = make_device(pool_b, prefix, v31_id, broker=platform_broker, proto="v3.1")
    bridge = make_bridge()
    assert bridge.wait_ready()
    sim = VirtualDevice(
        ps1.device_id, prefix=prefix, clean_session=True, keepalive=5
    ).start()
    legacy = V31Device(prefix, v31_id).start()
    sim.wait_connected()
    wait_for(
        lambda: Device.objects.filter(pk__in=[ps1.pk, v31.pk], online=True).count() == 2
    )
    sim.kill()
    legacy.kill()
    wait_for(
        lambda: (
            Device.objects.filter(pk__in=[ps1.pk, v31.pk], online=False).count() == 2
        ),
        what="wills",
    )
    for device in (ps1, v31):
        assert DeviceEvent.objects.filter(device=device, kind="offline").exists()
        assert DeviceEvent.objects.filter(device=device, kind="online").exists()


def test_offline_from_silence(make_bridge, prefix, pool_a, platform_broker):
    device = make_device(pool_a, prefix, esp_id(), broker=platform_broker)
    # 60 s default interval x 1/60 = 1 s of silence.
    bridge = make_bridge(silence_factor=1 / 60)
    assert bridge.wait_ready()
    pub = Publisher()
    try:
        pub.pub(f"{prefix}/{device.device_id}/telemetry", telemetry())
        wait_for(lambda: Device.objects.get(pk=device.pk).online, what="online")
        wait_for(
            lambda: not Device.objects.get(pk=device.pk).online,
            timeout=6,
            what="silence",
        )
    finally:
        pub.close()
    event = DeviceEvent.objects.get(device=device, kind="offline")
    assert event.data == {"reason": "silence"}


# --- commands that cannot complete --------------------------------------------------


def test_command_times_out_visibly(
    make_bridge, prefix, alice, pool_a, platform_broker, settings
):
    settings.COMMAND_TIMEOUT_SECONDS = 1
    device_id = f"esp32-{uuid.uuid4().hex[:6]}"
    make_device(pool_a, prefix, device_id, broker=platform_broker, proto="v3.1")
    bridge = make_bridge()
    assert bridge.wait_ready()
    mute = V31Device(prefix, device_id, respond=False).start()
    try:
        wait_for(lambda: Device.objects.get(device_id=device_id).online)
        command = command_send(membership=alice, pool=pool_a, op="valve", value=2)
        wait_for(lambda: status(command) == "timed_out", what="timeout")
        assert ("valve/set", b"2") in mute.sets
        assert "did not confirm" in command.error
        assert DeviceEvent.objects.filter(kind="command.timed_out").exists()
    finally:
        mute.stop()


def test_command_to_offline_device_fails_fast(
    make_bridge, prefix, alice, pool_a, platform_broker
):
    make_device(pool_a, prefix, esp_id(), broker=platform_broker)
    make_bridge()
    command = command_send(membership=alice, pool=pool_a, op="pump", value="ON")
    assert command.status == Command.Status.FAILED
    assert command.error == "The device is offline"
    time.sleep(0.3)
    assert status(command) == "failed"
    assert command.sent_at is None  # never published


# --- broker restarts and several bridges --------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class PrivateMosquitto:
    def __init__(self, tmp_path):
        self.port = free_port()
        self.conf = tmp_path / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} {HOST}\nallow_anonymous true\npersistence false\n"
        )
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [shutil.which("mosquitto") or "mosquitto", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def listening():
            try:
                socket.create_connection((HOST, self.port), 0.2).close()
                return True
            except OSError:
                return False

        wait_for(listening, 5, "private mosquitto")

    def kill(self):
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def private_broker(tmp_path):
    if not shutil.which("mosquitto"):
        pytest.skip("mosquitto is not installed")
    broker = PrivateMosquitto(tmp_path)
    broker.start()
    yield broker
    broker.kill()


@pytest.mark.slow
def test_broker_restart_loses_no_command(
    make_bridge, prefix, alice, pool_a, pool_b, carol, private_broker, settings
):
    settings.COMMAND_TIMEOUT_SECONDS = 8
    broker = Broker.objects.create(
        tenant=pool_a.tenant,
        name="Acme own",
        host=HOST,
        port=private_broker.port,
        use_tls=False,
    )
    device_id = esp_id()
    device = make_device(pool_a, prefix, device_id, broker=broker)
    bridge = make_bridge()
    assert bridge.wait_ready()
    url = f"mqtt://{HOST}:{private_broker.port}"
    with VirtualDevice(
        device_id, broker=url, prefix=prefix, reconnect_delay=(1, 1)
    ) as sim:
        sim.wait_connected()
        wait_for(lambda: Device.objects.get(pk=device.pk).online, what="online")
        connects = bridge.connections[broker.pk].connects

        private_broker.kill()
        wait_for(lambda: not bridge.connections[broker.pk].connected.is_set())
        # Accepted while the broker is down: stays pending, published after reconnect.
        command = command_send(membership=alice, pool=pool_a, op="pump", value="ON")
        assert status(command) == "pending"
        time.sleep(0.5)
        assert status(command) == "pending"
        private_broker.start()
        wait_for(lambda: bridge.connections[broker.pk].connects > connects, what="back")
        wait_for(lambda: status(command) == "done", timeout=8, what="delivered")

        # Down for longer than the timeout: reported failed, never silently dropped.
        settings.COMMAND_TIMEOUT_SECONDS = 1
        private_broker.kill()
        wait_for(lambda: not bridge.connections[broker.pk].connected.is_set())
        lost = command_send(membership=alice, pool=pool_a, op="pump", value="OFF")
        wait_for(lambda: status(lost) == "timed_out", what="timed out")
        assert "could not be delivered" in lost.error
        private_broker.start()


def test_two_bridges_share_the_platform_broker(
    make_bridge, prefix, pool_a, platform_broker
):
    device = make_device(pool_a, prefix, esp_id(), broker=platform_broker)
    group = f"bt{uuid.uuid4().hex[:8]}"
    one = make_bridge(share_group=group)
    two = make_bridge(share_group=group)
    assert one.wait_ready() and two.wait_ready()
    pub = Publisher()
    count = 200
    try:
        for seq in range(count):
            pub.c.publish(
                f"{prefix}/{device.device_id}/telemetry", telemetry(seq=seq), qos=1
            )
        total = lambda: one.stats().get("accepted", 0) + two.stats().get("accepted", 0)  # noqa: E731
        wait_for(lambda: total() >= count, what="all messages")
    finally:
        pub.close()
    time.sleep(0.3)
    assert total() == count
    assert one.stats()["accepted"] > 0 and two.stats()["accepted"] > 0
    wait_for(lambda: TelemetrySample.objects.filter(device=device).count() == count)
    time.sleep(0.3)
    assert TelemetrySample.objects.filter(device=device).count() == count


@pytest.mark.redis  # the bridge and the test share a channel layer
def test_state_is_broadcast_to_the_pool_group(
    make_bridge, prefix, pool_a, pool_b, platform_broker
):
    """What the dashboard consumer gets (contract 3), through the real Redis layer."""
    from poolsaas.live.groups import pool_group
    from poolsaas.tests.live_listener import GroupListener

    device = make_device(pool_a, prefix, esp_id(), broker=platform_broker)
    make_device(pool_b, prefix, esp_id(), broker=platform_broker)
    # Pages of their own: the bridge's live thread receives on the shared layer.
    with (
        GroupListener(pool_group(pool_a.code)) as page,
        GroupListener(pool_group(pool_b.code)) as other,
    ):
        bridge = make_bridge()
        assert bridge.wait_ready()
        wait_for(
            lambda: {page.groups[0], other.groups[0]} <= (bridge.live.watched or set()),
            what="the bridge knows both pages",
        )
        pub = Publisher()
        try:
            pub.pub(f"{prefix}/{device.device_id}/telemetry", telemetry(temp=22.2))
            message = page.wait(lambda m: m["type"] == "pool.state")
        finally:
            pub.close()
        # Tenant B's pool heard nothing.
        assert [
            m for m in other.received(within=0.5) if m["type"] == "pool.state"
        ] == []
    assert message["pool"] == pool_a.code.hex
    assert message["online"] is True
    assert message["state"]["temperature"] == 22.2
    assert message["last_seen"]


@pytest.fixture
def tls_broker(tmp_path):
    """A private Mosquitto with TLS (our own CA) and a password file."""
    if not (shutil.which("mosquitto") and shutil.which("openssl")):
        pytest.skip("mosquitto and openssl are needed")

    def run(*args):
        subprocess.run(args, cwd=tmp_path, check=True, capture_output=True)

    for command in (
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -keyout ca.key"
        " -out ca.crt -subj /CN=test-ca",
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr"
        " -subj /CN=localhost",
        "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial"
        " -out server.crt -days 1 -extfile san.ext",
    ):
        if "x509 -req" in command:
            (tmp_path / "san.ext").write_text(
                "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
            )
        run(*command.split())
    run("mosquitto_passwd", "-b", "-c", "passwd", "bridge", "bridge-secret")
    run("mosquitto_passwd", "-b", "passwd", "device", "device-secret")
    broker = PrivateMosquitto(tmp_path)
    broker.conf.write_text(
        f"user root\nper_listener_settings false\npersistence false\n"
        f"allow_anonymous false\npassword_file {tmp_path}/passwd\n"
        f"listener {broker.port} {HOST}\ncafile {tmp_path}/ca.crt\n"
        f"certfile {tmp_path}/server.crt\nkeyfile {tmp_path}/server.key\n"
    )
    broker.start()
    broker.ca = (tmp_path / "ca.crt").read_text()
    broker.ca_path = str(tmp_path / "ca.crt")
    yield broker
    broker.kill()


def test_tenant_broker_with_tls_and_credentials(
    make_bridge, prefix, pool_a, pool_b, tls_broker
):
    good = Broker.objects.create(
        tenant=pool_a.tenant,
        name="Acme TLS",
        host=HOST,
        port=tls_broker.port,
        use_tls=True,
        ca_certificate=tls_broker.ca,
        username="bridge",
        password="bridge-secret",
    )
    wrong = Broker.objects.create(
        tenant=pool_b.tenant,
        name="Globex TLS",
        host=HOST,
        port=tls_broker.port,
        use_tls=True,
        ca_certificate=tls_broker.ca,
        username="bridge",
        password="not-the-password",
    )
    device = make_device(pool_a, prefix, esp_id(), broker=good)
    make_device(pool_b, prefix, esp_id(), broker=wrong)
    bridge = make_bridge()
    wait_for(lambda: good.pk in bridge.connections and wrong.pk in bridge.connections)
    wait_for(lambda: bridge.connections[good.pk].connected.is_set(), what="TLS up")

    pub = client()
    pub.tls_set(ca_certs=tls_broker.ca_path)
    pub.username_pw_set("device", "device-secret")
    pub.connect(HOST, tls_broker.port)
    pub.loop_start()
    try:
        topic = f"{prefix}/{device.device_id}/telemetry"
        pub.publish(topic, telemetry(temp=23.4), qos=1).wait_for_publish(5)
        wait_for(
            lambda: Device.objects.get(pk=device.pk).state.get("temperature") == 23.4,
            what="telemetry over TLS",
        )
    finally:
        pub.disconnect()
        pub.loop_stop()
    # The refused broker is retried in the background and harms nothing else.
    assert not bridge.connections[wrong.pk].connected.is_set()


def test_bridge_refuses_a_tenant_broker_on_an_internal_address(
    make_bridge, prefix, pool_a, platform_broker, settings
):
    # Saved while private hosts were allowed; refused once they are not.
    broker = Broker.objects.create(
        tenant=pool_a.tenant, name="inside", host="127.0.0.1", port=1883, use_tls=False
    )
    make_device(pool_a, prefix, esp_id(), broker=broker)
    settings.BROKER_ALLOW_PRIVATE_HOSTS = False
    bridge = make_bridge()
    assert bridge.wait_ready(10)
    assert platform_broker.pk in bridge.connections
    assert broker.pk not in bridge.connections


@pytest.mark.skipif(
    not os.environ.get("REDIS_URL"), reason="the live sender runs on channels-redis"
)
def test_a_change_skipped_before_the_page_was_known_reaches_it_once_known(
    make_bridge, prefix, pool_a, platform_broker
):
    """The bridge skips pools nobody watches; a page whose announcement it has not
    heard yet (here: the registry alone, no notice) still gets the change it missed,
    from the bridge's own state, once the bridge learns of the page."""
    from poolsaas.live import watch
    from poolsaas.live.groups import pool_group
    from poolsaas.tests.live_listener import GroupListener

    device = make_device(pool_a, prefix, esp_id(), broker=platform_broker)
    bridge = make_bridge()
    assert bridge.wait_ready()
    pub = Publisher()
    group = pool_group(pool_a.code)
    with GroupListener() as page:
        try:
            pub.pub(f"{prefix}/{device.device_id}/telemetry", telemetry(temp=23.4))
            wait_for(lambda: bridge.live.counters["skipped"] >= 1, what="a skip")
            page.join(group, announce=False)
            watch.registry().touch([group])  # the page's socket, its notice lost
            message = page.wait(lambda m: m["type"] == "pool.state")
        finally:
            pub.close()
    assert message["pool"] == pool_a.code.hex
    assert message["state"]["temperature"] == 23.4
