"""Issue 10.5: a stored broker secret goes only to the address it was typed for.

The attack: a tenant admin changes only the host (secret fields left empty), then
presses Test or waits for the bridge, and the stored username and password arrive at
a server of theirs. Changing host, port, TLS or CA now needs the secrets again (or
clearing them), on the page, the API and the staff admin alike (one service rule).
"""

import socket
import threading

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from audit.models import AuditEvent
from devices.models import Broker
from devices.services.brokers import broker_create, broker_update
from devices.tests import test_admin, test_brokers_pages
from devices.tests.conftest import BROKER_PASSWORD, BROKER_USER
from devices.tests.test_admin import broker_post
from devices.tests.test_brokers_pages import form_data
from poolsaas.api.testing import api_client, assert_error

# Fixtures of the neighbouring test modules.
staff, staff_client = test_admin.staff, test_admin.staff_client
ca_pem = test_brokers_pages.ca_pem


class CapturingServer:
    """A TCP listener that records what MQTT clients send and accepts them."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    self.received += conn.recv(4096)
                    conn.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted
                    conn.recv(16)
                except OSError:
                    pass

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def attacker_server():
    server = CapturingServer()
    yield server
    server.close()


def stored(broker):
    fresh = Broker.objects.get(pk=broker.pk)
    return (fresh.host, fresh.port, fresh.use_tls, fresh.ca_certificate)


def test_pointing_the_broker_elsewhere_and_testing_sends_no_secret(
    settings, login, alice, broker_a, attacker_server
):
    """The reproduction: host and port moved to the attacker's server, secrets left
    blank, then Test. The change is refused, and Test still dials the old host."""
    settings.BROKER_ALLOW_PRIVATE_HOSTS = True
    client = login(alice)
    before = stored(broker_a)
    response = client.post(
        reverse("broker_edit", args=[broker_a.code]),
        form_data(
            name=broker_a.name,
            host="127.0.0.1",
            port=str(attacker_server.port),
            use_tls="",
            websocket_url="",
            topic_prefix=broker_a.topic_prefix,
        ),
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "type the password again" in html
    assert "type the username again" in html
    assert stored(broker_a) == before
    assert not AuditEvent.objects.filter(action="broker.updated").exists()

    client.post(reverse("broker_test", args=[broker_a.code]))
    assert BROKER_PASSWORD.encode() not in attacker_server.received
    assert BROKER_USER.encode() not in attacker_server.received


def test_with_the_secrets_typed_again_the_new_address_is_used(
    settings, login, alice, broker_a, attacker_server
):
    """The rule only asks for the secrets: given again, they go where they were
    typed for (what the capturing server shows is what the owner typed)."""
    settings.BROKER_ALLOW_PRIVATE_HOSTS = True
    client = login(alice)
    response = client.post(
        reverse("broker_edit", args=[broker_a.code]),
        form_data(
            name=broker_a.name,
            host="127.0.0.1",
            port=str(attacker_server.port),
            use_tls="",
            websocket_url="",
            username="moved-user",
            password="moved-Pw-123",
        ),
    )
    assert response.status_code == 302
    assert Broker.objects.get(pk=broker_a.pk).port == attacker_server.port
    client.post(reverse("broker_test", args=[broker_a.code]))
    assert b"moved-Pw-123" in attacker_server.received
    assert BROKER_PASSWORD.encode() not in attacker_server.received


@pytest.mark.parametrize(
    "change",
    [
        {"host": "mqtt.elsewhere.test"},
        {"port": 8884},
        {"use_tls": False},
        {"ca_certificate": "ca"},
    ],
    ids=["host", "port", "tls", "ca"],
)
def test_every_address_field_needs_the_secrets(alice, broker_a, change, ca_pem):
    if "ca_certificate" in change:
        change = {"ca_certificate": ca_pem}
    before = stored(broker_a)
    fields = {
        "name": broker_a.name,
        "host": broker_a.host,
        "port": broker_a.port,
        "use_tls": broker_a.use_tls,
        "ca_certificate": "",
        "topic_prefix": broker_a.topic_prefix,
        **change,
    }
    with pytest.raises(ValidationError) as caught:
        broker_update(membership=alice, broker=broker_a, **fields)
    assert set(caught.value.message_dict) == {"username", "password"}
    assert stored(broker_a) == before
    # Typing only one of them is not enough either.
    with pytest.raises(ValidationError) as caught:
        broker_update(membership=alice, broker=broker_a, password="p-2", **fields)
    assert set(caught.value.message_dict) == {"username"}
    # Both typed again, or cleared: accepted.
    broker_update(
        membership=alice, broker=broker_a, username="u-2", password="", **fields
    )
    fresh = Broker.objects.get(pk=broker_a.pk)
    assert (fresh.username, fresh.password) == ("u-2", "")


def test_a_broker_without_secrets_moves_freely(alice):
    broker = broker_create(
        membership=alice, name="Open", host="open.test", port=1883, use_tls=False
    )
    broker_update(
        membership=alice,
        broker=broker,
        name="Open",
        host="open2.test",
        port=1884,
        use_tls=False,
    )
    assert stored(broker)[:2] == ("open2.test", 1884)


def test_the_api_refuses_a_new_host_without_the_secrets(adam, broker_a):
    client = api_client(adam)
    url = f"/api/v1/brokers/{broker_a.code}/"
    data = {
        "name": broker_a.name,
        "host": "mqtt.elsewhere.test",
        "port": broker_a.port,
        "use_tls": True,
        "topic_prefix": broker_a.topic_prefix,
    }
    body = assert_error(client.put(url, data, format="json", HTTP_IF_MATCH="*"), 400)
    assert set(body["fields"]) == {"username", "password"}
    assert Broker.objects.get(pk=broker_a.pk).host == "mqtt.acme.test"
    response = client.put(
        url,
        {**data, "username": "u", "password": "p-new"},
        format="json",
        HTTP_IF_MATCH="*",
    )
    assert response.status_code == 200, response.content
    assert Broker.objects.get(pk=broker_a.pk).host == "mqtt.elsewhere.test"


def test_staff_admin_follows_the_same_rule(staff_client, broker_a):
    url = reverse("admin:devices_broker_change", args=[broker_a.pk])
    response = staff_client.post(url, broker_post(broker_a, host="mqtt2.acme.test"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"new_username", "new_password"}
    assert Broker.objects.get(pk=broker_a.pk).host == "mqtt.acme.test"
    response = staff_client.post(
        url,
        broker_post(
            broker_a, host="mqtt2.acme.test", new_password="s-2", clear_username="on"
        ),
    )
    assert response.status_code == 302
    fresh = Broker.objects.get(pk=broker_a.pk)
    assert (fresh.host, fresh.username, fresh.password) == (
        "mqtt2.acme.test",
        "",
        "s-2",
    )
