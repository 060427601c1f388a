"""Where our servers may connect for a tenant: host name rules, the check that an
address is on the public internet (no SSRF into our own network), and the vetted
socket and paho client that every connection to a tenant's broker goes through."""

import contextlib
import ipaddress
import re
import socket

import paho.mqtt.client as mqtt
from django.conf import settings
from django.core.exceptions import ValidationError

# One DNS label: letters, digits and inner hyphens, at most 63 characters.
_HOST_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


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
