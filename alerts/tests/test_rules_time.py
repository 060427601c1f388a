"""Rule kinds and timing added to issue 16: a firmware update that failed or rolled
back (read from ota.models.DeviceUpdate, no hook in the OTA code), hysteresis for
device_offline (back online for `hysteresis` minutes before it resolves, so a
flapping device does not flap the alert) and the re-notification interval of every
kind through the evaluator."""

import datetime as dt

import pytest
from django.utils import timezone

from alerts.models import Alert, AlertRule, DeviceDay, Kind
from alerts.services import alerts_evaluate
from alerts.tests.test_rules import events, rule, set_state
from devices.models import Command, Device
from ota.models import Campaign, DeviceUpdate, Release

MIN = dt.timedelta(minutes=1)


def offline(device, at, minutes_ago):
    Device.objects.filter(pk=device.pk).update(
        online=False, last_seen_at=at - minutes_ago * MIN
    )


def online(device, at):
    Device.objects.filter(pk=device.pk).update(online=True, last_seen_at=at)


def test_a_flapping_device_does_not_flap_the_offline_alert(tenant_a, device_a):
    rule(tenant_a, Kind.DEVICE_OFFLINE, 10, hysteresis=5)
    t0 = timezone.now()
    offline(device_a, t0, 9)
    assert alerts_evaluate(now=t0) == []
    offline(device_a, t0, 10)
    assert events(alerts_evaluate(now=t0)) == [("device_offline", "fired")]
    # Back for a moment, gone again, back, gone: seen at every evaluation (20 s).
    for n, up in enumerate([True, False, True, False, True, False]):
        at = t0 + (n + 1) * MIN / 3
        online(device_a, at) if up else offline(device_a, at, 0)
        assert alerts_evaluate(now=at) == [], n
    alert = Alert.objects.get()
    assert alert.state == "firing" and alert.clear_since is None
    # Back for good: it resolves once the device has been online 5 minutes.
    back = t0 + 3 * MIN
    online(device_a, back)
    assert alerts_evaluate(now=back) == []
    assert Alert.objects.get().clear_since == back
    online(device_a, back + 4 * MIN)
    assert alerts_evaluate(now=back + 4 * MIN) == []
    online(device_a, back + 5 * MIN)
    assert events(alerts_evaluate(now=back + 5 * MIN)) == [
        ("device_offline", "resolved")
    ]
    assert Alert.objects.count() == 1


def test_offline_without_hysteresis_resolves_at_once(tenant_a, device_a):
    rule(tenant_a, Kind.DEVICE_OFFLINE, 10, hysteresis=0)
    t0 = timezone.now()
    offline(device_a, t0, 11)
    assert events(alerts_evaluate(now=t0)) == [("device_offline", "fired")]
    online(device_a, t0 + MIN)
    assert events(alerts_evaluate(now=t0 + MIN)) == [("device_offline", "resolved")]


def test_a_disabled_offline_rule_resolves_without_waiting(tenant_a, device_a):
    offline_rule = rule(tenant_a, Kind.DEVICE_OFFLINE, 10, hysteresis=5)
    t0 = timezone.now()
    offline(device_a, t0, 11)
    alerts_evaluate(now=t0)
    AlertRule.objects.filter(pk=offline_rule.pk).update(enabled=False)
    assert events(alerts_evaluate(now=t0 + MIN)) == [("device_offline", "resolved")]


@pytest.fixture
def campaign(tenant_a):
    release = Release.objects.create(
        version="1.2.3", hardware_model="ps1", file="ota/releases/x.bin", sha256="0"
    )
    return Campaign.objects.create(tenant=tenant_a, release=release)


def update(campaign, device, state):
    row, _ = DeviceUpdate.objects.update_or_create(
        campaign=campaign, device=device, defaults={"state": state}
    )
    return row


@pytest.mark.parametrize("final", ["failed", "rolled_back", "timed_out"])
def test_a_failed_or_rolled_back_update_fires_until_one_succeeds(
    tenant_a, device_a, campaign, final
):
    rule(tenant_a, Kind.OTA_FAILED, 60, hysteresis=0)
    update(campaign, device_a, "downloading")
    now = timezone.now()
    assert alerts_evaluate(now=now) == []
    update(campaign, device_a, final)
    now = timezone.now()
    assert events(alerts_evaluate(now=now)) == [("ota_failed", "fired")]
    assert alerts_evaluate(now=now) == []  # once
    # A later update of that device succeeds (the next campaign).
    later = Campaign.objects.create(tenant=tenant_a, release=campaign.release)
    update(later, device_a, "succeeded")
    assert events(alerts_evaluate(now=timezone.now())) == [("ota_failed", "resolved")]


def test_an_old_update_failure_does_not_fire(tenant_a, device_a, campaign):
    rule(tenant_a, Kind.OTA_FAILED, 60, hysteresis=10)
    row = update(campaign, device_a, "rolled_back")
    DeviceUpdate.objects.filter(pk=row.pk).update(updated_at=timezone.now() - 61 * MIN)
    assert alerts_evaluate(now=timezone.now()) == []


def test_another_tenants_update_does_not_fire_here(
    tenant_a, device_a, device_b, campaign
):
    rule(tenant_a, Kind.OTA_FAILED, 60)
    other = Campaign.objects.create(tenant=device_b.tenant, release=campaign.release)
    update(other, device_b, "failed")
    assert alerts_evaluate(now=timezone.now()) == []


def fire_water_above(device):
    set_state(device, temperature=35.0, pump=True)


def fire_water_below(device):
    set_state(device, temperature=5.0, pump=True)


def fire_freeze(device):
    set_state(device, temperature=2.0, pump=False)


def fire_offline(device):
    Device.objects.filter(pk=device.pk).update(
        online=False, last_seen_at=timezone.now() - 60 * MIN
    )


def fire_runtime(device):
    set_state(device, temperature=20.0, pump=True)
    DeviceDay.objects.create(
        device=device,
        day=timezone.now().astimezone(dt.UTC).date(),
        pump_on_s=10 * 3600,
        pump_since=timezone.now(),
    )


def fire_switches(device):
    set_state(device, pump=False, switches={"pump": 100, "valve": 0})
    DeviceDay.objects.create(
        device=device,
        day=timezone.now().astimezone(dt.UTC).date(),
        switches_base=0,
    )


def fire_command(device):
    Command.objects.create(
        tenant=device.tenant,
        device=device,
        op="pump",
        value="ON",
        pool=device.pool,
        status=Command.Status.FAILED,
        completed_at=timezone.now(),
        expires_at=timezone.now(),
    )


def fire_ota(device):
    release = Release.objects.create(
        version="9.9.9", hardware_model="ps1", file="ota/releases/y.bin", sha256="0"
    )
    campaign = Campaign.objects.create(tenant=device.tenant, release=release)
    update(campaign, device, "rolled_back")


FIRE = {
    Kind.WATER_ABOVE: (30, fire_water_above),
    Kind.WATER_BELOW: (10, fire_water_below),
    Kind.FREEZE_RISK: (4, fire_freeze),
    Kind.DEVICE_OFFLINE: (10, fire_offline),
    Kind.PUMP_RUNTIME: (5, fire_runtime),
    Kind.RELAY_SWITCHES: (50, fire_switches),
    Kind.COMMAND_FAILED: (600, fire_command),
    Kind.OTA_FAILED: (600, fire_ota),
}


def test_every_kind_is_in_the_renotify_table():
    assert set(FIRE) == set(Kind.values) - {"quota_warning"}  # tested below


@pytest.mark.parametrize("kind", sorted(FIRE))
def test_renotify_interval_of_every_kind(tenant_a, device_a, kind):
    threshold, fire = FIRE[kind]
    rule(tenant_a, kind, threshold, renotify_minutes=30)
    fire(device_a)
    t0 = timezone.now()
    assert events(alerts_evaluate(now=t0)) == [(kind, "fired")]
    assert alerts_evaluate(now=t0 + 29 * MIN) == []
    assert events(alerts_evaluate(now=t0 + 30 * MIN)) == [(kind, "renotify")]
    assert alerts_evaluate(now=t0 + 31 * MIN) == []
    assert events(alerts_evaluate(now=t0 + 60 * MIN)) == [(kind, "renotify")]
    alert = Alert.objects.get()
    assert alert.state == "firing" and alert.last_notified_at == t0 + 60 * MIN


# --- usage quota warnings (billing's 80 % / 100 %), an alert about the tenant ---


def warn(tenant, level, now):
    from billing.models import UsageWarning
    from billing.selectors import period_bounds

    start, _ = period_bounds(now)
    return UsageWarning.objects.create(
        tenant=tenant,
        period_start=start,
        limit="messages_per_month",
        level=level,
        used=level,
        allowed=100,
    )


def test_a_quota_warning_fires_for_the_tenant_and_resolves_with_the_period(
    tenant_a, tenant_b, device_a, alice, adam
):
    from django.core import mail

    from alerts.services import alert_email, alert_payload

    rule(tenant_a, Kind.QUOTA_WARNING, 80)
    rule(tenant_b, Kind.QUOTA_WARNING, 100)
    now = timezone.now()
    assert alerts_evaluate(now=now) == []
    warn(tenant_a, 80, now)
    warn(tenant_b, 80, now)  # below tenant B's 100
    (fired,) = alerts_evaluate(now=now)
    assert (fired.alert.kind, fired.event, fired.alert.tenant_id) == (
        "quota_warning",
        "fired",
        tenant_a.pk,
    )
    assert fired.alert.pool_id is None and fired.alert.value == 80
    assert alerts_evaluate(now=now) == []  # once
    warn(tenant_a, 100, now)
    assert alerts_evaluate(now=now) == []  # still the same episode
    payload = alert_payload(alert=fired.alert, event="fired")
    assert payload["pool"] is None and payload["pool_name"] == tenant_a.name
    alert_email(alert=fired.alert, event="fired")
    assert sorted(m.to[0] for m in mail.outbox) == ["adam@acme.test", "alice@acme.test"]
    assert f"Usage quota warning on {tenant_a.name}" in mail.outbox[0].subject
    # The next period has no warning yet: resolved.
    next_period = now + dt.timedelta(days=32)
    assert events(alerts_evaluate(now=next_period)) == [("quota_warning", "resolved")]


def test_a_quota_rule_is_for_the_tenant_not_a_pool(alice, pool_a):
    from django.core.exceptions import ValidationError

    from alerts.selectors import pool_rules_for_member
    from alerts.services import alert_rule_create

    with pytest.raises(ValidationError, match="whole tenant"):
        alert_rule_create(
            membership=alice, kind=Kind.QUOTA_WARNING, threshold=80, pool=pool_a
        )
    assert not AlertRule.objects.exists()
    kinds = [r.kind for r in pool_rules_for_member(membership=alice, pool=pool_a)]
    assert "quota_warning" not in kinds and "ota_failed" in kinds


def test_a_tenant_alert_shows_on_the_pages_and_the_api(login, alice, tenant_a, pool_a):
    from poolsaas.api.testing import api_client

    rule(tenant_a, Kind.QUOTA_WARNING, 80)
    now = timezone.now()
    warn(tenant_a, 100, now)
    (fired,) = alerts_evaluate(now=now)
    client = login(alice)
    for url in ("/alerts/", f"/alerts/{fired.alert.code}/", "/pools/"):
        page = client.get(url)
        assert page.status_code == 200, url
        assert "Usage quota warning" in page.content.decode(), url
    body = api_client(alice).get("/api/v1/alerts/").json()
    rows = body["results"] if isinstance(body, dict) else body
    assert [(r["kind"], r["pool"]) for r in rows] == [("quota_warning", None)]
