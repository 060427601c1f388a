"""The codec on MQTT.js's own bytes, and on the malformed packets MQTT forbids."""

import pytest

from gateway import codec
from gateway.tests import mqttjs

PUMP = "devices/esp32-pool-01/pump/state"


def decode_stream(pieces, max_packet=codec.MAX_PACKET):
    decoder = codec.StreamDecoder(max_packet=max_packet)
    out = []
    for piece in pieces:
        decoder.feed(piece)
        while (packet := decoder.next_packet()) is not None:
            out.append(packet)
    assert decoder.buffered == 0
    return out


@pytest.mark.parametrize("how", ["captured", "bytewise", "merged"])
def test_mqttjs_session_decodes_the_same_however_it_is_split(how):
    packets = decode_stream(mqttjs.splittings()[how])
    rec = mqttjs.recording()
    kinds = [type(p).__name__ for p in packets]
    assert kinds == (
        ["Connect"] + ["Subscribe"] * 6 + ["Publish"] * 3
        + ["PacketId", "Bare", "Unsubscribe", "Bare"]
    )  # fmt: skip
    connect = packets[0]
    assert connect == codec.Connect(
        client_id="dashboard-user-123-a1b2c3",
        username=rec["username"],
        password=rec["password"],
        keepalive=1,
        clean_session=True,
        will=None,
    )
    assert [p.filters for p in packets[1:6]] == [((t, 0),) for t in rec["topics"]]
    assert packets[6].filters == (
        ("devices/+/pump/state", 1),
        ("devices/#", 1),
        ("#", 1),
        ("x/y", 1),
        ("$SYS/#", 1),
    )
    q0, q1, q2 = packets[7:10]
    assert (q0.topic, q0.payload, q0.qos, q0.packet_id) == (
        "devices/esp32-pool-01/pump/set",
        b"ON",
        0,
        None,
    )
    assert (q1.payload, q1.qos) == (b"2", 1) and q1.packet_id
    assert (q2.payload, q2.qos) == (b'{"mode":1,"duration":600}', 2)
    assert packets[10] == codec.PacketId(6, q2.packet_id)  # PUBREL
    assert packets[11] == codec.Bare(12)  # PINGREQ
    assert packets[12].filters == (rec["topics"][0],)
    assert packets[13] == codec.Bare(14)  # DISCONNECT


def test_node_mqttjs_splits_connect_over_many_frames():
    # What the decoder must cope with: the fixture is what FACTS.md describes.
    frames = mqttjs.frames()
    assert frames[0] == b"\x10" and len(frames[1]) == 1
    decoder = codec.StreamDecoder()
    for i, frame in enumerate(frames[:13]):
        decoder.feed(frame)
        packet = decoder.next_packet()
        assert (packet is None) == (i < 12)


@pytest.mark.parametrize("level", [3, 5])
def test_other_protocol_levels_are_unsupported(level):
    stream = b"".join(mqttjs.frames(f"connect_v{level}"))
    with pytest.raises(codec.UnsupportedProtocol) as err:
        codec.decode_all(stream)
    assert err.value.level == level and err.value.answerable


@pytest.mark.parametrize(
    ("built", "reference"),
    [
        (lambda: codec.connack(0), "connack_0"),
        (lambda: codec.connack(1), "connack_1"),
        (lambda: codec.connack(2), "connack_2"),
        (lambda: codec.connack(4), "connack_4"),
        (lambda: codec.connack(5), "connack_5"),
        (lambda: codec.suback(7, [0, 1, 0x80]), "suback_0_1_80"),
        (lambda: codec.unsuback(8), "unsuback"),
        (lambda: codec.puback(9), "puback"),
        (lambda: codec.pubrec(10), "pubrec"),
        (lambda: codec.pubcomp(11), "pubcomp"),
        (lambda: codec.pingresp(), "pingresp"),
        (lambda: codec.publish(PUMP, b"ON", retain=True), "publish_qos0_retain"),
        (
            lambda: codec.publish(
                "devices/esp32-pool-01/wifi/state",
                b'{"status":"disconnected"}',
                qos=1,
                packet_id=1,
            ),
            "publish_qos1",
        ),
    ],
)
def test_server_packets_are_byte_for_byte_what_mqtt_packet_generates(built, reference):
    assert built() == mqttjs.server_packet(reference)


def test_refused_connack_never_says_session_present():
    assert codec.connack(5, session_present=True) == b"\x20\x02\x00\x05"
    assert codec.connack(0, session_present=True) == b"\x20\x02\x01\x00"


def test_large_publish_round_trips_with_a_multi_byte_length():
    payload = bytes(range(256)) * 100  # 25,600 bytes: a 3-byte remaining length
    data = codec.publish(PUMP, payload, qos=1, packet_id=3)
    (packet,) = decode_stream([data[i : i + 1000] for i in range(0, len(data), 1000)])
    assert packet.payload == payload and packet.packet_id == 3


def test_packet_over_the_limit_is_refused_from_its_header_alone():
    decoder = codec.StreamDecoder(max_packet=1000)
    decoder.feed(b"\x30\xe9\x07")  # PUBLISH of 1001 bytes, none of them sent yet
    with pytest.raises(codec.PacketTooLarge):
        decoder.next_packet()
    assert decoder.buffered == 0 and decoder.failed
    with pytest.raises(codec.MalformedPacket):
        decoder.feed(b"more")


def test_packet_at_the_limit_passes():
    data = codec.publish("t", b"x" * (1000 - 3))
    assert len(data) - 3 == 1000
    assert len(codec.decode_all(data, max_packet=1000)) == 1


def test_incomplete_header_waits_then_five_length_bytes_fail():
    decoder = codec.StreamDecoder()
    decoder.feed(b"\x30\xff\xff\xff")
    assert decoder.next_packet() is None
    decoder.feed(b"\xff")
    with pytest.raises(codec.MalformedPacket):
        decoder.next_packet()


def publish_body(topic: bytes, payload: bytes = b"", packet_id: bytes = b"") -> bytes:
    return len(topic).to_bytes(2, "big") + topic + packet_id + payload


def packet(first: int, body: bytes) -> bytes:
    assert len(body) < 128
    return bytes([first, len(body)]) + body


CONNECT_HEAD = b"\x00\x04MQTT\x04"


def connect(flags: int, payload: bytes, keepalive: bytes = b"\x00\x3c") -> bytes:
    return packet(0x10, CONNECT_HEAD + bytes([flags]) + keepalive + payload)


def s(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x00\x00", id="reserved type 0"),
        pytest.param(b"\xf0\x00", id="reserved type 15"),
        pytest.param(b"\xc1\x00", id="PINGREQ with flags"),
        pytest.param(b"\xc0\x01\x00", id="PINGREQ with a body"),
        pytest.param(b"\xe0\x01\x00", id="DISCONNECT with a body"),
        pytest.param(b"\x80\x06\x00\x01\x00\x01a\x00", id="SUBSCRIBE flags 0"),
        pytest.param(b"\x82\x02\x00\x01", id="SUBSCRIBE without filter"),
        pytest.param(b"\x82\x06\x00\x00\x00\x01a\x00", id="SUBSCRIBE packet id 0"),
        pytest.param(b"\x82\x06\x00\x01\x00\x01a\x03", id="SUBSCRIBE QoS 3"),
        pytest.param(b"\x82\x06\x00\x01\x00\x01a\x40", id="SUBSCRIBE reserved bits"),
        pytest.param(b"\x82\x07\x00\x01\x00\x02a#\x00", id="filter a#"),
        pytest.param(b"\x82\x08\x00\x01\x00\x03#/a\x00", id="filter #/a"),
        pytest.param(b"\x82\x07\x00\x01\x00\x02a+\x00", id="filter a+"),
        pytest.param(b"\x82\x05\x00\x01\x00\x00\x00", id="empty filter"),
        pytest.param(b"\x82\x06\x00\x01\x00\x01\x00\x00", id="NUL filter"),
        pytest.param(b"\x82\x06\x00\x01\x00\x02a", id="filter cut short"),
        pytest.param(b"\x82\x07\x00\x01\x00\x01a\x00\x00", id="SUBSCRIBE trailing"),
        pytest.param(b"\xa2\x02\x00\x01", id="UNSUBSCRIBE without filter"),
        pytest.param(b"\xa0\x05\x00\x01\x00\x01a", id="UNSUBSCRIBE flags 0"),
        pytest.param(packet(0x36, publish_body(b"a", b"x", b"\x00\x01")), id="QoS 3"),
        pytest.param(packet(0x38, publish_body(b"a", b"x")), id="DUP on QoS 0"),
        pytest.param(packet(0x32, publish_body(b"a", b"x", b"\x00\x00")), id="id 0"),
        pytest.param(packet(0x30, publish_body(b"a/+", b"x")), id="topic with +"),
        pytest.param(packet(0x30, publish_body(b"a/#", b"x")), id="topic with #"),
        pytest.param(packet(0x30, publish_body(b"")), id="empty topic"),
        pytest.param(packet(0x30, publish_body(b"a\x00b")), id="NUL in topic"),
        pytest.param(
            packet(0x30, publish_body(b"\xff\xfe", b"x")), id="topic not UTF-8"
        ),
        pytest.param(packet(0x30, publish_body(b"\xed\xa0\x80")), id="surrogate topic"),
        pytest.param(b"\x30\x01\x00", id="topic length cut"),
        pytest.param(b"\x40\x03\x00\x01\x00", id="PUBACK too long"),
        pytest.param(b"\x40\x01\x00", id="PUBACK too short"),
        pytest.param(b"\x60\x02\x00\x01", id="PUBREL flags 0"),
        pytest.param(connect(0x03, s(b"c")), id="CONNECT reserved flag"),
        pytest.param(connect(0x42, s(b"c") + s(b"pw")), id="password, no username"),
        pytest.param(connect(0x82, s(b"c")), id="username flag, no username"),
        pytest.param(connect(0xC2, s(b"c") + s(b"u")), id="password flag, none"),
        pytest.param(connect(0x82, s(b"c") + s(b"u") + b"zz"), id="CONNECT trailing"),
        pytest.param(connect(0x0A, s(b"c")), id="will flag, no will"),
        pytest.param(connect(0x12, s(b"c")), id="will QoS without will"),
        pytest.param(connect(0x22, s(b"c")), id="will retain without will"),
        pytest.param(connect(0x1E, s(b"c") + s(b"w") + s(b"x")), id="will QoS 3"),
        pytest.param(connect(0x06, s(b"c") + s(b"w/+") + s(b"x")), id="will topic +"),
        pytest.param(connect(0x82, s(b"c") + s(b"\xc3")), id="username not UTF-8"),
        pytest.param(connect(0x02, s(b"c\x00")), id="NUL in client id"),
        pytest.param(connect(0x02, b"\x00"), id="client id cut"),
        pytest.param(packet(0x10, b"\x00\x04MQTT"), id="CONNECT cut in header"),
    ],
)
def test_malformed_packets_are_refused(data):
    with pytest.raises(codec.MalformedPacket):
        codec.decode_all(data)


def test_wellformed_edge_cases_pass():
    empty_id = codec.decode_all(connect(0x02, s(b"")))[0]
    assert empty_id.client_id == "" and empty_id.clean_session
    will = codec.decode_all(connect(0x2E, s(b"c") + s(b"w/t") + s(b"bye")))[0]
    assert will.will == codec.Will("w/t", b"bye", 1, True)
    assert codec.decode_all(packet(0x30, publish_body(b"a", b"")))[0].payload == b""
    assert codec.decode_all(packet(0x30, publish_body("é/ü".encode())))[0].topic == (
        "é/ü"
    )
    # A non-minimal remaining length is not forbidden by MQTT 3.1.1.
    assert codec.decode_all(b"\xc0\x80\x00") == [codec.Bare(12)]


def test_protocol_name_other_than_mqtt_is_not_answered():
    with pytest.raises(codec.UnsupportedProtocol) as err:
        codec.decode_all(packet(0x10, b"\x00\x04HTTP\x04\x02\x00\x3c" + s(b"c")))
    assert not err.value.answerable


def test_encoder_refuses_what_it_must_not_send():
    with pytest.raises(ValueError):
        codec.publish("a/+", b"")
    with pytest.raises(ValueError):
        codec.publish("a", b"", qos=1)  # no packet id
    with pytest.raises(ValueError):
        codec.connack(6)
    with pytest.raises(ValueError):
        codec.suback(1, [3])
