"""Writes for brokers, pools and devices. One function per state change, used by pages,
the API, admin and management commands alike."""

import contextlib
import socket
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import urlparse

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
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


def _validated(instance, exclude=None):
    instance.full_clean(exclude=exclude)
    return instance


def broker_create(
    *, membership: Membership, username: str = "", password: str = "", **fields
) -> Broker:
    """Add a tenant's own broker. Secrets are encrypted on save and never echoed."""
    membership_require(membership=membership, action=Action.MANAGE)
    unknown = set(fields) - set(BROKER_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown broker fields: {', '.join(sorted(unknown))}.")
    broker = Broker(
        tenant=membership.tenant, username=username, password=password, **fields
    )
    if username or password:
        broker.secrets_changed_at = timezone.now()
    with transaction.atomic():
        _validated(broker).save()
        audit_record(
            action="broker.created",
            tenant=membership.tenant,
            actor=membership.user,
            target=broker,
            data={
                "host": broker.host,
                "port": broker.port,
                "secrets_set": bool(username or password),
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
    """Change a broker's settings; username/password None means 'keep as it is'."""
    membership_require(membership=membership, action=Action.MANAGE)
    unknown = set(fields) - set(BROKER_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown broker fields: {', '.join(sorted(unknown))}.")
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
        _validated(broker).save()
        if changed:
            audit_record(
                action="broker.updated",
                tenant=broker.tenant,
                actor=membership.user,
                target=broker,
                data={"fields": changed},
            )
        if secrets_changed:
            # Which secrets changed, never their values.
            audit_record(
                action="broker.secret_changed",
                tenant=broker.tenant,
                actor=membership.user,
                target=broker,
                data={"fields": secrets_changed},
            )
    return broker


def broker_delete(*, membership: Membership, broker: Broker) -> None:
    membership_require(membership=membership, action=Action.MANAGE)
    if broker.devices.exists():
        raise ValidationError("Move or remove this broker's devices first.")
    with transaction.atomic():
        audit_record(
            action="broker.deleted",
            tenant=broker.tenant,
            actor=membership.user,
            target=broker,
        )
        broker.delete()


def broker_ensure_platform() -> Broker:
    """The shared platform broker row, kept in step with MQTT_URL."""
    url = urlparse(settings.MQTT_URL)
    host = url.hostname or "127.0.0.1"
    use_tls = url.scheme in ("mqtts", "ssl")
    port = url.port or (8883 if use_tls else 1883)
    broker, _ = Broker.objects.update_or_create(
        is_platform=True,
        defaults={
            "tenant": None,
            "name": "poolsaas platform broker",
            "host": host,
            "port": port,
            "use_tls": use_tls,
            "username": settings.MQTT_USERNAME,
            "password": settings.MQTT_PASSWORD,
        },
    )
    return broker


@dataclass(frozen=True)
class ConnectionResult:
    ok: bool
    message: str


def broker_test_connection(*, broker: Broker, timeout: float = 5.0) -> ConnectionResult:
    """Try to connect and authenticate to the broker; say plainly what happened."""
    import paho.mqtt.client as mqtt

    outcome: dict = {}
    done = threading.Event()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"poolsaas-test-{broker.code.hex[:12]}",
        protocol=mqtt.MQTTv311,
    )
    if broker.username or broker.password:
        client.username_pw_set(broker.username, broker.password or None)
    try:
        if broker.use_tls:
            context = ssl.create_default_context()
            if broker.ca_certificate:
                context.load_verify_locations(cadata=broker.ca_certificate)
            client.tls_set_context(context)

        def on_connect(client, userdata, flags, reason_code, properties):
            outcome["code"] = reason_code
            done.set()

        client.on_connect = on_connect
        client.connect(broker.host, broker.port, keepalive=10)
        client.loop_start()
        if not done.wait(timeout):
            return ConnectionResult(
                False,
                f"No answer from {broker.host}:{broker.port} within {timeout:.0f} s.",
            )
        code = outcome["code"]
        if code.is_failure:
            if code.value in (4, 5, 134, 135):
                return ConnectionResult(
                    False, "The broker refused the username or password."
                )
            return ConnectionResult(
                False, f"The broker refused the connection: {code}."
            )
        return ConnectionResult(
            True,
            f"Connected to {broker.host}:{broker.port}"
            + (" over TLS." if broker.use_tls else "."),
        )
    except ssl.SSLError as exc:
        return ConnectionResult(False, f"TLS failed: {exc.reason or exc}.")
    except (socket.gaierror, UnicodeError):
        return ConnectionResult(
            False, f"The host name {broker.host!r} does not resolve."
        )
    except ConnectionRefusedError:
        return ConnectionResult(
            False, f"{broker.host}:{broker.port} refused the connection."
        )
    except TimeoutError:
        return ConnectionResult(False, f"{broker.host}:{broker.port} did not answer.")
    except OSError as exc:
        return ConnectionResult(
            False,
            f"Could not reach {broker.host}:{broker.port}: {exc.strerror or exc}.",
        )
    finally:
        client.loop_stop()
        with contextlib.suppress(Exception):  # a half-open client may fail to close
            client.disconnect()
