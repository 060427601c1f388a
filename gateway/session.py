"""One MQTT 3.1.1 client connection of the gateway, as a pure state machine.

No sockets, no database, no event loop: the consumer feeds it the bytes of each
WebSocket frame and the time, and carries out the actions it returns, in order.
Decisions that need the database come back as requests (`Authenticate`, `Subscribe`,
`Publish`, `Unsubscribe`) and the consumer answers the first two through
`authenticated()` and `subscribed()`. Nothing a client sends raises out of `feed`: a
protocol violation is a `Close` action.

Choices where MQTT leaves room (docs/gateway.md says them to clients):

- Only protocol level 4 ("MQTT", 3.1.1); levels 3 and 5 get CONNACK 0x01.
- Subscriptions are granted at QoS 0 or 1; a request for QoS 2 is granted QoS 1, the
  downgrade MQTT allows in the SUBACK. An incoming QoS 2 PUBLISH is accepted with the
  full PUBREC / PUBREL / PUBCOMP exchange and handed on once.
- Sessions are never kept: CONNACK always says "session present: 0", which is true
  for clean and persistent sessions alike, and nothing is stored after the close.
- A will is kept and handed on as a `Publish(will=True)` when the connection ends
  without DISCONNECT, like any publish (so it can only ever be a command).
- The retain flag of a client's PUBLISH is passed on; commands are never retained.
- PUBACK (and PUBREC) come after the `Publish` action: the consumer carries the
  actions out in order, so the acknowledgement means the publish was handled.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from amqtt.mqtt import packet as p

from gateway import codec, topics

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
MAX_CLIENT_ID = 128
MAX_SUBSCRIPTIONS = 100
MAX_QOS2_INFLIGHT = 32
MAX_QOS = 1


# --- actions ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send these bytes to the client, as one binary WebSocket frame."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """Close the socket (after the sends before it); always the last action."""

    reason: str


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Resolve the caller, then call `authenticated(code)`."""

    username: str | None
    password: str | None
    client_id: str
    clean_session: bool


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Resolve each filter among the caller's tenant's device topics, then call
    `subscribed(packet_id, codes)` with one code per filter: the QoS granted or
    0x80. Filters over the per-socket cap are already refused (`refused` holds
    their positions; their codes are ignored). Until the answer, the packets that
    follow wait, so they take effect in order."""

    packet_id: int
    filters: tuple[tuple[str, int], ...]
    refused: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """These filters are gone (UNSUBACK is already sent): leave what they needed."""

    filters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Publish:
    """The client published (or its will fired): a command if the topic is one."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    will: bool = False


Action = Send | Close | Authenticate | Subscribe | Unsubscribe | Publish


class State(enum.Enum):
    AWAIT_CONNECT = "await_connect"
    AUTHENTICATING = "authenticating"
    CONNECTED = "connected"
    CLOSED = "closed"


class _Violation(Exception):
    """A protocol error: close, and publish the will if any."""


class Session:
    """The MQTT side of one gateway socket; see the module docstring."""

    def __init__(
        self,
        *,
        now: float,
        max_packet: int = codec.MAX_PACKET,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
    ) -> None:
        self.state = State.AWAIT_CONNECT
        self.decoder = codec.StreamDecoder(max_packet=max_packet)
        self.max_packet = max_packet
        self.max_subscriptions = max_subscriptions
        self.client_id: str | None = None
        self.keepalive = 0
        # filter -> granted QoS, of the subscriptions acknowledged.
        self.subscriptions: dict[str, int] = {}
        self._pending_subscribe: dict[int, Subscribe] = {}
        self._qos2: set[int] = set()  # incoming QoS 2 ids awaiting PUBREL
        self._next_id = 0
        self._will: codec.Will | None = None
        self._deadline: float | None = now + connect_timeout
        self._now = now  # of the last feed: when the packets it completes arrived
        self.close_reason: str | None = None

    # --- the consumer's calls ----------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def _waiting(self) -> bool:
        return self.state is State.AUTHENTICATING or bool(self._pending_subscribe)

    @property
    def deadline(self) -> float | None:
        """When `tick` must next be called (None: no timer needed)."""
        return None if self.closed else self._deadline

    def feed(self, data: bytes, now: float) -> list[Action]:
        """Bytes of one WebSocket frame, received at `now` (monotonic seconds)."""
        if self.closed:
            return []
        self._now = now
        self.decoder.feed(bytes(data))
        if self._waiting:
            # Packets after CONNECT or SUBSCRIBE wait for the consumer's answer
            # (MQTT lets a client send them [MQTT-3.1.4-5]; handling them first
            # could undo an UNSUBSCRIBE), within the bound of one packet.
            if self.decoder.buffered > self.max_packet + codec.MAX_HEADER:
                return self._close("too much data while waiting")
            return []
        return self._drain()

    def tick(self, now: float) -> list[Action]:
        """Closes the connection once its deadline (connect or keepalive) passed."""
        if self.closed or self._deadline is None or now < self._deadline:
            return []
        if self.state is State.AWAIT_CONNECT:
            return self._close("no CONNECT in time")
        if self.state is State.AUTHENTICATING:
            return []  # the consumer is still answering; keepalive resumes after
        return self._close("keepalive timeout")

    def authenticated(self, code: int, now: float | None = None) -> list[Action]:
        """The answer to `Authenticate`: codec.ACCEPTED or a CONNACK refusal code
        (BAD_CREDENTIALS, NOT_AUTHORISED, SERVER_UNAVAILABLE, IDENTIFIER_REJECTED).
        `now`, when given, restarts the keepalive period: the time the answer took
        is not the client's silence."""
        if self.state is not State.AUTHENTICATING:
            return []
        if now is not None and self.keepalive:
            self._deadline = now + 1.5 * self.keepalive
        if code != codec.ACCEPTED:
            code = code if code in codec.CONNACK_CODES else codec.NOT_AUTHORISED
            self._will = None  # a refused client has no session, hence no will
            return [Send(codec.connack(code)), *self._close("connection refused")]
        self.state = State.CONNECTED
        actions: list[Action] = [Send(codec.connack(codec.ACCEPTED))]
        if self.decoder.buffered:
            actions += self._drain()
        return actions

    def subscribed(self, packet_id: int, codes: list[int]) -> list[Action]:
        """The answer to `Subscribe`: one code per filter (QoS granted or 0x80)."""
        request = self._pending_subscribe.pop(packet_id, None)
        if self.closed or request is None:
            return []
        out = []
        for i, (topic_filter, wanted) in enumerate(request.filters):
            code = codes[i] if i < len(codes) else codec.SUBACK_FAILURE
            if i in request.refused or code not in (0, 1, 2):
                out.append(codec.SUBACK_FAILURE)
                continue
            granted = min(code, wanted, MAX_QOS)
            self.subscriptions[topic_filter] = granted
            out.append(granted)
        return [Send(codec.suback(packet_id, out)), *self._drain()]

    def deliver(
        self, topic: str, payload: bytes, *, retain: bool = False, qos: int = 0
    ) -> list[Action]:
        """A message for the client; sent once if a subscription matches, at the
        lower of its QoS and the highest granted among the matching filters."""
        if self.state is not State.CONNECTED:
            return []
        granted = [q for f, q in self.subscriptions.items() if topics.matches(f, topic)]
        if not granted:
            return []
        qos = min(qos, max(granted))
        packet_id = self._packet_id() if qos else None
        data = codec.publish(
            topic, payload, qos=qos, retain=retain, packet_id=packet_id
        )
        return [Send(data)]

    def terminate(self, reason: str) -> list[Action]:
        """The server ends the connection (membership changed, a newer socket took
        the client id, the server stops): the will fires, as MQTT says."""
        if self.closed:
            return []
        return self._close(reason)

    # --- internals --------------------------------------------------------------

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def _close(self, reason: str) -> list[Action]:
        actions: list[Action] = []
        if self._will is not None and self.state is State.CONNECTED:
            will = self._will
            actions.append(
                Publish(will.topic, will.payload, will.qos, will.retain, will=True)
            )
        self._will = None
        self.state = State.CLOSED
        self.close_reason = reason = reason[:200]
        self.decoder.clear()
        self.subscriptions.clear()
        self._pending_subscribe.clear()
        actions.append(Close(reason))
        return actions

    def _drain(self) -> list[Action]:
        """Handle every whole packet buffered; a violation ends with a Close after
        the actions of the packets before it."""
        actions: list[Action] = []
        try:
            while (
                self.state in (State.AWAIT_CONNECT, State.CONNECTED)
                and not self._waiting
            ):
                try:
                    packet = self.decoder.next_packet()
                except codec.UnsupportedProtocol as exc:
                    if self.state is State.AWAIT_CONNECT and exc.answerable:
                        connack = codec.connack(codec.UNACCEPTABLE_PROTOCOL)
                        actions.append(Send(connack))
                    raise _Violation(str(exc)) from None
                except codec.MalformedPacket as exc:
                    raise _Violation(str(exc)) from None
                if packet is None:
                    break
                if self.keepalive:
                    self._deadline = self._now + 1.5 * self.keepalive
                actions += self._handle(packet)
            if self.state is State.AWAIT_CONNECT and self.decoder.buffered:
                # Say no at once to what cannot become a CONNECT.
                if self.decoder.peek() != (p.CONNECT << 4):
                    raise _Violation("first packet is not CONNECT")
        except _Violation as exc:
            actions += self._close(str(exc))
        except Exception:
            # Never expected (the fuzz tests look for this reason): the socket
            # closes rather than the consumer failing.
            logger.exception("gateway session failed on client data")
            actions += self._close("internal error")
        return actions

    def _handle(self, packet: codec.Packet) -> list[Action]:
        if self.state is State.AWAIT_CONNECT:
            if not isinstance(packet, codec.Connect):
                raise _Violation("first packet is not CONNECT")  # [MQTT-3.1.0-1]
            return self._connect(packet)
        if isinstance(packet, codec.Connect):
            raise _Violation("second CONNECT")  # [MQTT-3.1.0-2]
        if isinstance(packet, codec.Publish):
            return self._publish(packet)
        if isinstance(packet, codec.Subscribe):
            return self._subscribe(packet)
        if isinstance(packet, codec.Unsubscribe):
            for topic_filter in packet.filters:
                self.subscriptions.pop(topic_filter, None)
            return [
                Send(codec.unsuback(packet.packet_id)),
                Unsubscribe(packet.filters),
            ]
        if isinstance(packet, codec.PacketId):
            if packet.packet_type == p.PUBACK:
                return []  # for a QoS 1 delivery; nothing is kept to retry
            if packet.packet_type == p.PUBREL:
                self._qos2.discard(packet.packet_id)
                return [Send(codec.pubcomp(packet.packet_id))]  # [MQTT-4.3.3]
            raise _Violation("unexpected acknowledgement")  # we never send QoS 2
        if isinstance(packet, codec.Bare):
            if packet.packet_type == p.PINGREQ:
                return [Send(codec.pingresp())]
            if packet.packet_type == p.DISCONNECT:
                self._will = None  # a clean DISCONNECT discards the will
                return self._close("client disconnected")
        raise _Violation("a server packet from the client")

    def _connect(self, packet: codec.Connect) -> list[Action]:
        client_id = packet.client_id
        if (not client_id and not packet.clean_session) or len(
            client_id
        ) > MAX_CLIENT_ID:
            # [MQTT-3.1.3-8]; and ids are kept small.
            self._will = None
            return [
                Send(codec.connack(codec.IDENTIFIER_REJECTED)),
                *self._close("client id rejected"),
            ]
        self.client_id = client_id
        self.keepalive = packet.keepalive
        self._will = packet.will
        self._deadline = (
            self._now + 1.5 * packet.keepalive if packet.keepalive else None
        )
        self.state = State.AUTHENTICATING
        return [
            Authenticate(
                username=packet.username,
                password=packet.password,
                client_id=client_id,
                clean_session=packet.clean_session,
            )
        ]

    def _publish(self, packet: codec.Publish) -> list[Action]:
        action = Publish(packet.topic, packet.payload, packet.qos, packet.retain)
        if packet.qos == 0:
            return [action]
        # The acknowledgement follows the hand-on: a client that has its PUBACK knows
        # the gateway has decided (a command sent, or the publish refused), and a
        # crash in between loses no acknowledged message.
        if packet.qos == 1:
            return [action, Send(codec.puback(packet.packet_id))]
        # QoS 2, method B of MQTT 4.3.3: hand on at the first PUBLISH of an id,
        # acknowledge its repeats without handing them on again.
        if packet.packet_id in self._qos2:
            return [Send(codec.pubrec(packet.packet_id))]
        if len(self._qos2) >= MAX_QOS2_INFLIGHT:
            raise _Violation("too many QoS 2 messages in flight")
        self._qos2.add(packet.packet_id)
        return [action, Send(codec.pubrec(packet.packet_id))]

    def _subscribe(self, packet: codec.Subscribe) -> list[Action]:
        room = self.max_subscriptions - len(self.subscriptions)
        refused = set()
        new: set[str] = set()
        for i, (topic_filter, _) in enumerate(packet.filters):
            if topic_filter in self.subscriptions or topic_filter in new:
                continue  # a repeat replaces; it takes no more room
            if len(new) >= room:
                refused.add(i)
            else:
                new.add(topic_filter)
        request = Subscribe(packet.packet_id, packet.filters, frozenset(refused))
        self._pending_subscribe[packet.packet_id] = request
        return [request]
