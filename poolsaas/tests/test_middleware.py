"""The request id and client address every request carries into the audit trail,
the login throttle and the API throttles."""

import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from conftest import PASSWORD

pytestmark = pytest.mark.django_db


def _login(client, password, **extra):
    return client.post(
        reverse("login"), {"username": "alice@acme.test", "password": password}, **extra
    )


def test_forwarded_for_is_ignored_without_trusted_proxies(alice, settings):
    settings.TRUSTED_PROXY_COUNT = 0
    client = Client(REMOTE_ADDR="198.51.100.1")
    # A client inventing a new X-Forwarded-For for each try stays one address.
    statuses = [
        _login(client, f"guess-{n}", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}").status_code
        for n in range(5)
    ]
    assert statuses == [200, 200, 200, 200, 429]
    assert {e.ip for e in AuditEvent.objects.filter(action="login.failed")} == {
        "198.51.100.1"
    }


def test_behind_one_proxy_the_address_it_saw_is_used(alice, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = Client(REMOTE_ADDR="10.0.0.2")  # our load balancer
    # The client may prepend anything; our proxy appends the address it saw.
    _login(proxy, PASSWORD, HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.50")
    (event,) = AuditEvent.objects.filter(action="login.succeeded")
    assert event.ip == "203.0.113.50"


def test_behind_one_proxy_spoofing_cannot_dodge_the_lockout(alice, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = Client(REMOTE_ADDR="10.0.0.2")
    statuses = [
        _login(
            proxy, f"guess-{n}", HTTP_X_FORWARDED_FOR=f"1.1.1.{n}, 203.0.113.50"
        ).status_code
        for n in range(5)
    ]
    assert statuses == [200, 200, 200, 200, 429]


def test_missing_or_garbage_forwarded_for_falls_back_to_the_peer(alice, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    for header in ("", "not-an-ip", "203.0.113.1, <script>"):
        Client(REMOTE_ADDR="10.0.0.2").post(
            reverse("login"),
            {"username": "alice@acme.test", "password": "no"},
            HTTP_X_FORWARDED_FOR=header,
        )
    assert {e.ip for e in AuditEvent.objects.filter(action="login.failed")} == {
        "10.0.0.2"
    }


def test_request_id_is_taken_when_well_formed_and_echoed(alice, client):
    response = client.get(reverse("login"), HTTP_X_REQUEST_ID="abc-12345678")
    assert response["X-Request-ID"] == "abc-12345678"
    response = client.get(reverse("login"), HTTP_X_REQUEST_ID="bad id\nInjected: 1")
    assert response["X-Request-ID"] != "bad id\nInjected: 1"
    assert len(response["X-Request-ID"]) == 32
