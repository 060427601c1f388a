"""The "Test connection" button: connect and log in once, say plainly what happened."""

import contextlib
import socket
import ssl
import threading
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from django.core.exceptions import ValidationError

from devices.models import Broker
from devices.services.brokers.addresses import (
    BrokerAddressRefused,
    VettedClient,
    validate_broker_address,
)
from devices.services.brokers.validation import _require_own_broker
from tenants.models import Membership
from tenants.roles import Action
from tenants.selectors import membership_require


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
    pending: bool = False,
) -> ConnectionResult:
    """Try to connect and authenticate to the broker; say plainly what happened.

    Pages pass the membership (the test uses the stored secrets, so it needs the
    manage role); the bridge and admin call it without one. Never raises for a
    network problem and never puts a secret in the message. `pending` tests the
    staged credentials of a rotation instead of the current ones.
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
    if pending and broker.credentials_pending_since is None:
        return ConnectionResult(False, "No new credentials are staged.")
    username, password = (
        (broker.pending_username, broker.pending_password)
        if pending
        else (broker.username, broker.password)
    )
    if username or password:
        client.username_pw_set(username, password or None)

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
                    False,
                    f"{where} refused the "
                    + ("new " if pending else "")
                    + "username or password.",
                )
            return ConnectionResult(False, f"{where} refused the connection: {code}.")
        return ConnectionResult(
            True,
            f"Connected to {where}"
            + (" over TLS" if broker.use_tls else "")
            + (" with the new credentials." if pending else "."),
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
