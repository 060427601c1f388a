"""Hypothesis against the session: random and mutated MQTT.js streams, cut into
frames anywhere. Whatever the bytes, `feed` only returns actions (a protocol error
is a Close), never raises, never reaches its last-resort "internal error", keeps
its buffer within one packet plus the frame being fed, and every byte it sends is
a well-formed server packet."""

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway import codec
from gateway.session import Authenticate, Close, Publish, Send, Session, Subscribe
from gateway.session import Unsubscribe as UnsubscribeAction
from gateway.tests import mqttjs

CASES = 10_000
SETTINGS = settings(
    max_examples=CASES,
    deadline=None,
    derandomize=True,  # the same cases every run: CI is deterministic
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ACTIONS = (Send, Close, Authenticate, Subscribe, UnsubscribeAction, Publish)
STREAM = b"".join(mqttjs.frames())
# Valid packets to splice in: MQTT.js's own, and a few the fixtures lack.
PACKETS = codec.decode_all(STREAM) and [
    bytes.fromhex(f["hex"]) for f in mqttjs.recording()["session"]["frames"]
] + [
    b"\xc0\x00",
    b"\xe0\x00",
    b"\x62\x02\x00\x01",
    b"\x40\x02\x00\x01",
    codec.publish("devices/esp32-pool-01/pump/set", b"TOGGLE", qos=2, packet_id=1),
    b"".join(mqttjs.frames("connect_v5")),
]


@st.composite
def mutated(draw):
    data = bytearray(STREAM)
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(
            st.sampled_from(["flip", "set", "insert", "delete", "splice", "cut"])
        )
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(
                st.sampled_from([0x00, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))])
            )
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "splice":
            data[at:at] = draw(st.sampled_from(PACKETS))
        elif kind == "cut":
            del data[at:]
    return bytes(data)


streams = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda tail: b"".join(mqttjs.frames()[:13]) + tail, st.binary(max_size=200)
    ),
    mutated(),
)


@st.composite
def frames_of(draw, data):
    """Cut data into frames at random places."""
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=12))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


@pytest.mark.slow
@SETTINGS
@given(data=st.data())
def test_any_stream_only_yields_actions(data):
    stream = data.draw(streams)
    frames = data.draw(frames_of(stream))
    max_packet = data.draw(st.sampled_from([128, 1024, codec.MAX_PACKET]))
    auth_code = data.draw(st.sampled_from([0, 0, 0, 4, 5, 9]))
    session = Session(now=0.0, max_packet=max_packet)
    now = 0.0
    pending = []

    def check(actions):
        assert all(isinstance(a, ACTIONS) for a in actions)
        closes = [a for a in actions if isinstance(a, Close)]
        assert len(closes) <= 1 and (not closes or actions[-1] is closes[0])
        assert all(c.reason != "internal error" for c in closes)
        for a in actions:
            event(
                f"close: {a.reason[:30]}" if isinstance(a, Close) else type(a).__name__
            )
        out = b"".join(a.data for a in actions if isinstance(a, Send))
        codec.decode_all(out)  # raises if we ever send a malformed packet
        pending.extend(a for a in actions if isinstance(a, Authenticate | Subscribe))
        return actions

    for frame in frames:
        now += data.draw(st.sampled_from([0.0, 0.0, 0.2, 1.0, 20.0]))
        check(session.feed(frame, now))
        assert session.decoder.buffered <= max_packet + codec.MAX_HEADER + len(frame)
        while pending:
            request = pending.pop(0)
            if isinstance(request, Authenticate):
                check(session.authenticated(auth_code))
            else:
                codes = data.draw(
                    st.lists(st.sampled_from([0, 1, 2, 0x80, 7]), max_size=6)
                )
                check(session.subscribed(request.packet_id, codes))
        if data.draw(st.booleans()):
            check(session.deliver("devices/esp32-pool-01/pump/state", b"ON", qos=1))
        check(session.tick(now))
    if session.closed:
        assert session.feed(b"\x10", now + 1) == []


@pytest.mark.parametrize("max_packet", [64, 1024])
def test_flood_of_partial_packets_stays_within_one_packet(max_packet):
    session = Session(now=0.0, max_packet=max_packet)
    connect = b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02c1"
    session.feed(connect, 0)
    session.authenticated(codec.ACCEPTED)
    # A PUBLISH that claims the largest allowed size, fed one byte at a time.
    body = b"\x00\x01a" + b"x" * (max_packet - 3)
    data = b"\x30" + bytes([max_packet & 0x7F | 0x80, max_packet >> 7]) + body
    for i in range(len(data) - 1):
        assert session.feed(data[i : i + 1], 0) == []
        assert session.decoder.buffered <= max_packet + codec.MAX_HEADER
    [publish] = session.feed(data[-1:], 0)
    assert isinstance(publish, Publish) and session.decoder.buffered == 0
    # One byte more is refused from the fixed header, before any body arrives.
    over = max_packet + 1
    actions = session.feed(b"\x30" + bytes([over & 0x7F | 0x80, over >> 7]), 0)
    assert isinstance(actions[-1], Close) and session.decoder.buffered == 0
