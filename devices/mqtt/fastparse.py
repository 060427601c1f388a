"""The bridge's parse of device messages: firmware.protocol's, with a faster path for
telemetry, the bulk of the traffic.

firmware.protocol is shared with the device's MicroPython code, so it keeps the
standard `json` and its field checks stay as they are. Here a telemetry payload is
decoded with orjson (when installed) and checked inline; anything the fast path is
not sure of (not bytes, too large, not what orjson reads, any field off) goes to
firmware.protocol, which then gives the answer: the result or the error. So the fast
path only ever answers for payloads that firmware.protocol accepts, with the same
value (devices/tests/test_fastparse.py compares the two on many payloads).

A new telemetry field goes into both parsers: into firmware.protocol.parse_telemetry
and, for an optional string, one line in OPTIONAL_STRINGS below.
"""

from firmware import protocol

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency; firmware.protocol does it all
    orjson = None

MAX_PAYLOAD = protocol.MAX_PAYLOAD
UINT32 = protocol.UINT32
MAX_TIMER_S = protocol.MAX_TIMER_S
TEMP_MIN, TEMP_MAX = protocol.TEMP_MIN, protocol.TEMP_MAX
TELEMETRY = protocol.TELEMETRY
# Optional string fields of telemetry: (key, shortest, longest). Absent or null is
# None in the result, as firmware.protocol's parse_telemetry gives it.
OPTIONAL_STRINGS: tuple[tuple[str, int, int], ...] = (("hw", 1, 32),)


def _text_ok(v) -> bool:
    """firmware.protocol._clean's test: no NUL, no lone surrogate."""
    if "\x00" in v:
        return False
    if v.isascii():
        return True
    try:
        v.encode("utf-8")
    except UnicodeError:
        return False
    return True


def _uint(v, hi=UINT32) -> bool:
    return type(v) is int and 0 <= v <= hi


def fast_telemetry(payload) -> dict | None:
    """parse_telemetry's result for a valid payload; None when not sure (then
    firmware.protocol decides)."""
    if orjson is None or type(payload) is not bytes or len(payload) > MAX_PAYLOAD:
        return None
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    get = obj.get
    # Absent is an error in firmware.protocol (its default 0 is checked as absent).
    if "temp" not in obj or "rssi" not in obj:
        return None
    temp = get("temp")
    if temp is not None:
        kind = type(temp)
        if kind is float:
            # NaN fails both comparisons.
            if not TEMP_MIN <= temp <= TEMP_MAX:
                return None
        elif kind is int:
            if not TEMP_MIN <= temp <= TEMP_MAX:
                return None
            temp = float(temp)
        else:
            return None
        temp = round(temp, 1)
    rssi = get("rssi")
    if rssi is not None and (type(rssi) is not int or not -127 <= rssi <= 0):
        return None
    sw = get("switches")
    timer = get("timer")
    if type(sw) is not dict or type(timer) is not dict:
        return None
    ts, seq, pump, valve = get("ts"), get("seq"), get("pump"), get("valve")
    fw = get("fw")
    t_active, t_mode = timer.get("active"), timer.get("mode")
    t_remaining, t_duration = timer.get("remaining"), timer.get("duration")
    sw_pump, sw_valve = sw.get("pump"), sw.get("valve")
    if not (
        _uint(ts)
        and _uint(seq)
        and (pump is True or pump is False)
        and type(valve) is int
        and 1 <= valve <= 2
        and (t_active is True or t_active is False)
        and _uint(t_remaining, MAX_TIMER_S)
        and type(t_mode) is int
        and 1 <= t_mode <= 2
        and _uint(t_duration, MAX_TIMER_S)
        and _uint(get("uptime"))
        and _uint(get("mem_free"))
        and type(fw) is str
        and 1 <= len(fw) <= 32
        and _text_ok(fw)
        and _uint(sw_pump)
        and _uint(sw_valve)
    ):
        return None
    out = {
        "ts": ts,
        "seq": seq,
        "temp": temp,
        "pump": pump,
        "valve": valve,
        "timer": {
            "active": t_active,
            "remaining": t_remaining,
            "mode": t_mode,
            "duration": t_duration,
        },
        "rssi": rssi,
        "uptime": obj["uptime"],
        "mem_free": obj["mem_free"],
        "fw": fw,
        "switches": {"pump": sw_pump, "valve": sw_valve},
    }
    for key, lo, hi in OPTIONAL_STRINGS:
        v = get(key)
        if v is None:
            if key in obj:  # present and null: firmware.protocol says what is wrong
                return None
        elif not (type(v) is str and lo <= len(v) <= hi and _text_ok(v)):
            return None
        out[key] = v
    return out


def parse_telemetry(payload) -> dict:
    """firmware.protocol.parse_telemetry, faster for the usual valid payload."""
    out = fast_telemetry(payload)
    return out if out is not None else protocol.parse_telemetry(payload)


def parse_device_message(suffix, payload):
    """firmware.protocol.parse_device_message, with telemetry's fast path."""
    if suffix == TELEMETRY:
        out = fast_telemetry(payload)
        if out is not None:
            return "telemetry", out
    return protocol.parse_device_message(suffix, payload)
