"""Webhook URLs go through the brokers' address guard
(devices.services.brokers.addresses), at save and again before every POST; the
retry schedule."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.exceptions import ValidationError

from alerts import tasks
from alerts.models import AlertRule, Kind, WebhookSubscription
from alerts.services import (
    alert_fire,
    webhook_backoff,
    webhook_create,
    webhook_post,
    webhook_url_validate,
)
from alerts.tests.test_alerts import NOW


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8000/hook",  # a name that resolves to loopback
        "https://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://192.168.1.10/x",
        "http://[fd00::1]/x",
        "http://0.0.0.0/x",
    ],
)
def test_internal_addresses_are_refused(alice, settings, url):
    settings.BROKER_ALLOW_PRIVATE_HOSTS = False
    with pytest.raises(ValidationError):
        webhook_create(membership=alice, url=url, secret="s")
    assert not WebhookSubscription.objects.exists()


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "javascript:alert(1)", "http:///nohost", ""]
)
def test_only_http_urls(settings, url):
    settings.BROKER_ALLOW_PRIVATE_HOSTS = True
    with pytest.raises(ValidationError):
        webhook_url_validate(url)


def test_loopback_is_allowed_only_with_the_development_switch(alice, settings):
    settings.BROKER_ALLOW_PRIVATE_HOSTS = True
    webhook_create(membership=alice, url="http://127.0.0.1:9/hook", secret="s")
    assert WebhookSubscription.objects.count() == 1


class Counter(BaseHTTPRequestHandler):
    hits = 0

    def do_POST(self):  # noqa: N802 - http.server's name
        type(self).hits += 1
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_url_that_became_internal_is_refused_before_the_post(
    alice, device_a, settings
):
    """Saved while allowed (or a name whose DNS record changed since): the guard
    runs again at delivery, the attempt is logged and nothing is sent."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Counter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings.BROKER_ALLOW_PRIVATE_HOSTS = True
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        webhook = webhook_create(membership=alice, url=url, secret="s")
        rule = AlertRule.objects.create(
            tenant=alice.tenant, kind=Kind.FREEZE_RISK, threshold=4
        )
        alert = alert_fire(pool=device_a.pool, rule=rule, value=2.0, now=NOW).alert
        settings.BROKER_ALLOW_PRIVATE_HOSTS = False
        delivery = webhook_post(alert=alert, webhook=webhook, event="fired", attempt=1)
        assert (delivery.ok, delivery.status, delivery.status_code) == (
            False,
            "failed",
            None,
        )
        assert delivery.error and delivery.pk
        assert Counter.hits == 0
        # The control: allowed again, the same POST goes out.
        settings.BROKER_ALLOW_PRIVATE_HOSTS = True
        delivery = webhook_post(alert=alert, webhook=webhook, event="fired", attempt=2)
        assert (delivery.ok, delivery.status_code, Counter.hits) == (True, 200, 1)
    finally:
        server.shutdown()
        server.server_close()


def test_backoff_doubles_from_5_s_and_is_capped_at_10_minutes():
    assert [webhook_backoff(n) for n in range(9)] == [
        5,
        10,
        20,
        40,
        80,
        160,
        320,
        600,
        600,
    ]
    assert tasks.deliver_webhook.max_retries == tasks.MAX_ATTEMPTS - 1 == 5
