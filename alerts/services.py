"""Alert evaluation (from the state devices already store) and deliveries."""

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import time
import urllib.parse

from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from alerts.models import Alert, AlertRule, Delivery, Kind, WebhookSubscription
from devices.models import Device
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
) -> bool:
    """Whether the alert should be firing, with hysteresis: once firing, a value
    must go `hysteresis` back past the threshold before it resolves."""
    if kind == Kind.DEVICE_OFFLINE:
        if online:
            return False
        if last_seen_at is None:
            return firing
        return now - last_seen_at >= dt.timedelta(minutes=threshold)
    if temperature is None:
        return firing  # no reading: keep what we had
    if kind == Kind.WATER_ABOVE:
        return temperature > (threshold - hysteresis if firing else threshold)
    cold = temperature < (threshold + hysteresis if firing else threshold)
    if kind == Kind.WATER_BELOW:
        return cold
    # Freeze risk: cold water standing still; a running pump does not resolve it
    # while the water stays cold, but cold water alone does not fire it.
    return cold and (firing or not pump)


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
    devices = Device.objects.filter(
        pool__isnull=False, tenant_id__in=tenants
    ).select_related("pool")
    transitions = []
    for device in devices:
        pool = device.pool
        for kind in Kind.values:
            rule = overrides.get((pool.pk, kind)) or defaults.get(
                (pool.tenant_id, kind)
            )
            if rule is None:
                continue
            open_alert = firing.get((pool.pk, kind))
            state = device.state or {}
            temperature = state.get("temperature")
            should = rule.enabled and condition(
                kind=kind,
                threshold=rule.threshold,
                hysteresis=rule.hysteresis,
                firing=open_alert is not None,
                temperature=temperature,
                pump=state.get("pump") in (True, 1, "on", "ON"),
                online=device.online,
                last_seen_at=device.last_seen_at,
                now=now,
            )
            transition = None
            if should and open_alert is None:
                transition = alert_fire(
                    pool=pool, rule=rule, value=temperature, now=now
                )
            elif should and rule.renotify_minutes:
                transition = alert_renotify(alert=open_alert, rule=rule, now=now)
            elif not should and open_alert is not None:
                transition = alert_resolve(alert=open_alert, now=now)
            if transition:
                transitions.append(transition)
    return transitions


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


def alert_email(*, alert: Alert, event: str) -> Delivery:
    """E-mail the tenant's owners and admins (text and HTML)."""
    recipients = sorted(
        alert.tenant.members.filter(role__in=["owner", "admin"]).values_list(
            "user__email", flat=True
        )
    )
    what = f"{alert.get_kind_display()} on {alert.pool.name}: {event}"
    text = f"{what}\nValue: {alert.value}\nThreshold: {alert.threshold}\n"
    html = f"<p><strong>{_esc(what)}</strong></p><p>Value: {alert.value}</p>"
    delivery = Delivery(alert=alert, event=event, channel=Delivery.Channel.EMAIL)
    try:
        send_mail(f"[poolsaas] {what}", text, None, recipients, html_message=html)
        delivery.ok = True
    except Exception as exc:  # noqa: BLE001 - logged on the delivery row
        delivery.error = str(exc)[:300]
    delivery.save()
    return delivery


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
