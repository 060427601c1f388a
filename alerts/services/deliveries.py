"""Telling people: the payload, who is e-mailed, quiet hours held and released."""

import datetime as dt
import logging

from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from alerts.models import (
    Alert,
    AlertPreference,
    Delivery,
)
from alerts.services.conditions import _zone_named
from alerts.services.preferences import preference_wants, quiet_until

logger = logging.getLogger(__name__)
# Attempts per e-mail, the first one included (as webhooks: alerts.tasks).
EMAIL_MAX_ATTEMPTS = 6


def alert_payload(*, alert: Alert, event: str) -> dict:
    return {
        "event": f"alert.{event}",
        "alert": str(alert.code),
        "pool": str(alert.pool.code) if alert.pool_id else None,
        "pool_name": alert.where,
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


def alert_email(
    *, alert: Alert, event: str, now: dt.datetime | None = None
) -> list[Delivery]:
    """E-mail everyone who wants this alert (text and HTML), one Delivery per
    recipient; in a recipient's quiet hours the e-mail is held until they end."""
    now = now or timezone.now()
    zone = _zone_named(alert.zone_name)
    deliveries = []
    for address, preference in alert_recipients(alert=alert):
        delivery = Delivery(
            alert=alert, event=event, channel=Delivery.Channel.EMAIL, recipient=address
        )
        held = quiet_until(preference=preference, kind=alert.kind, now=now, zone=zone)
        if held:
            delivery.status, delivery.held_until = Delivery.Status.HELD, held
            delivery.save()
        else:
            _email_attempt(delivery)
        deliveries.append(delivery)
    return deliveries


def delivery_backoff(retries: int) -> int:
    """Seconds before the next attempt after `retries` failed ones: 5, 10, 20 ...
    capped at 10 minutes (e-mail and webhooks alike)."""
    return min(600, 5 * 2**retries)


def _email_attempt(delivery: Delivery, *, update_fields=None) -> None:
    """Send, save the attempt, log it, and when it failed and attempts are left,
    schedule the next one (alerts.retry_email) after the backoff."""
    _email_send(delivery)
    delivery.save(update_fields=update_fields)
    log = logger.info if delivery.ok else logger.warning
    log(
        "e-mail %s of alert %s (%s), attempt %s: %s %s",
        delivery.pk,
        delivery.alert_id,
        delivery.event,
        delivery.attempt,
        delivery.status,
        delivery.error,
    )
    if not delivery.ok and delivery.attempt < EMAIL_MAX_ATTEMPTS:
        from alerts import tasks

        pk, countdown = delivery.pk, delivery_backoff(delivery.attempt - 1)
        transaction.on_commit(
            lambda: tasks.retry_email.apply_async((pk,), countdown=countdown)
        )


def email_retry(*, delivery_pk: int) -> Delivery | None:
    """The next attempt after the failed e-mail `delivery_pk`: a new Delivery row
    (attempt + 1) to the same recipient. None when there is nothing to retry (it
    was sent, or it was retried already: a task run twice sends once)."""
    failed = (
        Delivery.objects.select_related("alert__pool", "alert__tenant")
        .filter(pk=delivery_pk, channel=Delivery.Channel.EMAIL, ok=False)
        .exclude(status=Delivery.Status.HELD)
        .first()
    )
    if failed is None or failed.attempt >= EMAIL_MAX_ATTEMPTS:
        return None
    # Claimed by the failed row: a task run twice (acks late, a worker lost)
    # finds it marked and sends nothing.
    claimed = Delivery.objects.filter(pk=failed.pk, retried=False).update(retried=True)
    if not claimed:
        return None
    retry = Delivery.objects.create(
        alert=failed.alert,
        event=failed.event,
        channel=Delivery.Channel.EMAIL,
        recipient=failed.recipient,
        held_until=failed.held_until,
        attempt=failed.attempt + 1,
        error="sending",
    )
    retry.alert = failed.alert
    _email_attempt(retry)
    return retry


def _email_send(delivery: Delivery) -> None:
    alert, event = delivery.alert, delivery.event
    what = f"{alert.get_kind_display()} on {alert.where}: {event}"
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
        delivery.at = now  # when it went out; held_until keeps when it was due
        _email_attempt(delivery, update_fields=["ok", "status", "error", "at"])
        sent += delivery.ok
    return sent


def _esc(text: str) -> str:
    from django.utils.html import escape

    return escape(text)
