"""The MQTT packets a gateway session handles, as the codec hands them over.

Plain values, decoupled from amqtt's classes: the session never sees those.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Connect:
    client_id: str  # "" when the client let the server choose
    username: str | None
    password: str | None
    keepalive: int
    clean_session: bool
    will: Will | None = None


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    filters: tuple[tuple[str, int], ...]  # (filter, requested QoS)


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    filters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PacketId:
    """PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK: a type and a packet id."""

    packet_type: int
    packet_id: int


@dataclass(frozen=True, slots=True)
class Bare:
    """PINGREQ, PINGRESP, DISCONNECT: a type alone."""

    packet_type: int


@dataclass(frozen=True, slots=True)
class Other:
    """CONNACK, SUBACK: server packets, kept for tests and for a session to refuse."""

    packet_type: int
    fields: dict = field(default_factory=dict)


Packet = Connect | Publish | Subscribe | Unsubscribe | PacketId | Bare | Other
