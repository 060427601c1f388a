"""Webhook subscriptions: signing, the address guard, the POST and its log."""

import hashlib
import hmac
import json
import time
import urllib.parse

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404

from alerts.models import (
    Alert,
    Delivery,
    WebhookSubscription,
)
from alerts.services.deliveries import alert_payload
from devices.services.brokers.addresses import validate_broker_address


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


WEBHOOK_SECRET_MIN = 16
WEBHOOK_SECRET_MAX = 200


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
