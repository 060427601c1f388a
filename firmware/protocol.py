"""Topics, payload encoders and validating parsers of the poolsaas device protocol.

The executable form of docs/protocol.md, and what the server imports. Pure and
MicroPython-compatible. The device's half (topics, the device's encoders, the parsers of
what a device receives) lives in `protocol_device.py`, the only part the board imports
(it saves the board the heap of the cloud-side code); everything in it is re-exported
here, so `protocol.X` is the whole protocol. The bridge (CPython) uses the cloud side to
validate every incoming device message. Every parser raises only ProtocolError, whatever
the input.
"""

# The device half, re-exported name by name (private helpers too: the cloud side uses
# them, and tests reach a few of them through this module).
try:
    from firmware.protocol_device import (  # noqa: F401 - re-exported
        _ID_CHARS,
        _USER_CHARS,
        ACK,
        CMD,
        CONFIG_APPLIED,
        CONFIG_SET,
        DEFAULT_PREFIX,
        EVENT,
        INT31,
        MAX_PAYLOAD,
        MAX_TIMER_S,
        OPS,
        OTA_RESERVED,
        PROTOCOL,
        PUBLISH_OPTS,
        PUMP_SET,
        PUMP_STATE,
        STATUS,
        TELEMETRY,
        TEMPERATURE_STATE,
        TIMER_SET,
        TIMER_STATE,
        UINT32,
        V31_CLOUD_TO_DEVICE,
        VALVE_SET,
        VALVE_STATE,
        WIFI_CLEAR,
        WIFI_DISCONNECTED,
        WIFI_STATE,
        ProtocolError,
        _bool,
        _clean,
        _cmd_value,
        _credentials,
        _dict,
        _digits,
        _float,
        _hhmm,
        _int,
        _json_object,
        _num,
        _program,
        _str,
        _text,
        dumps,
        encode_ack,
        encode_config_applied,
        encode_event,
        encode_pump_state,
        encode_telemetry,
        encode_temperature,
        encode_timer_state,
        encode_valve_state,
        encode_wifi_state,
        is_valid_id,
        is_valid_prefix,
        parse_bundle,
        parse_command,
        parse_config,
        parse_v31_set,
        validate_config,
        wifi_quality,
    )
except ImportError:  # MicroPython: flat filesystem
    from protocol_device import (  # noqa: F401 - re-exported
        _ID_CHARS,
        _USER_CHARS,
        ACK,
        CMD,
        CONFIG_APPLIED,
        CONFIG_SET,
        DEFAULT_PREFIX,
        EVENT,
        INT31,
        MAX_PAYLOAD,
        MAX_TIMER_S,
        OPS,
        OTA_RESERVED,
        PROTOCOL,
        PUBLISH_OPTS,
        PUMP_SET,
        PUMP_STATE,
        STATUS,
        TELEMETRY,
        TEMPERATURE_STATE,
        TIMER_SET,
        TIMER_STATE,
        UINT32,
        V31_CLOUD_TO_DEVICE,
        VALVE_SET,
        VALVE_STATE,
        WIFI_CLEAR,
        WIFI_DISCONNECTED,
        WIFI_STATE,
        ProtocolError,
        _bool,
        _clean,
        _cmd_value,
        _credentials,
        _dict,
        _digits,
        _float,
        _hhmm,
        _int,
        _json_object,
        _num,
        _program,
        _str,
        _text,
        dumps,
        encode_ack,
        encode_config_applied,
        encode_event,
        encode_pump_state,
        encode_telemetry,
        encode_temperature,
        encode_timer_state,
        encode_valve_state,
        encode_wifi_state,
        is_valid_id,
        is_valid_prefix,
        parse_bundle,
        parse_command,
        parse_config,
        parse_v31_set,
        validate_config,
        wifi_quality,
    )

V31_DEVICE_TO_CLOUD = (
    PUMP_STATE,
    VALVE_STATE,
    TIMER_STATE,
    TEMPERATURE_STATE,
    WIFI_STATE,
)
PS1_DEVICE_TO_CLOUD = (STATUS, TELEMETRY, ACK, CONFIG_APPLIED, EVENT)
# What the bridge subscribes to: <prefix>/+/<suffix> for each of these.
DEVICE_TO_CLOUD = V31_DEVICE_TO_CLOUD + PS1_DEVICE_TO_CLOUD
PS1_CLOUD_TO_DEVICE = (CMD, CONFIG_SET)
# What a ps1 device subscribes to under its own root.
DEVICE_SUBSCRIPTIONS = PS1_CLOUD_TO_DEVICE + V31_CLOUD_TO_DEVICE
ACK_ERRORS = ("expired", "invalid", "unsupported", "busy", "rate_limited", "failed")
EVENT_TYPES = (
    "boot",
    "program_start",
    "program_stop",
    "timer_start",
    "timer_end",
    "override",
    "freeze_protect",
    "max_runtime",
    "error",
)
WIFI_QUALITIES = ("excellent", "good", "fair", "weak")
TIMER_END_REASONS = ("done", "stopped", "manual", "max_runtime", "reboot")
TEMP_MIN = -55.0
TEMP_MAX = 125.0
_HEX_UPPER = "0123456789ABCDEF"


def is_ps1_id(s):
    """ESP- plus six upper-case hex digits: the id our firmware derives from its MAC."""
    if not isinstance(s, str) or len(s) != 10 or s[:4] != "ESP-":
        return False
    for c in s[4:]:
        if c not in _HEX_UPPER:
            return False
    return True


def device_id_from_mac(mac):
    """ESP-XXXXXX from the 6-byte MAC (last three bytes)."""
    return f"ESP-{mac[3]:02X}{mac[4]:02X}{mac[5]:02X}"


# --- topics ---------------------------------------------------------------------------


def topic(prefix, device_id, suffix):
    return prefix + "/" + device_id + "/" + suffix


def parse_topic(topic_name, prefix):
    """(device_id, suffix) of a topic under prefix, or ProtocolError.

    prefix must be valid (is_valid_prefix); device_id is a valid id; suffix is one or
    more non-empty levels without wildcards or NUL (it may still be a suffix no parser
    knows: parse_device_message rejects those).
    """
    if isinstance(topic_name, (bytes, bytearray)):
        try:
            topic_name = bytes(topic_name).decode("utf-8")
        except (UnicodeError, ValueError):
            raise ProtocolError("topic is not UTF-8") from None
    if not isinstance(topic_name, str) or not isinstance(prefix, str):
        raise ProtocolError("topic must be a string")
    if not is_valid_prefix(prefix):
        raise ProtocolError("bad prefix")
    if len(topic_name) > 65535:
        raise ProtocolError("topic too long")
    head = prefix + "/"
    if not topic_name.startswith(head):
        raise ProtocolError("topic outside prefix")
    rest = topic_name[len(head) :]
    i = rest.find("/")
    if i < 0:
        raise ProtocolError("topic has no suffix")
    device_id, suffix = rest[:i], rest[i + 1 :]
    if not is_valid_id(device_id):
        raise ProtocolError("bad device id")
    for level in suffix.split("/"):
        if not level or "+" in level or "#" in level:
            raise ProtocolError("bad topic suffix")
    _clean(suffix, "topic")
    return device_id, suffix


def subscriptions(prefix):
    """Topic filters the bridge subscribes to for one prefix."""
    return [prefix + "/+/" + s for s in DEVICE_TO_CLOUD]


# --- device -> cloud parsing ----------------------------------------------------------


def _timer(obj, where="timer."):
    if not isinstance(obj, dict):
        raise ProtocolError("timer: object expected")
    return {
        "active": _bool(obj, "active", where),
        "remaining": _int(obj, "remaining", 0, MAX_TIMER_S, where),
        "mode": _int(obj, "mode", 1, 2, where),
        "duration": _int(obj, "duration", 0, MAX_TIMER_S, where),
    }


def _opt_str(obj, key, hi):
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > hi:
        raise ProtocolError(f"{key}: string of at most {hi} chars expected")
    return _clean(v, key)


def parse_decimal(text):
    """Strict ASCII decimal text (v3.1 temperature): sign, digits, optional fraction."""
    s = text.strip()
    body = s[1:] if s[:1] in ("-", "+") else s
    intpart, _, frac = body.partition(".")
    if not _digits(intpart) or (frac and not _digits(frac)) or len(body) > 12:
        raise ProtocolError("decimal number expected")
    if body.endswith("."):
        raise ProtocolError("decimal number expected")
    return float(s)


def _parse_temperature(payload):
    v = _num(parse_decimal(_text(payload)), "temperature", TEMP_MIN, TEMP_MAX)
    return round(v, 1)


def _parse_wifi(payload):
    obj = _json_object(payload)
    status = obj.get("status")
    if status == "disconnected":
        return {"status": "disconnected"}
    if status != "connected":
        raise ProtocolError("status: connected or disconnected expected")
    rssi = obj.get("rssi")
    if rssi is not None:
        rssi = _int(obj, "rssi", -127, 0)
    quality = obj.get("quality")
    if quality is not None and quality not in WIFI_QUALITIES:
        raise ProtocolError("quality: unknown value")
    return {
        "status": "connected",
        "ssid": _opt_str(obj, "ssid", 32),
        "ip": _opt_str(obj, "ip", 45),
        "rssi": rssi,
        "quality": quality,
    }


def _parse_state(obj):
    if not isinstance(obj, dict):
        raise ProtocolError("state: object expected")
    return {
        "pump": _bool(obj, "pump", "state."),
        "valve": _int(obj, "valve", 1, 2, "state."),
        "timer": _timer(obj.get("timer"), "state.timer."),
    }


def parse_telemetry(payload):
    obj = _json_object(payload)
    temp = obj.get("temp", 0)
    if temp is not None:
        temp = round(_float(obj, "temp", TEMP_MIN, TEMP_MAX), 1)
    elif "temp" not in obj:
        raise ProtocolError("temp: required")
    rssi = obj.get("rssi", 0)
    if rssi is not None:
        rssi = _int(obj, "rssi", -127, 0)
    elif "rssi" not in obj:
        raise ProtocolError("rssi: required")
    sw = _dict(obj, "switches")
    return {
        "ts": _int(obj, "ts", 0, UINT32),
        "seq": _int(obj, "seq", 0, UINT32),
        "temp": temp,
        "pump": _bool(obj, "pump"),
        "valve": _int(obj, "valve", 1, 2),
        "timer": _timer(obj.get("timer")),
        "rssi": rssi,
        "uptime": _int(obj, "uptime", 0, UINT32),
        "mem_free": _int(obj, "mem_free", 0, UINT32),
        "fw": _str(obj, "fw", 1, 32),
        # Optional: firmware before the hardware model sends none (None here).
        "hw": _str(obj, "hw", 1, 32) if "hw" in obj else None,
        "switches": {
            "pump": _int(sw, "pump", 0, UINT32, "switches."),
            "valve": _int(sw, "valve", 0, UINT32, "switches."),
        },
    }


def parse_ack(payload):
    obj = _json_object(payload)
    cmd_id = obj.get("id")
    if not is_valid_id(cmd_id):
        raise ProtocolError("id: 1..64 of [A-Za-z0-9_-] expected")
    ok = _bool(obj, "ok")
    out = {"id": cmd_id, "ok": ok}
    err = obj.get("error")
    if ok:
        if err is not None:
            raise ProtocolError("error: only allowed when ok is false")
    elif err not in ACK_ERRORS:
        raise ProtocolError("error: one of {} expected".format(", ".join(ACK_ERRORS)))
    else:
        out["error"] = err
    reason = _opt_str(obj, "reason", 200)
    if reason is not None:
        out["reason"] = reason
    if obj.get("state") is not None:
        out["state"] = _parse_state(obj["state"])
    return out


def parse_config_applied(payload):
    obj = _json_object(payload)
    out = {"version": _int(obj, "version", 0, INT31), "ok": _bool(obj, "ok")}
    err = _opt_str(obj, "error", 200)
    if out["ok"] and err is not None:
        raise ProtocolError("error: only allowed when ok is false")
    if not out["ok"]:
        out["error"] = err or "rejected"
    return out


def _ev_mode(d, k):
    return _int(d, k, 1, 2, "data.")


def _ev_slot(d, k):
    return _int(d, k, 1, 3, "data.")


def _ev_reason(d, k):
    v = d.get(k)
    if v not in TIMER_END_REASONS:
        raise ProtocolError(
            "data.reason: one of {}".format(", ".join(TIMER_END_REASONS))
        )
    return v


def _ev_temp(d, k):
    if d.get(k) is None:
        return None
    return round(_num(d.get(k), "data.temp", TEMP_MIN, TEMP_MAX), 1)


# The data keys of each event type (docs/protocol.md 3.1), each optional: a known key
# must have its type and range, any other key is dropped. So whatever the bridge stores
# is small, typed and valid JSON (no NaN, no NUL), never the device's raw object.
_EVENT_DATA = {
    "boot": {
        "reason": lambda d, k: _str(d, k, 0, 64, "data."),
        "boot_count": lambda d, k: _int(d, k, 0, UINT32, "data."),
        "safe_mode": lambda d, k: _bool(d, k, "data."),
    },
    "program_start": {"slot": _ev_slot, "mode": _ev_mode},
    "program_stop": {"slot": _ev_slot, "mode": _ev_mode},
    "timer_start": {
        "mode": _ev_mode,
        "duration": lambda d, k: _int(d, k, 0, MAX_TIMER_S, "data."),
    },
    "timer_end": {"reason": _ev_reason},
    "override": {
        "slot": _ev_slot,
        "until": lambda d, k: _int(d, k, 0, UINT32, "data."),
    },
    "freeze_protect": {"active": lambda d, k: _bool(d, k, "data."), "temp": _ev_temp},
    "max_runtime": {"run_s": lambda d, k: _int(d, k, 0, UINT32, "data.")},
    "error": {"msg": lambda d, k: _str(d, k, 0, 200, "data.")},
}


def parse_event(payload):
    obj = _json_object(payload)
    etype = obj.get("type")
    if not isinstance(etype, str) or etype not in EVENT_TYPES:
        raise ProtocolError("type: unknown event type")
    out = {"ts": _int(obj, "ts", 0, UINT32), "type": etype}
    data = obj.get("data")
    if data is not None:
        if not isinstance(data, dict):
            raise ProtocolError("data: object expected")
        checked = {}
        for key, check in _EVENT_DATA[etype].items():
            if key in data:
                checked[key] = check(data, key)
        out["data"] = checked
    return out


def parse_status(payload):
    text = _text(payload).strip()
    if text == "online":
        return True
    if text == "offline":
        return False
    raise ProtocolError("status: online or offline expected")


def parse_pump_state(payload):
    text = _text(payload).strip().upper()
    if text == "ON":
        return True
    if text == "OFF":
        return False
    raise ProtocolError("pump state: ON or OFF expected")


def parse_valve_state(payload):
    text = _text(payload).strip()
    if text == "1":
        return 1
    if text == "2":
        return 2
    raise ProtocolError("valve state: 1 or 2 expected")


def parse_timer_state(payload):
    return _timer(_json_object(payload), "")


_DEVICE_PARSERS = {
    PUMP_STATE: ("pump", parse_pump_state),
    VALVE_STATE: ("valve", parse_valve_state),
    TIMER_STATE: ("timer", parse_timer_state),
    TEMPERATURE_STATE: ("temperature", _parse_temperature),
    WIFI_STATE: ("wifi", _parse_wifi),
    STATUS: ("status", parse_status),
    TELEMETRY: ("telemetry", parse_telemetry),
    ACK: ("ack", parse_ack),
    CONFIG_APPLIED: ("config_applied", parse_config_applied),
    EVENT: ("event", parse_event),
}


def parse_device_message(suffix, payload):
    """(kind, value) of a device -> cloud message; ProtocolError if malformed.

    kinds: pump (bool), valve (1|2), timer (dict), temperature (float), wifi (dict),
    status (bool online), telemetry, ack, config_applied, event (dicts).
    """
    entry = _DEVICE_PARSERS.get(suffix) if isinstance(suffix, str) else None
    if entry is None:
        raise ProtocolError(f"unknown device topic {suffix!r}")
    try:
        return entry[0], entry[1](payload)
    except ProtocolError:
        raise
    except Exception as e:  # noqa: BLE001 - a parser bug must never crash the bridge
        raise ProtocolError(f"malformed payload ({type(e).__name__})") from None


def encode_status(online):
    return b"online" if online else b"offline"


def encode_command(cmd_id, exp, op, value=None, device_id=None):
    """Cloud side: the cmd payload; ProtocolError when any field is invalid (with
    device_id, also a `credentials` username that is not that device's)."""
    if not is_valid_id(cmd_id):
        raise ProtocolError("id: 1..64 of [A-Za-z0-9_-] expected")
    if type(exp) is not int or not 0 <= exp <= UINT32:
        raise ProtocolError("exp: unix seconds expected")
    if op not in OPS:
        raise ProtocolError(f"unknown op {op!r}", "unsupported")
    value = _cmd_value(op, value, device_id)
    return dumps({"id": cmd_id, "exp": exp, "op": op, "value": value})


def encode_config(config):
    """Cloud side: the config/set payload; ProtocolError when the config is invalid."""
    out = dumps(validate_config(config))
    if len(out) > MAX_PAYLOAD:
        raise ProtocolError("config too large")
    return out


def encode_v31_set(op, value=None):
    """Cloud side, legacy devices: (suffix, payload bytes) of the v3.1 set for an op.

    ProtocolError(code='unsupported') for ops a v3.1 device cannot do.
    """
    if op not in OPS:
        raise ProtocolError(f"unknown op {op!r}", "unsupported")
    value = _cmd_value(op, value)
    if op == "pump":
        return PUMP_SET, value.encode()
    if op == "valve":
        return VALVE_SET, str(value).encode()
    if op == "timer":
        return TIMER_SET, dumps(value)
    if op == "wifi_clear":
        return WIFI_CLEAR, b"1"
    raise ProtocolError(f"{op} is not supported by v3.1 devices", "unsupported")
