"""The bridge's telemetry parse (devices.mqtt.fastparse) against firmware.protocol's:
the same result, or the same error, on many valid and invalid payloads."""

import json
import random

import pytest

from devices.mqtt import fastparse
from firmware import protocol

# Raw JSON tokens, several of which the standard json reads and orjson does not (or
# reads differently: integers past 64 bits become floats there).
TOKENS = [
    "0", "1", "-1", "2", "3", "-0", "24.5", "24", "-55", "125", "125.0", "125.04",
    "125.05", "-55.04", "-55.05", "-55.06", "1e2", "1E1", "0.1e1", "24.50000000000001",
    "4294967295", "4294967296", "86400", "86401", "-127", "-128", "-60", "0.0",
    "18446744073709551615", "18446744073709551616", "-9223372036854775809",
    "100000000000000000000000000000", "1e400", "-1e400", "NaN", "Infinity",
    "-Infinity", "true", "false", "null", '""', '"x"', '"ps1-0.1.0"',
    json.dumps("x" * 32), json.dumps("x" * 33), '"a\\u0000b"', '"\\ud800"',
    '"\\ud83d\\ude00"', '"é"', "[]", "{}", "[1,[2,[3]]]", '{"a":{"b":[null]}}',
    '{"pump":1,"valve":1}', '{"active":false,"remaining":0,"mode":1,"duration":0}',
]  # fmt: skip
TOP = ["ts", "seq", "temp", "pump", "valve", "timer", "rssi", "uptime", "mem_free"]
TOP += ["fw", "switches"]
EXTRA = ["hw", "hw", "extra", "Temp", "fw ", ""]
TIMER = ["active", "remaining", "mode", "duration"]


def valid() -> dict:
    return {
        "ts": 1764806400,
        "seq": 7,
        "temp": 24.5,
        "pump": True,
        "valve": 1,
        "timer": '{"active":false,"remaining":0,"mode":1,"duration":0}',
        "rssi": -60,
        "uptime": 3600,
        "mem_free": 81234,
        "fw": '"ps1-0.1.0"',
        "switches": '{"pump":1,"valve":1}',
    }


def token(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def obj_text(pairs: list[tuple[str, str]], rnd: random.Random) -> str:
    sep = rnd.choice([",", ", ", " ,\n"])
    colon = rnd.choice([":", ": ", " : "])
    body = sep.join(f"{json.dumps(k)}{colon}{v}" for k, v in pairs)
    return rnd.choice(["", " ", "\n"]) + "{" + body + "}" + rnd.choice(["", " \t"])


def nested(rnd: random.Random, keys: list[str], base: dict) -> str:
    pairs = [(k, token(v)) for k, v in base.items()]
    for _ in range(rnd.choice([0, 0, 1, 2])):
        i = rnd.randrange(len(pairs))
        what = rnd.random()
        if what < 0.6:
            pairs[i] = (pairs[i][0], rnd.choice(TOKENS))
        elif what < 0.8:
            del pairs[i]
            if not pairs:
                break
        else:
            pairs.append((rnd.choice(keys), rnd.choice(TOKENS)))  # maybe a duplicate
    return obj_text(pairs, rnd)


def payload(rnd: random.Random):
    fields = valid()
    fields["timer"] = nested(
        rnd, TIMER, {"active": "false", "remaining": 0, "mode": 1, "duration": 0}
    )
    fields["switches"] = nested(rnd, ["pump", "valve"], {"pump": 1, "valve": 1})
    pairs = [(k, token(v)) for k, v in fields.items()]
    rnd.shuffle(pairs)
    for _ in range(rnd.choice([0, 0, 0, 1, 1, 2, 3])):
        what = rnd.random()
        if what < 0.55 and pairs:
            i = rnd.randrange(len(pairs))
            pairs[i] = (pairs[i][0], rnd.choice(TOKENS))
        elif what < 0.7 and pairs:
            del pairs[rnd.randrange(len(pairs))]
        elif what < 0.85:
            pairs.append((rnd.choice(TOP), rnd.choice(TOKENS)))  # a duplicate key
        else:
            pairs.append((rnd.choice(EXTRA), rnd.choice(TOKENS)))
    text = obj_text(pairs, rnd)
    data = text.encode("utf-8", "surrogatepass")
    what = rnd.random()
    if what < 0.04:
        data = data[: rnd.randrange(len(data))]
    elif what < 0.08:
        i = rnd.randrange(len(data))
        data = data[:i] + bytes([rnd.randrange(256)]) + data[i + 1 :]
    elif what < 0.10:
        data = data.replace(b"ps1", rnd.choice([b"\xff", b"\xc3", b"\xed\xa0\x80"]))
    elif what < 0.11:
        data = b"\xef\xbb\xbf" + data
    elif what < 0.12:
        data = data + b" " * (protocol.MAX_PAYLOAD - len(data) + rnd.choice([0, 1]))
    elif what < 0.13:
        data = rnd.choice([b"[]", b"null", b"1", b'"x"', b"", b"{", b"[" * 3000])
    elif what < 0.15:
        return rnd.choice([text, bytearray(data), memoryview(data), None, 7])
    return data


def typed(value):
    """A value with its types (True is not 1, 1.0 is not 1), keys in any order."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, typed(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(typed(v) for v in value))
    return (type(value).__name__, repr(value))


def outcome(parse, value):
    try:
        result = parse(value)
    except Exception as exc:  # noqa: BLE001 - the error is what is compared
        return ("error", type(exc).__name__, str(exc))
    return ("ok", typed(result))


def test_the_fast_parse_matches_firmware_protocol_on_many_payloads():
    rnd = random.Random(20261204)
    answered = valid_seen = invalid_seen = 0
    for _ in range(60_000):
        value = payload(rnd)
        reference = outcome(protocol.parse_telemetry, value)
        assert outcome(fastparse.parse_telemetry, value) == reference, value
        wrapped = outcome(
            lambda p: protocol.parse_device_message("telemetry", p), value
        )
        fast = outcome(lambda p: fastparse.parse_device_message("telemetry", p), value)
        assert fast == wrapped, value
        if fastparse.fast_telemetry(value) is not None:
            answered += 1
        if reference[0] == "ok":
            valid_seen += 1
        else:
            invalid_seen += 1
    # Both kinds seen often, and the fast path answers most valid payloads itself.
    assert valid_seen > 5_000 and invalid_seen > 30_000, (valid_seen, invalid_seen)
    assert answered > 0.8 * valid_seen


@pytest.mark.parametrize(
    "text",
    [
        b'{"ts":1,"seq":1,"temp":NaN,"pump":true,"valve":1,"timer":{"active":false,'
        b'"remaining":0,"mode":1,"duration":0},"rssi":-60,"uptime":1,"mem_free":1,'
        b'"fw":"x","switches":{"pump":1,"valve":1}}',
        b'{"ts":18446744073709551616,"seq":1,"temp":1,"pump":true,"valve":1,'
        b'"timer":{"active":false,"remaining":0,"mode":1,"duration":0},"rssi":-60,'
        b'"uptime":1,"mem_free":1,"fw":"x","switches":{"pump":1,"valve":1}}',
        b'{"ts":1,"seq":1,"temp":1,"pump":1,"valve":1,"timer":{"active":false,'
        b'"remaining":0,"mode":1,"duration":0},"rssi":-60,"uptime":1,"mem_free":1,'
        b'"fw":"x","switches":{"pump":1,"valve":1}}',
        b'{"ts":1,"seq":1,"temp":1,"pump":true,"valve":1,"timer":{"active":false,'
        b'"remaining":0,"mode":1,"duration":0},"rssi":-60,"uptime":1,"mem_free":1,'
        b'"fw":"\\ud800","switches":{"pump":1,"valve":1}}',
        b'{"ts":1,"seq":1,"temp":1,"pump":true,"valve":1,"timer":{"active":false,'
        b'"remaining":0,"mode":1,"duration":0},"rssi":-60,"uptime":1,"mem_free":1,'
        b'"fw":"\xff","switches":{"pump":1,"valve":1}}',
        b'{"ts":1,"seq":1,"temp":1,"temp":200,"pump":true,"valve":1,"timer":{"active"'
        b':false,"remaining":0,"mode":1,"duration":0},"rssi":-60,"uptime":1,'
        b'"mem_free":1,"fw":"x","switches":{"pump":1,"valve":1}}',
    ],
    ids=["nan", "big-int", "bool-as-int", "lone-surrogate", "not-utf8", "dup-key"],
)
def test_the_payloads_orjson_reads_differently_get_firmware_protocols_answer(text):
    with pytest.raises(protocol.ProtocolError) as reference:
        protocol.parse_telemetry(text)
    assert fastparse.fast_telemetry(text) is None
    with pytest.raises(protocol.ProtocolError) as fast:
        fastparse.parse_telemetry(text)
    assert str(fast.value) == str(reference.value)


def test_a_valid_payload_is_answered_by_the_fast_path_with_the_same_value():
    text = protocol.encode_telemetry(
        {
            "ts": 1764806400, "seq": 3, "temp": 24.46, "pump": True, "valve": 2,
            "timer": {"active": True, "remaining": 30, "mode": 2, "duration": 60},
            "rssi": -61, "uptime": 10, "mem_free": 1000, "fw": "ps1-0.1.0",
            "switches": {"pump": 1, "valve": 2},
        }
    )  # fmt: skip
    fast = fastparse.fast_telemetry(text)
    assert fast is not None
    assert typed(fast) == typed(protocol.parse_telemetry(text))
    assert fastparse.parse_device_message("telemetry", text) == ("telemetry", fast)
    # Other topics are firmware.protocol's alone.
    assert fastparse.parse_device_message("status", b"online") == ("status", True)
    with pytest.raises(protocol.ProtocolError, match="unknown device topic"):
        fastparse.parse_device_message("nope", b"{}")
