"""firmware.protocol: topics, encoders and the validating parsers the bridge relies on.

Runs on CPython (pytest) and on MicroPython (firmware/tools/check.sh).
"""

import json

try:
    from firmware import protocol, protocol_device
    from firmware.tests.helpers import raises
except ImportError:  # MicroPython: flat filesystem
    import protocol
    import protocol_device
    from helpers import raises

P = protocol
PE = protocol.ProtocolError

TELEMETRY = {
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
}

CONFIG = {
    "version": 7,
    "tz": "Europe/Madrid",
    "tz_posix": "CET-1CEST,M3.5.0,M10.5.0/3",
    "telemetry_interval": 60,
    "thresholds": {
        "freeze_on_c": 2.0,
        "freeze_hysteresis_c": 1.0,
        "pump_max_run_s_day": 43200,
        "min_switch_interval_s": 3,
    },
    "programs": [
        {
            "slot": 1,
            "enabled": True,
            "days": [
                {"mode": 1, "start": "10:00", "stop": "12:30"},
                None,
                None,
                None,
                None,
                {"mode": 2, "start": "09:00", "stop": "11:00"},
                None,
            ],
        }
    ],
}


def copy(obj):
    return json.loads(json.dumps(obj))


def tel(**changes):
    t = copy(TELEMETRY)
    t.update(changes)
    return json.dumps(t).encode()


def test_protocol_is_the_device_half_and_the_cloud_side():
    # Everything the board uses (protocol_device) is the same object in protocol, the
    # one module the server imports; the cloud side is not in the board's module.
    n = 0
    for name in dir(protocol_device):
        value = getattr(protocol_device, name)
        if name.startswith("__") or type(value) is type(json):
            continue
        assert getattr(protocol, name) is value, name
        n += 1
    assert n > 50
    for name in ("parse_device_message", "encode_command", "encode_config", "topic"):
        assert hasattr(protocol, name) and not hasattr(protocol_device, name), name


def test_error_is_a_value_error():
    assert issubclass(PE, ValueError)


def test_parse_topic():
    assert P.parse_topic("devices/ESP-A1B2C3/telemetry", "devices") == (
        "ESP-A1B2C3",
        "telemetry",
    )
    assert P.parse_topic(b"a/b/esp32-pool-01/timer/state", "a/b") == (
        "esp32-pool-01",
        "timer/state",
    )
    for bad in (
        "other/ESP-A1B2C3/telemetry",
        "devices/ESP-A1B2C3",
        "devices/ESP-A1B2C3/",
        "devices//telemetry",
        "devices/bad id/telemetry",
        "devices/" + "x" * 65 + "/telemetry",
        "devicesX/ESP-1/telemetry",
        b"devices/\xff/telemetry",
        None,
        42,
    ):
        raises(PE, P.parse_topic, bad, "devices")


def test_subscriptions_cover_every_device_topic_only():
    subs = P.subscriptions("devices")
    assert "devices/+/telemetry" in subs
    assert "devices/+/pump/state" in subs
    assert "devices/+/config/applied" in subs
    assert not [s for s in subs if s.endswith(("/set", "/cmd"))]
    assert len(subs) == 10


def test_ids():
    assert P.is_ps1_id("ESP-A1B2C3")
    assert not P.is_ps1_id("ESP-a1b2c3")
    assert not P.is_ps1_id("esp32-pool-01")
    assert P.is_valid_id("esp32-pool-01")
    assert not P.is_valid_id("a/b")
    assert not P.is_valid_id("a+")
    assert not P.is_valid_id("")
    assert P.device_id_from_mac(b"\x24\x6f\x28\xa1\xb2\xc3") == "ESP-A1B2C3"
    assert P.is_valid_prefix("devices") and P.is_valid_prefix("t1/pools")
    for bad in ("", "a//b", "a/#", "a/+", "/a", "a/"):
        assert not P.is_valid_prefix(bad)


def test_telemetry_roundtrip():
    kind, value = P.parse_device_message("telemetry", P.encode_telemetry(TELEMETRY))
    assert kind == "telemetry"
    assert value == TELEMETRY


def test_telemetry_hardware_model_is_optional_and_checked_when_present():
    # Firmware before the hardware model sends no "hw": still valid, hw None.
    old = copy(TELEMETRY)
    del old["hw"]
    value = P.parse_telemetry(json.dumps(old))
    assert value["hw"] is None
    assert value["fw"] == TELEMETRY["fw"]
    assert P.parse_telemetry(json.dumps(TELEMETRY))["hw"] == "esp32"
    assert P.parse_telemetry(tel(hw="a" * 32))["hw"] == "a" * 32
    # Present, it is held to the rule of fw: a string of 1..32 storable chars.
    for bad in ("", "a" * 33, None, 5, True, ["esp32"], {"m": 1}, "esp\x00"):
        e = raises(PE, P.parse_telemetry, tel(hw=bad))
        assert "hw" in str(e)


def test_telemetry_null_sensor_and_rssi():
    _, value = P.parse_device_message("telemetry", tel(temp=None, rssi=None))
    assert value["temp"] is None and value["rssi"] is None


def test_telemetry_unknown_keys_dropped():
    t = copy(TELEMETRY)
    t["future"] = 1
    value = P.parse_telemetry(json.dumps(t))
    assert "future" not in value


def test_telemetry_rejects_bad_values():
    bads = [
        tel(temp=float("nan")),
        tel(temp=1000),
        tel(temp="24.5"),
        tel(temp=True),
        tel(pump=1),
        tel(valve=3),
        tel(valve=True),
        tel(valve=1.0),
        tel(seq=-1),
        tel(seq=2**40),
        tel(ts="now"),
        tel(rssi=5),
        tel(fw=""),
        tel(switches={"pump": 1}),
        tel(timer={"active": True, "remaining": -1, "mode": 1, "duration": 10}),
        tel(timer=None),
    ]
    for b in bads:
        raises(PE, P.parse_device_message, "telemetry", b)
    missing = copy(TELEMETRY)
    del missing["temp"]
    raises(PE, P.parse_telemetry, json.dumps(missing))


def test_garbage_never_raises_anything_but_protocol_error():
    garbage = [
        b"",
        b"\xff\xfe",
        b"\xc3\x28",
        b"{",
        b"[]",
        b"null",
        b"1e400",
        b'"str"',
        b"NaN",
        b'{"temp": NaN}',
        b'{"temp": Infinity}',
        b"[" * 3000 + b"]" * 3000,
        b"{" * 2000,
        b"x" * 5000,
        b'{"a":"' + b"y" * 4100 + b'"}',
        None,
        12,
        [1],
        {"a": 1},
    ]
    suffixes = list(P.DEVICE_TO_CLOUD) + ["pump/set", "unknown", None, 5]
    for suffix in suffixes:
        for g in garbage:
            raises(PE, P.parse_device_message, suffix, g)


def test_payload_size_limit():
    t = copy(TELEMETRY)
    t["pad"] = "z" * 3000
    P.parse_telemetry(json.dumps(t).encode())
    t["pad"] = "z" * 4096
    e = raises(PE, P.parse_telemetry, json.dumps(t).encode())
    assert "large" in str(e)


def test_v31_state_topics():
    assert P.parse_device_message("pump/state", b"ON") == ("pump", True)
    assert P.parse_device_message("pump/state", b"off\n") == ("pump", False)
    assert P.parse_device_message("valve/state", b"2") == ("valve", 2)
    assert P.parse_device_message("temperature/state", b"25.3") == (
        "temperature",
        25.3,
    )
    assert P.parse_device_message("temperature/state", b"-3") == ("temperature", -3.0)
    timer = {"active": False, "remaining": 0, "mode": 2, "duration": 0}
    assert P.parse_device_message("timer/state", json.dumps(timer)) == ("timer", timer)
    wifi = {
        "status": "connected",
        "ssid": "pool",
        "ip": "10.0.0.9",
        "rssi": -55,
        "quality": "good",
    }
    assert P.parse_device_message("wifi/state", json.dumps(wifi)) == ("wifi", wifi)
    assert P.parse_device_message("wifi/state", P.WIFI_DISCONNECTED) == (
        "wifi",
        {"status": "disconnected"},
    )
    for suffix, bad in (
        ("pump/state", b"1"),
        ("pump/state", b"TOGGLE"),
        ("valve/state", b"3"),
        ("valve/state", b"1.0"),
        ("temperature/state", b"nan"),
        ("temperature/state", b"inf"),
        ("temperature/state", b"1e2"),
        ("temperature/state", b"1_0"),
        ("temperature/state", b"200.0"),
        ("temperature/state", b""),
        ("temperature/state", b"25."),
        ("wifi/state", b'{"status": "maybe"}'),
        ("wifi/state", b'{"status": "connected", "rssi": "x"}'),
        ("timer/state", b'{"active": 1, "remaining": 0, "mode": 1, "duration": 0}'),
    ):
        raises(PE, P.parse_device_message, suffix, bad)


def test_v31_encoders_match_parsers():
    assert P.parse_pump_state(P.encode_pump_state(True)) is True
    assert P.parse_valve_state(P.encode_valve_state(2)) == 2
    assert P.encode_temperature(25.25) in (b"25.2", b"25.3")
    wifi = P.parse_device_message(
        "wifi/state", P.encode_wifi_state("x", "1.2.3.4", -65)
    )
    assert wifi[1]["quality"] == "fair"
    assert P.wifi_quality(-50) == "excellent" and P.wifi_quality(-71) == "weak"


def test_status():
    assert P.parse_device_message("status", b"online") == ("status", True)
    assert P.parse_device_message("status", P.encode_status(False)) == ("status", False)
    raises(PE, P.parse_status, b"ONLINE")


def test_ack():
    state = {
        "pump": True,
        "valve": 1,
        "timer": {"active": False, "remaining": 0, "mode": 1, "duration": 0},
    }
    ok = P.parse_device_message("ack", P.encode_ack("c-1", True, state=state))
    assert ok == ("ack", {"id": "c-1", "ok": True, "state": state})
    _, nok = P.parse_device_message(
        "ack", P.encode_ack("c-2", False, "busy", "min switch interval")
    )
    assert nok == {
        "id": "c-2",
        "ok": False,
        "error": "busy",
        "reason": "min switch interval",
    }
    for bad in (
        {"id": "c 1", "ok": True},
        {"ok": True},
        {"id": "c", "ok": "yes"},
        {"id": "c", "ok": False},
        {"id": "c", "ok": False, "error": "nope"},
        {"id": "c", "ok": True, "error": "busy"},
        {"id": "c", "ok": True, "state": {"pump": 1}},
    ):
        raises(PE, P.parse_ack, json.dumps(bad))


def test_config_applied_and_event():
    assert P.parse_config_applied(P.encode_config_applied(7, True)) == {
        "version": 7,
        "ok": True,
    }
    assert P.parse_config_applied(P.encode_config_applied(8, False, "bad")) == {
        "version": 8,
        "ok": False,
        "error": "bad",
    }
    raises(PE, P.parse_config_applied, b'{"version": -1, "ok": true}')
    ev = P.parse_event(P.encode_event(5, "program_start", {"slot": 1, "mode": 2}))
    assert ev == {"ts": 5, "type": "program_start", "data": {"slot": 1, "mode": 2}}
    assert P.parse_event(P.encode_event(5, "boot")) == {"ts": 5, "type": "boot"}
    raises(PE, P.parse_event, b'{"ts": 5, "type": "party"}')
    raises(PE, P.parse_event, b'{"ts": 5, "type": "boot", "data": [1]}')


def test_command_roundtrip():
    raw = P.encode_command("c-1", 1764400030, "timer", {"mode": 2, "duration": 60})
    assert P.parse_command(raw) == {
        "id": "c-1",
        "exp": 1764400030,
        "op": "timer",
        "value": {"mode": 2, "duration": 60},
    }
    assert P.parse_command(P.encode_command("a", 1, "pump", "toggle"))["value"] == (
        "TOGGLE"
    )
    assert P.parse_command(P.encode_command("a", 1, "valve", 2))["value"] == 2
    assert P.parse_command(P.encode_command("a", 1, "reboot"))["value"] is None


def test_command_errors_carry_id_and_code():
    e = raises(PE, P.parse_command, b'{"id": "c-9", "exp": 1, "op": "dance"}')
    assert e.code == "unsupported" and e.cmd_id == "c-9"
    e = raises(
        PE, P.parse_command, b'{"id": "c-9", "exp": 1, "op": "valve", "value": 3}'
    )
    assert e.code == "invalid" and e.cmd_id == "c-9"
    e = raises(PE, P.parse_command, b'{"id": "c-9", "exp": true, "op": "reboot"}')
    assert e.cmd_id == "c-9"
    e = raises(PE, P.parse_command, b'{"exp": 1, "op": "reboot"}')
    assert e.cmd_id is None
    for op, value in (
        ("pump", 1),
        ("valve", True),
        ("timer", {"mode": 1, "duration": 86401}),
        ("timer", {"mode": 3, "duration": 1}),
        ("reboot", 1),
    ):
        raises(PE, P.encode_command, "c", 1, op, value)
    raises(PE, P.encode_command, "c/1", 1, "reboot")
    raises(PE, P.encode_command, "c", True, "reboot")


def test_config_roundtrip():
    cfg = P.parse_config(P.encode_config(CONFIG))
    assert cfg == CONFIG


def test_config_rejections_keep_version():
    cases = []
    c = copy(CONFIG)
    c["programs"][0]["days"][0] = {"mode": 1, "start": "12:00", "stop": "11:00"}
    cases.append(c)
    c = copy(CONFIG)
    c["programs"][0]["days"][0] = {"mode": 1, "start": "24:00", "stop": "25:00"}
    cases.append(c)
    c = copy(CONFIG)
    c["programs"][0]["days"] = c["programs"][0]["days"][:6]
    cases.append(c)
    c = copy(CONFIG)
    c["programs"].append(copy(c["programs"][0]))
    cases.append(c)
    c = copy(CONFIG)
    c["tz_posix"] = "Europe/Madrid"
    cases.append(c)
    c = copy(CONFIG)
    c["telemetry_interval"] = 5
    cases.append(c)
    c = copy(CONFIG)
    c["thresholds"]["freeze_hysteresis_c"] = 0
    cases.append(c)
    c = copy(CONFIG)
    del c["thresholds"]
    cases.append(c)
    for c in cases:
        e = raises(PE, P.parse_config, json.dumps(c))
        assert e.version == 7
        raises(PE, P.encode_config, c)


def test_v31_set_mapping():
    assert P.encode_v31_set("pump", "ON") == ("pump/set", b"ON")
    assert P.encode_v31_set("valve", "TOGGLE") == ("valve/set", b"TOGGLE")
    assert P.encode_v31_set("valve", 2) == ("valve/set", b"2")
    suffix, payload = P.encode_v31_set("timer", {"mode": 1, "duration": 600})
    assert suffix == "timer/set"
    assert json.loads(payload) == {"mode": 1, "duration": 600}
    assert P.encode_v31_set("wifi_clear") == ("wifi/clear", b"1")
    for op in ("override_clear", "reboot"):
        assert raises(PE, P.encode_v31_set, op).code == "unsupported"


def test_v31_set_parsing_on_device():
    assert P.parse_v31_set("pump/set", b"on") == ("pump", "ON")
    assert P.parse_v31_set("pump/set", b"1") == ("pump", "ON")
    assert P.parse_v31_set("pump/set", b"0") == ("pump", "OFF")
    assert P.parse_v31_set("pump/set", b"Toggle") == ("pump", "TOGGLE")
    assert P.parse_v31_set("valve/set", b"2") == ("valve", 2)
    assert P.parse_v31_set("timer/set", b'{"mode":2,"duration":0}') == (
        "timer",
        {"mode": 2, "duration": 0},
    )
    assert P.parse_v31_set("wifi/clear", b"") == ("wifi_clear", None)
    raises(PE, P.parse_v31_set, "pump/set", b"maybe")
    raises(PE, P.parse_v31_set, "valve/set", b"0")
    raises(PE, P.parse_v31_set, "timer/set", b'{"mode":2}')


def test_bundle():
    bundle = {
        "v": 1,
        "device_id": "ESP-A1B2C3",
        "mqtt": {
            "host": "mqtt.example.com",
            "port": 8883,
            "tls": True,
            "username": "ESP-A1B2C3",
            "password": "s3cret",
            "prefix": "devices",
        },
    }
    b = P.parse_bundle(json.dumps(bundle))
    assert b["mqtt"]["port"] == 8883 and b["ca"] is None
    bundle["v"] = 2
    raises(PE, P.parse_bundle, json.dumps(bundle))
    bundle["v"] = 1
    bundle["mqtt"]["port"] = 0
    raises(PE, P.parse_bundle, json.dumps(bundle))
    bundle["mqtt"]["port"] = 1883
    bundle["ca"] = "not a pem"
    raises(PE, P.parse_bundle, json.dumps(bundle))
    del bundle["ca"]
    assert P.parse_bundle(json.dumps(bundle))["ota_key"] is None
    bundle["ota_key"] = "ab" * 32
    assert P.parse_bundle(json.dumps(bundle))["ota_key"] == "ab" * 32
    for bad in ("AB" * 32, "ab" * 31, 7):
        bundle["ota_key"] = bad
        raises(PE, P.parse_bundle, json.dumps(bundle))


def test_event_data_checked_per_type_and_strings_storable():
    # Also under MicroPython: the same parser code the bridge runs.
    ok = P.parse_device_message(
        "event", b'{"ts":1,"type":"timer_end","data":{"reason":"done","x":[1]}}'
    )
    assert ok == ("event", {"ts": 1, "type": "timer_end", "data": {"reason": "done"}})
    for bad in (
        b'{"ts":1,"type":"timer_end","data":{"reason":"later"}}',
        b'{"ts":1,"type":"program_start","data":{"slot":4}}',
        b'{"ts":1,"type":"freeze_protect","data":{"temp":true}}',
        b'{"ts":1,"type":"error","data":{"msg":"a\\u0000b"}}',
        b'{"ts":1,"type":"max_runtime","data":{"run_s":-1}}',
    ):
        raises(PE, P.parse_device_message, "event", bad)
    raises(
        PE,
        P.parse_device_message,
        "ack",
        b'{"id":"a","ok":false,"error":"busy","reason":"\\u0000"}',
    )
    raises(PE, P.parse_device_message, "temperature/state", "\u0661\u0662".encode())
    raises(PE, P.parse_topic, "devices/ESP-A1B2C3/pump/+", "devices")
    raises(PE, P.parse_topic, "devices/ESP-A1B2C3/pump//state", "devices")
    raises(PE, P.parse_topic, "dev/+/ESP-A1B2C3/telemetry", "dev/+")
    assert P.parse_v31_set("wifi/clear", b"\xff") == ("wifi_clear", None)
