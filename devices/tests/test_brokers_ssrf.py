"""SSRF: a tenant admin must not point a broker (and so the connection test and the
bridge) at our own network. BROKER_ALLOW_PRIVATE_HOSTS is on with DEBUG (tests,
`make run`) and off in production; these tests turn it off."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from audit.models import AuditEvent
from devices.models import Broker
from devices.services.brokers import (
    broker_create,
    broker_test_connection,
    broker_update,
    validate_broker_address,
)

pytestmark = pytest.mark.django_db

REFUSED = [
    "127.0.0.1",
    "127.8.9.10",
    "localhost",
    "0.0.0.0",  # noqa: S104 - an address refused, not one we bind
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.10",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "2130706433",  # 127.0.0.1 as one decimal number, resolved by getaddrinfo
    "0x7f000001",
]


@pytest.fixture
def public_only(settings):
    settings.BROKER_ALLOW_PRIVATE_HOSTS = False


def test_tests_run_with_private_hosts_allowed():
    from django.conf import settings

    # The suite's environment has DEBUG on (pytest-django then turns
    # settings.DEBUG off, but the default was taken from the environment): the
    # embedded broker of `make run` and the local Mosquitto are on 127.0.0.1.
    # poolsaas/tests/test_settings.py checks the production default.
    assert settings.BROKER_ALLOW_PRIVATE_HOSTS is True


@pytest.mark.parametrize("host", REFUSED)
def test_private_and_special_addresses_are_refused(public_only, host):
    with pytest.raises(ValidationError) as caught:
        validate_broker_address(host)
    assert "public internet" in caught.value.messages[0]


@pytest.mark.parametrize("host", ["1.1.1.1", "2606:4700:4700::1111", "8.8.8.8"])
def test_public_addresses_pass(public_only, host):
    validate_broker_address(host)


def test_unresolvable_names_are_refused(public_only):
    with pytest.raises(ValidationError) as caught:
        validate_broker_address("no-such-host.invalid")
    assert "does not resolve" in caught.value.messages[0]


def test_allowed_when_the_setting_is_on(settings):
    settings.BROKER_ALLOW_PRIVATE_HOSTS = True
    validate_broker_address("127.0.0.1")
    validate_broker_address("10.0.0.1")


def test_create_refuses_a_private_host_and_changes_nothing(public_only, adam):
    with pytest.raises(ValidationError) as caught:
        broker_create(
            membership=adam,
            name="Sneaky",
            host="169.254.169.254",
            port=80,
            use_tls=False,
            password="pw",
        )
    assert "host" in caught.value.message_dict
    assert not Broker.objects.filter(name="Sneaky").exists()
    assert not AuditEvent.objects.filter(action="broker.created").exists()


def test_create_refuses_a_private_websocket_url(public_only, adam):
    with pytest.raises(ValidationError) as caught:
        broker_create(
            membership=adam,
            name="Sneaky",
            host="1.1.1.1",
            port=8883,
            websocket_url="ws://127.0.0.1:9001/mqtt",
        )
    assert list(caught.value.message_dict) == ["websocket_url"]


def test_update_refuses_a_private_host(settings, adam):
    broker = broker_create(membership=adam, name="Own", host="1.1.1.1", port=8883)
    settings.BROKER_ALLOW_PRIVATE_HOSTS = False
    with pytest.raises(ValidationError):
        broker_update(membership=adam, broker=broker, host="127.0.0.1")
    broker.refresh_from_db()
    assert broker.host == "1.1.1.1"


@pytest.mark.mqtt
def test_connection_test_refuses_a_host_stored_before_the_rule(settings, adam):
    # A row saved while private hosts were allowed (or a name re-pointed at a
    # private address since) is checked again right before connecting.
    broker = broker_create(
        membership=adam,
        name="Local",
        host="127.0.0.1",
        port=1883,
        use_tls=False,
    )
    assert broker_test_connection(broker=broker, membership=adam, timeout=3).ok
    settings.BROKER_ALLOW_PRIVATE_HOSTS = False
    result = broker_test_connection(broker=broker, membership=adam, timeout=3)
    assert not result.ok
    assert "public internet" in result.message


def test_page_shows_the_error_and_adds_nothing(public_only, login, adam):
    client = login(adam)
    response = client.post(
        reverse("broker_add"),
        {
            "name": "Sneaky",
            "host": "localhost",
            "port": "1883",
            "topic_prefix": "devices",
        },
    )
    assert response.status_code == 400
    assert b"public internet" in response.content
    assert not Broker.objects.filter(tenant=adam.tenant).exists()


def test_admin_refuses_a_private_host_for_a_tenant_broker(
    public_only, admin_client, tenant_a
):
    response = admin_client.post(
        reverse("admin:devices_broker_add"),
        {
            "tenant": tenant_a.pk,
            "name": "Sneaky",
            "host": "10.0.0.1",
            "port": "1883",
            "topic_prefix": "devices",
        },
    )
    assert response.status_code == 200
    assert b"public internet" in response.content
    assert not Broker.objects.filter(name="Sneaky").exists()


def test_admin_may_keep_the_platform_broker_on_loopback(
    public_only, admin_client, platform_broker
):
    url = reverse("admin:devices_broker_change", args=[platform_broker.pk])
    response = admin_client.post(
        url,
        {
            "name": platform_broker.name,
            "host": "127.0.0.1",
            "port": "1884",
            "topic_prefix": "devices",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    platform_broker.refresh_from_db()
    assert platform_broker.port == 1884
