import datetime as dt

import pytest
from django.core import mail
from django.core.exceptions import ValidationError

from alerts.models import Alert, AlertRule, Delivery, Kind, WebhookSubscription
from alerts.services import (
    alert_email,
    alert_fire,
    alert_resolve,
    alerts_evaluate,
    condition,
    webhook_create,
    webhook_sign,
    webhook_verify,
)
from devices.models import Device

NOW = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.UTC)


def cond(kind, temperature, firing, pump=False, threshold=4.0, hysteresis=1.0):
    return condition(
        kind=kind,
        threshold=threshold,
        hysteresis=hysteresis,
        firing=firing,
        temperature=temperature,
        pump=pump,
        online=True,
        last_seen_at=NOW,
        now=NOW,
    )


def test_hysteresis_water_below():
    assert cond(Kind.WATER_BELOW, 3.9, firing=False)
    assert not cond(Kind.WATER_BELOW, 4.0, firing=False)
    # Hovering just above the threshold does not resolve it ...
    assert cond(Kind.WATER_BELOW, 4.5, firing=True)
    # ... only the threshold plus the hysteresis does.
    assert not cond(Kind.WATER_BELOW, 5.0, firing=True)


def test_hysteresis_water_above():
    assert cond(Kind.WATER_ABOVE, 30.1, firing=False, threshold=30)
    assert cond(Kind.WATER_ABOVE, 29.5, firing=True, threshold=30)
    assert not cond(Kind.WATER_ABOVE, 29.0, firing=True, threshold=30)


def test_freeze_risk_needs_the_pump_off():
    assert not cond(Kind.FREEZE_RISK, 2.0, firing=False, pump=True)
    assert cond(Kind.FREEZE_RISK, 2.0, firing=False, pump=False)
    assert not cond(Kind.FREEZE_RISK, 5.0, firing=True, pump=False)


def test_device_offline_after_n_minutes():
    def offline(minutes_ago, online=False):
        return condition(
            kind=Kind.DEVICE_OFFLINE,
            threshold=10,
            hysteresis=0,
            firing=False,
            temperature=None,
            pump=None,
            online=online,
            last_seen_at=NOW - dt.timedelta(minutes=minutes_ago),
            now=NOW,
        )

    assert not offline(5)
    assert offline(10)
    assert not offline(60, online=True)


def set_state(device, **state):
    Device.objects.filter(pk=device.pk).update(state=state, online=True)


@pytest.fixture
def freeze_rule(tenant_a):
    return AlertRule.objects.create(
        tenant=tenant_a, kind=Kind.FREEZE_RISK, threshold=4.0, hysteresis=1.0
    )


def test_freeze_fires_once_and_resolves_with_hysteresis(
    freeze_rule, device_a, device_b, django_assert_max_num_queries
):
    set_state(device_a, temperature=3.0, pump=False)
    set_state(device_b, temperature=1.0, pump=False)  # tenant B has no rule
    with django_assert_max_num_queries(8):
        first = alerts_evaluate(now=NOW)
    assert [(t.event, t.alert.pool_id) for t in first] == [("fired", device_a.pool_id)]
    for _ in range(3):
        assert alerts_evaluate(now=NOW) == []
    set_state(device_a, temperature=4.5, pump=False)
    assert alerts_evaluate(now=NOW) == []
    set_state(device_a, temperature=5.0, pump=False)
    assert [t.event for t in alerts_evaluate(now=NOW)] == ["resolved"]
    alert = Alert.objects.get()
    assert alert.state == Alert.State.RESOLVED


def test_pool_override_beats_tenant_default(freeze_rule, device_a):
    AlertRule.objects.create(
        tenant=device_a.tenant,
        pool=device_a.pool,
        kind=Kind.FREEZE_RISK,
        threshold=2.0,
    )
    set_state(device_a, temperature=3.0, pump=False)
    assert alerts_evaluate(now=NOW) == []


def test_two_workers_claim_each_change_once(freeze_rule, device_a):
    pool = device_a.pool
    assert alert_fire(pool=pool, rule=freeze_rule, value=3.0, now=NOW)
    assert alert_fire(pool=pool, rule=freeze_rule, value=3.0, now=NOW) is None
    alert = Alert.objects.get()
    stale = Alert.objects.get()
    assert alert_resolve(alert=alert, now=NOW)
    assert alert_resolve(alert=stale, now=NOW) is None


def test_email_to_owners_and_admins(freeze_rule, device_a, alice, adam, victor):
    alert_fire(pool=device_a.pool, rule=freeze_rule, value=3.0, now=NOW)
    alert = Alert.objects.get()
    deliveries = alert_email(alert=alert, event="fired")
    assert [(d.recipient, d.status, d.ok, d.channel) for d in deliveries] == [
        ("adam@acme.test", "sent", True, Delivery.Channel.EMAIL),
        ("alice@acme.test", "sent", True, Delivery.Channel.EMAIL),
    ]
    assert sorted(m.to[0] for m in mail.outbox) == ["adam@acme.test", "alice@acme.test"]
    assert mail.outbox[0].alternatives[0][1] == "text/html"


def test_signature_round_trip():
    header = webhook_sign(secret="s3cret", body=b'{"a":1}', timestamp=1000)
    assert webhook_verify(secret="s3cret", body=b'{"a":1}', header=header, now=1010)
    assert not webhook_verify(secret="s3cret", body=b'{"a":2}', header=header, now=1)
    assert not webhook_verify(secret="s3cret", body=b'{"a":1}', header=header, now=9e9)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/hook", "http://10.0.0.5/x", "http://[::1]/x"]
)
def test_internal_webhook_url_refused(alice, url, settings):
    settings.BROKER_ALLOW_PRIVATE_HOSTS = False
    with pytest.raises(ValidationError):
        webhook_create(membership=alice, url=url, secret="x")
    assert not WebhookSubscription.objects.exists()


def test_the_task_and_its_schedule():
    from poolsaas.celery import app

    assert app.conf.beat_schedule["alerts.evaluate"]["schedule"] == 20.0
