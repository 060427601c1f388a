"""Alert evaluation (from the state devices already store) and deliveries."""

import copy
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import time
import urllib.parse
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from alerts.models import (
    SAFETY_KINDS,
    Alert,
    AlertPreference,
    AlertRule,
    Delivery,
    DeviceDay,
    Kind,
    WebhookSubscription,
)
from devices.models import Command, Device, Pool
from devices.services.brokers.addresses import validate_broker_address


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
            return False
        if last_seen_at is None:
            return firing
        return now - last_seen_at >= dt.timedelta(minutes=threshold)
    if kind == Kind.PUMP_RUNTIME:
        return _above(runtime_h, threshold, hysteresis, firing)
    if kind == Kind.RELAY_SWITCHES:
        return _above(switches_today, threshold, hysteresis, firing)
    if kind == Kind.COMMAND_FAILED:
        if last_failed_at is None or (last_done_at and last_done_at > last_failed_at):
            return False  # a later command went through
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


def _above(value, threshold: float, hysteresis: float, firing: bool) -> bool:
    if value is None:
        return firing
    return value > (threshold - hysteresis if firing else threshold)


@dataclasses.dataclass
class Transition:
    alert: Alert
    event: str  # "fired", "resolved", "renotify"


def _rules_by_pool(rules) -> dict:
    defaults, overrides = {}, {}
    for rule in rules:
        if rule.pool_id is None:
            defaults[(rule.tenant_id, rule.kind)] = rule
        else:
            overrides[(rule.pool_id, rule.kind)] = rule
    return defaults, overrides


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
        (a.pool_id, a.kind): a
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
    command_rules = [r for r in (rule_of(d, Kind.COMMAND_FAILED) for d in devices) if r]
    outcomes = {}
    if command_rules:
        longest = max(r.threshold + r.hysteresis for r in command_rules)
        outcomes = _commands_outcome(
            [d.pk for d in devices], now - dt.timedelta(minutes=longest)
        )
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
        failed_at, done_at = outcomes.get(device.pk, (None, None))
        for kind in Kind.values:
            rule = overrides.get((device.pool_id, kind)) or defaults.get(
                (device.tenant_id, kind)
            )
            if rule is None:
                continue
            open_alert = firing.get((device.pool_id, kind))
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
            elif should and rule.renotify_minutes:
                changes.append(("renotify", open_alert, rule, None))
            elif not should and open_alert is not None:
                changes.append(("resolve", open_alert, rule, None))

    pools = Pool.objects.in_bulk(
        {pool for action, pool, _, _ in changes if action == "fire"}
    )
    transitions = []
    for action, target, rule, value in changes:
        if action == "fire":
            transition = alert_fire(pool=pools[target], rule=rule, value=value, now=now)
        elif action == "renotify":
            transition = alert_renotify(alert=target, rule=rule, now=now)
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


def _day_fields(day: DeviceDay) -> tuple:
    return (day.day, day.pump_on_s, day.pump_since, day.switches_base)


def _zone(pool) -> ZoneInfo:
    return _zone_named(pool.timezone)


def _zone_named(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


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
    if kind == Kind.COMMAND_FAILED:
        return None
    return temperature


def alert_fire(*, pool, rule, value, now) -> Transition | None:
    """ok -> firing; the partial unique index lets only one worker insert it."""
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                tenant_id=pool.tenant_id,
                pool=pool,
                kind=rule.kind,
                value=value,
                threshold=rule.threshold,
                fired_at=now,
                last_notified_at=now,
            )
    except IntegrityError:
        return None
    _notify_on_commit(alert, "fired")
    return Transition(alert, "fired")


def alert_resolve(*, alert: Alert, now) -> Transition | None:
    """firing -> resolved, claimed by a conditional UPDATE."""
    claimed = Alert.objects.filter(pk=alert.pk, state=Alert.State.FIRING).update(
        state=Alert.State.RESOLVED, resolved_at=now
    )
    if not claimed:
        return None
    alert.state, alert.resolved_at = Alert.State.RESOLVED, now
    _notify_on_commit(alert, "resolved")
    return Transition(alert, "resolved")


def alert_renotify(*, alert: Alert, rule, now) -> Transition | None:
    due = alert.last_notified_at + dt.timedelta(minutes=rule.renotify_minutes)
    if now < due:
        return None
    claimed = Alert.objects.filter(
        pk=alert.pk, state=Alert.State.FIRING, last_notified_at=alert.last_notified_at
    ).update(last_notified_at=now)
    if not claimed:
        return None
    _notify_on_commit(alert, "renotify")
    return Transition(alert, "renotify")


def alert_acknowledge(*, membership, alert: Alert) -> bool:
    """Record who acknowledged a firing alert first; later calls change nothing."""
    return bool(
        Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(
            acknowledged_by=membership.user, acknowledged_at=timezone.now()
        )
    )


def _notify_on_commit(alert: Alert, event: str) -> None:
    from alerts import tasks

    pk = alert.pk
    transaction.on_commit(lambda: tasks.notify.delay(pk, event))
    alert_broadcast(alert=alert)


def alert_payload(*, alert: Alert, event: str) -> dict:
    return {
        "event": f"alert.{event}",
        "alert": str(alert.code),
        "pool": str(alert.pool.code),
        "pool_name": alert.pool.name,
        "kind": alert.kind,
        "state": alert.state,
        "value": alert.value,
        "threshold": alert.threshold,
        "fired_at": alert.fired_at.isoformat(),
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
    }


def alert_recipients(*, alert: Alert) -> list[tuple[str, AlertPreference | None]]:
    """Who is e-mailed about this alert: (address, their preferences). Without
    preferences owners and admins are; with them, whoever chose this kind by e-mail."""
    members = alert.tenant.members.select_related("user", "alert_preference")
    recipients = []
    for member in members.order_by("user__email"):
        preference = getattr(member, "alert_preference", None)
        if preference_wants(preference=preference, role=member.role, kind=alert.kind):
            recipients.append((member.user.email, preference))
    return recipients


def alert_preference_set(
    *,
    membership,
    kinds: list[str] | None = None,
    channel: str = AlertPreference.Channel.EMAIL,
    quiet_start: dt.time | None = None,
    quiet_end: dt.time | None = None,
    safety_ignores_quiet: bool = True,
) -> AlertPreference:
    """Save a member's own alert preferences (any role may; a viewer opts in to
    e-mail this way). Bad input raises ValidationError and changes nothing."""
    kinds = sorted(set(kinds or []))
    errors = {}
    unknown = [k for k in kinds if k not in Kind.values]
    if unknown:
        errors["kinds"] = f"Unknown alert kinds: {', '.join(map(str, unknown))}."
    if channel not in AlertPreference.Channel.values:
        errors["channel"] = "Choose e-mail or dashboard only."
    if (quiet_start is None) != (quiet_end is None):
        errors["quiet_end"] = "Give both ends of the quiet hours, or neither."
    elif quiet_start is not None and quiet_start == quiet_end:
        errors["quiet_end"] = "Quiet hours cannot start and end at the same time."
    if errors:
        raise ValidationError(errors)
    preference, _ = AlertPreference.objects.update_or_create(
        membership=membership,
        defaults={
            "tenant_id": membership.tenant_id,
            "kinds": kinds,
            "channel": channel,
            "quiet_start": quiet_start,
            "quiet_end": quiet_end,
            "safety_ignores_quiet": safety_ignores_quiet,
        },
    )
    return preference


def preference_wants(*, preference: AlertPreference | None, role: str, kind: str):
    """Whether a member with these preferences (None: none saved) wants e-mail
    about alerts of this kind."""
    if preference is None:
        return role in ("owner", "admin")
    if preference.channel != AlertPreference.Channel.EMAIL:
        return False
    return not preference.kinds or kind in preference.kinds


def quiet_until(
    *, preference: AlertPreference | None, kind: str, now: dt.datetime, zone
) -> dt.datetime | None:
    """When the quiet hours that `now` falls in end (None: not quiet now, or a
    safety alert let through). Hours are local times in the pool's zone `zone`."""
    if preference is None or preference.quiet_start is None:
        return None
    start, end = preference.quiet_start, preference.quiet_end
    if end is None or start == end:
        return None
    if kind in SAFETY_KINDS and preference.safety_ignores_quiet:
        return None
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if start < end:
        quiet, end_day = start <= clock < end, local.date()
    else:  # across midnight, e.g. 22:00-07:00
        quiet = clock >= start or clock < end
        end_day = local.date() + dt.timedelta(days=1 if clock >= start else 0)
    if not quiet:
        return None
    return dt.datetime.combine(end_day, end, tzinfo=zone).astimezone(dt.UTC)


def alert_email(
    *, alert: Alert, event: str, now: dt.datetime | None = None
) -> list[Delivery]:
    """E-mail everyone who wants this alert (text and HTML), one Delivery per
    recipient; in a recipient's quiet hours the e-mail is held until they end."""
    now = now or timezone.now()
    zone = _zone(alert.pool)
    deliveries = []
    for address, preference in alert_recipients(alert=alert):
        delivery = Delivery(
            alert=alert, event=event, channel=Delivery.Channel.EMAIL, recipient=address
        )
        held = quiet_until(preference=preference, kind=alert.kind, now=now, zone=zone)
        if held:
            delivery.status, delivery.held_until = Delivery.Status.HELD, held
        else:
            _email_send(delivery)
        delivery.save()
        deliveries.append(delivery)
    return deliveries


def _email_send(delivery: Delivery) -> None:
    alert, event = delivery.alert, delivery.event
    what = f"{alert.get_kind_display()} on {alert.pool.name}: {event}"
    text = f"{what}\nValue: {alert.value}\nThreshold: {alert.threshold}\n"
    if delivery.held_until:
        text += "Held during your quiet hours.\n"
    html = f"<p><strong>{_esc(what)}</strong></p><p>Value: {alert.value}</p>"
    try:
        send_mail(
            f"[poolsaas] {what}", text, None, [delivery.recipient], html_message=html
        )
        delivery.ok, delivery.status, delivery.error = True, Delivery.Status.SENT, ""
    except Exception as exc:  # noqa: BLE001 - logged on the delivery row
        delivery.ok, delivery.status = False, Delivery.Status.FAILED
        delivery.error = str(exc)[:300]


def alerts_release_held(*, now: dt.datetime | None = None, limit: int = 500) -> int:
    """Send the e-mails whose quiet hours are over; each row is claimed by a
    conditional UPDATE, so two workers never send one twice."""
    now = now or timezone.now()
    due = list(
        Delivery.objects.filter(status=Delivery.Status.HELD, held_until__lte=now)
        .select_related("alert__pool")
        .order_by("held_until")[:limit]
    )
    sent = 0
    for delivery in due:
        claimed = Delivery.objects.filter(
            pk=delivery.pk, status=Delivery.Status.HELD
        ).update(status=Delivery.Status.FAILED, error="sending")
        if not claimed:
            continue
        _email_send(delivery)
        delivery.at = now  # when it went out; held_until keeps when it was due
        delivery.save(update_fields=["ok", "status", "error", "at"])
        sent += delivery.ok
    return sent


def _esc(text: str) -> str:
    from django.utils.html import escape

    return escape(text)


def webhook_sign(*, secret: str, body: bytes, timestamp: int) -> str:
    """The Poolsaas-Signature header: HMAC-SHA256 over "<timestamp>.<body>"."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def webhook_verify(*, secret: str, body: bytes, header: str, now: int, window=300):
    """What a receiver does (documented in docs/alerts.md); used by the tests."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    timestamp = int(parts["t"])
    if abs(now - timestamp) > window:
        return False
    expected = webhook_sign(secret=secret, body=body, timestamp=timestamp)
    return hmac.compare_digest(expected, header)


def webhook_url_validate(url: str) -> None:
    """The same guard as for brokers: no internal addresses."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValidationError("Enter an http(s) URL.")
    validate_broker_address(parsed.hostname)


def webhook_create(*, membership, url: str, secret: str) -> WebhookSubscription:
    webhook_url_validate(url)
    return WebhookSubscription.objects.create(
        tenant=membership.tenant, url=url, secret=secret
    )


def webhook_backoff(retries: int) -> int:
    """Seconds before the next attempt after `retries` failed ones: 5, 10, 20 ...
    capped at 10 minutes."""
    return min(600, 5 * 2**retries)


def webhook_post(
    *, alert: Alert, webhook: WebhookSubscription, event: str, attempt: int
) -> Delivery:
    """POST one signed event; the Delivery row logs the attempt."""
    import requests

    body = json.dumps(alert_payload(alert=alert, event=event)).encode()
    header = webhook_sign(secret=webhook.secret, body=body, timestamp=int(time.time()))
    delivery = Delivery(
        alert=alert,
        webhook=webhook,
        event=event,
        channel=Delivery.Channel.WEBHOOK,
        attempt=attempt,
    )
    try:
        webhook_url_validate(webhook.url)  # the name may resolve elsewhere now
        response = requests.post(
            webhook.url,
            data=body,
            headers={"Content-Type": "application/json", "Poolsaas-Signature": header},
            timeout=10,
            allow_redirects=False,
        )
        delivery.status_code = response.status_code
        delivery.ok = 200 <= response.status_code < 300
        if delivery.ok:
            delivery.status = Delivery.Status.SENT
    except (ValidationError, OSError, requests.RequestException) as exc:
        delivery.error = str(exc)[:300]
    delivery.save()
    return delivery


# --- what members do from the pages and the API: acknowledge, resolve, rules and
# webhooks. Each checks the role, writes the audit trail and, for alerts, tells the
# pool page and the overview (after commit, like every broadcast). -----------------

from django.http import Http404  # noqa: E402

RULE_LIMITS = {
    # kind: (lowest threshold, highest threshold, what the threshold is)
    Kind.WATER_ABOVE: (-10.0, 50.0, "a water temperature in °C"),
    Kind.WATER_BELOW: (-10.0, 50.0, "a water temperature in °C"),
    Kind.FREEZE_RISK: (-10.0, 50.0, "a water temperature in °C"),
    Kind.DEVICE_OFFLINE: (1.0, 10080.0, "minutes offline (at most a week)"),
    Kind.PUMP_RUNTIME: (0.5, 24.0, "hours of pump running a day"),
    Kind.RELAY_SWITCHES: (1.0, 100000.0, "relay switches a day"),
    Kind.COMMAND_FAILED: (1.0, 10080.0, "minutes to look back (at most a week)"),
}
MAX_HYSTERESIS = 10.0
MAX_RENOTIFY_MINUTES = 10080
WEBHOOK_SECRET_MIN = 16
WEBHOOK_SECRET_MAX = 200


def alert_broadcast(*, alert: Alert) -> None:
    """Send the alert as it is now to its pool's page and its tenant's overview, once
    the transaction commits (poolsaas.live.groups.broadcast)."""
    from alerts.selectors import alert_as_dict
    from poolsaas.live import groups, messages

    data = alert_as_dict(alert)
    tenant_code = alert.pool.tenant.code
    groups.broadcast(
        groups.pool_group(alert.pool.code),
        messages.pool_alert(pool=data["pool"], alert=data),
    )
    groups.broadcast(
        groups.tenant_group(tenant_code),
        messages.tenant_alert(pool=data["pool"], alert=data),
    )


def _alert_reload(alert: Alert) -> Alert:
    return Alert.objects.select_related("pool", "acknowledged_by").get(pk=alert.pk)


def alert_acknowledge_by_member(*, membership, alert: Alert) -> Alert:
    """A member (operator or higher) says "seen, on it": the first one is recorded
    with the time (alert_acknowledge), audited and shown live; a second click
    changes nothing. A resolved alert has nothing left to acknowledge."""
    from audit.services import audit_record
    from tenants.roles import Action
    from tenants.selectors import membership_require

    membership_require(membership=membership, action=Action.CONTROL)
    if alert.tenant_id != membership.tenant_id:
        raise Http404("No such alert.")
    if alert.state != Alert.State.FIRING:
        raise ValidationError(
            "This alert is resolved: there is nothing to acknowledge."
        )
    with transaction.atomic():
        if alert_acknowledge(membership=membership, alert=alert):
            alert = _alert_reload(alert)
            audit_record(
                action="alert.acknowledged",
                tenant=membership.tenant,
                actor=membership.user,
                target=alert,
                data={"pool": alert.pool.code.hex, "kind": alert.kind},
            )
            alert_broadcast(alert=alert)
        else:
            alert = _alert_reload(alert)
    return alert


def alert_resolve_by_member(*, membership, alert: Alert) -> Alert:
    """A member (operator or higher) closes a firing alert by hand (alert_resolve:
    the same claim and notifications as the evaluator's). If the condition still
    holds, the next evaluation opens a new alert."""
    from audit.services import audit_record
    from tenants.roles import Action
    from tenants.selectors import membership_require

    membership_require(membership=membership, action=Action.CONTROL)
    if alert.tenant_id != membership.tenant_id:
        raise Http404("No such alert.")
    with transaction.atomic():
        if alert.state != Alert.State.FIRING or not alert_resolve(
            alert=alert, now=timezone.now()
        ):
            raise ValidationError("This alert is resolved already.")
        audit_record(
            action="alert.resolved",
            tenant=membership.tenant,
            actor=membership.user,
            target=alert,
            data={"pool": alert.pool.code.hex, "kind": alert.kind},
        )
    return _alert_reload(alert)


def _finite(name: str, value, errors: dict) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        errors[name] = "Enter a number."
        return None
    if number != number or number in (float("inf"), float("-inf")):
        errors[name] = "Enter a finite number."
        return None
    return number


def alert_rule_validate(
    *, kind: str, threshold, hysteresis, renotify_minutes
) -> tuple[float, float, int]:
    """The rule's numbers, checked against its kind; ValidationError by field."""
    errors: dict[str, str] = {}
    if kind not in Kind.values:
        raise ValidationError({"kind": f"Choose one of {', '.join(Kind.values)}."})
    low, high, what = RULE_LIMITS[Kind(kind)]
    threshold = _finite("threshold", threshold, errors)
    if threshold is not None and not low <= threshold <= high:
        errors["threshold"] = f"Enter {what} from {low:g} to {high:g}."
    hysteresis = _finite("hysteresis", hysteresis, errors)
    if hysteresis is not None and not 0 <= hysteresis <= MAX_HYSTERESIS:
        errors["hysteresis"] = f"Enter a hysteresis from 0 to {MAX_HYSTERESIS:g}."
    renotify = _finite("renotify_minutes", renotify_minutes, errors)
    if renotify is not None and (
        renotify != int(renotify) or not 0 <= renotify <= MAX_RENOTIFY_MINUTES
    ):
        errors["renotify_minutes"] = (
            f"Enter whole minutes from 0 (never) to {MAX_RENOTIFY_MINUTES}."
        )
    if errors:
        raise ValidationError(errors)
    return threshold, hysteresis, int(renotify)


def _rule_audit(membership, rule: AlertRule, action: str, fields=None) -> None:
    from audit.services import audit_record

    data = {
        "kind": rule.kind,
        "pool": rule.pool.code.hex if rule.pool_id else None,
    }
    if fields is not None:
        data["fields"] = fields
    audit_record(
        action=action,
        tenant=membership.tenant,
        actor=membership.user,
        target=rule,
        data=data,
    )


def alert_rule_create(
    *,
    membership,
    kind: str,
    threshold,
    hysteresis=1.0,
    renotify_minutes=0,
    enabled: bool = True,
    pool=None,
) -> AlertRule:
    """A tenant default (no pool) or a pool's override of one kind (admins)."""
    from tenants.roles import Action
    from tenants.selectors import membership_require

    membership_require(membership=membership, action=Action.MANAGE)
    if pool is not None and pool.tenant_id != membership.tenant_id:
        raise Http404("No such pool.")
    threshold, hysteresis, renotify = alert_rule_validate(
        kind=kind,
        threshold=threshold,
        hysteresis=hysteresis,
        renotify_minutes=renotify_minutes,
    )
    taken = (
        "This pool already has its own rule of this kind: change that one."
        if pool is not None
        else "There is a default rule of this kind already: change that one."
    )
    try:
        with transaction.atomic():
            rule = AlertRule.objects.create(
                tenant_id=membership.tenant_id,
                pool=pool,
                kind=kind,
                threshold=threshold,
                hysteresis=hysteresis,
                renotify_minutes=renotify,
                enabled=bool(enabled),
            )
            _rule_audit(membership, rule, "alert_rule.created")
    except IntegrityError:
        raise ValidationError({"kind": taken}) from None
    return rule


def alert_rule_update(
    *, membership, rule: AlertRule, threshold, hysteresis, renotify_minutes, enabled
) -> AlertRule:
    """Change a rule's numbers (admins); its kind and pool stay."""
    from tenants.roles import Action
    from tenants.selectors import membership_require

    membership_require(membership=membership, action=Action.MANAGE)
    if rule.tenant_id != membership.tenant_id:
        raise Http404("No such rule.")
    threshold, hysteresis, renotify = alert_rule_validate(
        kind=rule.kind,
        threshold=threshold,
        hysteresis=hysteresis,
        renotify_minutes=renotify_minutes,
    )
    new = {
        "threshold": threshold,
        "hysteresis": hysteresis,
        "renotify_minutes": renotify,
        "enabled": bool(enabled),
    }
    changed = sorted(k for k, v in new.items() if getattr(rule, k) != v)
    if not changed:
        return rule
    with transaction.atomic():
        for key, value in new.items():
            setattr(rule, key, value)
        rule.save(update_fields=changed)
        _rule_audit(membership, rule, "alert_rule.changed", changed)
    return rule


def alert_rule_delete(*, membership, rule: AlertRule) -> None:
    """Remove a rule (admins): a pool's override goes back to the tenant default."""
    from tenants.roles import Action
    from tenants.selectors import membership_require

    membership_require(membership=membership, action=Action.MANAGE)
    if rule.tenant_id != membership.tenant_id:
        raise Http404("No such rule.")
    with transaction.atomic():
        _rule_audit(membership, rule, "alert_rule.deleted")
        rule.delete()


def webhook_secret_validate(secret: str) -> None:
    if not isinstance(secret, str) or not secret.strip():
        raise ValidationError({"secret": "Enter a signing secret."})
    if not WEBHOOK_SECRET_MIN <= len(secret) <= WEBHOOK_SECRET_MAX:
        raise ValidationError(
            {
                "secret": f"Use {WEBHOOK_SECRET_MIN} to {WEBHOOK_SECRET_MAX} "
                "characters: the receiver checks signatures with it."
            }
        )


def _webhook_url_check(url) -> str:
    if not isinstance(url, str) or len(url) > 500:
        raise ValidationError(
            {"url": "Enter an http(s) URL of at most 500 characters."}
        )
    try:
        webhook_url_validate(url)
    except ValidationError as exc:
        raise ValidationError({"url": exc.messages}) from None
    return url


def _webhook_audit(membership, webhook, action: str, fields) -> None:
    from audit.services import audit_record

    # The URL's host only: its path or query may carry the receiver's token.
    host = urllib.parse.urlsplit(webhook.url).hostname or ""
    audit_record(
        action=action,
        tenant=membership.tenant,
        actor=membership.user,
        target=webhook,
        data={"host": host, "fields": fields},
    )


def webhook_subscribe(
    *, membership, url: str, secret: str, enabled: bool = True
) -> WebhookSubscription:
    """A member's new subscription (admins): the role and the secret's length are
    checked, webhook_create checks the address, the audit trail records it."""
    from tenants.roles import Action
    from tenants.selectors import membership_require

    membership_require(membership=membership, action=Action.MANAGE)
    url = _webhook_url_check(url)
    webhook_secret_validate(secret)
    with transaction.atomic():
        webhook = webhook_create(membership=membership, url=url, secret=secret)
        if not enabled:
            webhook.enabled = False
            webhook.save(update_fields=["enabled"])
        _webhook_audit(membership, webhook, "webhook.created", ["url", "secret"])
    return webhook


def webhook_update(
    *, membership, webhook: WebhookSubscription, url=None, secret=None, enabled=None
) -> WebhookSubscription:
    """Change a subscription (admins): None leaves a field as it is; a new secret
    replaces the stored one, which is never read back."""
    from tenants.roles import Action
    from tenants.selectors import membership_require

    membership_require(membership=membership, action=Action.MANAGE)
    if webhook.tenant_id != membership.tenant_id:
        raise Http404("No such webhook.")
    changed = []
    if url is not None and url != webhook.url:
        webhook.url = _webhook_url_check(url)
        changed.append("url")
    if secret is not None:
        webhook_secret_validate(secret)
        webhook.secret = secret
        changed.append("secret")
    if enabled is not None and bool(enabled) != webhook.enabled:
        webhook.enabled = bool(enabled)
        changed.append("enabled")
    if changed:
        with transaction.atomic():
            webhook.save(update_fields=changed)
            _webhook_audit(membership, webhook, "webhook.changed", changed)
    return webhook


def webhook_delete(*, membership, webhook: WebhookSubscription) -> None:
    """Remove a subscription (admins); its deliveries stay in the log."""
    from tenants.roles import Action
    from tenants.selectors import membership_require

    membership_require(membership=membership, action=Action.MANAGE)
    if webhook.tenant_id != membership.tenant_id:
        raise Http404("No such webhook.")
    with transaction.atomic():
        _webhook_audit(membership, webhook, "webhook.deleted", [])
        webhook.delete()


def alert_rule_set(
    *,
    membership,
    kind: str,
    threshold,
    hysteresis=1.0,
    renotify_minutes=0,
    enabled: bool = True,
    pool=None,
) -> AlertRule:
    """The rules pages' save: the tenant default (no pool) or the pool's override
    of `kind`, created or changed (admins)."""
    if kind not in Kind.values:
        raise ValidationError({"kind": f"Choose one of {', '.join(Kind.values)}."})
    numbers = {
        "threshold": threshold,
        "hysteresis": hysteresis,
        "renotify_minutes": renotify_minutes,
        "enabled": enabled,
    }
    with transaction.atomic():
        rule = (
            AlertRule.objects.select_for_update()
            .filter(
                tenant_id=membership.tenant_id,
                pool_id=pool.pk if pool is not None else None,
                kind=kind,
            )
            .first()
        )
        if rule is not None:
            return alert_rule_update(membership=membership, rule=rule, **numbers)
    return alert_rule_create(membership=membership, kind=kind, pool=pool, **numbers)
