"""The broker services behind the page, the admin and the API: validation, the
tenant fence for direct callers, and the connection test against the real
Mosquitto of this machine."""

import socket

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404

from audit.models import AuditEvent
from devices.models import Broker
from devices.services.brokers import (
    broker_create,
    broker_delete,
    broker_test_connection,
    broker_update,
    validate_broker_host,
    validate_websocket_url,
)


@pytest.mark.parametrize(
    "host",
    ["mqtt.example.com", "broker", "10.0.0.7", "::1", "2001:db8::1", "a-b.c-d.io."],
)
def test_valid_hosts(host):
    validate_broker_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "",
        "mqtt://a.b",
        "a.b:1883",
        "a.b/x",
        "user@a.b",
        "a b",
        "-a.b",
        "a..b",
        "x" * 64 + ".com",
        "bad_host.com",
        "[2001:db8::1]",
    ],
)
def test_invalid_hosts(host):
    with pytest.raises(ValidationError):
        validate_broker_host(host)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("", True),
        ("wss://mqtt.example.com:8084/mqtt", True),
        ("ws://127.0.0.1:9001", True),
        ("https://mqtt.example.com", False),
        ("wss://", False),
        ("wss://mqtt.example.com:99999/mqtt", False),
        ("wss://user:pw@mqtt.example.com/mqtt", False),
        ("wss://mqtt.example.com/a b", False),
    ],
)
def test_websocket_urls(url, ok):
    if ok:
        validate_websocket_url(url)
    else:
        with pytest.raises(ValidationError):
            validate_websocket_url(url)


def test_create_collects_every_error_at_once(alice):
    with pytest.raises(ValidationError) as caught:
        broker_create(
            membership=alice,
            name="",
            host="mqtt://x",
            port=0,
            websocket_url="http://x",
            topic_prefix="a/+",
        )
    assert set(caught.value.message_dict) == {
        "name",
        "host",
        "port",
        "websocket_url",
        "topic_prefix",
    }
    assert not Broker.objects.exists()
    assert not AuditEvent.objects.exists()


def test_create_refuses_unknown_fields(alice):
    with pytest.raises(ValidationError, match="Unknown broker fields: is_platform"):
        broker_create(membership=alice, name="x", host="x.test", is_platform=True)


@pytest.mark.parametrize("persona", ["olivia", "victor"])
def test_services_need_admin(request, persona, alice):
    broker = broker_create(membership=alice, name="Acme", host="a.test", port=1883)
    member = request.getfixturevalue(persona)
    with pytest.raises(PermissionDenied):
        broker_create(membership=member, name="Other", host="b.test")
    with pytest.raises(PermissionDenied):
        broker_update(membership=member, broker=broker, name="Renamed")
    with pytest.raises(PermissionDenied):
        broker_delete(membership=member, broker=broker)
    with pytest.raises(PermissionDenied):
        broker_test_connection(broker=broker, membership=member)
    assert Broker.objects.get(pk=broker.pk).name == "Acme"


def test_direct_callers_cannot_touch_foreign_or_platform_brokers(
    alice, carol, platform_broker
):
    foreign = broker_create(membership=carol, name="Globex", host="g.test")
    for broker in (foreign, platform_broker):
        # The access layer's answer: not found, as for a made-up code.
        with pytest.raises(Http404, match="No such broker"):
            broker_update(membership=alice, broker=broker, name="Hijacked")
        with pytest.raises(Http404, match="No such broker"):
            broker_delete(membership=alice, broker=broker)
    assert Broker.objects.get(pk=foreign.pk).name == "Globex"
    assert Broker.objects.filter(pk=platform_broker.pk).exists()


def test_update_audits_which_secret_changed_never_its_value(alice):
    broker = broker_create(
        membership=alice, name="Acme", host="a.test", username="u", password="p-Old-1"
    )
    broker_update(membership=alice, broker=broker, password="p-New-2")
    broker_update(membership=alice, broker=broker, password="p-New-2")  # no change
    events = AuditEvent.objects.filter(action="broker.secret_changed")
    assert [e.data for e in events] == [{"fields": ["password"], "cleared": []}]
    assert "p-New-2" not in str(list(AuditEvent.objects.values_list("data", flat=True)))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.mqtt
def test_connection_results_against_the_real_broker(db):
    ok = broker_test_connection(
        broker=Broker(name="t", host="127.0.0.1", port=1883, use_tls=False)
    )
    assert ok.ok and ok.message == "Connected to 127.0.0.1:1883."

    port = _closed_port()
    closed = broker_test_connection(
        broker=Broker(name="t", host="127.0.0.1", port=port, use_tls=False)
    )
    assert not closed.ok
    assert closed.message == (
        f"127.0.0.1:{port} refused the connection: nothing listens on that port."
    )

    tls = broker_test_connection(
        broker=Broker(name="t", host="127.0.0.1", port=1883, use_tls=True)
    )
    assert not tls.ok
    assert tls.message.startswith("TLS handshake with 127.0.0.1:1883 failed")
    assert "turn TLS off" in tls.message

    unknown = broker_test_connection(
        broker=Broker(name="t", host="no-such-host.invalid", port=1883, use_tls=False)
    )
    assert not unknown.ok
    assert "does not resolve" in unknown.message


@pytest.mark.mqtt
def test_connection_message_never_contains_the_secrets(db):
    result = broker_test_connection(
        broker=Broker(
            name="t",
            host="127.0.0.1",
            port=_closed_port(),
            use_tls=False,
            username="probe-user-K1",
            password="probe-Secret-K2",
        )
    )
    assert "probe-user-K1" not in result.message
    assert "probe-Secret-K2" not in result.message
