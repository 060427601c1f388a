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
        delivery.ok, delivery.status = True, Delivery.Status.SENT
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
        if delivery.ok:
            delivery.status = Delivery.Status.SENT
    except (ValidationError, OSError, requests.RequestException) as exc:
        delivery.error = str(exc)[:300]
    delivery.save()
    return delivery
