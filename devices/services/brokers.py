"""Writes for brokers: a tenant's own brokers, the shared platform broker, and the
connection test. One function per state change, used by pages, the API, admin and
management commands alike."""

import contextlib
import ipaddress
import re
import socket
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction
from django.http import Http404
from django.utils import timezone

from audit.services import audit_record
from devices.models import Broker
from tenants.models import Membership
from tenants.roles import Action
from tenants.selectors import membership_require

BROKER_FIELDS = [
    "name",
    "host",
    "port",
    "use_tls",
    "ca_certificate",
    "websocket_url",
    "topic_prefix",
]

# One DNS label: letters, digits and inner hyphens, at most 63 characters.
_HOST_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_PEM_CERT_RE = re.compile(
    r"-----BEGIN CERTIFICATE-----\s+[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----"
)


def validate_broker_host(host: str) -> None:
    """A bare host name or IP address: no scheme, port, path or spaces."""
    if not host:
        raise ValidationError("Enter the broker's host name or IP address.")
    if "://" in host or "/" in host or "@" in host or any(c.isspace() for c in host):
        raise ValidationError(
            "Enter only the host name or IP address (for example "
            "mqtt.example.com), without mqtt://, a port or a path."
        )
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)  # IPv6 without brackets, as the socket wants it
        return
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if len(name) > 253 or not all(_HOST_LABEL_RE.match(label) for label in labels):
        raise ValidationError(
            f"{host!r} is not a valid host name or IP address "
            "(letters, digits, '-' and '.', for example mqtt.example.com)."
        )


def _special_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """What makes an address non-public ("" when it is an ordinary public one)."""
    if isinstance(address, ipaddress.IPv6Address):
        # ::ffff:10.0.0.1 and friends reach the IPv4 address inside them.
        inner = address.ipv4_mapped or address.sixtofour or address.teredo
        if isinstance(inner, tuple):
            inner = inner[1]
        if inner is not None:
            return _special_kind(inner)
    for kind, flag in (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ):
        if flag:
            return kind
    # Shared (carrier-grade NAT), documentation and other special ranges.
    return "" if address.is_global else "special-purpose"


def validate_broker_address(host: str) -> None:
    """Refuse a broker host that is, or resolves to, a loopback, private,
    link-local, multicast or reserved address, unless BROKER_ALLOW_PRIVATE_HOSTS.

    Without this a tenant admin could make our servers (connection test, bridge)
    open connections inside our own network. Every address the name resolves to
    is checked, so a name with one public and one private record is refused too.
    This is the check made when a broker is saved; connections are made through
    `broker_socket`, which checks again the very addresses it connects to.
    """
    if settings.BROKER_ALLOW_PRIVATE_HOSTS:
        return
    broker_resolve(host)


def broker_resolve(host: str, port: int | None = None, *, vet: bool = True) -> list:
    """Resolve a broker host once (getaddrinfo tuples for TCP), and unless `vet` is
    off or BROKER_ALLOW_PRIVATE_HOSTS is on, refuse (ValidationError) when any of
    the addresses is not a public one."""
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (socket.gaierror, UnicodeError, OSError):
        raise ValidationError(
            f"The host name {host!r} does not resolve: check the spelling."
        ) from None
    if not vet or settings.BROKER_ALLOW_PRIVATE_HOSTS:
        return infos
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        kind = _special_kind(address)
        if kind:
            # The address itself is not echoed: it would tell a tenant what our
            # resolver knows about internal names.
            raise ValidationError(
                f"{host} is a {kind} network address, not one on the public "
                "internet: poolsaas connects only to brokers on the public "
                "internet."
            )
    return infos


class BrokerAddressRefused(OSError):
    """A broker's name resolved, at connection time, to an address we refuse."""


def broker_socket(
    host: str, port: int, *, timeout: float | None, vet: bool = True
) -> socket.socket:
    """A TCP connection to the broker, made to an address of the same resolution
    that was vetted, so that a name answering a public address to the check and an
    internal one to the connect (DNS rebinding) reaches nothing. Raises
    BrokerAddressRefused (an OSError) for a refused or unresolvable name."""
    try:
        infos = broker_resolve(host, port, vet=vet)
    except ValidationError as exc:
        raise BrokerAddressRefused(exc.messages[0]) from None
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or BrokerAddressRefused(f"{host} has no address.")


class VettedClient(mqtt.Client):
    """A paho client that connects, on every connect and reconnect, only through
    `broker_socket`. paho keeps the host name for TLS (SNI and the certificate's
    host name check), so only the TCP connection goes to the vetted address. No
    proxy is used: a proxy would resolve the name itself, out of our sight."""

    vet_addresses = True

    def _create_socket_connection(self) -> socket.socket:
        return broker_socket(
            self._host,
            self._port,
            timeout=self._connect_timeout,
            vet=self.vet_addresses,
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


def broker_create(
    *, membership: Membership, username: str = "", password: str = "", **fields
) -> Broker:
    """Add a tenant's own broker. Secrets are encrypted on save and never echoed."""
    membership_require(membership=membership, action=Action.MANAGE)
    fields = _clean_fields(fields)
    broker = Broker(
        tenant=membership.tenant, username=username, password=password, **fields
    )
    if username or password:
        broker.secrets_changed_at = timezone.now()
    with transaction.atomic():
        _broker_validate(broker).save()
        audit_record(
            action="broker.created",
            tenant=membership.tenant,
            actor=membership.user,
            target=broker,
            data={
                "host": broker.host,
                "port": broker.port,
                "tls": broker.use_tls,
                "secrets_set": [
                    name
                    for name, value in (("username", username), ("password", password))
                    if value
                ],
            },
        )
    return broker


def broker_update(
    *,
    membership: Membership,
    broker: Broker,
    username: str | None = None,
    password: str | None = None,
    **fields,
) -> Broker:
    """Change a broker's settings.

    username/password None means 'keep as it is', "" clears it. Only the names of
    changed secrets reach the audit trail, never their values.
    """
    membership_require(membership=membership, action=Action.MANAGE)
    _require_own_broker(membership, broker)
    fields = _clean_fields(fields)
    with transaction.atomic():
        broker = Broker.objects.select_for_update().get(pk=broker.pk)
        changed = [
            name for name, value in fields.items() if getattr(broker, name) != value
        ]
        for name, value in fields.items():
            setattr(broker, name, value)
        secrets_changed = []
        if username is not None and username != broker.username:
            broker.username = username
            secrets_changed.append("username")
        if password is not None and password != broker.password:
            broker.password = password
            secrets_changed.append("password")
        if secrets_changed:
            broker.secrets_changed_at = timezone.now()
        _broker_validate(broker).save()
        if changed:
            audit_record(
                action="broker.updated",
                tenant=broker.tenant,
                actor=membership.user,
                target=broker,
                data={"fields": changed},
            )
        if secrets_changed:
            audit_record(
                action="broker.secret_changed",
                tenant=broker.tenant,
                actor=membership.user,
                target=broker,
                data={
                    "fields": secrets_changed,
                    "cleared": [
                        name for name in secrets_changed if getattr(broker, name) == ""
                    ],
                },
            )
    return broker


def broker_delete(*, membership: Membership, broker: Broker) -> None:
    """Delete a tenant's broker that no device uses any more."""
    membership_require(membership=membership, action=Action.MANAGE)
    _require_own_broker(membership, broker)
    with transaction.atomic():
        broker = Broker.objects.select_for_update().get(pk=broker.pk)
        in_use = broker.devices.count()
        if in_use:
            raise ValidationError(
                {
                    NON_FIELD_ERRORS: f"{broker.name} is used by {in_use} device(s): "
                    "move or remove them first."
                }
            )
        audit_record(
            action="broker.deleted",
            tenant=broker.tenant,
            actor=membership.user,
            target=broker,
            data={"host": broker.host, "port": broker.port},
        )
        broker.delete()


def broker_secrets_status(*, broker: Broker) -> dict[str, bool]:
    """Whether username and password are set, for pages that must not show them.

    Encrypted empty strings are tokens too, so this has to decrypt; only the
    booleans leave this function.
    """
    return {"username": bool(broker.username), "password": bool(broker.password)}


def broker_ensure_platform() -> Broker:
    """The shared platform broker row, kept in step with MQTT_URL."""
    url = urlparse(settings.MQTT_URL)
    host = url.hostname or "127.0.0.1"
    use_tls = url.scheme in ("mqtts", "ssl")
    port = url.port or (8883 if use_tls else 1883)
    wanted = {
        "tenant": None,
        "name": "poolsaas platform broker",
        "host": host,
        "port": port,
        "use_tls": use_tls,
        "username": settings.MQTT_USERNAME,
        "password": settings.MQTT_PASSWORD,
    }
    broker = Broker.objects.filter(is_platform=True).first()
    if broker is None:
        return Broker.objects.create(is_platform=True, **wanted)
    # Saved only when something differs: every save moves `updated_at`, which running
    # bridges read as "reconnect", so a bridge starting must not disturb the others.
    changed = [name for name, value in wanted.items() if getattr(broker, name) != value]
    if changed:
        for name in changed:
            setattr(broker, name, wanted[name])
        broker.save()
    return broker


@dataclass(frozen=True)
class ConnectionResult:
    ok: bool
    message: str


def _is_tls_handshake_failure(exc: OSError) -> bool:
    # A plain MQTT listener answers a TLS ClientHello by closing the connection
    # (reset, EOF) or with bytes that are not TLS (wrong version number).
    if isinstance(exc, ConnectionResetError | ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return True
    return isinstance(exc, ssl.SSLError) and "WRONG_VERSION_NUMBER" in str(exc)


def broker_test_connection(
    *,
    broker: Broker,
    timeout: float = 5.0,
    membership: Membership | None = None,
) -> ConnectionResult:
    """Try to connect and authenticate to the broker; say plainly what happened.

    Pages pass the membership (the test uses the stored secrets, so it needs the
    manage role); the bridge and admin call it without one. Never raises for a
    network problem and never puts a secret in the message.
    """
    if membership is not None:
        membership_require(membership=membership, action=Action.MANAGE)
        _require_own_broker(membership, broker)
    where = f"{broker.host}:{broker.port}"
    if not broker.is_platform:
        # Checked again here: the row may predate the rule, or its name may point
        # somewhere else by now.
        try:
            validate_broker_address(broker.host)
        except ValidationError as exc:
            return ConnectionResult(False, " ".join(exc.messages))
    outcome: dict = {}
    done = threading.Event()
    client = VettedClient(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"poolsaas-test-{broker.code.hex[:12]}",
        protocol=mqtt.MQTTv311,
    )
    client.vet_addresses = not broker.is_platform
    client.connect_timeout = timeout
    if broker.username or broker.password:
        client.username_pw_set(broker.username, broker.password or None)

    def on_connect(client, userdata, flags, reason_code, properties):
        outcome["code"] = reason_code
        done.set()

    client.on_connect = on_connect
    try:
        if broker.use_tls:
            context = ssl.create_default_context()
            if broker.ca_certificate:
                context.load_verify_locations(cadata=broker.ca_certificate)
            client.tls_set_context(context)
        client.connect(broker.host, broker.port, keepalive=10)
        client.loop_start()
        if not done.wait(timeout):
            return ConnectionResult(
                False,
                f"No MQTT answer from {where} within {timeout:g} s"
                + (
                    "." if broker.use_tls else ": is this a TLS port? Then turn TLS on."
                ),
            )
        code = outcome["code"]
        if code.is_failure:
            if code.value in (4, 5, 134, 135):
                return ConnectionResult(
                    False, f"{where} refused the username or password."
                )
            return ConnectionResult(False, f"{where} refused the connection: {code}.")
        return ConnectionResult(
            True,
            f"Connected to {where}" + (" over TLS." if broker.use_tls else "."),
        )
    except BrokerAddressRefused as exc:
        return ConnectionResult(False, str(exc))
    except ssl.SSLCertVerificationError as exc:
        return ConnectionResult(
            False,
            f"TLS to {where} failed: the broker's certificate was not accepted "
            f"({exc.verify_message}). Paste the CA certificate that signed it.",
        )
    except (socket.gaierror, UnicodeError):
        return ConnectionResult(
            False, f"The host name {broker.host!r} does not resolve."
        )
    except ConnectionRefusedError:
        return ConnectionResult(
            False,
            f"{where} refused the connection: nothing listens on that port.",
        )
    except TimeoutError:
        return ConnectionResult(False, f"{where} did not answer within {timeout:g} s.")
    except OSError as exc:  # ssl.SSLError is an OSError too
        if broker.use_tls and _is_tls_handshake_failure(exc):
            return ConnectionResult(
                False,
                f"TLS handshake with {where} failed: the server does not speak TLS "
                "on this port. Use the broker's TLS port (usually 8883) or turn "
                "TLS off.",
            )
        if isinstance(exc, ssl.SSLError):
            return ConnectionResult(
                False, f"TLS to {where} failed: {exc.reason or exc}."
            )
        return ConnectionResult(
            False, f"Could not reach {where}: {exc.strerror or exc}."
        )
    finally:
        # Disconnect first so the network thread ends at once instead of at its
        # next one-second poll.
        with contextlib.suppress(Exception):  # a half-open client may fail to close
            client.disconnect()
        client.loop_stop()
