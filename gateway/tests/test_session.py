"""The pure session driven by MQTT.js's bytes, as the consumer will drive it."""

import pytest

from gateway import codec
from gateway.session import (
    MAX_CLIENT_ID,
    Authenticate,
    Close,
    Publish,
    Send,
    Session,
    State,
    Subscribe,
    Unsubscribe,
)
from gateway.tests import mqttjs

PUMP_SET = "devices/esp32-pool-01/pump/set"


def sent(actions):
    return [a.data for a in actions if isinstance(a, Send)]


def decoded(actions):
    """The server packets of the Send actions, through the codec's decoder."""
    return codec.decode_all(b"".join(sent(actions)))


class Consumer:
    """What the Channels consumer will do with the actions: answer the requests."""

    def __init__(self, session, *, auth=codec.ACCEPTED, grant=lambda f: 0):
        self.session = session
        self.auth = auth
        self.grant = grant
        self.log = []

    def run(self, actions):
        for action in actions:
            self.log.append(action)
            if isinstance(action, Authenticate):
                self.run(self.session.authenticated(self.auth))
            elif isinstance(action, Subscribe):
                codes = [self.grant(f) for f, _ in action.filters]
                self.run(self.session.subscribed(action.packet_id, codes))

    def feed(self, frames, start=0.0, step=0.001):
        for i, frame in enumerate(frames):
            self.run(self.session.feed(frame, start + i * step))
        return self.log


def of(kind, log):
    return [a for a in log if isinstance(a, kind)]


@pytest.mark.parametrize("how", ["captured", "bytewise", "merged"])
def test_whole_mqttjs_session(how):
    rec = mqttjs.recording()
    session = Session(now=0.0)
    consumer = Consumer(session, grant=lambda f: 0x80 if f in ("x/y", "$SYS/#") else 1)
    log = consumer.feed(mqttjs.splittings()[how])

    (auth,) = of(Authenticate, log)
    assert auth == Authenticate(
        username=rec["username"],
        password=rec["password"],
        client_id="dashboard-user-123-a1b2c3",
        clean_session=True,
    )
    answers = decoded(log)
    kinds = [type(p).__name__ for p in answers]
    # CONNACK, six SUBACKs, PUBACK, PUBREC, PUBCOMP, PINGRESP, UNSUBACK.
    assert kinds == ["Other"] * 7 + ["PacketId"] * 3 + ["Bare", "PacketId"]
    assert answers[0].fields == {"session_present": 0, "code": 0}
    # QoS 0 asked, 0 granted; the wildcard SUBACK: 1, 1, 1, 0x80, 0x80.
    assert [a.fields["codes"] for a in answers[1:6]] == [[0]] * 5
    assert answers[6].fields["codes"] == [1, 1, 1, 0x80, 0x80]
    assert [a.packet_type for a in answers[7:10]] == [4, 5, 7]  # PUBACK/REC/COMP
    assert answers[10] == codec.Bare(13)  # PINGRESP
    assert answers[11].packet_type == 11  # UNSUBACK

    publishes = of(Publish, log)
    assert [(p.topic, p.payload, p.qos) for p in publishes] == [
        (PUMP_SET, b"ON", 0),
        ("devices/esp32-pool-01/valve/set", b"2", 1),
        ("devices/esp32-pool-01/timer/set", b'{"mode":1,"duration":600}', 2),
    ]
    assert not any(p.will for p in publishes)
    assert of(Unsubscribe, log) == [Unsubscribe((rec["topics"][0],))]
    assert log[-1] == Close("client disconnected")
    assert session.closed and session.feed(b"\xc0\x00", 1.0) == []


def connected(keepalive=60, now=0.0, **kw):
    session = Session(now=now, **kw)
    [auth] = session.feed(connect_packet(keepalive=keepalive), now)
    assert isinstance(auth, Authenticate)
    assert sent(session.authenticated(codec.ACCEPTED)) == [b"\x20\x02\x00\x00"]
    return session


def fixed(first: int, body: bytes) -> bytes:
    n, length = len(body), bytearray()
    while True:
        n, digit = divmod(n, 128)
        length.append(digit | (0x80 if n else 0))
        if not n:
            return bytes([first]) + bytes(length) + body


def subscribe(packet_id: int, *filters: tuple[str, int]) -> bytes:
    body = packet_id.to_bytes(2, "big")
    for f, qos in filters:
        body += len(f).to_bytes(2, "big") + f.encode() + bytes([qos])
    return fixed(0x82, body)


def unsubscribe(packet_id: int, *filters: str) -> bytes:
    body = packet_id.to_bytes(2, "big")
    for f in filters:
        body += len(f).to_bytes(2, "big") + f.encode()
    return fixed(0xA2, body)


def connect_packet(
    client_id="c1", keepalive=60, clean=True, will=None, password="tok"
) -> bytes:
    def s(b):
        return len(b).to_bytes(2, "big") + b

    flags = 0xC0 | (0x02 if clean else 0)
    payload = s(client_id.encode())
    if will:
        topic, message, qos = will
        flags |= 0x04 | (qos << 3)
        payload += s(topic.encode()) + s(message)
    payload += s(b"user@example.com") + s(password.encode())
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + keepalive.to_bytes(2, "big")
    return fixed(0x10, body + payload)


@pytest.mark.parametrize("level", [3, 5])
def test_mqttjs_other_protocol_levels_get_connack_1(level):
    session = Session(now=0)
    actions = []
    for frame in mqttjs.frames(f"connect_v{level}"):
        actions += session.feed(frame, 0)
    assert sent(actions) == [b"\x20\x02\x00\x01"]
    assert isinstance(actions[-1], Close) and session.closed
    assert not of(Authenticate, actions)


@pytest.mark.parametrize("code", [codec.BAD_CREDENTIALS, codec.NOT_AUTHORISED])
def test_refused_credentials_get_their_connack_code_then_close(code):
    session = Session(now=0)
    session.feed(connect_packet(will=("devices/x/pump/set", b"OFF", 0)), 0)
    actions = session.authenticated(code)
    assert sent(actions) == [bytes([0x20, 2, 0, code])]
    assert actions[-1] == Close("connection refused")
    assert not of(Publish, actions)  # a refused client's will never fires


def test_packets_before_connack_wait_for_it():
    session = Session(now=0)
    ping = b"\xc0\x00"
    assert of(Authenticate, session.feed(connect_packet() + ping, 0))
    assert session.feed(ping, 0.1) == []  # still authenticating
    actions = session.authenticated(codec.ACCEPTED)
    assert sent(actions) == [b"\x20\x02\x00\x00", b"\xd0\x00", b"\xd0\x00"]


def test_too_much_data_before_connack_closes():
    session = Session(now=0, max_packet=1000)
    session.feed(connect_packet(), 0)
    assert session.feed(b"\xc0\x00" * 400, 0) == []
    actions = session.feed(b"\xc0\x00" * 200, 0)
    assert actions == [Close("too much data while waiting")]


def test_packets_after_subscribe_wait_for_its_answer():
    session = connected()
    data = subscribe(3, ("a", 0)) + unsubscribe(4, "a") + b"\xc0\x00"
    [request] = session.feed(data, 1)
    assert session.feed(b"\xc0\x00", 1) == []
    actions = session.subscribed(3, [0])
    assert sent(actions) == [
        b"\x90\x03\x00\x03\x00",
        b"\xb0\x02\x00\x04",
        b"\xd0\x00",
        b"\xd0\x00",
    ]
    assert session.subscriptions == {}  # the UNSUBSCRIBE came after, and won


@pytest.mark.parametrize(
    "first",
    [b"\xc0\x00", b"\x82\x06\x00\x01\x00\x01a\x00", b"\x30\x03\x00\x01a", b"GET /"],
)
def test_first_packet_must_be_connect(first):
    session = Session(now=0)
    actions = session.feed(first, 0)
    assert len(actions) == 1 and isinstance(actions[0], Close)


def test_not_a_connect_is_refused_from_its_first_byte():
    session = Session(now=0)
    assert session.feed(b"\x10", 0) == []  # could still be a CONNECT
    assert Session(now=0).feed(b"\x82", 0)[0] == Close("first packet is not CONNECT")


def test_second_connect_closes():
    session = connected()
    assert session.feed(connect_packet(), 1) == [Close("second CONNECT")]


@pytest.mark.parametrize(
    ("client_id", "clean"), [("", False), ("x" * (MAX_CLIENT_ID + 1), True)]
)
def test_unacceptable_client_id_gets_connack_2(client_id, clean):
    session = Session(now=0)
    actions = session.feed(connect_packet(client_id=client_id, clean=clean), 0)
    assert sent(actions) == [b"\x20\x02\x00\x02"] and session.closed


def test_empty_client_id_with_clean_session_is_accepted():
    session = Session(now=0)
    [auth] = session.feed(connect_packet(client_id=""), 0)
    assert auth.client_id == ""


def test_connect_timeout():
    session = Session(now=100.0, connect_timeout=10)
    session.feed(b"\x10\x05", 100)  # a CONNECT that never completes
    assert session.deadline == 110.0
    assert session.tick(109.9) == []
    assert session.tick(110.0) == [Close("no CONNECT in time")]


def test_keepalive_closes_after_one_and_a_half_periods_of_silence():
    session = connected(keepalive=10, now=0.0)
    assert session.deadline == 15.0
    session.feed(b"\xc0", 14.0)  # half a PINGREQ is not a packet
    assert session.tick(14.9) == []
    assert session.deadline == 15.0
    assert sent(session.feed(b"\x00", 14.95)) == [b"\xd0\x00"]
    assert session.deadline == pytest.approx(29.95)
    assert session.tick(29.9) == []
    assert session.tick(29.95) == [Close("keepalive timeout")]


def test_keepalive_restarts_when_the_answer_to_connect_took_long():
    session = Session(now=0)
    session.feed(connect_packet(keepalive=2), 0)
    assert session.tick(5) == []  # still authenticating: not the client's silence
    session.authenticated(codec.ACCEPTED, now=5)
    assert session.deadline == 8.0 and session.tick(7.9) == []
    assert session.tick(8) == [Close("keepalive timeout")]


def test_keepalive_zero_never_times_out():
    session = connected(keepalive=0)
    assert session.deadline is None and session.tick(1e9) == []


def test_will_fires_on_violation_keepalive_and_terminate_not_on_disconnect():
    will = ("devices/esp32-pool-01/pump/set", b"OFF", 1)
    expected = Publish(will[0], b"OFF", 1, False, will=True)

    def with_will():
        session = Session(now=0)
        session.feed(connect_packet(will=will, keepalive=10), 0)
        session.authenticated(codec.ACCEPTED)
        return session

    assert with_will().feed(b"\xf0\x00", 1)[:1] == [expected]
    assert with_will().tick(15) == [expected, Close("keepalive timeout")]
    assert with_will().terminate("membership changed") == [
        expected,
        Close("membership changed"),
    ]
    assert with_will().feed(b"\xe0\x00", 1) == [Close("client disconnected")]


def test_packets_before_a_violation_are_still_handled():
    session = connected()
    publish = codec.publish(PUMP_SET, b"ON")
    actions = session.feed(publish + b"\xc0\x00" + b"\x00\x00", 1)
    assert [type(a) for a in actions] == [Publish, Send, Close]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x20\x02\x00\x00", id="CONNACK"),
        pytest.param(b"\x90\x03\x00\x01\x00", id="SUBACK"),
        pytest.param(b"\xb0\x02\x00\x01", id="UNSUBACK"),
        pytest.param(b"\xd0\x00", id="PINGRESP"),
        pytest.param(b"\x50\x02\x00\x01", id="PUBREC: we never send QoS 2"),
        pytest.param(b"\x70\x02\x00\x01", id="PUBCOMP"),
    ],
)
def test_server_packets_from_a_client_close(data):
    actions = connected().feed(data, 1)
    assert len(actions) == 1 and isinstance(actions[0], Close)


def test_qos2_publish_is_handed_on_once_however_often_it_is_repeated():
    session = connected()
    first = codec.publish(PUMP_SET, b"ON", qos=2, packet_id=5)
    again = bytes([first[0] | 0x08]) + first[1:]  # DUP
    a1 = session.feed(first, 1)
    a2 = session.feed(again, 2)
    assert sent(a1) == sent(a2) == [b"\x50\x02\x00\x05"]
    assert len(of(Publish, a1)) == 1 and of(Publish, a2) == []
    assert sent(session.feed(b"\x62\x02\x00\x05", 3)) == [b"\x70\x02\x00\x05"]
    # After PUBREL the id is free: a new message with it is a new message.
    assert len(of(Publish, session.feed(first, 4))) == 1


def test_qos1_publish_is_acknowledged_after_it_is_handed_on():
    actions = connected().feed(codec.publish(PUMP_SET, b"ON", qos=1, packet_id=9), 1)
    assert actions == [
        Publish(PUMP_SET, b"ON", 1, False),
        Send(b"\x40\x02\x00\x09"),
    ]


def test_subscription_cap_refuses_the_filters_over_it():
    session = connected(max_subscriptions=2)
    sub = b"\x82\x0e\x00\x07" + b"\x00\x01a\x00" + b"\x00\x01b\x01" + b"\x00\x01c\x00"
    [request] = session.feed(sub, 1)
    assert request.refused == frozenset({2})
    [suback] = session.subscribed(7, [0, 1, 0])  # the consumer must not raise it
    assert suback.data == b"\x90\x05\x00\x07\x00\x01\x80"
    assert session.subscriptions == {"a": 0, "b": 1}


def test_qos2_subscription_is_granted_qos1_and_consumer_cannot_raise_it():
    session = connected()
    session.feed(b"\x82\x0a\x00\x01" + b"\x00\x01a\x02" + b"\x00\x01b\x00", 1)
    [suback] = session.subscribed(1, [2, 1])
    assert suback.data == b"\x90\x04\x00\x01\x01\x00"


def test_unanswered_subscribe_gets_no_suback_and_unknown_answers_are_ignored():
    session = connected()
    assert session.subscribed(99, [0]) == []


def test_deliver_only_what_a_subscription_matches_at_its_qos():
    session = connected()
    session.feed(subscribe(1, ("devices/+/pump/state", 1)), 1)
    session.subscribed(1, [1])
    topic = "devices/esp32-pool-01/pump/state"
    assert session.deliver("devices/esp32-pool-01/valve/state", b"1") == []
    [q0] = session.deliver(topic, b"ON", retain=True)
    assert q0.data == codec.publish(topic, b"ON", retain=True)
    [q1] = session.deliver(topic, b"OFF", qos=1)
    assert q1.data == codec.publish(topic, b"OFF", qos=1, packet_id=1)
    session.feed(unsubscribe(2, "devices/+/pump/state"), 2)
    assert session.deliver(topic, b"ON") == []


def test_deliver_before_connack_or_after_close_sends_nothing():
    session = Session(now=0)
    assert session.deliver("a", b"x") == []
    session.feed(connect_packet(), 0)
    assert session.deliver("a", b"x") == []
    session = connected()
    session.terminate("bye")
    assert session.deliver("a", b"x") == [] and session.state is State.CLOSED
