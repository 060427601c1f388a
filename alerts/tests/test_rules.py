"""Every rule kind of issue 16 on the pure condition (with hysteresis), the per-day
tally, the re-notification interval, and evaluation of all kinds in a fixed number
of queries."""

import datetime as dt

import pytest
from django.utils import timezone

from alerts.models import Alert, AlertRule, DeviceDay, Kind
from alerts.services import (
    alert_fire,
    alert_renotify,
    alerts_evaluate,
    condition,
    device_day_runtime_h,
    device_day_step,
)
from devices.models import Command, Device
from devices.services.commands import command_send

NOW = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.UTC)
MIN = dt.timedelta(minutes=1)


def cond(kind, firing, threshold, hysteresis=1.0, **measures):
    base = {
        "temperature": None,
        "pump": False,
        "online": True,
        "last_seen_at": NOW,
        "now": NOW,
    }
    return condition(
        kind=kind,
        threshold=threshold,
        hysteresis=hysteresis,
        firing=firing,
        **{**base, **measures},
    )


def flap(kind, values, threshold, hysteresis, key):
    """Feed a series through the condition as the evaluator does; the states."""
    firing, states = False, []
    for value in values:
        firing = cond(kind, firing, threshold, hysteresis, **{key: value})
        states.append(firing)
    return states


@pytest.mark.parametrize(
    ("kind", "key", "threshold", "series", "expected"),
    [
        # Hovering around the threshold fires once and does not flap.
        (Kind.WATER_ABOVE, "temperature", 30, [29, 30.2, 29.8, 30.1, 29.5, 28.9],
         [False, True, True, True, True, False]),
        (Kind.WATER_BELOW, "temperature", 10, [11, 9.8, 10.2, 9.9, 10.9, 11.0],
         [False, True, True, True, True, False]),
        (Kind.FREEZE_RISK, "temperature", 4, [6, 3.9, 4.1, 4.9, 5.0],
         [False, True, True, True, False]),
        (Kind.PUMP_RUNTIME, "runtime_h", 8, [7.9, 8.1, 7.5, 8.2, 6.9],
         [False, True, True, True, False]),
        (Kind.RELAY_SWITCHES, "switches_today", 50, [50, 51, 50, 50, 49],
         [False, True, True, True, False]),
    ],
)  # fmt: skip
def test_hysteresis_of_each_measured_kind(kind, key, threshold, series, expected):
    assert flap(kind, series, threshold, 1.0, key) == expected
    # Without hysteresis the same series flaps.
    assert flap(kind, series, threshold, 0.0, key) != expected


def test_a_missing_measure_keeps_the_state():
    for kind, key in [
        (Kind.WATER_BELOW, "temperature"),
        (Kind.PUMP_RUNTIME, "runtime_h"),
        (Kind.RELAY_SWITCHES, "switches_today"),
    ]:
        assert cond(kind, True, 5, **{key: None})
        assert not cond(kind, False, 5, **{key: None})


def test_freeze_risk_is_cold_water_with_the_pump_off():
    assert not cond(Kind.FREEZE_RISK, False, 4, temperature=2.0, pump=True)
    assert cond(Kind.FREEZE_RISK, False, 4, temperature=2.0, pump=False)
    # Once firing, switching the pump on does not resolve it; warm water does.
    assert cond(Kind.FREEZE_RISK, True, 4, temperature=2.0, pump=True)
    assert not cond(Kind.FREEZE_RISK, True, 4, temperature=5.0, pump=True)


def test_offline_for_n_minutes():
    def offline(minutes, firing=False, online=False, seen=True):
        return cond(
            Kind.DEVICE_OFFLINE,
            firing,
            15,
            online=online,
            last_seen_at=NOW - minutes * MIN if seen else None,
        )

    assert not offline(14)
    assert offline(15)
    assert not offline(60, firing=True, online=True)
    # Never seen: keep what we had.
    assert offline(0, firing=True, seen=False)
    assert not offline(0, seen=False)


def test_command_failed():
    def failed(firing, failed_ago, done_ago=None):
        return cond(
            Kind.COMMAND_FAILED,
            firing,
            30,
            hysteresis=10,
            last_failed_at=None if failed_ago is None else NOW - failed_ago * MIN,
            last_done_at=None if done_ago is None else NOW - done_ago * MIN,
        )

    assert not failed(False, None)
    assert failed(False, 5)
    assert not failed(False, 31)  # an old failure does not fire
    assert failed(True, 35)  # once firing it lasts the hysteresis longer
    assert not failed(True, 41)
    assert not failed(True, 5, done_ago=2)  # a later command went through
    assert failed(False, 2, done_ago=5)


def test_device_day_counts_pump_time_and_switches():
    today = NOW.date()
    day = device_day_step(
        None, device_pk=1, pump=False, switches=100, today=today, now=NOW
    )
    assert (day.pump_on_s, day.pump_since, day.switches_base) == (0, None, 100)
    day = device_day_step(
        day, device_pk=1, pump=True, switches=101, today=today, now=NOW + 10 * MIN
    )
    assert device_day_runtime_h(day, NOW + 70 * MIN) == pytest.approx(1.0)
    day = device_day_step(
        day, device_pk=1, pump=False, switches=102, today=today, now=NOW + 130 * MIN
    )
    assert day.pump_since is None
    assert device_day_runtime_h(day, NOW + 300 * MIN) == pytest.approx(2.0)
    # A new day: pump time and the switch count start again.
    tomorrow = today + dt.timedelta(days=1)
    later = device_day_step(
        day,
        device_pk=1,
        pump=True,
        switches=110,
        today=tomorrow,
        now=NOW + 13 * 60 * MIN,
    )
    assert (later.day, later.pump_on_s, later.switches_base) == (tomorrow, 0.0, 110)
    # The step is pure: the earlier tally is unchanged.
    assert day.day == today and day.pump_on_s == pytest.approx(7200)
    # A counter that went backwards (factory reset) is the new base.
    reset = device_day_step(
        later,
        device_pk=1,
        pump=True,
        switches=3,
        today=tomorrow,
        now=NOW + 14 * 60 * MIN,
    )
    assert reset.switches_base == 3


def set_state(device, online=True, last_seen_at=None, **state):
    Device.objects.filter(pk=device.pk).update(
        state=state, online=online, last_seen_at=last_seen_at or timezone.now()
    )


def rule(tenant, kind, threshold, hysteresis=1.0, **fields):
    return AlertRule.objects.create(
        tenant=tenant, kind=kind, threshold=threshold, hysteresis=hysteresis, **fields
    )


def events(transitions):
    return sorted((t.alert.kind, t.event) for t in transitions)


def test_pump_running_longer_than_n_hours(tenant_a, device_a):
    rule(tenant_a, Kind.PUMP_RUNTIME, 2, hysteresis=0.5)
    set_state(device_a, pump=True)
    assert alerts_evaluate(now=NOW) == []
    assert alerts_evaluate(now=NOW + 119 * MIN) == []
    assert events(alerts_evaluate(now=NOW + 121 * MIN)) == [("pump_runtime", "fired")]
    assert Alert.objects.get().value == pytest.approx(2.02, abs=0.01)
    set_state(device_a, pump=False)
    assert alerts_evaluate(now=NOW + 180 * MIN) == []  # still 3 h today
    assert DeviceDay.objects.get().pump_on_s == pytest.approx(3 * 3600)
    # The next day in the pool's zone: the count restarts and it resolves.
    assert events(alerts_evaluate(now=NOW + 13 * 60 * MIN)) == [
        ("pump_runtime", "resolved")
    ]


def test_relay_switch_count_over_a_limit(tenant_a, device_a):
    rule(tenant_a, Kind.RELAY_SWITCHES, 20, hysteresis=5)
    set_state(device_a, pump=False, switches={"pump": 500, "valve": 40})
    assert alerts_evaluate(now=NOW) == []
    set_state(device_a, pump=False, switches={"pump": 515, "valve": 46})
    assert events(alerts_evaluate(now=NOW + MIN)) == [("relay_switches", "fired")]
    assert Alert.objects.get().value == 21
    set_state(device_a, pump=False, switches={"pump": 517, "valve": 46})
    assert alerts_evaluate(now=NOW + 2 * MIN) == []


def test_a_v31_device_without_a_switch_counter_never_fires(tenant_a, device_a):
    rule(tenant_a, Kind.RELAY_SWITCHES, 0, hysteresis=0)
    set_state(device_a, pump=True)
    assert alerts_evaluate(now=NOW) == []
    assert alerts_evaluate(now=NOW + MIN) == []


def test_a_failed_command_fires_until_one_goes_through(tenant_a, device_a, olivia):
    rule(tenant_a, Kind.COMMAND_FAILED, 30, hysteresis=0)
    Device.objects.filter(pk=device_a.pk).update(online=False)
    command = command_send(membership=olivia, pool=device_a.pool, op="pump", value="ON")
    assert command.status == Command.Status.FAILED  # the device is offline
    now = timezone.now()
    assert events(alerts_evaluate(now=now)) == [("command_failed", "fired")]
    assert alerts_evaluate(now=now) == []
    Command.objects.filter(pk=command.pk).update(
        status=Command.Status.DONE, completed_at=now + MIN
    )
    assert events(alerts_evaluate(now=now + 2 * MIN)) == [
        ("command_failed", "resolved")
    ]


def test_renotify_interval(tenant_a, device_a):
    freeze = rule(tenant_a, Kind.FREEZE_RISK, 4, renotify_minutes=30)
    set_state(device_a, temperature=2.0, pump=False)
    assert events(alerts_evaluate(now=NOW)) == [("freeze_risk", "fired")]
    assert alerts_evaluate(now=NOW + 29 * MIN) == []
    assert events(alerts_evaluate(now=NOW + 30 * MIN)) == [("freeze_risk", "renotify")]
    assert alerts_evaluate(now=NOW + 31 * MIN) == []
    # Two workers holding the same row: only one re-notifies.
    alert = Alert.objects.get()
    stale = Alert.objects.get()
    assert alert_renotify(alert=alert, rule=freeze, now=NOW + 61 * MIN)
    assert alert_renotify(alert=stale, rule=freeze, now=NOW + 61 * MIN) is None


def test_a_disabled_rule_resolves_its_alert(tenant_a, device_a):
    freeze = rule(tenant_a, Kind.FREEZE_RISK, 4)
    set_state(device_a, temperature=2.0, pump=False)
    alert_fire(pool=device_a.pool, rule=freeze, value=2.0, now=NOW)
    AlertRule.objects.filter(pk=freeze.pk).update(enabled=False)
    assert events(alerts_evaluate(now=NOW)) == [("freeze_risk", "resolved")]


def test_all_kinds_in_a_fixed_number_of_queries(
    tenant_a, tenant_b, device_a, device_b, django_assert_max_num_queries
):
    for tenant in (tenant_a, tenant_b):
        for kind in Kind.values:
            rule(tenant, kind, 1000)
    set_state(device_a, temperature=20.0, pump=True, switches={"pump": 1, "valve": 1})
    set_state(device_b, temperature=20.0, pump=False)
    alerts_evaluate(now=NOW)  # creates the per-day rows
    with django_assert_max_num_queries(8) as first:
        alerts_evaluate(now=NOW + MIN)
    # More devices do not mean more queries.
    for n in range(5):
        pool = device_a.pool.__class__.objects.create(tenant=tenant_a, name=f"P{n}")
        Device.objects.create(
            tenant=tenant_a,
            pool=pool,
            broker=device_a.broker,
            device_id=f"ESP-C{n}C{n}C{n}",
            state={"temperature": 20.0, "pump": True},
            online=True,
            last_seen_at=timezone.now(),
        )
    alerts_evaluate(now=NOW + 2 * MIN)
    with django_assert_max_num_queries(len(first.captured_queries)):
        alerts_evaluate(now=NOW + 3 * MIN)
