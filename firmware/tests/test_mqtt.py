"""firmware.mqtt: the packet codecs of our MQTT 3.1.1 client (CPython and MicroPython).

The client itself runs against Mosquitto in test_board_link.py.
"""

try:
    from firmware import mqtt
    from firmware.tests.helpers import raises
except ImportError:  # MicroPython: flat filesystem
    import mqtt
    from helpers import raises


def test_remaining_length_varint_at_its_boundaries():
    cases = {
        0: b"\x00",
        127: b"\x7f",
        128: b"\x80\x01",
        16383: b"\xff\x7f",
        16384: b"\x80\x80\x01",
        2097151: b"\xff\xff\x7f",
        2097152: b"\x80\x80\x80\x01",
    }
    for n, enc in cases.items():
        assert mqtt.encode_length(n) == enc, n


def test_connect_without_will_or_credentials():
    pkt = mqtt.encode_connect("ESP-A1", 30, True)
    assert pkt == b"\x10\x12\x00\x04MQTT\x04\x02\x00\x1e\x00\x06ESP-A1"


def test_connect_with_will_user_and_password_persistent_session():
    pkt = mqtt.encode_connect(
        "d", 60, False, ("d/status", "offline", True, 1), "u", "p"
    )
    flags = pkt[9]
    # user, password, will retain, will QoS 1, will flag; clean session off.
    assert flags == 0x80 | 0x40 | 0x20 | 0x08 | 0x04
    assert pkt[10:12] == b"\x00\x3c"
    assert pkt[12:] == b"\x00\x01d\x00\x08d/status\x00\x07offline\x00\x01u\x00\x01p"
    assert pkt[1] == len(pkt) - 2


def test_connack_session_present_and_refusals():
    assert mqtt.parse_connack(b"\x01\x00") is True
    assert mqtt.parse_connack(b"\x00\x00") is False
    e = raises(mqtt.MQTTError, mqtt.parse_connack, b"\x00\x05")
    assert "not authorised" in str(e)
    raises(mqtt.MQTTError, mqtt.parse_connack, b"\x00")
    # An MQTTError is an OSError: callers that retry on OSError retry on it.
    assert isinstance(e, OSError)


def test_publish_round_trip_qos0_and_qos1():
    pkt = mqtt.encode_publish("a/b", b"hi", retain=True)
    assert pkt == b"\x31\x07\x00\x03a/bhi"
    assert mqtt.parse_publish(pkt[0], pkt[2:]) == (b"a/b", b"hi", 0, 0)
    pkt = mqtt.encode_publish("a/b", b"x" * 200, qos=1, pid=513, dup=True)
    assert pkt[0] == 0x30 | 0x08 | 0x02
    assert pkt[1:3] == mqtt.encode_length(207)
    assert mqtt.parse_publish(pkt[0], pkt[3:]) == (b"a/b", b"x" * 200, 1, 513)


def test_truncated_publish_is_an_error():
    raises(mqtt.MQTTError, mqtt.parse_publish, 0x30, b"\x00\x09abc")
    raises(mqtt.MQTTError, mqtt.parse_publish, 0x32, b"\x00\x03abc\x01")


def test_subscribe_and_puback():
    assert mqtt.encode_subscribe(7, "x/#", 1) == b"\x82\x08\x00\x07\x00\x03x/#\x01"
    assert mqtt.encode_puback(258) == b"\x40\x02\x01\x02"
