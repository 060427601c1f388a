"""Webhook subscriptions: signing, the address guard, the POST and its log."""

import base64
import hashlib
import hmac
import http.client
import json
import logging
import ssl
import time
import urllib.parse

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404

from alerts.models import (
    Alert,
    Delivery,
    WebhookSubscription,
)
from alerts.services.deliveries import alert_payload, delivery_backoff
from devices.services.brokers.addresses import broker_socket, validate_broker_address

logger = logging.getLogger(__name__)
WEBHOOK_TIMEOUT = 10  # seconds, to connect and for each read
WEBHOOK_MAX_ANSWER = 65536  # bytes of the answer read (and dropped)


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
    validate_broker_address(_url_parts(url).hostname)


def webhook_create(*, membership, url: str, secret: str) -> WebhookSubscription:
    webhook_url_validate(url)
    return WebhookSubscription.objects.create(
        tenant=membership.tenant, url=url, secret=secret
    )


def webhook_backoff(retries: int) -> int:
    """Seconds before the next attempt after `retries` failed ones: 5, 10, 20 ...
    capped at 10 minutes."""
    return delivery_backoff(retries)


class _VettedHTTPConnection(http.client.HTTPConnection):
    """Connects to an address of the one resolution that was vetted
    (devices.services.brokers.addresses.broker_socket), so a name that answers a
    public address to the check and an internal one to the connect (DNS
    rebinding) reaches nothing. The Host header keeps the URL's name."""

    def connect(self) -> None:
        self.sock = broker_socket(self.host, self.port, timeout=self.timeout)


class _VettedHTTPSConnection(http.client.HTTPSConnection):
    """The same for https: TCP to the vetted address, then TLS with the URL's
    name for SNI and for the certificate's host name check."""

    def connect(self) -> None:
        sock = broker_socket(self.host, self.port, timeout=self.timeout)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def _tls_context() -> ssl.SSLContext:
    # WEBHOOK_CA_FILE: a private CA (tests, on-premises receivers); else certifi's.
    import certifi

    cafile = getattr(settings, "WEBHOOK_CA_FILE", "") or certifi.where()
    return ssl.create_default_context(cafile=cafile)


def _url_parts(url: str) -> urllib.parse.SplitResult:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValidationError("Enter an http(s) URL.")
    return parsed


def _post(url: str, body: bytes, headers: dict) -> int:
    """POST `body` to `url` through the vetted connection; the status code. No
    proxy and no redirects: either would reach an address we did not check."""
    parsed = _url_parts(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if parsed.scheme == "https":
        conn = _VettedHTTPSConnection(
            parsed.hostname, port, timeout=WEBHOOK_TIMEOUT, context=_tls_context()
        )
    else:
        conn = _VettedHTTPConnection(parsed.hostname, port, timeout=WEBHOOK_TIMEOUT)
    if parsed.username is not None:
        user = urllib.parse.unquote(parsed.username)
        password = urllib.parse.unquote(parsed.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers = {**headers, "Authorization": f"Basic {token}"}
    path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read(WEBHOOK_MAX_ANSWER)
        return response.status
    finally:
        conn.close()


def webhook_post(
    *, alert: Alert, webhook: WebhookSubscription, event: str, attempt: int
) -> Delivery:
    """POST one signed event; the Delivery row logs the attempt. The URL's name is
    resolved once, its addresses checked by the brokers' guard, and the POST goes
    to one of those very addresses."""
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
        delivery.status_code = _post(
            webhook.url,
            body,
            {"Content-Type": "application/json", "Poolsaas-Signature": header},
        )
        delivery.ok = 200 <= delivery.status_code < 300
        if delivery.ok:
            delivery.status = Delivery.Status.SENT
    except (ValidationError, OSError, http.client.HTTPException, ValueError) as exc:
        delivery.error = (
            " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        )[:300] or type(exc).__name__
    delivery.save()
    logger.info(
        "webhook %s of alert %s, attempt %s: %s %s",
        webhook.pk,
        alert.pk,
        attempt,
        delivery.status_code or "-",
        delivery.status,
    )
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
