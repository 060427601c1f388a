"""The device's half of the poolsaas device protocol: what the board itself needs.

Topic names, the encoders of what a device publishes, and the validating parsers of what
it receives (cmd, config/set, the v3.1 set topics, the provisioning bundle). Pure and
MicroPython-compatible. The board imports only this module; `protocol.py` imports it
whole and adds the cloud side (the parsers of device messages, the command and config
encoders), so `firmware.protocol` stays the one executable spec of docs/protocol.md.
Every parser raises only ProtocolError, whatever the input.
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

V31_CLOUD_TO_DEVICE = (PUMP_SET, VALVE_SET, TIMER_SET, WIFI_CLEAR)
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
MAX_TIMER_S = 86400
UINT32 = 4294967295
INT31 = 2147483647
WIFI_DISCONNECTED = '{"status":"disconnected"}'

_ID_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
)
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


def _digits(s):
    # str.isdigit() also accepts non-ASCII digits ("\u0661", "\u00b2"): ASCII only.
    if not s:
        return False
    for c in s:
        if c not in "0123456789":
            return False
    return True


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
    # The key that authenticates OTA manifests (docs/ota.md): 32 bytes, hex.
    ota_key = obj.get("ota_key")
    if ota_key is not None and (
        not isinstance(ota_key, str)
        or len(ota_key) != 64
        or any(ch not in "0123456789abcdef" for ch in ota_key)
    ):
        raise ProtocolError("ota_key: 64 lowercase hex digits expected")
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
        "ota_key": ota_key,
    }
