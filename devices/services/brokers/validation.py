"""Validation of a broker's settings, field by field and as a whole."""

import re
import ssl
from urllib.parse import urlparse

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import Http404

from devices.models import Broker
from devices.services.brokers.addresses import (
    validate_broker_address,
    validate_broker_host,
)
from tenants.models import Membership

BROKER_FIELDS = [
    "name",
    "host",
    "port",
    "use_tls",
    "ca_certificate",
    "websocket_url",
    "topic_prefix",
]

_PEM_CERT_RE = re.compile(
    r"-----BEGIN CERTIFICATE-----\s+[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----"
)


def validate_ca_certificate(pem: str) -> None:
    """One or more PEM certificates that the TLS library accepts as trust anchors."""
    if not pem:
        return
    if not _PEM_CERT_RE.search(pem):
        raise ValidationError(
            "Paste the CA certificate in PEM form, from -----BEGIN CERTIFICATE----- "
            "to -----END CERTIFICATE-----."
        )
    try:
        ssl.create_default_context().load_verify_locations(cadata=pem)
    except (ssl.SSLError, ValueError):
        raise ValidationError(
            "This CA certificate cannot be read: check that it was pasted whole."
        ) from None


def validate_websocket_url(url: str) -> None:
    """ws:// or wss:// with a host; never credentials (they would be stored in
    clear text: username and password have their own encrypted fields)."""
    if not url:
        return
    try:
        parsed = urlparse(url)
        port = parsed.port
    except ValueError:
        raise ValidationError(
            "Enter a WebSocket URL such as wss://mqtt.example.com:8084/mqtt."
        ) from None
    if parsed.scheme not in ("ws", "wss") or not parsed.hostname:
        raise ValidationError(
            "A WebSocket URL starts with ws:// or wss:// and names a host, for "
            "example wss://mqtt.example.com:8084/mqtt."
        )
    if parsed.username or parsed.password:
        raise ValidationError(
            "Do not put a username or password in the URL: use the username and "
            "password fields, which are stored encrypted."
        )
    if port is not None and not 1 <= port <= 65535:
        raise ValidationError("The WebSocket URL's port must be 1 to 65535.")
    if any(c.isspace() for c in url):
        raise ValidationError("A WebSocket URL cannot contain spaces.")


def _broker_validate(broker: Broker) -> Broker:
    """Model validation plus the checks the model cannot do alone, as one error."""
    errors: dict[str, list] = {}
    try:
        broker.full_clean(exclude=["tenant"])
    except ValidationError as exc:
        errors.update(exc.message_dict)
    for field, check in (
        ("host", validate_broker_host),
        ("ca_certificate", validate_ca_certificate),
        ("websocket_url", validate_websocket_url),
    ):
        if field in errors:
            continue
        try:
            check(getattr(broker, field))
        except ValidationError as exc:
            errors.setdefault(field, []).extend(exc.messages)
    if not broker.is_platform:
        _check_public_addresses(broker, errors)
    if broker.ca_certificate and not broker.use_tls and "ca_certificate" not in errors:
        errors.setdefault("ca_certificate", []).append(
            "A CA certificate is only used with TLS: turn TLS on or clear it."
        )
    if (
        broker.tenant_id
        and "name" not in errors
        and Broker.objects.filter(tenant_id=broker.tenant_id, name__iexact=broker.name)
        .exclude(pk=broker.pk)
        .exists()
    ):
        errors.setdefault("name", []).append(
            f"You already have a broker named {broker.name!r}."
        )
    if errors:
        raise ValidationError(errors)
    return broker


def _check_public_addresses(broker: Broker, errors: dict[str, list]) -> None:
    """Add SSRF errors for the host and the WebSocket URL's host (both are
    addresses our servers may connect to)."""
    targets = [("host", broker.host)]
    if broker.websocket_url:
        targets.append(("websocket_url", urlparse(broker.websocket_url).hostname))
    for field, host in targets:
        if field in errors or not host:
            continue
        try:
            validate_broker_address(host)
        except ValidationError as exc:
            errors.setdefault(field, []).extend(exc.messages)


def _clean_fields(fields: dict) -> dict:
    unknown = set(fields) - set(BROKER_FIELDS)
    if unknown:
        raise ValidationError(
            {NON_FIELD_ERRORS: f"Unknown broker fields: {', '.join(sorted(unknown))}."}
        )
    cleaned = dict(fields)
    for name in ("name", "host", "websocket_url", "topic_prefix"):
        if isinstance(cleaned.get(name), str):
            cleaned[name] = cleaned[name].strip()
    if isinstance(cleaned.get("ca_certificate"), str):
        cleaned["ca_certificate"] = cleaned["ca_certificate"].strip()
    return cleaned


def _require_own_broker(membership: Membership, broker: Broker) -> None:
    # The access layer already scopes by tenant; this guards direct callers (admin
    # actions, scripts) from touching the platform broker or another tenant's, with
    # the access layer's own answer: not found.
    if broker.is_platform or broker.tenant_id != membership.tenant_id:
        raise Http404("No such broker.")
