"""Property-based fuzzing of the device -> cloud parsers the bridge runs on every
message.

The bridge feeds whatever arrives on a device topic to firmware.protocol, so these
parsers are a server security boundary: whatever the bytes, the only exception allowed
is ProtocolError, and whatever they return must have the documented types and ranges
(docs/protocol.md 2.4, 3.1) and be storable as-is: JSON without NaN/Infinity, strings
without NUL or lone surrogates (PostgreSQL jsonb rejects both).

CPython only (hypothesis); the deterministic protocol tests also run on MicroPython.
"""

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware import protocol as P

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # same examples every run: CI is deterministic
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
SUFFIXES = list(P.DEVICE_TO_CLOUD)

VALID = {
    "telemetry": {
        "ts": 1764400000,
        "seq": 42,
        "temp": 24.5,
        "pump": True,
        "valve": 1,
        "timer": {"active": True, "remaining": 1740, "mode": 1, "duration": 1800},
        "rssi": -61,
        "uptime": 3600,
        "mem_free": 81234,
        "fw": "ps1-0.1.0",
        "hw": "esp32",
        "switches": {"pump": 120, "valve": 33},
    },
    "ack": {
        "id": "c-7f3a9e",
        "ok": True,
        "state": {
            "pump": True,
            "valve": 1,
            "timer": {"active": False, "remaining": 0, "mode": 1, "duration": 0},
        },
    },
    "ack_error": {"id": "c-7f3a9f", "ok": False, "error": "busy", "reason": "min"},
    "config/applied": {"version": 8, "ok": False, "error": "programs[0]: bad"},
    "event": {
        "ts": 1764400000,
        "type": "program_start",
        "data": {"slot": 1, "mode": 2},
    },
    "timer/state": {"active": True, "remaining": 10, "mode": 2, "duration": 60},
    "wifi/state": {
        "status": "connected",
        "ssid": "pool",
        "ip": "10.0.0.7",
        "rssi": -61,
        "quality": "good",
    },
}
EVENT_DATA = {
    "boot": {"reason": "power_on", "boot_count": 3, "safe_mode": False},
    "program_start": {"slot": 1, "mode": 2},
    "program_stop": {"slot": 3, "mode": 1},
    "timer_start": {"mode": 1, "duration": 1800},
    "timer_end": {"reason": "done"},
    "override": {"slot": 2, "until": 1764460800},
    "freeze_protect": {"active": True, "temp": 1.5},
    "max_runtime": {"run_s": 43200},
    "error": {"msg": "relay stuck"},
}

# --- strategies ---------------------------------------------------------------------

nasty_text = st.one_of(
    st.text(max_size=40),
    # NUL, lone surrogates, controls and non-ASCII digits next to plain ASCII.
    st.text(
        alphabet=st.sampled_from(
            ["a", "1", ".", "-", "\x00", "\ud800", "\udfff", "\u0661", "\u00b2", " "]
        ),
        max_size=12,
    ),
    st.sampled_from(["", "ON", "on", "OFF", "1", "2", "online", "offline", "25.3"]),
)
huge_ints = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**31, 2**32, 2**32 - 1, -1, 10**300]),
)
special_floats = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 1e-300])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    huge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    special_floats,
    nasty_text,
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(nasty_text, children, max_size=4),
    ),
    max_leaves=20,
)


def deep(n, inner="1"):
    return "[" * n + inner + "]" * n


def to_payload(value):
    """JSON text with NaN/Infinity tokens and lone surrogates allowed, as bytes."""
    text = json.dumps(value, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def mutated_message(draw):
    """A valid message object with one key replaced, removed or added."""
    name = draw(st.sampled_from(sorted(VALID)))
    obj = json.loads(json.dumps(VALID[name]))
    if name == "event":
        etype = draw(st.sampled_from(sorted(EVENT_DATA)))
        obj["type"] = etype
        obj["data"] = json.loads(json.dumps(EVENT_DATA[etype]))
    # Mutate at the top level or inside a nested object.
    target = obj
    nested = [k for k, v in obj.items() if isinstance(v, dict)]
    if nested and draw(st.booleans()):
        target = obj[draw(st.sampled_from(nested))]
        nested2 = [k for k, v in target.items() if isinstance(v, dict)]
        if nested2 and draw(st.booleans()):
            target = target[draw(st.sampled_from(nested2))]
    action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    keys = sorted(target)
    if action == "replace" and keys:
        target[draw(st.sampled_from(keys))] = draw(json_values)
    elif action == "delete" and keys:
        del target[draw(st.sampled_from(keys))]
    else:
        target[draw(nasty_text)] = draw(json_values)
    suffix = {"ack_error": "ack"}.get(name, name)
    return suffix, obj


# --- what a result may look like (docs/protocol.md) -----------------------------------


def clean_str(s, lo=0, hi=10**9):
    assert type(s) is str and lo <= len(s) <= hi, s
    assert "\x00" not in s, s
    s.encode("utf-8")  # no lone surrogates


def int_in(v, lo, hi):
    assert type(v) is int and lo <= v <= hi, v


def float_in(v, lo, hi):
    assert type(v) is float and math.isfinite(v) and lo <= v <= hi, v
    assert round(v, 1) == v, v


def check_timer(t):
    assert set(t) == {"active", "remaining", "mode", "duration"}, t
    assert type(t["active"]) is bool
    int_in(t["remaining"], 0, P.MAX_TIMER_S)
    int_in(t["mode"], 1, 2)
    int_in(t["duration"], 0, P.MAX_TIMER_S)


def check_event_data(etype, data):
    assert type(data) is dict
    for key, value in data.items():
        if etype == "boot":
            assert key in ("reason", "boot_count", "safe_mode"), key
            if key == "reason":
                clean_str(value, 0, 64)
            elif key == "boot_count":
                int_in(value, 0, P.UINT32)
            else:
                assert type(value) is bool
        elif etype in ("program_start", "program_stop"):
            assert key in ("slot", "mode"), key
            int_in(value, 1, 3 if key == "slot" else 2)
        elif etype == "timer_start":
            assert key in ("mode", "duration"), key
            int_in(value, 1, 2) if key == "mode" else int_in(value, 0, P.MAX_TIMER_S)
        elif etype == "timer_end":
            assert key == "reason"
            assert value in P.TIMER_END_REASONS
        elif etype == "override":
            assert key in ("slot", "until"), key
            int_in(value, 1, 3) if key == "slot" else int_in(value, 0, P.UINT32)
        elif etype == "freeze_protect":
            assert key in ("active", "temp"), key
            if key == "active":
                assert type(value) is bool
            elif value is not None:
                float_in(value, P.TEMP_MIN, P.TEMP_MAX)
        elif etype == "max_runtime":
            assert key == "run_s"
            int_in(value, 0, P.UINT32)
        else:
            assert etype == "error" and key == "msg"
            clean_str(value, 0, 200)


def check_result(suffix, result):
    kind, value = result
    # Whatever is accepted can be stored: strict JSON, valid UTF-8.
    json.dumps(value, allow_nan=False).encode("utf-8")
    if suffix == "pump/state":
        assert kind == "pump" and type(value) is bool
    elif suffix == "valve/state":
        assert kind == "valve" and type(value) is int and value in (1, 2)
    elif suffix == "timer/state":
        assert kind == "timer"
        check_timer(value)
    elif suffix == "temperature/state":
        assert kind == "temperature"
        float_in(value, P.TEMP_MIN, P.TEMP_MAX)
    elif suffix == "wifi/state":
        assert kind == "wifi"
        if value == {"status": "disconnected"}:
            return
        assert set(value) == {"status", "ssid", "ip", "rssi", "quality"}
        assert value["status"] == "connected"
        for key, hi in (("ssid", 32), ("ip", 45)):
            if value[key] is not None:
                clean_str(value[key], 0, hi)
        if value["rssi"] is not None:
            int_in(value["rssi"], -127, 0)
        assert value["quality"] is None or value["quality"] in P.WIFI_QUALITIES
    elif suffix == "status":
        assert kind == "status" and type(value) is bool
    elif suffix == "telemetry":
        assert kind == "telemetry"
        assert set(value) == set(VALID["telemetry"])
        int_in(value["ts"], 0, P.UINT32)
        int_in(value["seq"], 0, P.UINT32)
        if value["temp"] is not None:
            float_in(value["temp"], P.TEMP_MIN, P.TEMP_MAX)
        assert type(value["pump"]) is bool
        int_in(value["valve"], 1, 2)
        check_timer(value["timer"])
        if value["rssi"] is not None:
            int_in(value["rssi"], -127, 0)
        int_in(value["uptime"], 0, P.UINT32)
        int_in(value["mem_free"], 0, P.UINT32)
        clean_str(value["fw"], 1, 32)
        if value["hw"] is not None:
            clean_str(value["hw"], 1, 32)
        assert set(value["switches"]) == {"pump", "valve"}
        int_in(value["switches"]["pump"], 0, P.UINT32)
        int_in(value["switches"]["valve"], 0, P.UINT32)
    elif suffix == "ack":
        assert kind == "ack"
        assert set(value) <= {"id", "ok", "error", "reason", "state"}
        assert P.is_valid_id(value["id"])
        assert type(value["ok"]) is bool
        assert ("error" in value) == (not value["ok"])
        if "error" in value:
            assert value["error"] in P.ACK_ERRORS
        if "reason" in value:
            clean_str(value["reason"], 0, 200)
        if "state" in value:
            state = value["state"]
            assert set(state) == {"pump", "valve", "timer"}
            assert type(state["pump"]) is bool
            int_in(state["valve"], 1, 2)
            check_timer(state["timer"])
    elif suffix == "config/applied":
        assert kind == "config_applied"
        assert set(value) <= {"version", "ok", "error"}
        int_in(value["version"], 0, P.INT31)
        assert type(value["ok"]) is bool
        assert ("error" in value) == (not value["ok"])
        if "error" in value:
            clean_str(value["error"], 0, 200)
    elif suffix == "event":
        assert kind == "event"
        assert set(value) <= {"ts", "type", "data"}
        int_in(value["ts"], 0, P.UINT32)
        assert value["type"] in P.EVENT_TYPES
        if "data" in value:
            check_event_data(value["type"], value["data"])
    else:
        raise AssertionError(f"{suffix!r} accepted")


def parse(suffix, payload):
    """parse_device_message, failing the test on any exception but ProtocolError."""
    try:
        result = P.parse_device_message(suffix, payload)
    except P.ProtocolError as e:
        assert isinstance(str(e), str)
        return None
    check_result(suffix, result)
    return result


# --- properties ---------------------------------------------------------------------


def test_valid_samples_are_accepted():
    # The generators below start from these: they must be valid themselves.
    for name, obj in VALID.items():
        suffix = {"ack_error": "ack"}.get(name, name)
        assert parse(suffix, to_payload(obj)) is not None, name
    for etype, data in EVENT_DATA.items():
        payload = to_payload({"ts": 0, "type": etype, "data": data})
        assert parse("event", payload) == (
            "event",
            {"ts": 0, "type": etype, "data": data},
        )


@SETTINGS
@given(suffix=st.one_of(st.sampled_from(SUFFIXES), nasty_text), payload=st.binary())
def test_arbitrary_bytes(suffix, payload):
    parse(suffix, payload)


@SETTINGS
@given(
    suffix=st.sampled_from(SUFFIXES),
    payload=st.one_of(
        st.text(max_size=60),
        st.binary(max_size=8).map(lambda b: b.decode("latin-1")),
        st.integers(),
        st.none(),
        st.lists(st.integers(0, 255), max_size=5),
        st.binary(max_size=20).map(bytearray),
        st.binary(max_size=20).map(memoryview),
    ),
)
def test_arbitrary_payload_types(suffix, payload):
    parse(suffix, payload)


@SETTINGS
@given(suffix=st.sampled_from(SUFFIXES), value=json_values)
def test_arbitrary_json_values(suffix, value):
    parse(suffix, to_payload(value))


@SETTINGS
@given(message=mutated_message())
def test_mutated_valid_messages(message):
    suffix, obj = message
    parse(suffix, to_payload(obj))


@SETTINGS
@given(
    suffix=st.sampled_from(SUFFIXES),
    token=st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-Infinity",
            "1e999",
            "-1e999",
            "1" * 4000,
            "-0",
            "1.0",
            "true",
            "null",
            '"\\u0000"',
            '"\\ud800"',
            '"\\udfff\\ud800"',
            '"\\ud83d\\ude00"',
            deep(3000),
            deep(100, "{}"),
            '{"a":' * 2000 + "1" + "}" * 2000,
        ]
    ),
    key=st.sampled_from(
        [
            "ts",
            "temp",
            "valve",
            "remaining",
            "rssi",
            "ssid",
            "fw",
            "hw",
            "id",
            "reason",
            "error",
            "version",
            "data",
            "msg",
            "timer",
            "state",
            "switches",
            "type",
        ]
    ),
    base=st.sampled_from(sorted(VALID)),
)
def test_raw_json_tokens_in_every_field(suffix, token, key, base):
    obj = json.loads(json.dumps(VALID[base]))
    obj[key] = "@@"
    text = json.dumps(obj).replace('"@@"', token)
    target = {"ack_error": "ack"}.get(base, base)
    parse(target, text.encode())
    parse(suffix, text.encode())
    # The same token one level down, where nested objects are parsed.
    for nested in ("timer", "state", "switches", "data"):
        obj = json.loads(json.dumps(VALID[base]))
        if isinstance(obj.get(nested), dict):
            obj[nested][key] = "@@"
            parse(target, json.dumps(obj).replace('"@@"', token).encode())


@SETTINGS
@given(text=st.one_of(st.from_regex(r"\A\s*[-+]?\d{0,4}(\.\d{0,3})?\s*\Z"), nasty_text))
def test_temperature_text(text):
    result = parse("temperature/state", text.encode("utf-8", "surrogatepass"))
    if result is not None:
        # Only plain ASCII decimal text is a temperature.
        stripped = text.strip()
        assert all(c in "+-.0123456789" for c in stripped), text


@SETTINGS
@given(
    etype=st.sampled_from(sorted(EVENT_DATA)),
    data=st.dictionaries(
        st.sampled_from(
            [
                "reason",
                "boot_count",
                "safe_mode",
                "slot",
                "mode",
                "duration",
                "until",
                "active",
                "temp",
                "run_s",
                "msg",
                "extra",
            ]
        ),
        json_values,
        max_size=4,
    ),
)
def test_event_data_is_checked_per_type(etype, data):
    parse("event", to_payload({"ts": 1, "type": etype, "data": data}))


# --- topics -------------------------------------------------------------------------

prefixes = st.one_of(
    st.sampled_from(["devices", "acme/pools", "a", "x-y_z/1/2"]),
    nasty_text,
    st.sampled_from(["", "/", "devices/", "/devices", "dev/+", "dev/#", "de//v"]),
)
levels = st.one_of(
    st.text(alphabet=ID_ALPHABET, min_size=1, max_size=12),
    st.sampled_from(["+", "#", "", "ESP-A1B2C3", "\x00", "\ud800", "é", "x" * 70]),
    st.text(max_size=10),
)


def check_topic(topic_name, prefix):
    try:
        device_id, suffix = P.parse_topic(topic_name, prefix)
    except P.ProtocolError:
        return None
    assert P.is_valid_prefix(prefix)
    assert P.is_valid_id(device_id)
    assert type(suffix) is str and suffix
    for level in suffix.split("/"):
        assert level, suffix
        assert "+" not in level and "#" not in level and "\x00" not in level
        level.encode("utf-8")
    text = topic_name if isinstance(topic_name, str) else bytes(topic_name).decode()
    assert text == prefix + "/" + device_id + "/" + suffix
    return device_id, suffix


@SETTINGS
@given(prefix=prefixes, parts=st.lists(levels, max_size=6))
def test_topics_built_from_levels(prefix, parts):
    topic_name = "/".join([prefix] + parts)
    check_topic(topic_name, prefix)
    check_topic(topic_name.encode("utf-8", "surrogatepass"), prefix)


@SETTINGS
@given(
    prefix=prefixes,
    topic_name=st.one_of(
        st.text(max_size=80),
        st.binary(max_size=80),
        st.text(max_size=20).map(lambda s: "devices/" + s),
        st.integers(),
        st.none(),
    ),
)
def test_arbitrary_topics(prefix, topic_name):
    check_topic(topic_name, prefix)


@pytest.mark.parametrize(
    "topic_name",
    [
        "devices/ESP-A1B2C3/" + "a/" * 3000 + "b",
        "devices/" + "E" * 100000 + "/telemetry",
        "devices/ESP-A1B2C3/pump/+",
        "devices/ESP-A1B2C3/#",
        "devices/ESP-A1B2C3/pump//state",
        "devices/ESP-A1B2C3/telemetry/",
        "devices/+/telemetry",
    ],
)
def test_long_and_wildcard_topics(topic_name):
    result = check_topic(topic_name, "devices")
    if "+" in topic_name or "#" in topic_name or "//" in topic_name:
        assert result is None
    if topic_name.endswith("/"):
        assert result is None


def test_valid_topics_still_parse():
    assert P.parse_topic("devices/ESP-A1B2C3/telemetry", "devices") == (
        "ESP-A1B2C3",
        "telemetry",
    )
    assert P.parse_topic(b"acme/pools/esp32-pool-01/pump/state", "acme/pools") == (
        "esp32-pool-01",
        "pump/state",
    )
    assert P.parse_topic("devices/ESP-A1B2C3/ota/offer", "devices")[1] == "ota/offer"
    for bad in ("", "devices/", "dev/+"):
        with pytest.raises(P.ProtocolError):
            P.parse_topic(f"{bad}/ESP-A1B2C3/telemetry", bad)


@pytest.mark.parametrize(
    "suffix,payload",
    [
        ("event", b'{"ts":1,"type":"error","data":{"msg":"\\u0000"}}'),
        ("event", b'{"ts":1,"type":"boot","data":{"boot_count":NaN}}'),
        (
            "event",
            b'{"ts":1,"type":"error","data":{"msg":' + b"[" * 50 + b"]" * 50 + b"}}",
        ),
        ("ack", b'{"id":"c1","ok":false,"error":"busy","reason":"\\ud800"}'),
        ("config/applied", b'{"version":1,"ok":false,"error":"a\\u0000b"}'),
        ("wifi/state", b'{"status":"connected","ssid":"\\u0000"}'),
        ("telemetry", to_payload(dict(VALID["telemetry"], fw="ps1\x00"))),
        ("temperature/state", "\u0661\u0662.\u0665".encode()),
        ("temperature/state", b"25.3\x00"),
    ],
)
def test_found_by_fuzzing(suffix, payload):
    # Each of these was accepted (or passed through unchecked) before the fuzzing.
    with pytest.raises(P.ProtocolError):
        P.parse_device_message(suffix, payload)


def test_event_unknown_data_keys_are_dropped():
    payload = b'{"ts":1,"type":"boot","data":{"reason":"wdt","x":{"y":[1,2]}}}'
    assert P.parse_device_message("event", payload) == (
        "event",
        {"ts": 1, "type": "boot", "data": {"reason": "wdt"}},
    )


# --- what our own device answers must pass the bridge's parsers -----------------------

NOW = 1764400000


def _controller():
    from firmware.controller import Controller

    return Controller(lambda: NOW)


cmd_values = st.one_of(
    json_values,
    st.sampled_from(["ON", "off", "TOGGLE", 1, 2, {"mode": 1, "duration": 60}]),
)


@SETTINGS
@given(
    cmd_id=st.one_of(
        st.text(alphabet=ID_ALPHABET, min_size=1, max_size=64), json_values
    ),
    exp=st.one_of(st.just(NOW + 30), json_values),
    op=st.one_of(
        st.sampled_from(P.OPS), nasty_text, st.text(min_size=150, max_size=400)
    ),
    value=cmd_values,
    extra=st.dictionaries(nasty_text, json_values, max_size=2),
)
def test_device_ack_to_any_command_is_a_valid_ack(cmd_id, exp, op, value, extra):
    ctl = _controller()
    obj = dict(extra)
    obj.update({"id": cmd_id, "exp": exp, "op": op, "value": value})
    ack = ctl.handle_command(to_payload(obj))
    if ack is None:
        assert not P.is_valid_id(cmd_id)
        return
    # The firmware and the simulator publish P.dumps(ack): the bridge must accept it,
    # or the command would time out instead of failing with its reason.
    kind, parsed = P.parse_device_message("ack", P.dumps(ack))
    check_result("ack", (kind, parsed))
    assert parsed["id"] == cmd_id
    for ts, etype, data in ctl.pop_events():
        parse("event", P.encode_event(ts, etype, data))


@SETTINGS
@given(message=st.one_of(json_values, st.binary(max_size=64)))
def test_device_config_applied_to_any_config_is_valid(message):
    ctl = _controller()
    payload = message if isinstance(message, bytes) else to_payload(message)
    applied = ctl.handle_config(payload)
    check_result(
        "config/applied", P.parse_device_message("config/applied", P.dumps(applied))
    )


def test_device_answers_long_unknown_op_with_a_parsable_ack():
    ctl = _controller()
    op = "x" * 300
    ack = ctl.handle_command(to_payload({"id": "c1", "exp": NOW + 30, "op": op}))
    assert ack["error"] == "unsupported" and len(ack["reason"]) <= 200
    assert P.parse_device_message("ack", P.dumps(ack))[1]["error"] == "unsupported"
