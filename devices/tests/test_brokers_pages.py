"""The brokers page: list, add, edit, delete, test connection.

Personas: alice (owner A), adam (admin A), olivia (operator A), victor (viewer A),
carol (owner B). Secrets are write-only: no page ever contains one.
"""

import socket
import uuid

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from devices.models import Broker, Device
from devices.services.brokers import broker_create
from devices.tests.conftest import BROKER_PASSWORD, BROKER_USER

CAROL_PASSWORD = "globex-Secret-Pa55-4kW"


@pytest.fixture
def broker_b(carol):
    return broker_create(
        membership=carol,
        name="Globex broker",
        host="mqtt.globex.test",
        port=8883,
        use_tls=True,
        username="globex-user",
        password=CAROL_PASSWORD,
    )


def form_data(**overrides):
    data = {
        "name": "New broker",
        "host": "broker.example.com",
        "port": "8883",
        "use_tls": "on",
        "ca_certificate": "",
        "websocket_url": "wss://broker.example.com:8084/mqtt",
        "topic_prefix": "devices",
        "username": "",
        "password": "",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def assert_no_secrets(response, *secrets):
    html = response.content.decode()
    for secret in secrets:
        assert secret not in html


def snapshot(broker):
    fresh = Broker.objects.get(pk=broker.pk)
    return (
        fresh.name,
        fresh.host,
        fresh.port,
        fresh.use_tls,
        fresh.ca_certificate,
        fresh.websocket_url,
        fresh.topic_prefix,
        fresh.username,
        fresh.password,
    )


# --- list -----------------------------------------------------------------------


def test_list_shows_own_and_platform_brokers_never_secrets(
    login, alice, broker_a, broker_b, platform_broker, settings
):
    platform_broker.username = "platform-admin-user"
    platform_broker.password = "platform-Secret-Pw-1"
    platform_broker.save()
    response = login(alice).get(reverse("brokers"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Acme broker" in html
    assert "mqtt.acme.test:8883" in html
    assert platform_broker.name in html
    assert "Globex broker" not in html
    assert "mqtt.globex.test" not in html
    assert reverse("broker_edit", args=[broker_a.code]) in html
    # The platform row is read-only and shows the public address only.
    assert f"{settings.MQTT_PUBLIC_HOST}:{settings.MQTT_PUBLIC_PORT}" in html
    assert reverse("broker_edit", args=[platform_broker.code]) not in html
    assert_no_secrets(
        response,
        BROKER_USER,
        BROKER_PASSWORD,
        CAROL_PASSWORD,
        "platform-admin-user",
        "platform-Secret-Pw-1",
    )


@pytest.mark.parametrize("persona", ["olivia", "victor"])
def test_operator_and_viewer_may_list_but_get_no_change_buttons(
    request, login, persona, broker_a
):
    membership = request.getfixturevalue(persona)
    response = login(membership).get(reverse("brokers"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Acme broker" in html
    assert reverse("broker_add") not in html
    assert reverse("broker_edit", args=[broker_a.code]) not in html
    assert reverse("broker_test", args=[broker_a.code]) not in html


def test_list_query_count_does_not_grow_with_brokers(
    login, alice, broker_a, django_assert_max_num_queries
):
    client = login(alice)
    client.get(reverse("brokers"))  # warm the session
    with django_assert_max_num_queries(12) as few:
        client.get(reverse("brokers"))
    for n in range(5):
        broker_create(
            membership=alice,
            name=f"Extra {n}",
            host="extra.test",
            port=1883,
            use_tls=False,
        )
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = client.get(reverse("brokers"))
    assert response.content.decode().count(">Extra ") == 5


def test_empty_state_and_no_tenant(login, alice, make_user, client):
    response = login(alice).get(reverse("brokers"))
    assert "No brokers of your own" in response.content.decode()
    loner = make_user("loner@nowhere.test")
    client.force_login(loner)
    response = client.get(reverse("brokers"))
    assert response.status_code == 200
    assert "not in any team" in response.content.decode()


def test_suspended_tenant_gets_403(login, alice, broker_a):
    alice.tenant.status = "suspended"
    alice.tenant.save()
    response = login(alice).get(reverse("brokers"))
    assert response.status_code == 403
    assert "suspended" in response.content.decode()


# --- add ------------------------------------------------------------------------


def test_admin_adds_broker_with_encrypted_secrets(login, adam, tenant_b):
    client = login(adam)
    assert client.get(reverse("broker_add")).status_code == 200
    response = client.post(
        reverse("broker_add"),
        form_data(username="new-user", password="new-Secret-77", tenant=tenant_b.code),
        follow=True,
    )
    assert response.status_code == 200
    assert "Broker New broker added." in response.content.decode()
    assert_no_secrets(response, "new-user", "new-Secret-77")
    broker = Broker.objects.get(name="New broker")
    # The tenant comes from the session, never from the form.
    assert broker.tenant_id == adam.tenant_id
    assert (broker.username, broker.password) == ("new-user", "new-Secret-77")
    assert broker.secrets_changed_at is not None
    event = AuditEvent.objects.get(action="broker.created", target_code=broker.code)
    assert event.actor_id == adam.user_id
    assert "new-Secret-77" not in str(event.data)


@pytest.mark.parametrize("persona", ["olivia", "victor"])
def test_operator_and_viewer_cannot_add(request, login, persona):
    client = login(request.getfixturevalue(persona))
    assert client.get(reverse("broker_add")).status_code == 403
    response = client.post(reverse("broker_add"), form_data())
    assert response.status_code == 403
    assert not Broker.objects.filter(name="New broker").exists()


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"port": "70000"}, "port", "less than or equal to 65535"),
        ({"port": "0"}, "port", "greater than or equal to 1"),
        ({"host": "mqtt://broker.example.com"}, "host", "without mqtt://"),
        ({"host": "bad host!"}, "host", "host name"),
        ({"host": ""}, "host", "required"),
        ({"websocket_url": "http://broker.example.com/mqtt"}, "websocket_url", "ws://"),
        (
            {"websocket_url": "wss://u:p@broker.example.com/mqtt"},
            "websocket_url",
            "Do not put a username or password in the URL",
        ),
        ({"ca_certificate": "not a certificate"}, "ca_certificate", "PEM"),
        (
            {
                "ca_certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n"
                "-----END CERTIFICATE-----"
            },
            "ca_certificate",
            "cannot be read",
        ),
        ({"topic_prefix": "acme/#"}, "topic_prefix", "without wildcards"),
        ({"topic_prefix": "/acme"}, "topic_prefix", "without wildcards"),
    ],
)
def test_add_bad_input_is_refused_clearly(login, adam, overrides, field, message):
    response = login(adam).post(
        reverse("broker_add"), form_data(password="typed-Secret-55", **overrides)
    )
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert field in errors, errors
    assert message in " ".join(errors[field])
    assert message in response.content.decode().replace("&#x27;", "'")
    assert_no_secrets(response, "typed-Secret-55")
    assert not Broker.objects.filter(tenant=adam.tenant).exists()


def test_add_ca_needs_tls_and_names_are_unique(login, adam, broker_a, ca_pem):
    client = login(adam)
    response = client.post(
        reverse("broker_add"), form_data(ca_certificate=ca_pem, use_tls=None)
    )
    assert response.status_code == 400
    assert "only used with TLS" in str(response.context["form"].errors)
    response = client.post(reverse("broker_add"), form_data(name="acme BROKER"))
    assert response.status_code == 400
    assert "already have a broker named" in str(response.context["form"].errors)
    assert Broker.objects.filter(tenant=adam.tenant).count() == 1
    response = client.post(reverse("broker_add"), form_data(ca_certificate=ca_pem))
    assert response.status_code == 302
    assert Broker.objects.get(name="New broker").ca_certificate == ca_pem.strip()


@pytest.fixture(scope="session")
def ca_pem():
    """A real self-signed CA certificate, made fresh for the tests."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "poolsaas test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# --- edit -----------------------------------------------------------------------


def test_edit_page_shows_set_not_secrets(login, alice, broker_a):
    response = login(alice).get(reverse("broker_edit", args=[broker_a.code]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Acme broker" in html
    assert html.count(">set</span>") == 2
    assert_no_secrets(response, BROKER_USER, BROKER_PASSWORD)
    assert 'name="password" autocomplete="new-password"' in html
    assert 'name="username" autocomplete="off"' in html
    assert 'value="' + BROKER_USER not in html


def test_edit_page_says_not_set(login, alice):
    broker = broker_create(
        membership=alice, name="Open", host="open.test", port=1883, use_tls=False
    )
    response = login(alice).get(reverse("broker_edit", args=[broker.code]))
    assert response.content.decode().count(">not set</span>") == 2


def test_edit_blank_secrets_keep_them(login, alice, broker_a):
    response = login(alice).post(
        reverse("broker_edit", args=[broker_a.code]),
        form_data(name="Acme broker 2", host=broker_a.host, topic_prefix="acme2"),
    )
    assert response.status_code == 302
    broker = Broker.objects.get(pk=broker_a.pk)
    assert (broker.name, broker.host, broker.topic_prefix) == (
        "Acme broker 2",
        "mqtt.acme.test",
        "acme2",
    )
    assert (broker.username, broker.password) == (BROKER_USER, BROKER_PASSWORD)
    assert AuditEvent.objects.filter(action="broker.updated").exists()
    assert not AuditEvent.objects.filter(action="broker.secret_changed").exists()


def test_edit_new_password_and_clear_username(login, alice, broker_a):
    response = login(alice).post(
        reverse("broker_edit", args=[broker_a.code]),
        form_data(name="Acme broker", password="rotated-Pw-123", clear_username="on"),
        follow=True,
    )
    assert response.status_code == 200
    assert_no_secrets(response, "rotated-Pw-123", BROKER_USER, BROKER_PASSWORD)
    broker = Broker.objects.get(pk=broker_a.pk)
    assert (broker.username, broker.password) == ("", "rotated-Pw-123")
    event = AuditEvent.objects.get(action="broker.secret_changed")
    assert event.data == {"fields": ["username", "password"], "cleared": ["username"]}
    assert event.actor_id == alice.user_id


def test_edit_clear_password(login, alice, broker_a):
    login(alice).post(
        reverse("broker_edit", args=[broker_a.code]),
        form_data(name="Acme broker", host=broker_a.host, clear_password="on"),
    )
    broker = Broker.objects.get(pk=broker_a.pk)
    assert (broker.username, broker.password) == (BROKER_USER, "")


def test_edit_new_and_clear_together_is_refused(login, alice, broker_a):
    before = snapshot(broker_a)
    response = login(alice).post(
        reverse("broker_edit", args=[broker_a.code]),
        form_data(name="Acme broker", password="other-Pw-999", clear_password="on"),
    )
    assert response.status_code == 400
    assert "not both" in response.content.decode()
    assert_no_secrets(response, "other-Pw-999", BROKER_PASSWORD)
    assert snapshot(broker_a) == before


@pytest.mark.parametrize(
    "overrides",
    [
        {"port": "99999"},
        {"host": "broker.example.com:1883"},
        {"websocket_url": "mqtt://x"},
        {"name": ""},
    ],
)
def test_edit_bad_input_changes_nothing(login, alice, broker_a, overrides):
    before = snapshot(broker_a)
    response = login(alice).post(
        reverse("broker_edit", args=[broker_a.code]),
        form_data(password="never-Saved-Pw-1", **overrides),
    )
    assert response.status_code == 400
    assert response.context["form"].errors
    assert_no_secrets(response, "never-Saved-Pw-1", BROKER_PASSWORD, BROKER_USER)
    assert snapshot(broker_a) == before


@pytest.mark.parametrize("persona", ["olivia", "victor"])
def test_edit_needs_admin(request, login, persona, broker_a):
    before = snapshot(broker_a)
    client = login(request.getfixturevalue(persona))
    url = reverse("broker_edit", args=[broker_a.code])
    assert client.get(url).status_code == 403
    assert client.post(url, form_data(name="Hijacked")).status_code == 403
    assert snapshot(broker_a) == before


@pytest.mark.parametrize(
    "view", ["broker_edit", "broker_delete", "broker_test"], ids=lambda v: v
)
def test_foreign_made_up_and_platform_codes_are_404(
    login, alice, broker_b, platform_broker, view
):
    client = login(alice)
    for code in (broker_b.code, platform_broker.code, uuid.uuid4(), "not-a-code"):
        url = reverse(view, args=[code])
        if view == "broker_edit":
            assert client.get(url).status_code == 404, code
        response = client.post(url, form_data(name="Hijacked"))
        assert response.status_code == 404, (view, code)
    assert Broker.objects.filter(pk=broker_b.pk).exists()
    assert Broker.objects.get(pk=broker_b.pk).name == "Globex broker"
    assert Broker.objects.get(pk=platform_broker.pk).name == platform_broker.name


def test_foreign_code_is_404_even_for_a_viewer(login, victor, broker_b):
    # Not found beats forbidden: a viewer learns nothing about other tenants.
    response = login(victor).get(reverse("broker_edit", args=[broker_b.code]))
    assert response.status_code == 404


# --- delete ---------------------------------------------------------------------


def test_delete(login, alice, broker_a):
    response = login(alice).post(
        reverse("broker_delete", args=[broker_a.code]), follow=True
    )
    assert "Broker Acme broker deleted." in response.content.decode()
    assert not Broker.objects.filter(pk=broker_a.pk).exists()
    event = AuditEvent.objects.get(action="broker.deleted")
    assert event.target_code == str(broker_a.code)


def test_delete_refuses_a_broker_in_use(login, alice, broker_a, pool_a):
    Device.objects.create(
        tenant=alice.tenant, pool=pool_a, broker=broker_a, device_id="ESP-C0FFEE"
    )
    response = login(alice).post(
        reverse("broker_delete", args=[broker_a.code]), follow=True
    )
    assert "is used by 1 device(s)" in response.content.decode()
    assert Broker.objects.filter(pk=broker_a.pk).exists()
    assert not AuditEvent.objects.filter(action="broker.deleted").exists()


def test_delete_needs_post_and_admin(login, olivia, victor, broker_a):
    url = reverse("broker_delete", args=[broker_a.code])
    assert login(olivia).get(url).status_code == 405
    assert login(olivia).post(url).status_code == 403
    assert login(victor).post(url).status_code == 403
    assert Broker.objects.filter(pk=broker_a.pk).exists()


# --- test connection (the real Mosquitto of this machine) --------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def local_broker(alice):
    return broker_create(
        membership=alice,
        name="Local mosquitto",
        host="127.0.0.1",
        port=1883,
        use_tls=False,
    )


@pytest.mark.mqtt
def test_connection_success(login, adam, local_broker):
    response = login(adam).post(
        reverse("broker_test", args=[local_broker.code]), follow=True
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Local mosquitto: Connected to 127.0.0.1:1883." in html
    assert "msg-success" in html


@pytest.mark.mqtt
def test_connection_to_a_closed_port_fails_clearly(login, adam, local_broker):
    port = _closed_port()
    Broker.objects.filter(pk=local_broker.pk).update(port=port)
    response = login(adam).post(
        reverse("broker_test", args=[local_broker.code]), follow=True
    )
    html = response.content.decode()
    assert f"127.0.0.1:{port} refused the connection" in html
    assert "msg-error" in html


@pytest.mark.mqtt
def test_connection_tls_to_a_plain_port_fails_clearly(login, adam, local_broker):
    Broker.objects.filter(pk=local_broker.pk).update(use_tls=True)
    response = login(adam).post(
        reverse("broker_test", args=[local_broker.code]), follow=True
    )
    html = response.content.decode()
    assert "TLS handshake with 127.0.0.1:1883 failed" in html
    assert "msg-error" in html


@pytest.mark.parametrize("persona", ["olivia", "victor"])
def test_connection_test_needs_admin(request, login, persona, local_broker):
    client = login(request.getfixturevalue(persona))
    url = reverse("broker_test", args=[local_broker.code])
    assert client.post(url).status_code == 403
    assert client.get(url).status_code == 405


def test_list_never_decrypts(login, alice, broker_a, platform_broker, settings):
    from cryptography.fernet import Fernet

    # With no key that fits, any decryption would raise: the list does none.
    settings.FIELD_ENCRYPTION_KEY = [Fernet.generate_key().decode()]
    response = login(alice).get(reverse("brokers"))
    assert response.status_code == 200
    assert "Acme broker" in response.content.decode()
