"""firmware.protocol at the edges: every range of docs/protocol.md accepted at both of
its ends and refused one step outside, and every encoder read back by its parser.

Plain functions and asserts (no pytest features), so the file also runs under
MicroPython like test_protocol.py.
"""

import json

try:
    from firmware import protocol
    from firmware.tests.helpers import raises
except ImportError:  # MicroPython: flat filesystem
    import protocol
    from helpers import raises

P = protocol
PE = protocol.ProtocolError
U32 = P.UINT32
I31 = P.INT31


def copy(obj):
    return json.loads(json.dumps(obj))


def merged(base, **changes):
    out = copy(base)
    for key in changes:
        out[key] = changes[key]
    return out


def enc(obj):
    return json.dumps(obj).encode()


TIMER = {"active": True, "remaining": 1740, "mode": 1, "duration": 1800}
TELEMETRY = {
    "ts": 1764400000,
    "seq": 42,
    "temp": 24.5,
    "pump": True,
    "valve": 1,
    "timer": TIMER,
    "rssi": -61,
    "uptime": 3600,
    "mem_free": 81234,
    "fw": "ps1-0.1.0",
    "hw": "esp32",
    "switches": {"pump": 120, "valve": 33},
}
THRESHOLDS = {
    "freeze_on_c": 2.0,
    "freeze_hysteresis_c": 1.0,
    "pump_max_run_s_day": 43200,
    "min_switch_interval_s": 3,
}
DAY = {"mode": 1, "start": "10:00", "stop": "12:30"}
CONFIG = {
    "version": 7,
    "tz": "Europe/Madrid",
    "tz_posix": "CET-1CEST,M3.5.0,M10.5.0/3",
    "telemetry_interval": 60,
    "thresholds": THRESHOLDS,
    "programs": [
        {"slot": 1, "enabled": True, "days": [DAY, None, None, None, None, None, None]}
    ],
}


def int_edges(parse, build, lo, hi):
    """parse(build(v)) accepts lo and hi, refuses lo - 1, hi + 1, a bool, a float and
    a string; returns what it parsed at lo and hi."""
    got = (parse(build(lo)), parse(build(hi)))
    for bad in (lo - 1, hi + 1, 1.0 * lo, str(lo)):
        raises(PE, parse, build(bad))
    # A JSON true is never a number (when the range admits 1 or 0, it would pass).
    raises(PE, parse, build(True))
    raises(PE, parse, build(False))
    return got


def float_edges(parse, build, lo, hi, step, nullable=False):
    got = (parse(build(lo)), parse(build(hi)))
    for bad in (lo - step, hi + step, True, "1.0") + (() if nullable else (None,)):
        raises(PE, parse, build(bad))
    return got


def str_edges(parse, build, lo, hi):
    got = (parse(build("a" * lo)), parse(build("a" * hi)))
    raises(PE, parse, build("a" * (hi + 1)))
    if lo > 0:
        raises(PE, parse, build("a" * (lo - 1)))
    raises(PE, parse, build(7))
    return got


# --- ids, prefixes, topics ------------------------------------------------------------


def test_ids_at_their_lengths_and_every_character_class():
    assert P.is_valid_id("a") and P.is_valid_id("a" * 64)
    assert not P.is_valid_id("") and not P.is_valid_id("a" * 65)
    assert P.is_valid_id("AZaz09_-")
    for c in "./ +#$\x00é\n":
        assert not P.is_valid_id("ab" + c), repr(c)
    assert not P.is_valid_id(None) and not P.is_valid_id(b"abc")


def test_ps1_ids_and_the_mac_they_come_from():
    assert P.is_ps1_id("ESP-000000") and P.is_ps1_id("ESP-FFFFFF")
    for bad in ("ESP-00000", "ESP-0000000", "ESP-fFFFFF", "ESP-G00000", "ESP_000000"):
        assert not P.is_ps1_id(bad), bad
    assert not P.is_ps1_id(None)
    # Encoder and validator agree, at both ends of the byte range.
    low = P.device_id_from_mac(bytes([9, 9, 9, 0, 0, 0]))
    high = P.device_id_from_mac(bytes([9, 9, 9, 255, 255, 255]))
    mid = P.device_id_from_mac(bytes([0, 0, 0, 0xA1, 0x0B, 0xC3]))
    assert (low, high, mid) == ("ESP-000000", "ESP-FFFFFF", "ESP-A10BC3")
    assert P.is_ps1_id(low) and P.is_ps1_id(high) and P.is_ps1_id(mid)


def test_prefixes_at_their_length_and_level_rules():
    assert P.is_valid_prefix("a" * 128) and not P.is_valid_prefix("a" * 129)
    assert P.is_valid_prefix("a/b/c") and P.is_valid_prefix("A-z_9")
    for bad in ("", "/a", "a/", "a//b", "a/+", "a/#", "a b", "a.b", None, 3):
        assert not P.is_valid_prefix(bad), repr(bad)


def test_topic_round_trip_and_its_length_limit():
    for prefix, device_id, suffix in (
        ("devices", "ESP-A1B2C3", "telemetry"),
        ("a" * 128, "b" * 64, "config/applied"),
        ("p/q", "x", "wifi/state"),
    ):
        name = P.topic(prefix, device_id, suffix)
        assert P.parse_topic(name, prefix) == (device_id, suffix)
        assert P.parse_topic(name.encode(), prefix) == (device_id, suffix)
    head = "devices/ESP-A1B2C3/"
    longest = head + "s" * (65535 - len(head))
    assert P.parse_topic(longest, "devices")[0] == "ESP-A1B2C3"
    raises(PE, P.parse_topic, longest + "s", "devices")
    for bad in ("devices/ESP-A1B2C3", "devices/ESP-A1B2C3/", "devices//x", "other/x/y"):
        raises(PE, P.parse_topic, bad, "devices")
    raises(PE, P.parse_topic, "devices/a/b//c", "devices")
    raises(PE, P.parse_topic, "devices/a/b+", "devices")


def test_subscriptions_round_trip_through_parse_topic():
    for sub in P.subscriptions("p/q"):
        device_id, suffix = P.parse_topic(sub.replace("+", "ESP-000001"), "p/q")
        assert device_id == "ESP-000001" and suffix in P.DEVICE_TO_CLOUD


# --- payload size ---------------------------------------------------------------------


def test_payload_size_is_exactly_4096_bytes_every_way_it_arrives():
    def status_padded(total):
        return b"online" + b" " * (total - 6)

    for size, ok in ((4096, True), (4097, False)):
        payload = status_padded(size)
        for shape in (payload, bytearray(payload), memoryview(payload)):
            if ok:
                assert P.parse_status(shape) is True
            else:
                raises(PE, P.parse_status, shape)
    # Text counts bytes, not characters: 2048 two-byte characters are 4096 bytes.
    assert len(P._text("é" * 2048)) == 2048
    raises(PE, P._text, "é" * 2049)
    assert P._text("a" * 4096) and raises(PE, P._text, "a" * 4097)


# --- v3.1 state topics ----------------------------------------------------------------


def parse_timer(obj):
    return P.parse_timer_state(enc(obj))


def test_timer_state_ranges():
    for key in ("remaining", "duration"):
        lo, hi = int_edges(
            parse_timer, lambda v, k=key: merged(TIMER, **{k: v}), 0, P.MAX_TIMER_S
        )
        assert (lo[key], hi[key]) == (0, 86400)
    lo, hi = int_edges(parse_timer, lambda v: merged(TIMER, mode=v), 1, 2)
    assert (lo["mode"], hi["mode"]) == (1, 2)
    for v in (True, False):
        assert parse_timer(merged(TIMER, active=v))["active"] is v
    for bad in (0, 1, "true", None):
        raises(PE, parse_timer, merged(TIMER, active=bad))


def test_timer_state_round_trip():
    for timer in (
        TIMER,
        {"active": False, "remaining": 0, "mode": 2, "duration": 0},
        {"active": True, "remaining": 86400, "mode": 2, "duration": 86400},
    ):
        assert P.parse_device_message("timer/state", P.encode_timer_state(timer)) == (
            "timer",
            timer,
        )


def test_temperature_ends_and_text_shapes():
    def parse(text):
        return P.parse_device_message("temperature/state", text)[1]

    assert parse("-55.0") == -55.0 and parse("125.0") == 125.0
    assert parse("-55") == -55.0 and parse("125") == 125.0
    for bad in ("-55.1", "125.1", "126", "-56"):
        raises(PE, parse, bad)
    assert parse(" +25.3\n") == 25.3 and parse("0") == 0.0 and parse("-0.0") == 0.0
    for bad in ("25.", ".5", "1e2", "nan", "inf", "25,3", "2 5", "", "+", "-", "١٢"):
        raises(PE, parse, bad)
    # At most 12 characters after the sign.
    assert parse("0" * 8 + "1.00") == 1.0 and parse("-" + "0" * 8 + "1.00") == -1.0
    raises(PE, parse, "0" * 9 + "1.00")
    assert parse("25.34") == 25.3 and parse("25.36") == 25.4


def test_temperature_round_trip_at_both_ends():
    for value in (-55.0, -0.1, 0.0, 25.3, 124.9, 125.0):
        text = P.encode_temperature(value)
        assert P.parse_device_message("temperature/state", text) == (
            "temperature",
            value,
        )


def test_pump_valve_and_status_round_trip():
    for on in (True, False):
        assert P.parse_device_message("pump/state", P.encode_pump_state(on))[1] is on
        assert P.parse_device_message("status", P.encode_status(on))[1] is on
    for mode in (1, 2):
        assert P.parse_device_message("valve/state", P.encode_valve_state(mode)) == (
            "valve",
            mode,
        )
    assert P.parse_pump_state(b" on \n") is True and P.parse_pump_state("Off") is False
    for bad in ("ONN", "1", "true", ""):
        raises(PE, P.parse_pump_state, bad)
    for bad in ("0", "3", "01", "1.0", ""):
        raises(PE, P.parse_valve_state, bad)
    for bad in ("Online", "ONLINE", "1", ""):
        raises(PE, P.parse_status, bad)


def wifi(**changes):
    base = {
        "status": "connected",
        "ssid": "home",
        "ip": "10.0.0.9",
        "rssi": -55,
        "quality": "good",
    }
    return merged(base, **changes)


def parse_wifi(obj):
    return P.parse_device_message("wifi/state", enc(obj))[1]


def test_wifi_state_ranges():
    lo, hi = int_edges(parse_wifi, lambda v: wifi(rssi=v), -127, 0)
    assert (lo["rssi"], hi["rssi"]) == (-127, 0)
    str_edges(parse_wifi, lambda v: wifi(ssid=v), 0, 32)
    str_edges(parse_wifi, lambda v: wifi(ip=v), 0, 45)
    for quality in P.WIFI_QUALITIES:
        assert parse_wifi(wifi(quality=quality))["quality"] == quality
    raises(PE, parse_wifi, wifi(quality="great"))
    # Missing fields are null.
    assert parse_wifi({"status": "connected"}) == {
        "status": "connected",
        "ssid": None,
        "ip": None,
        "rssi": None,
        "quality": None,
    }
    assert parse_wifi({"status": "disconnected", "rssi": "x"}) == {
        "status": "disconnected"
    }
    for bad in ("Connected", "", None, 1):
        raises(PE, parse_wifi, {"status": bad})


def test_wifi_quality_changes_exactly_at_its_thresholds():
    cases = {
        0: "excellent",
        -50: "excellent",
        -51: "good",
        -60: "good",
        -61: "fair",
        -70: "fair",
        -71: "weak",
        -127: "weak",
    }
    for rssi, word in cases.items():
        assert P.wifi_quality(rssi) == word, rssi


def test_wifi_state_round_trip():
    for rssi in (0, -50, -51, -60, -61, -70, -71, -127):
        payload = P.encode_wifi_state("s" * 32, "a" * 45, rssi)
        assert parse_wifi(json.loads(payload)) == {
            "status": "connected",
            "ssid": "s" * 32,
            "ip": "a" * 45,
            "rssi": rssi,
            "quality": P.wifi_quality(rssi),
        }
    assert P.encode_wifi_state(None, None, None) == P.WIFI_DISCONNECTED.encode()
    assert P.parse_device_message("wifi/state", P.encode_wifi_state(None, "x", -1)) == (
        "wifi",
        {"status": "disconnected"},
    )


# --- ps1 device -> cloud --------------------------------------------------------------


def parse_tel(obj):
    return P.parse_telemetry(enc(obj))


def test_telemetry_ranges():
    for key in ("ts", "seq", "uptime", "mem_free"):
        lo, hi = int_edges(
            parse_tel, lambda v, k=key: merged(TELEMETRY, **{k: v}), 0, U32
        )
        assert (lo[key], hi[key]) == (0, U32)
    lo, hi = int_edges(parse_tel, lambda v: merged(TELEMETRY, valve=v), 1, 2)
    assert (lo["valve"], hi["valve"]) == (1, 2)
    lo, hi = int_edges(parse_tel, lambda v: merged(TELEMETRY, rssi=v), -127, 0)
    assert (lo["rssi"], hi["rssi"]) == (-127, 0)
    lo, hi = float_edges(
        parse_tel,
        lambda v: merged(TELEMETRY, temp=v),
        P.TEMP_MIN,
        P.TEMP_MAX,
        0.1,
        nullable=True,
    )
    assert (lo["temp"], hi["temp"]) == (-55.0, 125.0)
    assert parse_tel(merged(TELEMETRY, temp=-55))["temp"] == -55.0
    lo, hi = str_edges(parse_tel, lambda v: merged(TELEMETRY, fw=v), 1, 32)
    assert (lo["fw"], hi["fw"]) == ("a", "a" * 32)
    lo, hi = str_edges(parse_tel, lambda v: merged(TELEMETRY, hw=v), 1, 32)
    assert (lo["hw"], hi["hw"]) == ("a", "a" * 32)
    for key in ("pump", "valve"):
        lo, hi = int_edges(
            parse_tel,
            lambda v, k=key: merged(
                TELEMETRY, switches=merged({"pump": 1, "valve": 1}, **{k: v})
            ),
            0,
            U32,
        )
        assert (lo["switches"][key], hi["switches"][key]) == (0, U32)
    for key in ("remaining", "duration"):
        int_edges(
            parse_tel,
            lambda v, k=key: merged(TELEMETRY, timer=merged(TIMER, **{k: v})),
            0,
            P.MAX_TIMER_S,
        )


def test_telemetry_null_and_missing():
    got = parse_tel(merged(TELEMETRY, temp=None, rssi=None))
    assert got["temp"] is None and got["rssi"] is None
    for key in TELEMETRY:
        obj = copy(TELEMETRY)
        del obj[key]
        if key == "hw":  # optional: firmware before the hardware model
            assert parse_tel(obj)["hw"] is None
            continue
        raises(PE, parse_tel, obj)


def test_telemetry_round_trip():
    for tel in (
        TELEMETRY,
        merged(TELEMETRY, ts=0, seq=0, temp=None, rssi=None, uptime=0, mem_free=0),
        merged(TELEMETRY, ts=U32, seq=U32, temp=125.0, rssi=0, valve=2),
    ):
        assert P.parse_device_message("telemetry", P.encode_telemetry(tel)) == (
            "telemetry",
            tel,
        )


STATE = {"pump": True, "valve": 2, "timer": TIMER}


def parse_ack(obj):
    return P.parse_ack(enc(obj))


def test_ack_rules():
    str_edges(parse_ack, lambda v: {"id": v, "ok": True}, 1, 64)
    raises(PE, parse_ack, {"id": "c-1", "ok": True, "error": "busy"})
    raises(PE, parse_ack, {"id": "c-1", "ok": False})
    raises(PE, parse_ack, {"id": "c-1", "ok": False, "error": "nope"})
    raises(PE, parse_ack, {"id": "c-1", "ok": 1})
    got = parse_ack({"id": "c-1", "ok": True, "reason": "r" * 200})
    assert got["reason"] == "r" * 200
    raises(PE, parse_ack, {"id": "c-1", "ok": True, "reason": "r" * 201})
    raises(PE, parse_ack, {"id": "c-1", "ok": True, "state": {"pump": True}})
    raises(PE, parse_ack, {"id": "c-1", "ok": True, "state": merged(STATE, valve=3)})
    int_edges(
        parse_ack,
        lambda v: {"id": "c", "ok": True, "state": merged(STATE, valve=v)},
        1,
        2,
    )


def test_ack_round_trip():
    assert P.parse_ack(P.encode_ack("c-1", True, state=STATE)) == {
        "id": "c-1",
        "ok": True,
        "state": STATE,
    }
    assert P.parse_ack(P.encode_ack("x" * 64, True)) == {"id": "x" * 64, "ok": True}
    for error in P.ACK_ERRORS:
        got = P.parse_ack(P.encode_ack("c-2", False, error, "why"))
        assert got == {"id": "c-2", "ok": False, "error": error, "reason": "why"}
    # No error given is "failed"; a long reason is cut to what the parser accepts.
    got = P.parse_ack(P.encode_ack("c-3", False, reason="r" * 300))
    assert got == {"id": "c-3", "ok": False, "error": "failed", "reason": "r" * 200}


def parse_applied(obj):
    return P.parse_config_applied(enc(obj))


def test_config_applied_rules():
    lo, hi = int_edges(parse_applied, lambda v: {"version": v, "ok": True}, 0, I31)
    assert (lo["version"], hi["version"]) == (0, I31)
    got = parse_applied({"version": 1, "ok": False, "error": "e" * 200})
    assert got["error"] == "e" * 200
    raises(PE, parse_applied, {"version": 1, "ok": False, "error": "e" * 201})
    raises(PE, parse_applied, {"version": 1, "ok": True, "error": "e"})
    assert parse_applied({"version": 1, "ok": False})["error"] == "rejected"


def test_config_applied_round_trip():
    for version in (0, 1, I31):
        assert P.parse_config_applied(P.encode_config_applied(version, True)) == {
            "version": version,
            "ok": True,
        }
    got = P.parse_config_applied(P.encode_config_applied(I31, False, "x" * 300))
    assert got == {"version": I31, "ok": False, "error": "x" * 200}
    got = P.parse_config_applied(P.encode_config_applied(3, False))
    assert got == {"version": 3, "ok": False, "error": "rejected"}


def parse_event_data(etype, data):
    return P.parse_event(enc({"ts": 1, "type": etype, "data": data}))["data"]


# (event type, key, lo, hi) of every integer in event data.
EVENT_INTS = (
    ("boot", "boot_count", 0, U32),
    ("program_start", "slot", 1, 3),
    ("program_start", "mode", 1, 2),
    ("program_stop", "slot", 1, 3),
    ("program_stop", "mode", 1, 2),
    ("timer_start", "mode", 1, 2),
    ("timer_start", "duration", 0, P.MAX_TIMER_S),
    ("override", "slot", 1, 3),
    ("override", "until", 0, U32),
    ("max_runtime", "run_s", 0, U32),
)


def test_event_data_integers_at_their_ends():
    for etype, key, lo, hi in EVENT_INTS:
        got = int_edges(
            lambda data, t=etype: parse_event_data(t, data),
            lambda v, k=key: {k: v},
            lo,
            hi,
        )
        assert got == ({key: lo}, {key: hi}), (etype, key)


def test_event_data_strings_bools_and_words():
    str_edges(lambda d: parse_event_data("boot", d), lambda v: {"reason": v}, 0, 64)
    str_edges(lambda d: parse_event_data("error", d), lambda v: {"msg": v}, 0, 200)
    for etype, key in (("boot", "safe_mode"), ("freeze_protect", "active")):
        for v in (True, False):
            assert parse_event_data(etype, {key: v}) == {key: v}
        raises(PE, parse_event_data, etype, {key: 1})
    for reason in P.TIMER_END_REASONS:
        assert parse_event_data("timer_end", {"reason": reason}) == {"reason": reason}
    raises(PE, parse_event_data, "timer_end", {"reason": "Done"})
    got = float_edges(
        lambda d: parse_event_data("freeze_protect", d),
        lambda v: {"temp": v} if v is not None else {"temp": "x"},
        -55.0,
        125.0,
        0.1,
    )
    assert got == ({"temp": -55.0}, {"temp": 125.0})
    assert parse_event_data("freeze_protect", {"temp": None}) == {"temp": None}


def test_event_envelope():
    int_edges(P.parse_event, lambda v: enc({"ts": v, "type": "boot"}), 0, U32)
    for etype in P.EVENT_TYPES:
        assert P.parse_event(enc({"ts": 0, "type": etype})) == {"ts": 0, "type": etype}
    for bad in ("Boot", "", None, 1):
        raises(PE, P.parse_event, enc({"ts": 0, "type": bad}))
    raises(PE, P.parse_event, enc({"ts": 0, "type": "boot", "data": [1]}))


def test_event_round_trip():
    samples = {
        "boot": {"reason": "power on", "boot_count": U32, "safe_mode": False},
        "program_start": {"slot": 3, "mode": 2},
        "program_stop": {"slot": 1, "mode": 1},
        "timer_start": {"mode": 2, "duration": 86400},
        "timer_end": {"reason": "max_runtime"},
        "override": {"slot": 3, "until": U32},
        "freeze_protect": {"active": True, "temp": -55.0},
        "max_runtime": {"run_s": 0},
        "error": {"msg": "m" * 200},
    }
    assert set(samples) == set(P.EVENT_TYPES)
    for etype, data in samples.items():
        assert P.parse_event(P.encode_event(U32, etype, data)) == {
            "ts": U32,
            "type": etype,
            "data": data,
        }
        assert P.parse_event(P.encode_event(0, etype)) == {"ts": 0, "type": etype}


# --- cloud -> device: cmd -------------------------------------------------------------


def cmd(**changes):
    return enc(
        merged({"id": "c-1", "exp": 100, "op": "reboot", "value": None}, **changes)
    )


def test_command_ranges():
    def parse(payload):
        return P.parse_command(payload)

    lo, hi = int_edges(parse, lambda v: cmd(exp=v), 0, U32)
    assert (lo["exp"], hi["exp"]) == (0, U32)
    base = {"mode": 1, "duration": 60}
    for key, lo_v, hi_v in (("mode", 1, 2), ("duration", 0, P.MAX_TIMER_S)):
        lo, hi = int_edges(
            parse,
            lambda v, k=key: cmd(op="timer", value=merged(base, **{k: v})),
            lo_v,
            hi_v,
        )
        assert (lo["value"][key], hi["value"][key]) == (lo_v, hi_v)
    str_edges(parse, lambda v: cmd(id=v), 1, 64)
    for value in ("on", "Off", "toggle"):
        assert parse(cmd(op="pump", value=value))["value"] == value.upper()
    for bad in ("1", "", None, True, 1):
        raises(PE, parse, cmd(op="pump", value=bad))
    for value in (1, 2, "TOGGLE"):
        assert parse(cmd(op="valve", value=value))["value"] == value
    for bad in (0, 3, True, "1", "toggle", 1.0):
        raises(PE, parse, cmd(op="valve", value=bad))
    for op in ("wifi_clear", "override_clear", "reboot"):
        assert parse(cmd(op=op, value=None))["value"] is None
        raises(PE, parse, cmd(op=op, value=0))
    e = raises(PE, parse, cmd(op="dance"))
    assert e.code == "unsupported" and e.cmd_id == "c-1"
    e = raises(PE, parse, cmd(exp=-1))
    assert e.code == "invalid" and e.cmd_id == "c-1"


def test_command_encoder_checks_the_same_ranges():
    assert json.loads(P.encode_command("c", 0, "reboot"))["exp"] == 0
    assert json.loads(P.encode_command("c" * 64, U32, "reboot"))["exp"] == U32
    for bad_exp in (-1, U32 + 1, True, 1.0, "1"):
        raises(PE, P.encode_command, "c", bad_exp, "reboot")
    for bad_id in ("", "c" * 65, "c d", None):
        raises(PE, P.encode_command, bad_id, 0, "reboot")
    e = raises(PE, P.encode_command, "c", 0, "dance")
    assert e.code == "unsupported"


def test_command_round_trip_for_every_op():
    cases = (
        ("pump", "ON"),
        ("pump", "OFF"),
        ("pump", "TOGGLE"),
        ("valve", 1),
        ("valve", 2),
        ("valve", "TOGGLE"),
        ("timer", {"mode": 1, "duration": 0}),
        ("timer", {"mode": 2, "duration": 86400}),
        ("wifi_clear", None),
        ("override_clear", None),
        ("reboot", None),
        ("credentials", {"username": "ESP-A1B2C3~3", "password": "p" * 8}),
        ("credentials", {"username": "E" * 64, "password": "~ !" + "x" * 125}),
    )
    assert {op for op, _ in cases} == set(P.OPS)
    for op, value in cases:
        payload = P.encode_command("c-" + op, U32, op, value)
        assert P.parse_command(payload) == {
            "id": "c-" + op,
            "exp": U32,
            "op": op,
            "value": value,
        }
    # Lower-case pump values are normalised by both sides alike.
    assert P.parse_command(P.encode_command("c", 1, "pump", "on"))["value"] == "ON"


# --- cloud -> device: config/set ------------------------------------------------------


def config_with(**changes):
    return merged(CONFIG, **changes)


def thresholds(**changes):
    return config_with(thresholds=merged(THRESHOLDS, **changes))


def program(slot=1, days=None, enabled=True):
    return {"slot": slot, "enabled": enabled, "days": days or [DAY] + [None] * 6}


def day(start, stop, mode=1):
    return {"mode": mode, "start": start, "stop": stop}


def one_day(entry):
    return config_with(programs=[program(days=[entry] + [None] * 6)])


def test_config_top_level_ranges():
    v = P.validate_config
    lo, hi = int_edges(v, lambda x: config_with(version=x), 0, I31)
    assert (lo["version"], hi["version"]) == (0, I31)
    lo, hi = int_edges(v, lambda x: config_with(telemetry_interval=x), 10, 3600)
    assert (lo["telemetry_interval"], hi["telemetry_interval"]) == (10, 3600)
    str_edges(v, lambda x: config_with(tz=x), 0, 64)
    assert v(config_with(tz_posix="UTC0"))["tz_posix"] == "UTC0"
    longest = "A" * 63 + "0"
    assert v(config_with(tz_posix=longest))["tz_posix"] == longest
    raises(PE, v, config_with(tz_posix=""))
    raises(PE, v, config_with(tz_posix="A" * 64 + "0"))
    raises(PE, v, config_with(tz_posix="not a zone"))
    for key in CONFIG:
        obj = copy(CONFIG)
        del obj[key]
        raises(PE, v, obj)


def test_config_thresholds_at_their_ends():
    v = P.validate_config
    lo, hi = float_edges(v, lambda x: thresholds(freeze_on_c=x), -20.0, 20.0, 0.1)
    assert (lo["thresholds"]["freeze_on_c"], hi["thresholds"]["freeze_on_c"]) == (
        -20.0,
        20.0,
    )
    lo, hi = float_edges(
        v, lambda x: thresholds(freeze_hysteresis_c=x), 0.1, 10.0, 0.05
    )
    assert lo["thresholds"]["freeze_hysteresis_c"] == 0.1
    assert hi["thresholds"]["freeze_hysteresis_c"] == 10.0
    raises(PE, v, thresholds(freeze_hysteresis_c=0))
    lo, hi = int_edges(v, lambda x: thresholds(pump_max_run_s_day=x), 0, 86400)
    assert hi["thresholds"]["pump_max_run_s_day"] == 86400
    lo, hi = int_edges(v, lambda x: thresholds(min_switch_interval_s=x), 0, 600)
    assert hi["thresholds"]["min_switch_interval_s"] == 600
    # An integer is a valid float.
    assert v(thresholds(freeze_on_c=-20))["thresholds"]["freeze_on_c"] == -20.0


def test_config_programs_slots_and_count():
    v = P.validate_config
    for slot in (1, 2, 3):
        assert v(config_with(programs=[program(slot)]))["programs"][0]["slot"] == slot
    for bad in (0, 4, True, 1.0):
        raises(PE, v, config_with(programs=[program(bad)]))
    three = [program(3), program(1), program(2)]
    assert [p["slot"] for p in v(config_with(programs=three))["programs"]] == [1, 2, 3]
    raises(PE, v, config_with(programs=three + [program(1)]))
    raises(PE, v, config_with(programs=[program(2), program(2)]))
    assert v(config_with(programs=[]))["programs"] == []
    for bad in (None, {}, "x"):
        raises(PE, v, config_with(programs=bad))
    for bad in (None, 1):
        raises(PE, v, config_with(programs=[program(1, enabled=bad)]))


def test_config_days_list_and_modes():
    v = P.validate_config
    assert v(config_with(programs=[program(days=[None] * 7)]))
    for days in ([None] * 6, [None] * 8):
        raises(PE, v, config_with(programs=[program(days=days)]))
    for mode in (1, 2):
        assert v(one_day(day("10:00", "11:00", mode)))["programs"][0]["days"][0] == (
            day("10:00", "11:00", mode)
        )
    for bad in (0, 3, True, "1"):
        raises(PE, v, one_day(day("10:00", "11:00", bad)))
    raises(PE, v, one_day("10:00-11:00"))
    # Every weekday position is checked, the last one too.
    raises(
        PE,
        v,
        config_with(programs=[program(days=[None] * 6 + [day("11:00", "10:00")])]),
    )


def test_config_times_at_their_edges():
    v = P.validate_config
    # The widest window of a day, and the shortest one.
    assert v(one_day(day("00:00", "23:59")))
    assert v(one_day(day("23:58", "23:59")))
    assert v(one_day(day("00:00", "00:01")))
    # A stop equal to its start is refused, as is one before it.
    for start, stop in (("10:00", "10:00"), ("00:00", "00:00"), ("23:59", "23:59")):
        e = raises(PE, v, one_day(day(start, stop)))
        assert "stop must be after start" in str(e)
    raises(PE, v, one_day(day("10:01", "10:00")))
    # HH 00..23, MM 00..59, exactly five characters.
    for bad in ("24:00", "23:60", "9:00", "09:0", "0900", "09-00", "+9:00", 900):
        raises(PE, v, one_day(day(bad, "23:59")))
        raises(PE, v, one_day(day("00:00", bad)))
    raises(PE, v, one_day({"mode": 1, "start": "10:00"}))
    # Digits of other scripts: refused, and never anything but ProtocolError.
    for bad in ("\u0661\u0660:00", "\u00b23:00", "1\u00b2:00", "10:\u0665\u0665"):
        raises(PE, v, one_day(day(bad, "23:59")))
        raises(PE, P.parse_config, enc(one_day(day("00:00", bad))))


def test_config_round_trip():
    full = config_with(
        version=I31,
        tz="t" * 64,
        telemetry_interval=3600,
        thresholds={
            "freeze_on_c": -20.0,
            "freeze_hysteresis_c": 10.0,
            "pump_max_run_s_day": 86400,
            "min_switch_interval_s": 600,
        },
        programs=[
            program(1, [day("00:00", "23:59", 2)] * 7),
            program(2, [None] * 7, enabled=False),
            program(3, [day("23:58", "23:59")] + [None] * 6),
        ],
    )
    for config in (CONFIG, full, config_with(version=0, programs=[])):
        assert P.parse_config(P.encode_config(config)) == config


def test_rejected_config_keeps_its_version_when_readable():
    for version, kept in (
        (0, 0),
        (I31, I31),
        (I31 + 1, None),
        (-1, None),
        (True, None),
    ):
        e = raises(PE, P.parse_config, enc(config_with(version=version, tz_posix="")))
        assert e.version == kept, version


# --- v3.1 set topics ------------------------------------------------------------------


def test_v31_set_round_trip_for_every_op_it_has():
    cases = (
        ("pump", "ON"),
        ("pump", "OFF"),
        ("pump", "TOGGLE"),
        ("valve", 1),
        ("valve", 2),
        ("valve", "TOGGLE"),
        ("timer", {"mode": 1, "duration": 0}),
        ("timer", {"mode": 2, "duration": 86400}),
        ("wifi_clear", None),
    )
    for op, value in cases:
        suffix, payload = P.encode_v31_set(op, value)
        assert suffix in P.V31_CLOUD_TO_DEVICE
        assert P.parse_v31_set(suffix, payload) == (op, value), (op, value)
    for op in ("override_clear", "reboot"):
        e = raises(PE, P.encode_v31_set, op)
        assert e.code == "unsupported"
    e = raises(PE, P.encode_v31_set, "dance")
    assert e.code == "unsupported"


def test_v31_set_parsing_at_its_edges():
    for text, value in (
        ("1", "ON"),
        ("on", "ON"),
        (" 0 ", "OFF"),
        ("toggle", "TOGGLE"),
    ):
        assert P.parse_v31_set("pump/set", text) == ("pump", value)
    for bad in ("2", "onn", ""):
        raises(PE, P.parse_v31_set, "pump/set", bad)
    for bad in ("0", "3", "12", ""):
        raises(PE, P.parse_v31_set, "valve/set", bad)
    base = {"mode": 1, "duration": 60}
    for key, lo, hi in (("mode", 1, 2), ("duration", 0, P.MAX_TIMER_S)):
        int_edges(
            lambda payload: P.parse_v31_set("timer/set", payload),
            lambda v, k=key: enc(merged(base, **{k: v})),
            lo,
            hi,
        )
    # wifi/clear: anything clears, even bytes that are not text.
    assert P.parse_v31_set("wifi/clear", b"\xff\x00") == ("wifi_clear", None)
    raises(PE, P.parse_v31_set, "wifi/set", "1")


# --- provisioning bundle --------------------------------------------------------------

MQTT = {
    "host": "mqtt.example.com",
    "port": 8883,
    "tls": True,
    "username": "ESP-A1B2C3",
    "password": "pw",
    "prefix": "devices",
}


def bundle(**mqtt):
    return enc({"v": 1, "device_id": "ESP-A1B2C3", "mqtt": merged(MQTT, **mqtt)})


def test_bundle_ranges():
    lo, hi = int_edges(P.parse_bundle, lambda v: bundle(port=v), 1, 65535)
    assert (lo["mqtt"]["port"], hi["mqtt"]["port"]) == (1, 65535)
    str_edges(P.parse_bundle, lambda v: bundle(host=v), 1, 253)
    str_edges(P.parse_bundle, lambda v: bundle(username=v), 0, 128)
    str_edges(P.parse_bundle, lambda v: bundle(password=v), 0, 256)
    for bad in (0, 2, True, "1", None):
        raises(PE, P.parse_bundle, enc({"v": bad, "device_id": "x", "mqtt": MQTT}))
    raises(PE, P.parse_bundle, bundle(prefix="a//b"))
    mqtt = copy(MQTT)
    del mqtt["prefix"]
    got = P.parse_bundle(enc({"v": 1, "device_id": "x", "mqtt": mqtt}))
    assert got["mqtt"]["prefix"] == P.DEFAULT_PREFIX


def test_bundle_round_trip():
    ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    for value in (
        {"v": 1, "device_id": "ESP-A1B2C3", "mqtt": MQTT, "ca": None, "ota_key": None},
        {
            "v": 1,
            "device_id": "d" * 64,
            "mqtt": merged(MQTT, password=""),
            "ca": ca,
            "ota_key": "0f" * 32,
        },
    ):
        assert P.parse_bundle(P.dumps(value)) == value
    raises(PE, P.parse_bundle, enc({"v": 1, "device_id": "x", "mqtt": MQTT, "ca": "x"}))


# --- what reaches people: exact wire bytes and the errors devices report ------------


def test_v31_wire_bytes_are_the_contracts():
    # A v3.1 device compares bytes, not meanings: these are fixed by PROTOCOL-v3.1.
    assert (P.encode_pump_state(True), P.encode_pump_state(False)) == (b"ON", b"OFF")
    assert (P.encode_valve_state(1), P.encode_valve_state(2)) == (b"1", b"2")
    assert (P.encode_status(True), P.encode_status(False)) == (b"online", b"offline")
    for value, text in (
        (25.34, b"25.3"),
        (-55.0, b"-55.0"),
        (125, b"125.0"),
        (0, b"0.0"),
    ):
        assert P.encode_temperature(value) == text
    assert P.encode_v31_set("pump", "on") == ("pump/set", b"ON")
    assert P.encode_v31_set("valve", 2) == ("valve/set", b"2")
    assert P.encode_v31_set("valve", "TOGGLE") == ("valve/set", b"TOGGLE")
    assert P.encode_v31_set("wifi_clear") == ("wifi/clear", b"1")
    # JSON payloads: compact, one object (key order is not part of the contract).
    suffix, timer_set = P.encode_v31_set("timer", {"mode": 1, "duration": 60})
    assert suffix == "timer/set" and json.loads(timer_set) == {
        "mode": 1,
        "duration": 60,
    }
    for payload in (
        timer_set,
        P.encode_timer_state(TIMER),
        P.encode_telemetry(TELEMETRY),
    ):
        assert b" " not in payload and payload[:1] == b"{"


def test_times_compare_as_minutes_of_the_day():
    v = P.validate_config
    for start, stop in (("09:59", "10:00"), ("10:59", "11:00"), ("00:59", "01:00")):
        assert v(one_day(day(start, stop)))
        raises(PE, v, one_day(day(stop, start)))


def test_config_errors_name_the_field():
    """The device answers config/applied with this text and the pool page shows it:
    it must say which field is wrong."""
    cases = (
        (
            config_with(
                programs=[
                    program(days=[None, None, day("11:00", "10:00")] + [None] * 4)
                ]
            ),
            "programs[0].days[2]: stop must be after start",
        ),
        (
            config_with(programs=[program(1), program(4)]),
            "programs[1].slot: out of range 1..3",
        ),
        (
            config_with(programs=[program(days=[None] * 6 + [day("9:00", "10:00")])]),
            "programs[0].days[6].start: HH:MM expected",
        ),
        (
            config_with(programs=[program(days=[day("09:00", "10:0")] + [None] * 6)]),
            "programs[0].days[0].stop: HH:MM expected",
        ),
        (
            config_with(
                programs=[program(days=[day("09:00", "10:00", 3)] + [None] * 6)]
            ),
            "programs[0].days[0].mode: out of range 1..2",
        ),
        (
            config_with(programs=[program(enabled=None)]),
            "programs[0].enabled: bool expected",
        ),
        (
            config_with(programs=[program(1), program(2), "x"]),
            "programs[2]: object expected",
        ),
        (
            config_with(programs=[program(days=[None] * 6)]),
            "programs[0].days: list of 7 expected",
        ),
        (
            config_with(programs=[program(days=["x"] + [None] * 6)]),
            "programs[0].days[0]: object or null expected",
        ),
        (thresholds(freeze_on_c=30), "thresholds.freeze_on_c: out of range"),
        (
            config_with(telemetry_interval=5),
            "telemetry_interval: out of range 10..3600",
        ),
        (config_with(programs=[program(2), program(2)]), "programs: duplicate slot"),
    )
    for config, message in cases:
        assert str(raises(PE, P.validate_config, config)) == message


def test_command_refusals_say_what_is_wrong():
    # The device acks an invalid command with this text as its reason.
    cases = (
        (cmd(exp=-1), "exp: out of range 0..4294967295", "invalid"),
        (
            cmd(op="pump", value="x"),
            "pump value: ON, OFF or TOGGLE expected",
            "invalid",
        ),
        (cmd(op="valve", value=3), "valve value: 1, 2 or TOGGLE expected", "invalid"),
        (cmd(op="timer", value=[]), "timer value: object expected", "invalid"),
        (
            cmd(op="timer", value={"mode": 3, "duration": 1}),
            "value.mode: out of range 1..2",
            "invalid",
        ),
        (cmd(op="reboot", value=1), "reboot value: null expected", "invalid"),
        (cmd(op="dance"), "unknown op 'dance'", "unsupported"),
    )
    for payload, message, code in cases:
        e = raises(PE, P.parse_command, payload)
        assert (str(e), e.code, e.cmd_id) == (message, code, "c-1")
    e = raises(PE, P.encode_v31_set, "reboot")
    assert (str(e), e.code) == (
        "reboot is not supported by v3.1 devices",
        "unsupported",
    )
