"""Whether an alert should be firing: pure functions of what the evaluator
read (no queries), with hysteresis."""

import copy
import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from alerts.models import (
    DeviceDay,
    Kind,
)


def condition(
    *,
    kind: str,
    threshold: float,
    hysteresis: float,
    firing: bool,
    temperature: float | None,
    pump: bool | None,
    online: bool,
    last_seen_at: dt.datetime | None,
    now: dt.datetime,
    runtime_h: float | None = None,
    switches_today: int | None = None,
    last_failed_at: dt.datetime | None = None,
    last_done_at: dt.datetime | None = None,
) -> bool:
    """Whether the alert should be firing, with hysteresis: once firing, a value
    must go `hysteresis` back past the threshold before it resolves. A measure that
    is missing (no reading yet) keeps what we had."""
    if kind == Kind.DEVICE_OFFLINE:
        if online:
            # Its hysteresis is a time: the evaluator keeps a firing alert until
            # the device has been back for `hysteresis` minutes (Alert.clear_since).
            return False
        if firing or last_seen_at is None:
            # Once firing, offline at all keeps it: a device that shows up for a
            # moment does not restart the N minutes and notify again.
            return firing
        return now - last_seen_at >= dt.timedelta(minutes=threshold)
    if kind == Kind.PUMP_RUNTIME:
        return _above(runtime_h, threshold, hysteresis, firing)
    if kind == Kind.RELAY_SWITCHES:
        return _above(switches_today, threshold, hysteresis, firing)
    if kind in (Kind.COMMAND_FAILED, Kind.OTA_FAILED):
        if last_failed_at is None or (last_done_at and last_done_at > last_failed_at):
            return False  # a later command (or update) went through
        # Only a recent failure fires; a firing one lasts `hysteresis` minutes more.
        window = threshold + (hysteresis if firing else 0)
        return now - last_failed_at <= dt.timedelta(minutes=window)
    if temperature is None:
        return firing  # no reading: keep what we had
    if kind == Kind.WATER_ABOVE:
        return _above(temperature, threshold, hysteresis, firing)
    cold = temperature < (threshold + hysteresis if firing else threshold)
    if kind == Kind.WATER_BELOW:
        return cold
    # Freeze risk: cold water standing still; a running pump does not resolve it
    # while the water stays cold, but cold water alone does not fire it.
    return cold and (firing or not pump)


# Kinds whose hysteresis is minutes of the all-clear, held by the evaluator.
CLEARED_OVER_TIME = frozenset({Kind.DEVICE_OFFLINE})
# Kinds about a tenant, not a device: not in the per-device loop.
TENANT_KINDS = frozenset({Kind.QUOTA_WARNING})
DEVICE_KINDS = tuple(k for k in Kind.values if k not in TENANT_KINDS)


def _above(value, threshold: float, hysteresis: float, firing: bool) -> bool:
    if value is None:
        return firing
    return value > (threshold - hysteresis if firing else threshold)


DAY_KINDS = frozenset({Kind.PUMP_RUNTIME, Kind.RELAY_SWITCHES})


def device_day_step(
    day: DeviceDay | None,
    *,
    device_pk: int,
    pump: bool,
    switches: int | None,
    today: dt.date,
    now: dt.datetime,
) -> DeviceDay:
    """The per-day tally after one look at a device (pure: nothing is saved).

    The pump's running time is counted from when the evaluator saw it on until it
    saw it off, so it is as fine as the evaluation interval (20 s)."""
    if day is None:
        day = DeviceDay(device_id=device_pk, day=today, switches_base=switches)
    else:
        day = copy.copy(day)
    if day.day != today:
        # A new day in the pool's zone: a pump still running counts from now on.
        day.day, day.pump_on_s = today, 0.0
        day.pump_since = now if day.pump_since else None
        day.switches_base = switches
    if day.switches_base is None or (
        switches is not None and switches < day.switches_base
    ):
        day.switches_base = switches  # first report, or the counter was reset
    if pump and day.pump_since is None:
        day.pump_since = now
    elif not pump and day.pump_since is not None:
        day.pump_on_s += max(0.0, (now - day.pump_since).total_seconds())
        day.pump_since = None
    return day


def device_day_runtime_h(day: DeviceDay, now: dt.datetime) -> float:
    running = (now - day.pump_since).total_seconds() if day.pump_since else 0.0
    return (day.pump_on_s + max(0.0, running)) / 3600


def _switch_total(state: dict) -> int | None:
    switches = state.get("switches")
    if not isinstance(switches, dict):
        return None  # v3.1 devices do not count their switches
    return int(switches.get("pump") or 0) + int(switches.get("valve") or 0)


def _zone(pool) -> ZoneInfo:
    return _zone_named(pool.timezone)


def _zone_named(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")
