"""Per-user alert preferences: which alerts, which channel, quiet hours in the
pool's time zone (held, then sent when they end), safety alerts let through."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.core import mail
from django.core.exceptions import ValidationError

from alerts.models import AlertPreference, AlertRule, Delivery, Kind
from alerts.services import (
    alert_email,
    alert_fire,
    alert_preference_set,
    alerts_release_held,
    quiet_until,
)

# 23:30 in Madrid (the pool's zone, UTC+1 in January).
LATE = dt.datetime(2026, 1, 10, 22, 30, tzinfo=dt.UTC)
SEVEN_IN_MADRID = dt.datetime(2026, 1, 11, 6, 0, tzinfo=dt.UTC)
NIGHT = {"quiet_start": dt.time(22, 0), "quiet_end": dt.time(7, 0)}


def fire(pool, kind, now=LATE):
    rule = AlertRule.objects.create(tenant=pool.tenant, kind=kind, threshold=30)
    return alert_fire(pool=pool, rule=rule, value=31.0, now=now).alert


def sent_to():
    return sorted(address for m in mail.outbox for address in m.to)


def test_quiet_hours_hold_a_non_safety_alert_until_they_end(pool_a, alice, adam):
    alert_preference_set(membership=alice, **NIGHT)
    alert = fire(pool_a, Kind.WATER_ABOVE)

    deliveries = {
        d.recipient: d for d in alert_email(alert=alert, event="fired", now=LATE)
    }

    assert sent_to() == ["adam@acme.test"]  # no preferences: any hour
    held = deliveries["alice@acme.test"]
    assert (held.status, held.ok, held.held_until) == ("held", False, SEVEN_IN_MADRID)
    assert alerts_release_held(now=SEVEN_IN_MADRID - dt.timedelta(seconds=1)) == 0
    assert sent_to() == ["adam@acme.test"]

    assert alerts_release_held(now=SEVEN_IN_MADRID) == 1
    assert sent_to() == ["adam@acme.test", "alice@acme.test"]
    assert "quiet hours" in mail.outbox[-1].body
    held.refresh_from_db()
    assert (held.status, held.ok, held.at) == ("sent", True, SEVEN_IN_MADRID)
    # Claimed once: a second worker releasing finds nothing.
    assert alerts_release_held(now=SEVEN_IN_MADRID) == 0
    assert len(mail.outbox) == 2


@pytest.mark.parametrize("kind", [Kind.FREEZE_RISK, Kind.DEVICE_OFFLINE])
def test_safety_alerts_go_through_quiet_hours(pool_a, alice, kind):
    alert_preference_set(membership=alice, **NIGHT)
    (delivery,) = alert_email(alert=fire(pool_a, kind), event="fired", now=LATE)
    assert (delivery.status, sent_to()) == ("sent", ["alice@acme.test"])


def test_safety_alerts_can_be_held_too(pool_a, alice):
    alert_preference_set(membership=alice, safety_ignores_quiet=False, **NIGHT)
    alert = fire(pool_a, Kind.FREEZE_RISK)
    (delivery,) = alert_email(alert=alert, event="fired", now=LATE)
    assert delivery.status == "held" and mail.outbox == []


def test_quiet_hours_are_in_the_pools_time_zone():
    preference = AlertPreference(**NIGHT)
    instant = dt.datetime(2026, 1, 10, 13, 0, tzinfo=dt.UTC)

    def until(zone):
        return quiet_until(
            preference=preference,
            kind=Kind.WATER_ABOVE,
            now=instant,
            zone=ZoneInfo(zone),
        )

    assert until("Europe/Madrid") is None  # 14:00 there
    # 22:00 in Tokyo: quiet until 07:00 the next morning there (22:00 UTC).
    assert until("Asia/Tokyo") == dt.datetime(2026, 1, 10, 22, 0, tzinfo=dt.UTC)
    # 02:00 in Auckland, after midnight: until 07:00 the same day there.
    assert until("Pacific/Auckland") == dt.datetime(2026, 1, 10, 18, 0, tzinfo=dt.UTC)
    daytime = AlertPreference(quiet_start=dt.time(9), quiet_end=dt.time(17))
    assert quiet_until(
        preference=daytime, kind="water_above", now=instant, zone=ZoneInfo("UTC")
    ) == dt.datetime(2026, 1, 10, 17, 0, tzinfo=dt.UTC)
    assert (
        quiet_until(preference=None, kind="water_above", now=instant, zone=dt.UTC)
        is None
    )


def test_which_alerts_and_which_channel(pool_a, alice, adam, victor):
    alert_preference_set(membership=alice, kinds=[Kind.FREEZE_RISK])
    alert_preference_set(membership=adam, channel=AlertPreference.Channel.NONE)
    # A viewer gets no e-mail unless they ask for it.
    alert_preference_set(membership=victor)
    alert = fire(pool_a, Kind.WATER_ABOVE)
    deliveries = alert_email(alert=alert, event="fired", now=LATE)
    assert [d.recipient for d in deliveries] == ["victor@acme.test"]
    assert sent_to() == ["victor@acme.test"]
    assert Delivery.objects.filter(channel="email").count() == 1


def test_another_tenants_members_are_never_emailed(pool_a, alice, carol):
    alert_preference_set(membership=carol)
    alert_email(alert=fire(pool_a, Kind.WATER_ABOVE), event="fired", now=LATE)
    assert sent_to() == ["alice@acme.test"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"kinds": ["freeze_risk", "boiling"]}, "kinds"),
        ({"channel": "sms"}, "channel"),
        ({"quiet_start": dt.time(22)}, "quiet_end"),
        ({"quiet_start": dt.time(22), "quiet_end": dt.time(22)}, "quiet_end"),
    ],
)
def test_bad_preferences_are_refused_and_change_nothing(alice, fields, field):
    before = alert_preference_set(membership=alice, kinds=["device_offline"], **NIGHT)
    with pytest.raises(ValidationError) as error:
        alert_preference_set(membership=alice, **fields)
    assert field in error.value.message_dict
    after = AlertPreference.objects.get()
    assert (after.kinds, after.quiet_start, after.quiet_end, after.channel) == (
        before.kinds,
        before.quiet_start,
        before.quiet_end,
        "email",
    )


def test_saving_again_updates_the_one_row(alice):
    alert_preference_set(membership=alice, **NIGHT)
    preference = alert_preference_set(membership=alice, kinds=["water_above"])
    assert AlertPreference.objects.count() == 1
    assert preference.tenant_id == alice.tenant_id
    assert (preference.kinds, preference.quiet_start) == (["water_above"], None)
