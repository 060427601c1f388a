"""MQTT 3.1.1 packets on a byte stream, through amqtt's packet classes.

The only module of the gateway that knows amqtt. A WebSocket frame may carry several
packets or a part of one, so `StreamDecoder` buffers bytes and cuts whole packets by
the fixed header and its remaining length (amqtt's `MQTTFixedHeader` reads it); each
packet is then decoded by amqtt's class for its type from an in-memory reader. amqtt's
readers are coroutines, but an in-memory read never waits, so one `send(None)` runs a
decode to its end without an event loop.

amqtt is lenient where MQTT is not (a string that is not UTF-8 comes back as the
text of its repr, a truncated CONNECT field as None, bytes after the last field are
left unread), so every decoded packet is encoded again by amqtt and must give back
the exact bytes received: anything else is malformed. The MQTT rules amqtt does not
check (fixed-header flags, packet ids, QoS, wildcards, NUL) are checked here, so the
session only ever sees well-formed packets, as the values of `gateway.packets`.
"""

from __future__ import annotations

import struct
from typing import Any

from amqtt.adapters import ReaderAdapter
from amqtt.errors import AMQTTError, CodecError, MQTTError, NoDataError
from amqtt.mqtt import packet as p
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.connect import ConnectPacket, ConnectVariableHeader
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.pingreq import PingReqPacket
from amqtt.mqtt.pingresp import PingRespPacket
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.pubcomp import PubcompPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.mqtt.suback import SubackPacket
from amqtt.mqtt.subscribe import SubscribePacket
from amqtt.mqtt.unsuback import UnsubackPacket
from amqtt.mqtt.unsubscribe import UnsubscribePacket

from gateway import topics
from gateway.packets import (
    Bare,
    Connect,
    Other,
    Packet,
    PacketId,
    Publish,
    Subscribe,
    Unsubscribe,
    Will,
)

__all__ = [
    "Bare",
    "Connect",
    "Other",
    "Packet",
    "PacketId",
    "Publish",
    "Subscribe",
    "Unsubscribe",
    "Will",
]

MAX_PACKET = 64 * 1024
# A fixed header is one type byte and at most four remaining-length bytes.
MAX_HEADER = 5

# CONNACK return codes (MQTT 3.1.1, 3.2.2.3).
ACCEPTED = 0x00
UNACCEPTABLE_PROTOCOL = 0x01
IDENTIFIER_REJECTED = 0x02
SERVER_UNAVAILABLE = 0x03
BAD_CREDENTIALS = 0x04
NOT_AUTHORISED = 0x05
CONNACK_CODES = frozenset(range(6))
SUBACK_FAILURE = 0x80

# What amqtt, struct and our own checks raise for bad bytes.
_DECODE_ERRORS = (
    AMQTTError,
    MQTTError,
    CodecError,
    NoDataError,
    ValueError,
    struct.error,
    IndexError,
)

# Fixed-header flags each packet type must carry [MQTT-2.2.2-1]; PUBLISH has its own.
_FLAGS = {
    p.CONNECT: 0,
    p.CONNACK: 0,
    p.PUBACK: 0,
    p.PUBREC: 0,
    p.PUBREL: 2,
    p.PUBCOMP: 0,
    p.SUBSCRIBE: 2,
    p.SUBACK: 0,
    p.UNSUBSCRIBE: 2,
    p.UNSUBACK: 0,
    p.PINGREQ: 0,
    p.PINGRESP: 0,
    p.DISCONNECT: 0,
}
_CLASSES: dict[int, Any] = {
    p.CONNECT: ConnectPacket,
    p.CONNACK: ConnackPacket,
    p.PUBLISH: PublishPacket,
    p.PUBACK: PubackPacket,
    p.PUBREC: PubrecPacket,
    p.PUBREL: PubrelPacket,
    p.PUBCOMP: PubcompPacket,
    p.SUBSCRIBE: SubscribePacket,
    p.SUBACK: SubackPacket,
    p.UNSUBSCRIBE: UnsubscribePacket,
    p.UNSUBACK: UnsubackPacket,
    p.PINGREQ: PingReqPacket,
    p.PINGRESP: PingRespPacket,
    p.DISCONNECT: DisconnectPacket,
}


class MalformedPacket(ValueError):
    """The bytes are not MQTT 3.1.1: the connection must be closed."""


class PacketTooLarge(MalformedPacket):
    """A packet whose remaining length is over the decoder's limit."""


class UnsupportedProtocol(MalformedPacket):
    """A CONNECT of another protocol name or level than MQTT 3.1.1.

    `level` is set when the name is an MQTT one ("MQTT", "MQIsdp"): such a client is
    told so with CONNACK 0x01; any other name is closed without an answer
    [MQTT-3.1.2-1, MQTT-3.1.2-2].
    """

    def __init__(self, name: str, level: int) -> None:
        super().__init__(f"protocol {name[:16]!r} level {level} is not MQTT 3.1.1")
        self.name = name
        self.level = level

    @property
    def answerable(self) -> bool:
        return self.name in ("MQTT", "MQIsdp")


# --- the in-memory reader -------------------------------------------------------------


class _Reader(ReaderAdapter):
    """amqtt's reader interface over a bytes object, counting what was read."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.pos = 0

    async def read(self, n: int = -1) -> bytes:
        start = self.pos
        end = len(self._data) if n < 0 else min(len(self._data), start + n)
        self.pos = end
        return self._data[start:end]

    def feed_eof(self) -> None:
        pass


def _run(coro):
    """Run an amqtt decode coroutine over a `_Reader` to its end, synchronously."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("an in-memory read suspended")  # never with _Reader


# --- decoding ---------------------------------------------------------------------


def _packet_id(value: int | None) -> int:
    # SUBSCRIBE, UNSUBSCRIBE and QoS > 0 PUBLISH carry a non-zero id [MQTT-2.3.1-1].
    if not value:
        raise MalformedPacket("packet id 0")
    return value


def _topic_name(name: str) -> str:
    if not topics.is_valid_topic_name(name):
        raise MalformedPacket("invalid topic name")
    return name


def _connect(fixed, body: bytes) -> Connect:
    reader = _Reader(body)
    header = _run(ConnectVariableHeader.from_stream(reader, fixed))
    if header.proto_name != "MQTT" or header.proto_level != 4:
        raise UnsupportedProtocol(header.proto_name, header.proto_level)
    if header.reserved_flag:
        raise MalformedPacket("CONNECT reserved flag set")  # [MQTT-3.1.2-3]
    if not header.will_flag and (header.will_qos or header.will_retain_flag):
        raise MalformedPacket("will QoS or retain without a will")  # [MQTT-3.1.2-11]
    if header.will_qos == 3:
        raise MalformedPacket("will QoS 3")  # [MQTT-3.1.2-14]
    if header.password_flag and not header.username_flag:
        raise MalformedPacket("password without username")  # [MQTT-3.1.2-22]
    reader.pos = 0
    packet = _run(ConnectPacket.from_stream(reader, fixed))
    payload = packet.payload
    client_id = "" if payload.client_id_is_random else payload.client_id
    if payload.client_id_is_random:
        payload.client_id = ""  # amqtt made one up; the bytes had none
    _same_bytes(packet, body)
    # amqtt reads a missing field as None, which encodes back to nothing.
    if (header.username_flag and payload.username is None) or (
        header.password_flag and payload.password is None
    ):
        raise MalformedPacket("CONNECT flag without its field")
    if header.will_flag and (
        payload.will_topic is None or payload.will_message is None
    ):
        raise MalformedPacket("CONNECT will flag without a will")
    for text in (client_id, payload.username, payload.password):
        if text is not None and "\x00" in text:
            raise MalformedPacket("NUL in a CONNECT string")  # [MQTT-1.5.3-2]
    will = None
    if header.will_flag:
        will = Will(
            topic=_topic_name(payload.will_topic),
            payload=bytes(payload.will_message),
            qos=header.will_qos,
            retain=header.will_retain_flag,
        )
    return Connect(
        client_id=client_id,
        username=payload.username,
        password=payload.password,
        keepalive=header.keep_alive,
        clean_session=header.clean_session_flag,
        will=will,
    )


def _same_bytes(packet, body: bytes) -> None:
    """amqtt read the packet faithfully only if it encodes back to the same bytes."""
    vh, pl = packet.variable_header, packet.payload
    again = (vh.to_bytes() if vh is not None else b"") + (
        pl.to_bytes(packet.fixed_header, vh) if pl is not None else b""
    )
    if again != body:
        raise MalformedPacket(f"malformed {type(packet).__name__}")


def _decode(first: int, remaining: int, body: bytes) -> Packet:
    packet_type, flags = first >> 4, first & 0x0F
    cls = _CLASSES.get(packet_type)
    if cls is None:
        raise MalformedPacket(f"reserved packet type {packet_type}")
    if packet_type == p.PUBLISH:
        if (flags >> 1) & 3 == 3:
            raise MalformedPacket("PUBLISH QoS 3")  # [MQTT-3.3.1-4]
        if flags & 0x08 and not flags & 0x06:
            raise MalformedPacket("DUP on a QoS 0 PUBLISH")  # [MQTT-3.3.1-2]
    elif flags != _FLAGS[packet_type]:
        raise MalformedPacket(f"bad flags {flags:#x} on type {packet_type}")
    fixed = p.MQTTFixedHeader(packet_type, flags, remaining)
    if packet_type == p.CONNECT:
        return _connect(fixed, body)
    packet = _run(cls.from_stream(_Reader(body), fixed_header=fixed))
    _same_bytes(packet, body)
    if packet_type == p.PUBLISH:
        qos = packet.qos
        return Publish(
            topic=_topic_name(packet.topic_name),
            payload=bytes(packet.data or b""),
            qos=qos,
            retain=packet.retain_flag,
            dup=packet.dup_flag,
            packet_id=_packet_id(packet.packet_id) if qos else None,
        )
    if packet_type == p.SUBSCRIBE:
        filters = tuple(packet.payload.topics)
        if not filters:
            raise MalformedPacket("SUBSCRIBE without a filter")  # [MQTT-3.8.3-3]
        for topic_filter, qos in filters:
            if qos > 2:
                raise MalformedPacket("requested QoS over 2")  # [MQTT-3.8.3-4]
            if not topics.is_valid_filter(topic_filter):
                raise MalformedPacket("invalid topic filter")
        return Subscribe(_packet_id(packet.variable_header.packet_id), filters)
    if packet_type == p.UNSUBSCRIBE:
        names = tuple(packet.payload.topics)
        if not names:
            raise MalformedPacket("UNSUBSCRIBE without a filter")  # [MQTT-3.10.3-2]
        if not all(topics.is_valid_filter(f) for f in names):
            raise MalformedPacket("invalid topic filter")
        return Unsubscribe(_packet_id(packet.variable_header.packet_id), names)
    if packet_type in (p.PUBACK, p.PUBREC, p.PUBREL, p.PUBCOMP, p.UNSUBACK):
        return PacketId(packet_type, packet.variable_header.packet_id)
    if packet_type == p.CONNACK:
        vh = packet.variable_header
        return Other(
            packet_type, {"session_present": vh.session_parent, "code": vh.return_code}
        )
    if packet_type == p.SUBACK:
        return Other(
            packet_type,
            {
                "packet_id": packet.variable_header.packet_id,
                "codes": list(packet.payload.return_codes),
            },
        )
    return Bare(packet_type)


class StreamDecoder:
    """Whole packets out of a byte stream fed in pieces of any size.

    `feed(data)` buffers; `next_packet()` returns the next whole packet, or None when
    more bytes are needed, or raises MalformedPacket (then the stream is unusable). A
    packet over `max_packet` is refused as soon as its fixed header is read, so the
    buffer never holds more than one packet's bytes plus the last piece fed.
    """

    def __init__(self, *, max_packet: int = MAX_PACKET) -> None:
        self.max_packet = max_packet
        self._buffer = bytearray()
        self.failed = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def clear(self) -> None:
        """Drop what is buffered (the connection is over)."""
        self._buffer.clear()

    def peek(self) -> int | None:
        """The first buffered byte (a packet's type and flags), if any."""
        return self._buffer[0] if self._buffer else None

    def feed(self, data: bytes) -> None:
        if self.failed:
            raise MalformedPacket("stream already failed")
        self._buffer += data

    def next_packet(self) -> Packet | None:
        if self.failed:
            raise MalformedPacket("stream already failed")
        try:
            return self._next()
        except _DECODE_ERRORS as exc:
            self.failed = True
            self._buffer.clear()
            if isinstance(exc, MalformedPacket):
                raise
            raise MalformedPacket(f"{type(exc).__name__}: {exc}"[:200]) from None

    def _next(self) -> Packet | None:
        buf = self._buffer
        if not buf:
            return None
        reader = _Reader(bytes(buf[:MAX_HEADER]))
        fixed = _run(p.MQTTFixedHeader.from_stream(reader))
        if fixed is None:
            if len(buf) >= MAX_HEADER:  # five bytes and the length still goes on
                raise MalformedPacket("remaining length over four bytes")
            return None
        if fixed.remaining_length > self.max_packet:
            raise PacketTooLarge(f"packet of {fixed.remaining_length} bytes")
        end = reader.pos + fixed.remaining_length
        if len(buf) < end:
            return None
        body = bytes(buf[reader.pos : end])
        del buf[:end]
        return _decode(
            (fixed.packet_type << 4) | fixed.flags, fixed.remaining_length, body
        )


# --- encoding ---------------------------------------------------------------------


def connack(code: int, *, session_present: bool = False) -> bytes:
    if code not in CONNACK_CODES:
        raise ValueError(f"CONNACK code {code}")
    # Session present is 0 whenever the connection is refused [MQTT-3.2.2-4].
    present = 1 if session_present and code == ACCEPTED else 0
    return ConnackPacket.build(present, code).to_bytes()


def suback(packet_id: int, codes: list[int]) -> bytes:
    for code in codes:
        if code not in (0, 1, 2, SUBACK_FAILURE):
            raise ValueError(f"SUBACK code {code}")
    return SubackPacket.build(packet_id, list(codes)).to_bytes()


def unsuback(packet_id: int) -> bytes:
    return UnsubackPacket.build(packet_id).to_bytes()


def puback(packet_id: int) -> bytes:
    return PubackPacket.build(packet_id).to_bytes()


def pubrec(packet_id: int) -> bytes:
    return PubrecPacket.build(packet_id).to_bytes()


def pubcomp(packet_id: int) -> bytes:
    return PubcompPacket.build(packet_id).to_bytes()


def pingresp() -> bytes:
    return PingRespPacket.build().to_bytes()


def publish(
    topic: str,
    payload: bytes,
    *,
    qos: int = 0,
    retain: bool = False,
    packet_id: int | None = None,
) -> bytes:
    if qos not in (0, 1, 2) or (qos > 0) != bool(packet_id):
        raise ValueError("a packet id with QoS 1 or 2, none with QoS 0")
    packet = PublishPacket.build(
        _topic_name(topic), bytes(payload), packet_id, False, qos, retain
    )
    return packet.to_bytes()


def decode_all(data: bytes, *, max_packet: int = MAX_PACKET) -> list[Packet]:
    """Every packet of a complete byte string (tests, tools); MalformedPacket if any
    bytes are left over or bad."""
    decoder = StreamDecoder(max_packet=max_packet)
    decoder.feed(data)
    out = []
    while (packet := decoder.next_packet()) is not None:
        out.append(packet)
    if decoder.buffered:
        raise MalformedPacket("incomplete packet at the end")
    return out
