"""Per-device clients on a real Mosquitto with the dynamic-security plugin.

The session fixture starts that broker with deploy/mosquitto/start-dynsec.sh (which does
nothing when it already runs), so `make test` always covers it. Every test uses its own
random prefix and device ids: several test runs may share the broker.
"""

import os
import queue
import secrets
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from devices.services.dynsec import (
    DynsecClient,
    DynsecConfig,
    DynsecError,
    ReservedName,
    device_acls,
    dynsec_config,
    dynsec_device_create,
    dynsec_device_delete,
    dynsec_device_exists,
    dynsec_devices_bind_client_ids,
    dynsec_devices_sync_acls,
    role_name,
)

DYNSEC_PORT = int(os.environ.get("POOLSAAS_TEST_DYNSEC_PORT", "18883"))
DYNSEC_ADMIN = "poolsaas-admin"
DYNSEC_ADMIN_PASSWORD = "poolsaas-dynsec-dev"
SCRIPT = (
    Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "start-dynsec.sh"
)
WAIT = 5.0


@pytest.fixture(scope="session")
def dynsec_broker() -> DynsecConfig:
    """A Mosquitto with the dynamic-security plugin on a loopback port."""
    env = {
        **os.environ,
        "DYNSEC_PORT": str(DYNSEC_PORT),
        "DYNSEC_ADMIN_USER": DYNSEC_ADMIN,
        "DYNSEC_ADMIN_PASSWORD": DYNSEC_ADMIN_PASSWORD,
    }
    result = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"start-dynsec.sh failed: {result.stderr}"
    return DynsecConfig(
        host="127.0.0.1",
        port=DYNSEC_PORT,
        tls=False,
        username=DYNSEC_ADMIN,
        password=DYNSEC_ADMIN_PASSWORD,
    )


@pytest.fixture
def dynsec_settings(settings, dynsec_broker):
    """Settings of a platform broker with dynamic security, as in production."""
    settings.MQTT_DYNSEC_ENABLED = True
    settings.MQTT_DYNSEC_URL = f"mqtt://127.0.0.1:{DYNSEC_PORT}"
    settings.MQTT_USERNAME = DYNSEC_ADMIN
    settings.MQTT_PASSWORD = DYNSEC_ADMIN_PASSWORD
    return settings


def random_device_id() -> str:
    return f"ESP-{secrets.token_hex(3).upper()}"


def random_prefix() -> str:
    return f"ps-dynsec-{secrets.token_hex(4)}"


class MqttProbe:
    """A plain paho client recording what the broker answers."""

    def __init__(self, client_id: str):
        self.messages: queue.Queue = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.subacks: queue.Queue = queue.Queue()
        self.connect_code = None
        self.looping = False
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connect_code = reason_code
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.subacks.put(reason_codes)

    def connect(self, username: str, password: str, *, background=True) -> bool:
        """True when the broker accepted the login; then a background loop runs
        unless `background` is false."""
        self.client.username_pw_set(username, password)
        self.client.connect("127.0.0.1", DYNSEC_PORT, keepalive=30)
        # The handshake in this thread: a background loop would keep retrying a
        # refused login and take a second to stop.
        deadline = time.monotonic() + WAIT
        while not self.connected.is_set() and time.monotonic() < deadline:
            self.client.loop(timeout=0.05)
        assert self.connected.is_set(), "no CONNACK"
        if self.connect_code.is_failure:
            return False
        if not background:
            return True
        self.client.loop_start()
        self.looping = True
        return True

    def subscribe(self, topic: str) -> bool:
        """True when the SUBACK grants the subscription."""
        self.client.subscribe(topic, qos=1)
        codes = self.subacks.get(timeout=WAIT)
        return not any(code.is_failure for code in codes)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(WAIT)

    def close(self) -> None:
        self.client.disconnect()
        if self.looping:
            self.client.loop_stop()


@pytest.fixture
def clients(created):
    # Depends on `created` so that clients close before their credentials are deleted
    # (a kicked client's loop would sit in its reconnect wait).
    made = []

    def make(client_id: str | None = None) -> MqttProbe:
        made.append(MqttProbe(client_id or f"ps-dynsec-test-{secrets.token_hex(4)}"))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def watcher(clients, dynsec_broker):
    """The admin, reading everything under a fresh prefix, as the bridge would."""
    prefix = random_prefix()
    admin = clients()
    assert admin.connect(DYNSEC_ADMIN, DYNSEC_ADMIN_PASSWORD)
    assert admin.subscribe(f"{prefix}/#")
    admin.prefix = prefix
    return admin


@pytest.fixture
def created(dynsec_broker):
    """Create device clients and delete them again after the test."""
    ids = []

    def make(prefix: str, device_id: str | None = None) -> tuple[str, str]:
        device_id = device_id or random_device_id()
        ids.append(device_id)
        password = dynsec_device_create(
            device_id=device_id, prefix=prefix, config=dynsec_broker
        )
        return device_id, password

    yield make
    for device_id in ids:
        dynsec_device_delete(device_id=device_id, config=dynsec_broker)


def test_device_acl_is_exact_topics_under_its_own_root():
    acls = device_acls(prefix="devices", device_id="ESP-A1B2C3")
    publish = {a["topic"] for a in acls if a["acltype"] == "publishClientSend"}
    subscribe = {a["topic"] for a in acls if a["acltype"] == "subscribeLiteral"}
    assert "devices/ESP-A1B2C3/telemetry" in publish
    assert "devices/ESP-A1B2C3/pump/state" in publish
    assert "devices/ESP-A1B2C3/cmd" not in publish
    assert subscribe == {
        f"devices/ESP-A1B2C3/{s}"
        for s in (
            "cmd",
            "config/set",
            "pump/set",
            "valve/set",
            "timer/set",
            "wifi/clear",
            # The OTA room's downlink (ota.mqtt.OtaRoom), and its uplink below.
            "ota/offer",
            "ota/chunk",
        )
    }
    assert {"devices/ESP-A1B2C3/ota/get", "devices/ESP-A1B2C3/ota/status"} <= publish
    assert all(a["allow"] for a in acls)
    assert not any("+" in a["topic"] or "#" in a["topic"] for a in acls)
    for prefix, device_id in (("devices/#", "ESP-A1B2C3"), ("devices", "ESP+")):
        with pytest.raises(ValueError):
            device_acls(prefix=prefix, device_id=device_id)


def test_device_acl_follows_the_bridge_rooms(settings):
    settings.BRIDGE_ROOMS = ["devices.mqtt.DevicesRoom"]
    topics = {a["topic"] for a in device_acls(prefix="devices", device_id="ESP-A1")}
    assert not any("/ota/" in topic for topic in topics)
    assert "devices/ESP-A1/telemetry" in topics


@pytest.mark.mqtt
def test_device_takes_its_own_ota_topics_only(clients, watcher, created):
    mine, password = created(watcher.prefix)
    other, _ = created(watcher.prefix)
    root = f"{watcher.prefix}/{mine}"
    device = clients(mine)
    assert device.connect(mine, password)
    assert device.subscribe(f"{root}/ota/offer")
    assert device.subscribe(f"{root}/ota/chunk")
    assert not device.subscribe(f"{watcher.prefix}/{other}/ota/chunk")
    watcher.publish(f"{root}/ota/chunk", b"\x00\x00\x00\x01chunk")
    assert device.messages.get(timeout=WAIT) == (
        f"{root}/ota/chunk",
        b"\x00\x00\x00\x01chunk",
    )
    device.publish(f"{root}/ota/get", b'{"c":1,"i":0}')
    while (message := watcher.messages.get(timeout=WAIT))[0] != f"{root}/ota/get":
        pass  # the watcher also reads the chunk it published
    assert message == (f"{root}/ota/get", b'{"c":1,"i":0}')


@pytest.mark.mqtt
def test_another_tenants_device_can_neither_read_nor_forge_ota_traffic(
    clients, watcher, created
):
    """Device A (tenant A) and device B (tenant B) on one broker: B's credentials
    reach none of A's OTA topics, by name or by wildcard, in either direction; A's
    chunks reach A only."""
    a_id, a_password = created(watcher.prefix)
    b_id, b_password = created(watcher.prefix)
    a_root, b_root = f"{watcher.prefix}/{a_id}", f"{watcher.prefix}/{b_id}"
    a, b = clients(a_id), clients(b_id)
    assert a.connect(a_id, a_password) and b.connect(b_id, b_password)
    assert a.subscribe(f"{a_root}/ota/chunk")
    for topic in ("ota/chunk", "ota/offer", "ota/get", "ota/status"):
        assert not b.subscribe(f"{a_root}/{topic}"), topic
    for pattern in ("+/ota/chunk", "+/ota/#", f"{a_id}/ota/+", f"{a_id}/#"):
        assert not b.subscribe(f"{watcher.prefix}/{pattern}"), pattern
    assert b.subscribe(f"{b_root}/ota/chunk")

    # B asking for chunks or reporting on A's behalf, or sending A a chunk, is
    # dropped by the broker; A's own request behind them shows the watcher listens.
    b.publish(f"{a_root}/ota/get", b'{"c":1,"i":0,"n":4}')
    b.publish(f"{a_root}/ota/status", b'{"c":1,"state":"succeeded"}')
    b.publish(f"{a_root}/ota/chunk", b"\x00\x00\x00\x01\x00\x00\x00\x00forged")
    b.publish(f"{b_root}/ota/chunk", b"\x00\x00\x00\x01\x00\x00\x00\x00self")
    a.publish(f"{a_root}/ota/get", b'{"c":1,"i":0,"n":4}')
    assert watcher.messages.get(timeout=WAIT) == (
        f"{a_root}/ota/get",
        b'{"c":1,"i":0,"n":4}',
    )
    # The bridge's chunk for A reaches A, and B (subscribed to its own) sees nothing.
    watcher.publish(f"{a_root}/ota/chunk", b"\x00\x00\x00\x01\x00\x00\x00\x00A")
    assert a.messages.get(timeout=WAIT) == (
        f"{a_root}/ota/chunk",
        b"\x00\x00\x00\x01\x00\x00\x00\x00A",
    )
    watcher.messages.get(timeout=WAIT)  # its own publish
    with pytest.raises(queue.Empty):
        a.messages.get(timeout=0.3)
    with pytest.raises(queue.Empty):
        b.messages.get(timeout=0.3)
    with pytest.raises(queue.Empty):
        watcher.messages.get(timeout=0.3)


def test_dynsec_config_comes_from_settings(dynsec_settings):
    config = dynsec_config()
    assert (config.host, config.port, config.tls) == ("127.0.0.1", DYNSEC_PORT, False)
    assert (config.username, config.password) == (DYNSEC_ADMIN, DYNSEC_ADMIN_PASSWORD)
    dynsec_settings.MQTT_DYNSEC_URL = "mqtts://broker.example.com"
    assert (dynsec_config().port, dynsec_config().tls) == (8883, True)


@pytest.mark.mqtt
def test_device_uses_its_own_topics_with_its_password(clients, watcher, created):
    device_id, password = created(watcher.prefix)
    root = f"{watcher.prefix}/{device_id}"
    device = clients(device_id)
    assert device.connect(device_id, password)

    assert device.subscribe(f"{root}/cmd")
    assert device.subscribe(f"{root}/config/set")
    watcher.publish(f"{root}/cmd", b'{"id":"c-1"}')
    assert device.messages.get(timeout=WAIT) == (f"{root}/cmd", b'{"id":"c-1"}')
    # The watcher reads everything under the prefix, its own publish included.
    assert watcher.messages.get(timeout=WAIT) == (f"{root}/cmd", b'{"id":"c-1"}')

    device.publish(f"{root}/telemetry", b'{"seq":1}')
    assert watcher.messages.get(timeout=WAIT) == (f"{root}/telemetry", b'{"seq":1}')


@pytest.mark.mqtt
def test_another_devices_topics_are_denied(clients, watcher, created):
    mine, password = created(watcher.prefix)
    other, _ = created(watcher.prefix)
    device = clients(mine)
    assert device.connect(mine, password)

    # Subscriptions: another device's commands, any wildcard, even its own uplink.
    assert not device.subscribe(f"{watcher.prefix}/{other}/cmd")
    assert not device.subscribe(f"{watcher.prefix}/+/cmd")
    assert not device.subscribe(f"{watcher.prefix}/#")
    assert not device.subscribe(f"{watcher.prefix}/{mine}/#")
    assert not device.subscribe(f"{watcher.prefix}/{mine}/telemetry")

    # A publish on another device's state is dropped by the broker; the device's own
    # publish, sent after it on the same connection, shows the watcher is listening.
    device.publish(f"{watcher.prefix}/{other}/pump/state", b"ON")
    device.publish(f"{watcher.prefix}/{mine}/cmd", b"{}")  # downlink: not allowed
    device.publish(f"{watcher.prefix}/{mine}/pump/state", b"OFF")
    assert watcher.messages.get(timeout=WAIT) == (
        f"{watcher.prefix}/{mine}/pump/state",
        b"OFF",
    )
    with pytest.raises(queue.Empty):
        watcher.messages.get(timeout=0.3)


@pytest.mark.mqtt
def test_wrong_password_and_unknown_user_are_refused(clients, watcher, created):
    device_id, password = created(watcher.prefix)
    assert not clients(device_id).connect(device_id, password + "x")
    other = random_device_id()
    assert not clients(other).connect(other, password)


@pytest.mark.mqtt
def test_removed_client_is_disconnected_and_cannot_connect_again(
    clients, watcher, created, dynsec_broker
):
    device_id, password = created(watcher.prefix)
    device = clients(device_id)
    assert device.connect(device_id, password)
    assert dynsec_device_exists(device_id=device_id, config=dynsec_broker)

    dynsec_device_delete(device_id=device_id, config=dynsec_broker)

    assert device.disconnected.wait(WAIT), "the broker kept the removed client"
    assert not dynsec_device_exists(device_id=device_id, config=dynsec_broker)
    assert not clients(device_id).connect(device_id, password)
    # Deleting again is not an error.
    dynsec_device_delete(device_id=device_id, config=dynsec_broker)


@pytest.mark.mqtt
def test_recreating_a_device_replaces_its_password(clients, watcher, created):
    device_id, first = created(watcher.prefix)
    _, second = created(watcher.prefix, device_id)
    assert first != second
    assert not clients(device_id).connect(device_id, first)
    assert clients(device_id).connect(device_id, second)


@pytest.mark.mqtt
def test_the_admin_account_cannot_be_taken_over(dynsec_settings, dynsec_broker):
    with pytest.raises(DynsecError, match="reserved"):
        dynsec_device_create(device_id=DYNSEC_ADMIN, prefix="devices")
    with pytest.raises(DynsecError, match="reserved"):
        dynsec_device_delete(device_id=DYNSEC_ADMIN)
    # The admin still logs in.
    with DynsecClient(dynsec_broker) as admin:
        assert admin.execute([{"command": "listClients"}])[0].get("error") is None


@pytest.mark.mqtt
def test_broker_errors_are_reported(dynsec_broker):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    nowhere = DynsecConfig("127.0.0.1", free_port, False, DYNSEC_ADMIN, "x")
    with pytest.raises(DynsecError, match="Cannot reach"):
        dynsec_device_create(device_id=random_device_id(), prefix="d", config=nowhere)
    wrong = DynsecConfig("127.0.0.1", DYNSEC_PORT, False, DYNSEC_ADMIN, "wrong")
    with pytest.raises(DynsecError, match="refused the admin login"):
        dynsec_device_delete(device_id=random_device_id(), config=wrong)
    with DynsecClient(dynsec_broker) as admin, pytest.raises(DynsecError, match="oops"):
        admin.run([{"command": "oops"}])


@pytest.mark.mqtt
def test_last_will_only_on_the_devices_own_topics(clients, watcher, created):
    mine, password = created(watcher.prefix)
    other = random_device_id()
    for owner in (other, mine):  # the foreign will first: nothing may come of it
        device = clients(mine)
        device.client.will_set(f"{watcher.prefix}/{owner}/status", b"offline", qos=1)
        assert device.connect(mine, password, background=False)
        device.client.socket().close()  # dropped without DISCONNECT: the will fires
    assert watcher.messages.get(timeout=WAIT) == (
        f"{watcher.prefix}/{mine}/status",
        b"offline",
    )
    with pytest.raises(queue.Empty):
        watcher.messages.get(timeout=0.3)


@pytest.mark.mqtt
def test_another_tenants_credentials_cannot_take_over_a_device_connection(
    clients, watcher, created
):
    """Issue 10.2: Globex's device credentials with Acme's device id as the client id
    must be refused, and Acme's device must stay connected and get its commands."""
    acme_id, acme_password = created(watcher.prefix)
    globex_id, globex_password = created(watcher.prefix)
    root = f"{watcher.prefix}/{acme_id}"
    victim = clients(acme_id)
    assert victim.connect(acme_id, acme_password)
    assert victim.subscribe(f"{root}/cmd")

    attacker = clients(acme_id)
    assert not attacker.connect(globex_id, globex_password), "takeover accepted"
    assert attacker.connect_code.is_failure

    watcher.publish(f"{root}/cmd", b'{"id":"c-victim"}')
    assert victim.messages.get(timeout=WAIT) == (f"{root}/cmd", b'{"id":"c-victim"}')
    assert not victim.disconnected.is_set()
    assert attacker.messages.empty()
    # Its own credentials under its own id still work.
    assert clients(globex_id).connect(globex_id, globex_password)


@pytest.mark.mqtt
def test_device_credentials_connect_only_under_their_own_client_id(clients, created):
    device_id, password = created(random_prefix())
    assert not clients(f"{device_id}-2").connect(device_id, password)
    assert not clients().connect(device_id, password)
    assert clients(device_id).connect(device_id, password)


@pytest.mark.mqtt
def test_existing_clients_get_their_client_id_bound(clients, created, dynsec_broker):
    """Clients created before the binding get it from dynsec_devices_bind_client_ids
    (the upgrade step), after which another id is refused."""
    device_id, password = created(random_prefix())
    with DynsecClient(dynsec_broker) as admin:
        admin.run([{"command": "setClientId", "username": device_id, "clientid": ""}])
    assert clients("anything-else").connect(device_id, password)
    assert dynsec_devices_bind_client_ids(
        device_ids=[device_id, random_device_id()], config=dynsec_broker
    ) == [device_id]
    assert not clients("anything-else-2").connect(device_id, password)
    assert clients(device_id).connect(device_id, password)


@pytest.mark.mqtt
def test_roles_made_before_ota_are_brought_up_to_date(
    clients, watcher, created, dynsec_broker
):
    """A device provisioned before the OTA topics existed (its role without them)
    gets them from dynsec_devices_sync_acls (`manage.py dynsec_sync_acls`), and its
    other topics stay; a second run changes nothing, and what is not one of our
    device clients is left alone."""
    mine, password = created(watcher.prefix)
    root = f"{watcher.prefix}/{mine}"
    role = role_name(mine)
    ota = [
        a
        for a in device_acls(prefix=watcher.prefix, device_id=mine)
        if "/ota/" in a["topic"]
    ]
    assert ota
    with DynsecClient(dynsec_broker) as admin:
        admin.run(
            [
                {
                    "command": "removeRoleACL",
                    "rolename": role,
                    "acltype": a["acltype"],
                    "topic": a["topic"],
                }
                for a in ota
            ]
            + [
                {
                    "command": "addRoleACL",
                    "rolename": role,
                    "acltype": "subscribeLiteral",
                    "topic": f"{root}/stale",
                    "allow": True,
                }
            ]
        )
    old = clients(mine)
    assert old.connect(mine, password)
    assert not old.subscribe(f"{root}/ota/offer")
    old.close()

    devices = [(mine, watcher.prefix), (random_device_id(), watcher.prefix)]
    assert dynsec_devices_sync_acls(devices=devices, config=dynsec_broker) == [mine]
    assert dynsec_devices_sync_acls(devices=devices, config=dynsec_broker) == []
    device = clients(mine)
    assert device.connect(mine, password)
    assert device.subscribe(f"{root}/ota/offer")
    assert device.subscribe(f"{root}/cmd")
    assert not device.subscribe(f"{root}/stale")


@pytest.mark.mqtt
def test_platform_accounts_are_not_replaced_by_a_device(
    dynsec_settings, dynsec_broker, clients
):
    """A client of that name that is not one of our device clients (an account the
    operator made, a second bridge) is never deleted or recreated."""
    name = f"ops-monitor-{secrets.token_hex(3)}"
    with DynsecClient(dynsec_broker) as admin:
        admin.run(
            [{"command": "createClient", "username": name, "password": "ops-Pw-1"}]
        )
    try:
        with pytest.raises(ReservedName):
            dynsec_device_create(device_id=name, prefix="devices")
        with pytest.raises(ReservedName):
            dynsec_device_delete(device_id=name)
        dynsec_settings.MQTT_RESERVED_USERNAMES = ["poolsaas-bridge"]
        with pytest.raises(ReservedName):
            dynsec_device_create(device_id="poolsaas-bridge", prefix="devices")
        assert clients().connect(name, "ops-Pw-1")
    finally:
        with DynsecClient(dynsec_broker) as admin:
            admin.run([{"command": "deleteClient", "username": name}])
