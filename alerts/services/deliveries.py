"""Telling people: the payload, who is e-mailed, quiet hours held and released."""

import datetime as dt

from django.core.mail import send_mail
from django.utils import timezone

from alerts.models import (
    Alert,
    AlertPreference,
    Delivery,
)
from alerts.services.conditions import _zone
from alerts.services.preferences import preference_wants, quiet_until


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
