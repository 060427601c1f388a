"""Topics, payload encoders and validating parsers of the poolsaas device protocol.

The executable form of docs/protocol.md. Pure and MicroPython-compatible: the device
uses it to build and read its messages, and the bridge (CPython) uses it to validate
every incoming device message. Every parser raises only ProtocolError, whatever the
input.
"""

import json
import math

try:
    from firmware import tzrules  # CPython: the firmware package
except ImportError:
    import tzrules  # MicroPython: flat filesystem on the board

MAX_PAYLOAD = 4096
PROTOCOL = "ps1"
DEFAULT_PREFIX = "devices"

# v3.1 topics (device -> cloud, retained).
PUMP_STATE = "pump/state"
VALVE_STATE = "valve/state"
TIMER_STATE = "timer/state"
TEMPERATURE_STATE = "temperature/state"
WIFI_STATE = "wifi/state"
# v3.1 topics (cloud -> device).
PUMP_SET = "pump/set"
VALVE_SET = "valve/set"
TIMER_SET = "timer/set"
WIFI_CLEAR = "wifi/clear"
# ps1 topics.
STATUS = "status"
TELEMETRY = "telemetry"
ACK = "ack"
CONFIG_APPLIED = "config/applied"
EVENT = "event"
CMD = "cmd"
CONFIG_SET = "config/set"
OTA_RESERVED = "ota/"

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
V31_CLOUD_TO_DEVICE = (PUMP_SET, VALVE_SET, TIMER_SET, WIFI_CLEAR)
PS1_CLOUD_TO_DEVICE = (CMD, CONFIG_SET)
# What a ps1 device subscribes to under its own root.
DEVICE_SUBSCRIPTIONS = PS1_CLOUD_TO_DEVICE + V31_CLOUD_TO_DEVICE
# Retained flag and QoS of each device -> cloud topic (for publishers, the simulator and
# docs).
PUBLISH_OPTS = {
    PUMP_STATE: (True, 0),
    VALVE_STATE: (True, 0),
    TIMER_STATE: (True, 0),
    TEMPERATURE_STATE: (True, 0),
    WIFI_STATE: (True, 0),
    STATUS: (True, 1),
    TELEMETRY: (False, 0),
    ACK: (False, 1),
    CONFIG_APPLIED: (True, 1),
    EVENT: (False, 1),
}

OPS = (
    "pump",
    "valve",
    "timer",
    "wifi_clear",
    "override_clear",
    "reboot",
    "credentials",
)
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
MAX_TIMER_S = 86400
UINT32 = 4294967295
INT31 = 2147483647
TEMP_MIN = -55.0
TEMP_MAX = 125.0
WIFI_DISCONNECTED = '{"status":"disconnected"}'

_ID_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
)
_HEX_UPPER = "0123456789ABCDEF"
# A rotated MQTT username is the device id, or the device id, "~" and a suffix.
_USER_CHARS = _ID_CHARS | frozenset("~")


class ProtocolError(ValueError):
    """Any malformed message. `code` is the ack error a device answers with; `cmd_id` is
    the command id when it could be read, so that an invalid command can still be
    acknowledged.
    """

    def __init__(self, msg, code="invalid", cmd_id=None):
        super().__init__(msg)
        self.msg = msg
        self.code = code
        self.cmd_id = cmd_id

    def __str__(self):
        return self.msg


# --- small validators -----------------------------------------------------------------


def is_valid_id(s):
    if not isinstance(s, str) or not 1 <= len(s) <= 64:
        return False
    for c in s:
        if c not in _ID_CHARS:
            return False
    return True


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


def is_valid_prefix(prefix):
    if not isinstance(prefix, str) or not prefix or len(prefix) > 128:
        return False
    for level in prefix.split("/"):
        if not level:
            return False
        for c in level:
            if c not in _ID_CHARS:
                return False
    return True


def _int(obj, key, lo, hi, where=""):
    v = obj.get(key) if isinstance(obj, dict) else None
    # type() rather than isinstance(): a JSON true must not pass as 1.
    if type(v) is not int:
        raise ProtocolError(f"{where}{key}: int expected")
    if not lo <= v <= hi:
        raise ProtocolError(f"{where}{key}: out of range {lo}..{hi}")
    return v


def _num(v, name, lo, hi):
    t = type(v)
    if t is not int and t is not float:
        raise ProtocolError(f"{name}: number expected")
    v = float(v)
    if math.isnan(v) or not lo <= v <= hi:
        raise ProtocolError(f"{name}: out of range")
    return v


def _float(obj, key, lo, hi, where=""):
    return _num(obj.get(key), where + key, lo, hi)


def _bool(obj, key, where=""):
    v = obj.get(key)
    if v is not True and v is not False:
        raise ProtocolError(f"{where}{key}: bool expected")
    return v


def _clean(v, name):
    """v if it is storable text: no NUL and no lone surrogate (a JSON "\\ud800").

    PostgreSQL rejects both in text and jsonb, so one such string would fail the
    bridge's whole batched write.
    """
    if "\x00" in v:
        raise ProtocolError(f"{name}: NUL character")
    try:
        v.encode("utf-8")
    except UnicodeError:
        raise ProtocolError(f"{name}: not valid Unicode text") from None
    return v


def _str(obj, key, lo, hi, where=""):
    v = obj.get(key)
    if not isinstance(v, str) or not lo <= len(v) <= hi:
        raise ProtocolError(f"{where}{key}: string of {lo}..{hi} chars expected")
    return _clean(v, where + key)


def _dict(obj, key, where=""):
    v = obj.get(key)
    if not isinstance(v, dict):
        raise ProtocolError(f"{where}{key}: object expected")
    return v


def _text(payload):
    """Decode bytes, bytearray, memoryview or str to str, enforcing the size cap."""
    if isinstance(payload, str):
        if len(payload) > MAX_PAYLOAD:
            raise ProtocolError("payload too large")
        try:
            size = len(payload.encode("utf-8"))
        except UnicodeError:
            raise ProtocolError("payload is not UTF-8") from None
        if size > MAX_PAYLOAD:
            raise ProtocolError("payload too large")
        return payload
    if isinstance(payload, memoryview):
        payload = bytes(payload)
    if not isinstance(payload, (bytes, bytearray)):
        raise ProtocolError("payload must be bytes")
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError("payload too large")
    try:
        return bytes(payload).decode("utf-8")
    except (UnicodeError, ValueError):
        raise ProtocolError("payload is not UTF-8") from None


def _json_object(payload):
    text = _text(payload)
    try:
        obj = json.loads(text)
    except (ValueError, RuntimeError, MemoryError):
        # ValueError on both ports; deep nesting raises RecursionError (a RuntimeError).
        raise ProtocolError("payload is not JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("JSON object expected")
    return obj


def dumps(obj):
    """Compact JSON as bytes."""
    try:
        s = json.dumps(obj, separators=(",", ":"))
    except TypeError:
        # Older MicroPython json.dumps has no separators argument.
        s = json.dumps(obj)
    return s.encode("utf-8")


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


def _digits(s):
    # str.isdigit() also accepts non-ASCII digits ("\u0661", "\u00b2"): ASCII only.
    if not s:
        return False
    for c in s:
        if c not in "0123456789":
            return False
    return True


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


# --- device -> cloud encoding (used by the firmware and the simulator) ----------------


def encode_pump_state(on):
    return b"ON" if on else b"OFF"


def encode_valve_state(mode):
    return b"1" if mode == 1 else b"2"


def encode_temperature(temp):
    return (f"{temp:.1f}").encode()


def encode_timer_state(timer):
    return dumps(timer)


def wifi_quality(rssi):
    if rssi >= -50:
        return "excellent"
    if rssi >= -60:
        return "good"
    if rssi >= -70:
        return "fair"
    return "weak"


def encode_wifi_state(ssid, ip, rssi):
    if ssid is None:
        return WIFI_DISCONNECTED.encode()
    return dumps(
        {
            "status": "connected",
            "ssid": ssid,
            "ip": ip,
            "rssi": rssi,
            "quality": wifi_quality(rssi),
        }
    )


def encode_status(online):
    return b"online" if online else b"offline"


def encode_telemetry(tel):
    return dumps(tel)


def encode_ack(cmd_id, ok, error=None, reason=None, state=None):
    out = {"id": cmd_id, "ok": ok}
    if not ok:
        out["error"] = error or "failed"
    if reason:
        out["reason"] = reason[:200]
    if state is not None:
        out["state"] = state
    return dumps(out)


def encode_config_applied(version, ok, error=None):
    out = {"version": version, "ok": ok}
    if not ok:
        out["error"] = (error or "rejected")[:200]
    return dumps(out)


def encode_event(ts, etype, data=None):
    out = {"ts": ts, "type": etype}
    if data is not None:
        out["data"] = data
    return dumps(out)


# --- cloud -> device ------------------------------------------------------------------


def _credentials(value, device_id=None):
    """The `credentials` value: {"username", "password"} checked; the password is never
    part of an error message (it would end up in an ack, a log, the server's record).
    With device_id, the username must be that id or start with `<device_id>~`."""
    if not isinstance(value, dict):
        raise ProtocolError("credentials value: object expected")
    user = value.get("username")
    if not isinstance(user, str) or not 1 <= len(user) <= 64:
        raise ProtocolError("value.username: 1..64 chars expected")
    for c in user:
        if c not in _USER_CHARS:
            raise ProtocolError("value.username: [A-Za-z0-9_~-] only")
    if device_id is not None and user != device_id:
        if not user.startswith(device_id + "~"):
            raise ProtocolError("value.username: not this device's")
    pw = value.get("password")
    if not isinstance(pw, str) or not 8 <= len(pw) <= 128:
        raise ProtocolError("value.password: 8..128 printable ASCII chars expected")
    for c in pw:
        if not " " <= c <= "~":
            raise ProtocolError("value.password: 8..128 printable ASCII chars expected")
    return {"username": user, "password": pw}


def _cmd_value(op, value, device_id=None):
    if op == "credentials":
        return _credentials(value, device_id)
    if op == "pump":
        if isinstance(value, str) and value.upper() in ("ON", "OFF", "TOGGLE"):
            return value.upper()
        raise ProtocolError("pump value: ON, OFF or TOGGLE expected")
    if op == "valve":
        if value == "TOGGLE" or (type(value) is int and value in (1, 2)):
            return value
        raise ProtocolError("valve value: 1, 2 or TOGGLE expected")
    if op == "timer":
        if not isinstance(value, dict):
            raise ProtocolError("timer value: object expected")
        return {
            "mode": _int(value, "mode", 1, 2, "value."),
            "duration": _int(value, "duration", 0, MAX_TIMER_S, "value."),
        }
    if value is not None:
        raise ProtocolError(f"{op} value: null expected")
    return None


def parse_command(payload, device_id=None):
    """Device side: a validated cmd dict {id, exp, op, value}.

    The ProtocolError carries cmd_id (when readable) and code 'invalid' or
    'unsupported'. With device_id, a `credentials` username must be this device's.
    """
    obj = _json_object(payload)
    cmd_id = obj.get("id")
    if not is_valid_id(cmd_id):
        raise ProtocolError("id: 1..64 of [A-Za-z0-9_-] expected")
    try:
        exp = _int(obj, "exp", 0, UINT32)
        op = obj.get("op")
        if not isinstance(op, str):
            raise ProtocolError("op: string expected")
        if op not in OPS:
            raise ProtocolError(f"unknown op {op[:40]!r}", "unsupported")
        value = _cmd_value(op, obj.get("value"), device_id)
    except ProtocolError as e:
        raise ProtocolError(e.msg, e.code, cmd_id) from None
    return {"id": cmd_id, "exp": exp, "op": op, "value": value}


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


def _hhmm(v, where):
    if not isinstance(v, str) or len(v) != 5 or v[2] != ":":
        raise ProtocolError(where + ": HH:MM expected")
    h, m = v[:2], v[3:]
    # ASCII digits only: isdigit() also takes "\u0661" (int() reads it) and "\u00b2"
    # (int() raises ValueError, which no parser may let out).
    if not (_digits(h) and _digits(m)) or int(h) > 23 or int(m) > 59:
        raise ProtocolError(where + ": HH:MM expected")
    return int(h) * 60 + int(m)


def _program(p, i):
    where = f"programs[{i}]."
    if not isinstance(p, dict):
        raise ProtocolError(f"programs[{i}]: object expected")
    slot = _int(p, "slot", 1, 3, where)
    enabled = _bool(p, "enabled", where)
    days = p.get("days")
    if not isinstance(days, list) or len(days) != 7:
        raise ProtocolError(where + "days: list of 7 expected")
    out_days = []
    for d, day in enumerate(days):
        dw = f"{where}days[{d}]"
        if day is None:
            out_days.append(None)
            continue
        if not isinstance(day, dict):
            raise ProtocolError(dw + ": object or null expected")
        mode = _int(day, "mode", 1, 2, dw + ".")
        start = _hhmm(day.get("start"), dw + ".start")
        stop = _hhmm(day.get("stop"), dw + ".stop")
        if stop <= start:
            raise ProtocolError(dw + ": stop must be after start")
        out_days.append(
            {"mode": mode, "start": day["start"], "stop": day["stop"]},
        )
    return {"slot": slot, "enabled": enabled, "days": out_days}


def validate_config(obj):
    """A normalised copy of a config/set object, or ProtocolError."""
    if not isinstance(obj, dict):
        raise ProtocolError("config: object expected")
    tz_posix = _str(obj, "tz_posix", 1, 64)
    try:
        tzrules.parse(tz_posix)
    except ValueError as e:
        raise ProtocolError("tz_posix: " + str(e)) from None
    th = _dict(obj, "thresholds")
    w = "thresholds."
    progs = obj.get("programs")
    if not isinstance(progs, list) or len(progs) > 3:
        raise ProtocolError("programs: list of at most 3 expected")
    programs = [_program(p, i) for i, p in enumerate(progs)]
    slots = [p["slot"] for p in programs]
    if len(set(slots)) != len(slots):
        raise ProtocolError("programs: duplicate slot")
    return {
        "version": _int(obj, "version", 0, INT31),
        "tz": _str(obj, "tz", 0, 64),
        "tz_posix": tz_posix,
        "telemetry_interval": _int(obj, "telemetry_interval", 10, 3600),
        "thresholds": {
            "freeze_on_c": _float(th, "freeze_on_c", -20.0, 20.0, w),
            "freeze_hysteresis_c": _float(th, "freeze_hysteresis_c", 0.1, 10.0, w),
            "pump_max_run_s_day": _int(th, "pump_max_run_s_day", 0, 86400, w),
            "min_switch_interval_s": _int(th, "min_switch_interval_s", 0, 600, w),
        },
        "programs": sorted(programs, key=lambda p: p["slot"]),
    }


def parse_config(payload):
    """Device side: validated config/set; ProtocolError has .version if readable."""
    obj = _json_object(payload)
    try:
        return validate_config(obj)
    except ProtocolError as e:
        v = obj.get("version")
        e.version = v if type(v) is int and 0 <= v <= INT31 else None
        raise


def encode_config(config):
    """Cloud side: the config/set payload; ProtocolError when the config is invalid."""
    out = dumps(validate_config(config))
    if len(out) > MAX_PAYLOAD:
        raise ProtocolError("config too large")
    return out


def parse_v31_set(suffix, payload):
    """Device side: (op, value) of a v3.1 set topic, same shapes as cmd."""
    if suffix == WIFI_CLEAR:
        # v3.1: "anything" clears, even a payload that is not text.
        return "wifi_clear", None
    if suffix == TIMER_SET:
        obj = _json_object(payload)
        return "timer", _cmd_value("timer", obj)
    text = _text(payload).strip().upper()
    if suffix == PUMP_SET:
        if text in ("ON", "1"):
            return "pump", "ON"
        if text in ("OFF", "0"):
            return "pump", "OFF"
        if text == "TOGGLE":
            return "pump", "TOGGLE"
        raise ProtocolError("pump/set: ON, OFF, 1, 0 or TOGGLE expected")
    if suffix == VALVE_SET:
        if text in ("1", "2"):
            return "valve", int(text)
        if text == "TOGGLE":
            return "valve", "TOGGLE"
        raise ProtocolError("valve/set: 1, 2 or TOGGLE expected")
    raise ProtocolError(f"unknown set topic {suffix!r}")


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


# --- provisioning bundle --------------------------------------------------------------


def parse_bundle(payload):
    """The provisioning bundle from the captive portal (JSON, or the QR text)."""
    obj = _json_object(payload)
    if obj.get("v") != 1 or type(obj.get("v")) is not int:
        raise ProtocolError("v: 1 expected")
    device_id = obj.get("device_id")
    if not is_valid_id(device_id):
        raise ProtocolError("device_id: invalid")
    m = _dict(obj, "mqtt")
    prefix = m.get("prefix", DEFAULT_PREFIX)
    if not is_valid_prefix(prefix):
        raise ProtocolError("mqtt.prefix: invalid")
    ca = obj.get("ca")
    if ca is not None and (not isinstance(ca, str) or "BEGIN CERTIFICATE" not in ca):
        raise ProtocolError("ca: PEM certificate expected")
    return {
        "v": 1,
        "device_id": device_id,
        "mqtt": {
            "host": _str(m, "host", 1, 253, "mqtt."),
            "port": _int(m, "port", 1, 65535, "mqtt."),
            "tls": _bool(m, "tls", "mqtt."),
            "username": _str(m, "username", 0, 128, "mqtt."),
            "password": _str(m, "password", 0, 256, "mqtt."),
            "prefix": prefix,
        },
        "ca": ca,
    }
