"""The devices room's pure half: what a device topic means. No database, no network.

`DeviceTopics.handle(message, ctx)` gets one MQTT message on a device topic with the
device already resolved by the bridge's directory, validates it with
`firmware.protocol` (telemetry through devices.mqtt.fastparse, the same checks
faster) and turns it into effects collected in `DeviceTopics.effects`:
state deltas, history samples, events, command acknowledgements and completions, and
pools to broadcast. The room (devices.mqtt) drains the effects and hands them to the
ingest and command services in batches; tests call `handle` through the bridge's
dispatcher.

A message is never half-applied: it is parsed completely before anything changes,
and anything that fails parsing only increments a counter.
"""

import logging
import sys
from dataclasses import dataclass, field
from typing import Any

from devices.bridge.directory import LEGACY, DeviceInfo, iso
from devices.bridge.rooms import Context, Message
from devices.mqtt.fastparse import parse_device_message
from devices.services.commands import command_v31_done
from devices.services.events import device_presence_event
from firmware import protocol

logger = logging.getLogger(__name__)

# Device-reported clocks further than this from ours are not trusted for history.
CLOCK_SKEW_S = 86400
V31_STATE_KINDS = ("pump", "valve", "timer", "wifi")
EVENT_TEXT = {
    "boot": "Device started",
    "program_start": "Program started",
    "program_stop": "Program stopped",
    "timer_start": "Timer started",
    "timer_end": "Timer ended",
    "override": "Programs paused by a manual action",
    "freeze_protect": "Freeze protection",
    "max_runtime": "Daily maximum pump run time reached",
    "error": "Device error",
}


@dataclass(slots=True)
class DeviceWrite:
    """Pending database write for one device (merged across messages)."""

    delta: dict = field(default_factory=dict)
    online: bool | None = None
    last_seen: float | None = None
    firmware_version: str | None = None
    hardware_model: str | None = None
    config_version_applied: int | None = None


@dataclass(slots=True)
class Effects:
    samples: list = field(default_factory=list)  # (device, ts, temp, pump, valve, rssi)
    writes: dict = field(default_factory=dict)  # device pk -> DeviceWrite
    events: list = field(default_factory=list)  # (device, ts, kind, message, data)
    acks: list = field(default_factory=list)  # (device pk, ack dict)
    completions: list = field(default_factory=list)  # (command pk, device pk)
    pools: dict = field(default_factory=dict)  # pool hex -> DeviceInfo (to broadcast)
    answers: list = field(default_factory=list)  # (DeviceInfo, ack dict), to show now

    def __bool__(self) -> bool:
        return bool(
            self.samples
            or self.writes
            or self.events
            or self.acks
            or self.completions
            or self.pools
        )


class DeviceTopics:
    """Turns device messages into effects; single-threaded (the bridge's worker)."""

    def __init__(self) -> None:
        self.effects = Effects()
        # device pk -> [(command pk, expected, sent_at epoch)], set by the publisher.
        self.awaiting: dict[int, list[tuple[int, dict, float]]] = {}

    def drain(self) -> "Effects":
        effects, self.effects = self.effects, Effects()
        return effects

    def handle(self, message: Message, ctx: Context) -> bool:
        """Apply one message; False (and a counter) when it is malformed."""
        device, suffix = message.device, message.suffix
        try:
            kind, value = parse_device_message(suffix, message.payload)
        except protocol.ProtocolError as exc:
            ctx.counters["malformed"] += 1
            ctx.counters[f"malformed:{suffix[:20]}"] += 1
            logger.debug("malformed %s from %s: %s", suffix, device.device_id, exc)
            return False
        self._apply(device, kind, value, message.received_at, message.retain)
        return True

    def seen(self, message: Message) -> None:
        """A message not handled (its tenant is over quota) still shows the device is
        there: presence only, nothing stored."""
        if not message.retain:
            message.device.last_live = message.received_at
            self._online(message.device, True, message.received_at, seen=True)

    # --- effects ---------------------------------------------------------------------

    def _write(self, device: DeviceInfo) -> DeviceWrite:
        write = self.effects.writes.get(device.pk)
        if write is None:
            write = self.effects.writes[device.pk] = DeviceWrite()
        return write

    def _set(self, device: DeviceInfo, delta: dict) -> None:
        device.state.update(delta)
        self._write(device).delta.update(delta)
        if device.pool_hex:
            self.effects.pools[device.pool_hex] = device

    def _online(self, device: DeviceInfo, online: bool, at: float, seen: bool) -> None:
        write = self._write(device)
        if seen:
            device.last_seen = at
            write.last_seen = at
        if device.online != online:
            device.online = online
            write.online = online
            if online:
                device.online_since = at
            self._event(device, at, *device_presence_event(online=online))
        elif online:
            # Keep the database's flag right even if another bridge flipped it.
            write.online = True
        if device.pool_hex:
            self.effects.pools[device.pool_hex] = device

    def _event(self, device, ts: float, kind: str, message: str, data: dict) -> None:
        self.effects.events.append((device, ts, kind, message, data))

    def _sample(self, device: DeviceInfo, ts: float, temperature=None) -> None:
        state = device.state
        wifi = state.get("wifi") or {}
        self.effects.samples.append(
            (
                device,
                ts,
                temperature if temperature is not None else state.get("temperature"),
                state.get("pump"),
                state.get("valve"),
                wifi.get("rssi"),
            )
        )

    def _device_ts(self, ts: int, received_at: float) -> float:
        if ts == 0 or abs(ts - received_at) > CLOCK_SKEW_S:
            return received_at
        return float(ts)

    def _apply(self, device, kind: str, value: Any, at: float, retain: bool) -> None:
        legacy = device.protocol == LEGACY
        if not retain:
            device.last_live = at
        if kind == "status":
            self._online(device, value, at, seen=value)
            return
        if kind == "wifi" and value["status"] == "disconnected":
            self._set(device, {"wifi": value})
            if legacy:
                self._online(device, False, at, seen=False)
            self._check_awaiting(device, kind, value, at)
            return
        # A retained message is old news: it carries state but proves nothing about
        # the device being there now. Except a v3.1 "connected" wifi/state: that topic
        # holds the device's last will, which the broker puts in its place the moment
        # the connection drops, so while it is retained as connected the device is
        # connected (docs/protocol.md 2.3).
        if not retain or (legacy and kind == "wifi"):
            self._online(device, True, at, seen=True)

        if kind == "telemetry":
            self._telemetry(device, value, at, retain)
        elif kind == "temperature":
            self._set(device, {"temperature": value})
            if not retain:
                self._sample(device, at, value)
        elif kind in ("pump", "valve"):
            changed = device.state.get(kind) != value
            self._set(device, {kind: value})
            if changed and not retain:
                self._sample(device, at)
        elif kind == "timer":
            self._set(device, {"timer": {**value, "at": iso(at)}})
        elif kind == "wifi":
            self._set(device, {"wifi": value})
        elif kind == "ack":
            self.effects.acks.append((device.pk, value))
            if not retain:
                self.effects.answers.append((device, value))
            if "state" in value:
                snap = value["state"]
                self._set(
                    device,
                    {
                        "pump": snap["pump"],
                        "valve": snap["valve"],
                        "timer": {**snap["timer"], "at": iso(at)},
                    },
                )
        elif kind == "config_applied":
            self._config_answer(device, value, at)
        elif kind == "event":
            text = EVENT_TEXT.get(value["type"], value["type"])
            data = value.get("data") or {}
            if value["type"] == "error" and isinstance(data.get("msg"), str):
                text = f"{text}: {data['msg'][:200]}"
            self._event(
                device,
                self._device_ts(value["ts"], at),
                f"device.{value['type']}",
                text,
                data,
            )
        if legacy and kind in V31_STATE_KINDS:
            self._check_awaiting(device, kind, value, at)

    def _config_answer(self, device: DeviceInfo, value: dict, at: float) -> None:
        """config/applied: the device's answer is kept in its state ("config"), so the
        pool page shows it live; only a new answer is logged, since the device answers
        again on every reconnect and the broker replays the retained one."""
        answer = {"version": value["version"], "ok": value["ok"]}
        if value["ok"]:
            self._write(device).config_version_applied = value["version"]
        else:
            answer["error"] = value.get("error") or "rejected"
        if device.state.get("config") == answer:
            return
        self._set(device, {"config": answer})
        if value["ok"]:
            self._event(
                device,
                at,
                "config.applied",
                f"Configuration {value['version']} applied",
                value,
            )
        else:
            self._event(
                device,
                at,
                "config.rejected",
                f"Configuration {value['version']} rejected: {answer['error']}",
                value,
            )

    def _telemetry(self, device: DeviceInfo, t: dict, at: float, retain: bool) -> None:
        wifi = device.state.get("wifi") or {}
        rssi = t["rssi"]
        if rssi is not None:
            quality = protocol.wifi_quality(rssi)
            # The same dict while nothing in it changes (state dicts are replaced,
            # never changed in place): one fewer per message and per device.
            if (
                wifi.get("status") != "connected"
                or wifi.get("rssi") != rssi
                or wifi.get("quality") != quality
            ):
                wifi = {**wifi, "status": "connected", "rssi": rssi, "quality": quality}
        # The parse's own fresh dict; the firmware version one string for the fleet.
        timer = t["timer"]
        timer["at"] = iso(at)
        fw = sys.intern(t["fw"])
        self._set(
            device,
            {
                "temperature": t["temp"],
                "pump": t["pump"],
                "valve": t["valve"],
                "timer": timer,
                "wifi": wifi,
                "uptime": t["uptime"],
                "mem_free": t["mem_free"],
                "switches": t["switches"],
                "fw": fw,
            },
        )
        write = self._write(device)
        write.firmware_version = fw
        if t["hw"] is not None:  # firmware before the model sends none: keep ours
            write.hardware_model = t["hw"]
        if not retain:
            ts = self._device_ts(t["ts"], at)
            self.effects.samples.append(
                (device, ts, t["temp"], t["pump"], t["valve"], rssi)
            )

    def _check_awaiting(self, device: DeviceInfo, kind: str, value, at: float) -> None:
        waiting = self.awaiting.get(device.pk)
        if not waiting:
            return
        keep = []
        for command_pk, expected, sent_at in waiting:
            if command_v31_done(
                expected=expected,
                kind=kind,
                value=value,
                reported_at=at,
                sent_at=sent_at,
            ):
                self.effects.completions.append((command_pk, device.pk))
            else:
                keep.append((command_pk, expected, sent_at))
        self.awaiting[device.pk] = keep
