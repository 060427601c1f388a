"""alerts_evaluate: every rule against every pool's stored device state, in a
fixed number of queries per run, then the few changes claimed."""

import datetime as dt
from typing import NamedTuple
from zoneinfo import ZoneInfo

from django.db.models import Max, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from alerts.models import (
    Alert,
    AlertRule,
    DeviceDay,
    Kind,
)
from alerts.services.conditions import (
    CLEARED_OVER_TIME,
    DAY_KINDS,
    DEVICE_KINDS,
    TENANT_KINDS,
    _switch_total,
    _zone_named,
    condition,
    device_day_runtime_h,
    device_day_step,
)
from alerts.services.transitions import (
    Transition,
    alert_clear_mark,
    alert_fire,
    alert_renotify,
    alert_resolve,
)
from devices.models import Command, Device, Pool


def _rules_by_pool(rules) -> dict:
    defaults, overrides = {}, {}
    for rule in rules:
        if rule.pool_id is None:
            defaults[(rule.tenant_id, rule.kind)] = rule
        else:
            overrides[(rule.pool_id, rule.kind)] = rule
    return defaults, overrides


def _commands_outcome(device_pks, since) -> dict:
    """{device pk: (last failed at, last done at)} since `since`, one query."""
    finished = Coalesce("completed_at", "created_at")
    rows = (
        Command.objects.filter(device_id__in=device_pks, created_at__gte=since)
        .values("device_id")
        .annotate(
            failed=Max(
                finished,
                filter=Q(status__in=[Command.Status.FAILED, Command.Status.TIMED_OUT]),
            ),
            done=Max(finished, filter=Q(status=Command.Status.DONE)),
        )
    )
    return {row["device_id"]: (row["failed"], row["done"]) for row in rows}


def _updates_outcome(device_pks, since) -> dict:
    """{device pk: (last failed at, last succeeded at)} of firmware updates
    (ota.models.DeviceUpdate) that changed since `since`, one query. Read from the
    OTA rows, so the OTA services need no hook: an update reaching failed,
    rolled_back or timed_out shows up at the next evaluation."""
    from ota.models import DeviceUpdate

    failed = [
        DeviceUpdate.State.FAILED,
        DeviceUpdate.State.ROLLED_BACK,
        DeviceUpdate.State.TIMED_OUT,
    ]
    rows = (
        DeviceUpdate.objects.filter(device_id__in=device_pks, updated_at__gte=since)
        .values("device_id")
        .annotate(
            failed=Max("updated_at", filter=Q(state__in=failed)),
            done=Max("updated_at", filter=Q(state=DeviceUpdate.State.SUCCEEDED)),
        )
        .order_by()
    )
    return {row["device_id"]: (row["failed"], row["done"]) for row in rows}


def _window_outcomes(kind, devices, rule_of, fetch, now) -> dict:
    rules = [r for r in (rule_of(d, kind) for d in devices) if r]
    if not rules:
        return {}
    longest = max(r.threshold + r.hysteresis for r in rules)
    return fetch([d.pk for d in devices], now - dt.timedelta(minutes=longest))


class _DeviceRow(NamedTuple):
    """The columns the evaluator reads: plain tuples, no model instances, so that
    thousands of devices cost little (bench/ingest.py --rules)."""

    pk: int
    pool_id: int
    tenant_id: int
    timezone: str
    state: dict
    online: bool
    last_seen_at: dt.datetime | None


def alerts_evaluate(*, now: dt.datetime | None = None) -> list[Transition]:
    """Evaluate every rule against every pool's device state, a fixed number of
    queries per run (not one per device), and claim each state change."""
    now = now or timezone.now()
    defaults, overrides = _rules_by_pool(AlertRule.objects.all())
    tenants = {tenant for tenant, _ in defaults} | {
        r.tenant_id for r in overrides.values()
    }
    firing = {
        (a.pool_id or f"tenant-{a.tenant_id}", a.kind): a
        for a in Alert.objects.filter(state=Alert.State.FIRING).select_related("pool")
    }
    devices = [
        _DeviceRow(*row)
        for row in Device.objects.filter(
            pool__isnull=False, tenant_id__in=tenants
        ).values_list(
            "pk",
            "pool_id",
            "pool__tenant_id",
            "pool__timezone",
            "state",
            "online",
            "last_seen_at",
        )
    ]

    def rule_of(device, kind):
        rule = overrides.get((device.pool_id, kind)) or defaults.get(
            (device.tenant_id, kind)
        )
        return rule if rule is not None and rule.enabled else None

    # The per-day and command rules need more than the device row: one query each,
    # only for the devices under such a rule.
    day_pks = {d.pk for d in devices if any(rule_of(d, k) for k in DAY_KINDS)}
    days = {d.device_id: d for d in DeviceDay.objects.filter(device_id__in=day_pks)}
    outcomes = {
        Kind.COMMAND_FAILED: _window_outcomes(
            Kind.COMMAND_FAILED, devices, rule_of, _commands_outcome, now
        ),
        Kind.OTA_FAILED: _window_outcomes(
            Kind.OTA_FAILED, devices, rule_of, _updates_outcome, now
        ),
    }
    day_new, day_changed = [], []
    zones: dict[str, ZoneInfo] = {}

    # First decide (no queries), then claim the few changes.
    changes = []
    for device in devices:
        state = device.state or {}
        temperature = state.get("temperature")
        pump = state.get("pump") in (True, 1, "on", "ON")
        measures = {}
        if device.pk in day_pks:
            zone = zones.get(device.timezone) or zones.setdefault(
                device.timezone, _zone_named(device.timezone)
            )
            old = days.get(device.pk)
            total = _switch_total(state)
            day = device_day_step(
                old,
                device_pk=device.pk,
                pump=pump,
                switches=total,
                today=now.astimezone(zone).date(),
                now=now,
            )
            if old is None:
                day_new.append(day)
            elif _day_fields(day) != _day_fields(old):
                day_changed.append(day)
            measures["runtime_h"] = device_day_runtime_h(day, now)
            if total is not None and day.switches_base is not None:
                measures["switches_today"] = total - day.switches_base
        for kind in DEVICE_KINDS:
            rule = overrides.get((device.pool_id, kind)) or defaults.get(
                (device.tenant_id, kind)
            )
            if rule is None:
                continue
            open_alert = firing.get((device.pool_id, kind))
            failed_at, done_at = outcomes.get(kind, {}).get(device.pk, (None, None))
            should = rule.enabled and condition(
                kind=kind,
                threshold=rule.threshold,
                hysteresis=rule.hysteresis,
                firing=open_alert is not None,
                temperature=temperature,
                pump=pump,
                online=device.online,
                last_seen_at=device.last_seen_at,
                now=now,
                last_failed_at=failed_at,
                last_done_at=done_at,
                **measures,
            )
            if should and open_alert is None:
                value = _alert_value(kind, temperature, measures, device, now)
                changes.append(("fire", device.pool_id, rule, value))
            elif should:
                if open_alert.clear_since is not None:
                    changes.append(("unclear", open_alert, rule, None))
                if rule.renotify_minutes:
                    changes.append(("renotify", open_alert, rule, None))
            elif open_alert is not None:
                step = _clear_step(kind, rule, open_alert, now)
                if step != "wait":
                    changes.append((step, open_alert, rule, None))

    changes += _tenant_changes(defaults, firing, now)
    pools = Pool.objects.in_bulk(
        {pool for action, pool, _, _ in changes if action == "fire"}
    )
    transitions = []
    for action, target, rule, value in changes:
        if action == "fire":
            pool = pools[target] if target is not None else None
            transition = alert_fire(pool=pool, rule=rule, value=value, now=now)
        elif action == "renotify":
            transition = alert_renotify(alert=target, rule=rule, now=now)
        elif action in ("clearing", "unclear"):
            alert_clear_mark(alert=target, since=now if action == "clearing" else None)
            continue
        else:
            transition = alert_resolve(alert=target, now=now)
        if transition:
            transitions.append(transition)
    # Absolute values computed from one read: two evaluators write the same row
    # alike, and a lost race costs one interval of pump time, not a double count.
    DeviceDay.objects.bulk_create(day_new, ignore_conflicts=True)
    if day_changed:
        DeviceDay.objects.bulk_update(
            day_changed, ["day", "pump_on_s", "pump_since", "switches_base"]
        )
    return transitions


def _quota_levels(tenant_ids, now) -> dict:
    """{tenant id: the highest usage warning level (80, 100) of this period}, from
    billing's UsageWarning rows (one query; billing needs no hook)."""
    from billing.models import UsageWarning
    from billing.selectors import period_bounds

    start, _ = period_bounds(now)
    rows = (
        UsageWarning.objects.filter(tenant_id__in=tenant_ids, period_start=start)
        .values("tenant_id")
        .annotate(level=Max("level"))
        .order_by()
    )
    return {row["tenant_id"]: row["level"] for row in rows}


def _tenant_changes(defaults, firing, now) -> list:
    """The tenant-wide kinds (no pool): a quota warning fires while the period
    has a warning at or above the rule's percent, and resolves with the period."""
    rules = {t: r for (t, kind), r in defaults.items() if kind in TENANT_KINDS}
    if not rules:
        return []
    levels = _quota_levels(list(rules), now)
    open_alerts = {
        (a.tenant_id, a.kind): a for a in firing.values() if a.pool_id is None
    }
    changes = []
    for tenant_id, rule in rules.items():
        open_alert = open_alerts.get((tenant_id, rule.kind))
        level = levels.get(tenant_id)
        should = rule.enabled and level is not None and level >= rule.threshold
        if should and open_alert is None:
            changes.append(("fire", None, rule, float(level)))
        elif should and rule.renotify_minutes:
            changes.append(("renotify", open_alert, rule, None))
        elif not should and open_alert is not None:
            changes.append(("resolve", open_alert, rule, None))
    return changes


def _clear_step(kind, rule, alert: Alert, now) -> str:
    """A firing alert whose condition is clear: resolve it, or for a kind whose
    hysteresis is a time, start the all-clear clock ("clearing") and resolve only
    once it has run `hysteresis` minutes ("wait")."""
    if kind not in CLEARED_OVER_TIME or not rule.enabled or rule.hysteresis <= 0:
        return "resolve"
    if alert.clear_since is None:
        return "clearing"
    if now - alert.clear_since >= dt.timedelta(minutes=rule.hysteresis):
        return "resolve"
    return "wait"


def _day_fields(day: DeviceDay) -> tuple:
    return (day.day, day.pump_on_s, day.pump_since, day.switches_base)


def _alert_value(kind, temperature, measures, device, now) -> float | None:
    """The figure an alert shows: °C, hours, switches or minutes offline."""
    if kind == Kind.PUMP_RUNTIME:
        return round(measures.get("runtime_h") or 0.0, 2)
    if kind == Kind.RELAY_SWITCHES:
        return measures.get("switches_today")
    if kind == Kind.DEVICE_OFFLINE:
        if device.last_seen_at is None:
            return None
        return round((now - device.last_seen_at).total_seconds() / 60, 1)
    if kind in (Kind.COMMAND_FAILED, Kind.OTA_FAILED):
        return None
    return temperature
