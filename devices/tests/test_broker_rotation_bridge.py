"""Rotating a tenant broker's credentials, end to end: a private Mosquitto with a
password file (old and new users), the real bridge and its connection, PostgreSQL.

The tenant keeps both pairs valid on their broker during the rotation; the bridge
must try the staged pair first, promote it when the broker takes it, and go back
to the current pair at once when the broker refuses it.
"""

import shutil
import subprocess

import pytest

from audit.models import AuditEvent
from devices.bridge.connection import BrokerConnection
from devices.models import Broker, Device
from devices.services.brokers import (
    broker_credentials_stage,
    broker_test_connection,
)
from devices.tests import test_bridge
from devices.tests.test_bridge import (
    HOST,
    PrivateMosquitto,
    client,
    esp_id,
    make_device,
    wait_for,
)
from devices.tests.test_bridge_core import telemetry

# The bridge tests' fixtures, shared.
make_bridge = test_bridge.make_bridge
prefix = test_bridge.prefix

pytestmark = [pytest.mark.mqtt, pytest.mark.django_db(transaction=True)]

OLD = ("acme-bridge", "old-Secret-1")
NEW = ("acme-bridge-2", "new-Secret-2")
DEVICE = ("acme-device", "device-Secret-3")


class PasswordMosquitto(PrivateMosquitto):
    """A private Mosquitto that logs users in from a password file."""

    def __init__(self, tmp_path):
        super().__init__(tmp_path)
        self.passwd = tmp_path / "passwd"

    def users(self, *pairs):
        self.passwd.unlink(missing_ok=True)
        for i, (username, password) in enumerate(pairs):
            subprocess.run(
                ["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), self.passwd]
                + [username, password],
                check=True,
                capture_output=True,
            )
        self.conf.write_text(
            f"user root\nper_listener_settings false\npersistence false\n"
            f"allow_anonymous false\npassword_file {self.passwd}\n"
            f"listener {self.port} {HOST}\n"
        )


@pytest.fixture
def password_broker(tmp_path):
    if not (shutil.which("mosquitto") and shutil.which("mosquitto_passwd")):
        pytest.skip("mosquitto and mosquitto_passwd are needed")
    broker = PasswordMosquitto(tmp_path)
    broker.users(OLD, NEW, DEVICE)
    broker.start()
    yield broker
    broker.kill()


@pytest.fixture
def own_broker(pool_a, password_broker, settings):
    settings.BROKER_ALLOW_PRIVATE_HOSTS = True
    return Broker.objects.create(
        tenant=pool_a.tenant,
        name="Acme own",
        host=HOST,
        port=password_broker.port,
        use_tls=False,
        username=OLD[0],
        password=OLD[1],
    )


def _connection(bridge, broker):
    wait_for(
        lambda: (
            broker.pk in bridge.connections
            and bridge.connections[broker.pk].subscribed.is_set()
        ),
        what="the tenant broker's connection",
    )
    return bridge.connections[broker.pk]


def _telemetry_lands(port, prefix, device, temp):
    pub = client(port=port)
    pub.username_pw_set(*DEVICE)
    pub.connect(HOST, port)
    pub.loop_start()
    try:
        topic = f"{prefix}/{device.device_id}/telemetry"
        pub.publish(topic, telemetry(temp=temp), qos=1).wait_for_publish(5)
        wait_for(
            lambda: Device.objects.get(pk=device.pk).state.get("temperature") == temp,
            what=f"telemetry {temp}",
        )
    finally:
        pub.disconnect()
        pub.loop_stop()


def test_staged_credentials_are_tried_first_and_promoted(
    make_bridge, prefix, alice, pool_a, own_broker, password_broker
):
    device = make_device(pool_a, prefix, esp_id(), broker=own_broker)
    bridge = make_bridge()
    _connection(bridge, own_broker)
    _telemetry_lands(password_broker.port, prefix, device, 20.5)

    broker_credentials_stage(
        membership=alice, broker=own_broker, username=NEW[0], password=NEW[1]
    )
    wait_for(
        lambda: Broker.objects.get(pk=own_broker.pk).credentials_rotated_at,
        what="the promotion",
    )
    broker = Broker.objects.get(pk=own_broker.pk)
    assert (broker.username, broker.password) == NEW
    assert broker.credentials_pending_since is None
    assert broker.pending_password == ""
    assert broker.credentials_refused_at is None
    event = AuditEvent.objects.get(action="broker.credentials_rotated")
    assert event.target_code == str(broker.code)
    assert NEW[1] not in str(event.data) and OLD[1] not in str(event.data)
    conn = _connection(bridge, own_broker)
    # The promoting connection carries on: no second connect for the promotion.
    bridge.refresh()
    assert bridge.connections[own_broker.pk] is conn

    # The old pair is gone from the broker: the bridge still gets in, with the new.
    password_broker.kill()
    password_broker.users(NEW, DEVICE)
    password_broker.start()
    wait_for(lambda: conn.connects >= 2, what="the reconnect with the new pair")
    _telemetry_lands(password_broker.port, prefix, device, 21.5)


def test_refused_credentials_fall_back_at_once_and_the_page_says_so(
    make_bridge, prefix, alice, pool_a, own_broker, password_broker, login
):
    device = make_device(pool_a, prefix, esp_id(), broker=own_broker)
    bridge = make_bridge()
    first = _connection(bridge, own_broker)

    broker_credentials_stage(
        membership=alice, broker=own_broker, username=NEW[0], password="wrong"
    )
    wait_for(
        lambda: Broker.objects.get(pk=own_broker.pk).credentials_refused_at,
        what="the refusal",
    )
    conn = _connection(bridge, own_broker)
    assert conn is not first  # rebuilt for the staged pair
    assert conn.counters["credentials_refused"] == 1
    _telemetry_lands(password_broker.port, prefix, device, 19.0)
    broker = Broker.objects.get(pk=own_broker.pk)
    assert (broker.username, broker.password) == OLD
    assert broker.credentials_pending_since is not None  # still staged, not tried
    assert not AuditEvent.objects.filter(action="broker.credentials_rotated").exists()
    refused = AuditEvent.objects.get(action="broker.credentials_refused")
    assert "wrong" not in str(refused.data)

    page = login(alice).get(f"/brokers/{own_broker.code}/edit/")
    text = page.content.decode()
    assert "New credentials refused by the broker at" in text
    assert "still using the old ones" in text
    assert "wrong" not in text and OLD[1] not in text

    # Staging again (the right pair now) is tried and promoted.
    broker_credentials_stage(
        membership=alice, broker=own_broker, username=NEW[0], password=NEW[1]
    )
    wait_for(
        lambda: Broker.objects.get(pk=own_broker.pk).credentials_rotated_at,
        what="the promotion after a refusal",
    )
    assert (Broker.objects.get(pk=own_broker.pk).password) == NEW[1]


def test_a_pair_staged_again_while_the_bridge_tries_one_is_not_lost(
    alice, pool_a, own_broker
):
    broker_credentials_stage(
        membership=alice, broker=own_broker, username=NEW[0], password=NEW[1]
    )
    tried = Broker.objects.get(pk=own_broker.pk)
    conn = BrokerConnection(
        broker=tried, enqueue=lambda item: None, client_id="rotation-cas", shared=False
    )
    # Staged again between the bridge reading the row and the broker answering.
    broker_credentials_stage(
        membership=alice, broker=own_broker, username=NEW[0], password="newer-3"
    )
    conn.start()
    try:
        wait_for(conn.connected.is_set, what="the connection with the tried pair")
        wait_for(lambda: conn.pending_since is None, what="the promotion attempt")
    finally:
        conn.stop()
    broker = Broker.objects.get(pk=own_broker.pk)
    assert (broker.username, broker.password) == OLD
    assert broker.pending_password == "newer-3"
    assert broker.credentials_pending_since > tried.credentials_pending_since
    assert broker.credentials_rotated_at is None
    assert not AuditEvent.objects.filter(action="broker.credentials_rotated").exists()
    # The fingerprint still names the pair tried: the bridge will rebuild.
    assert conn.fingerprint[-1] == tried.credentials_pending_since


def test_the_connection_test_tries_the_staged_pair(alice, own_broker):
    assert not broker_test_connection(broker=own_broker, pending=True).ok
    broker_credentials_stage(
        membership=alice, broker=own_broker, username=NEW[0], password=NEW[1]
    )
    broker = Broker.objects.get(pk=own_broker.pk)
    result = broker_test_connection(broker=broker, membership=alice, pending=True)
    assert result.ok, result.message
    assert "new credentials" in result.message
    broker_credentials_stage(
        membership=alice, broker=own_broker, username=NEW[0], password="wrong"
    )
    broker = Broker.objects.get(pk=own_broker.pk)
    result = broker_test_connection(broker=broker, membership=alice, pending=True)
    assert not result.ok
    assert "refused the new username or password" in result.message
    assert broker_test_connection(broker=broker, membership=alice).ok
