"""The devices' own topics as the gateway shows them to MQTT clients. Pure.

A gateway client sees `<prefix>/<device id>/<suffix>`, exactly the topics of the
device (docs/protocol.md), but only those of its tenant's devices: the consumer gives
the set of those topics (`device_topics` of each device) and these functions never
look further, so a foreign device and a missing one are the same nothing.

What can be subscribed to is what a device publishes (`DEVICE_TO_CLOUD` of its
protocol); what can be published to is a command topic (`COMMAND_SUFFIXES`). The
retained messages a subscriber gets first are built from the state the bridge keeps
(`state_messages`), with the payload bytes and JSON types a v3.1 device sends.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Container, Iterable, Mapping
from typing import Any

from firmware import protocol

LEGACY = "v3.1"
MAX_TOPIC_BYTES = 65535
# Topics a gateway client may publish to: the v3.1 set topics and the ps1 cmd.
COMMAND_SUFFIXES = protocol.V31_CLOUD_TO_DEVICE + (protocol.CMD,)


# --- names and filters (MQTT 3.1.1, 4.7) ------------------------------------------


def _text_ok(s: Any) -> bool:
    if not isinstance(s, str) or not s or "\x00" in s:
        return False
    try:
        return len(s.encode("utf-8")) <= MAX_TOPIC_BYTES
    except UnicodeError:
        return False


def is_valid_topic_name(name: Any) -> bool:
    """A topic a PUBLISH may carry: non-empty, no wildcard, no NUL [MQTT-4.7.3]."""
    return _text_ok(name) and "+" not in name and "#" not in name


def is_valid_filter(topic_filter: Any) -> bool:
    """`+` only as a whole level, `#` only as the whole last level [MQTT-4.7.1]."""
    if not _text_ok(topic_filter):
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def matches(topic_filter: str, topic: str) -> bool:
    """Whether a valid filter matches a topic name, `$` topics excepted from a
    leading wildcard [MQTT-4.7.2-1]."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True  # also matches the parent level ("a/#" matches "a")
        if i >= len(t_levels):
            return False
        if level != "+" and level != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


def expand(topic_filter: str, topics: Iterable[str]) -> list[str]:
    """The topics of `topics` the filter matches, in their order; nothing else."""
    return [t for t in topics if matches(topic_filter, t)]


# --- the devices' topics ----------------------------------------------------------


def device_root(prefix: str, device_id: str) -> str:
    return f"{prefix}/{device_id}"


def subscribable_suffixes(device_protocol: str) -> tuple[str, ...]:
    if device_protocol == LEGACY:
        return protocol.V31_DEVICE_TO_CLOUD
    return protocol.DEVICE_TO_CLOUD


def device_topics(prefix: str, device_id: str, device_protocol: str) -> list[str]:
    """Every topic of one device a gateway client may subscribe to."""
    root = device_root(prefix, device_id)
    return [f"{root}/{s}" for s in subscribable_suffixes(device_protocol)]


def split(topic: str, roots: Container[str]) -> tuple[str, str] | None:
    """(root, suffix) of a topic under one of `roots` (`device_root` strings of the
    tenant's devices), or None: whether the device is another tenant's or does not
    exist, the answer is the same."""
    if not is_valid_topic_name(topic):
        return None
    levels = topic.split("/")
    # A prefix has one level or more, the device id one, the suffix one or more.
    for i in range(2, len(levels)):
        root = "/".join(levels[:i])
        if root in roots:
            suffix = "/".join(levels[i:])
            if all(levels[i:]):
                return root, suffix
    return None


def command_of(suffix: str, payload: bytes) -> tuple[str, Any]:
    """(op, value) of a PUBLISH to a command topic, for `command_send`.

    The v3.1 set topics take their v3.1 payloads; `cmd` takes the ps1 command JSON,
    whose `id` and `exp` are checked but replaced by the server's own. Raises
    protocol.ProtocolError for anything else (another suffix, a bad payload).
    """
    if suffix in protocol.V31_CLOUD_TO_DEVICE:
        return protocol.parse_v31_set(suffix, payload)
    if suffix == protocol.CMD:
        command = protocol.parse_command(payload)
        return command["op"], command["value"]
    raise protocol.ProtocolError(f"{suffix[:40]!r} is not a command topic")


# --- retained state, as a v3.1 device publishes it ---------------------------------


def _int(v: Any) -> bool:
    return type(v) is int


def _timer_payload(timer: Any, now: float) -> bytes | None:
    if not isinstance(timer, Mapping):
        return None
    active, remaining = timer.get("active"), timer.get("remaining")
    mode, duration = timer.get("mode"), timer.get("duration")
    if not (
        isinstance(active, bool)
        and _int(remaining)
        and _int(duration)
        and mode in (1, 2)
        and _int(mode)
    ):
        return None
    at = timer.get("at")
    if active and isinstance(at, str):
        try:
            measured = dt.datetime.fromisoformat(at)
        except ValueError:
            measured = None
        if measured is not None:
            if measured.tzinfo is None:
                measured = measured.replace(tzinfo=dt.UTC)
            elapsed = max(0.0, now - measured.timestamp())
            # Whole seconds, rounded up: running exactly while some time is left,
            # the rule of devices.scheduling.timer_running.
            remaining = max(0, math.ceil(remaining - elapsed))
            if remaining == 0:
                active = False
    return protocol.dumps(
        {"active": active, "remaining": remaining, "mode": mode, "duration": duration}
    )


def _wifi_payload(wifi: Any, online: bool) -> bytes | None:
    if not online:
        return protocol.WIFI_DISCONNECTED.encode()  # the v3.1 last will
    if not isinstance(wifi, Mapping) or wifi.get("status") not in (
        "connected",
        "disconnected",
    ):
        return None
    if wifi["status"] == "disconnected":
        return protocol.WIFI_DISCONNECTED.encode()
    rssi = wifi.get("rssi")
    if _int(rssi):
        quality = protocol.wifi_quality(rssi)
    else:
        rssi = None
        quality = wifi.get("quality")
        if quality not in protocol.WIFI_QUALITIES:
            quality = None
    ssid, ip = wifi.get("ssid"), wifi.get("ip")
    return protocol.dumps(
        {
            "status": "connected",
            "ssid": ssid if isinstance(ssid, str) else None,
            "ip": ip if isinstance(ip, str) else None,
            "rssi": rssi,
            "quality": quality,
        }
    )


def state_messages(
    *,
    prefix: str,
    device_id: str,
    device_protocol: str,
    state: Mapping[str, Any] | None,
    online: bool,
    now: float,
) -> dict[str, bytes]:
    """{topic: payload} of the retained topics of one device, from the state the
    bridge keeps (Device.state, the `state` of a pool.state message) and its
    online flag; `now` is Unix time. Topics with nothing known are left out (a v3.1
    device with an invalid sensor sends no temperature). Ordered as a device
    publishes on connect."""
    state = state if isinstance(state, Mapping) else {}
    root = device_root(prefix, device_id)
    out: dict[str, bytes] = {}
    pump = state.get("pump")
    if isinstance(pump, bool):
        out[f"{root}/{protocol.PUMP_STATE}"] = protocol.encode_pump_state(pump)
    valve = state.get("valve")
    if _int(valve) and valve in (1, 2):
        out[f"{root}/{protocol.VALVE_STATE}"] = protocol.encode_valve_state(valve)
    timer = _timer_payload(state.get("timer"), now)
    if timer is not None:
        out[f"{root}/{protocol.TIMER_STATE}"] = timer
    temperature = state.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        if math.isfinite(temperature):
            out[f"{root}/{protocol.TEMPERATURE_STATE}"] = protocol.encode_temperature(
                temperature
            )
    wifi = _wifi_payload(state.get("wifi"), online)
    if wifi is not None:
        out[f"{root}/{protocol.WIFI_STATE}"] = wifi
    if device_protocol != LEGACY:
        out[f"{root}/{protocol.STATUS}"] = protocol.encode_status(online)
        config = state.get("config")
        if (
            isinstance(config, Mapping)
            and _int(config.get("version"))
            and isinstance(config.get("ok"), bool)
        ):
            error = config.get("error")
            out[f"{root}/{protocol.CONFIG_APPLIED}"] = protocol.encode_config_applied(
                config["version"],
                config["ok"],
                error if isinstance(error, str) else None,
            )
    return out


def changed(
    before: Mapping[str, bytes], after: Mapping[str, bytes]
) -> list[tuple[str, bytes]]:
    """The (topic, payload) of `after` that differ from `before`: what a live
    pool.state means to a subscriber that already has `before`."""
    return [(t, v) for t, v in after.items() if before.get(t) != v]
