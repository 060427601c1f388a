"""The bridge's pure message-handling core: no database, no network.

`IngestCore.handle(broker_id, topic, payload, received_at, retain)` routes one MQTT
message to the one device it may speak for (through the directory, built from the
access layer's `devices_for_bridge`), validates it with `firmware.protocol` and turns
it into effects collected in `IngestCore.effects`: state deltas, history samples,
events, command acknowledgements and completions, and pools to broadcast. The runner
drains the effects and hands them to the ingest and command services in batches;
tests call `handle` directly.

A message is never half-applied: it is parsed completely before anything changes,
and anything that fails routing or parsing only increments a counter.
"""

import datetime as dt
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from devices.services.commands import command_v31_done
from firmware import protocol

logger = logging.getLogger(__name__)

LEGACY = "v3.1"
DEFAULT_INTERVAL_S = 60
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


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


@dataclass(slots=True)
class DeviceInfo:
    """What the bridge knows about one device; `state` is its last known state."""

    pk: int
    broker_id: int
    device_id: str
    tenant_id: int
    tenant_hex: str
    pool_id: int | None
    pool_hex: str | None
    protocol: str
    silence_s: float
    online: bool = False
    last_seen: float = 0.0
    # Last message that was not a retained replay: the device spoke on the connection.
    last_live: float = 0.0
    # When the bridge last saw it come online (the config sweep republishes then).
    online_since: float = 0.0
    state: dict = field(default_factory=dict)


@dataclass(slots=True)
class DeviceWrite:
    """Pending database write for one device (merged across messages)."""

    delta: dict = field(default_factory=dict)
    online: bool | None = None
    last_seen: float | None = None
    firmware_version: str | None = None
    config_version_applied: int | None = None


@dataclass(slots=True)
class Effects:
    samples: list = field(default_factory=list)  # (device, ts, temp, pump, valve, rssi)
    writes: dict = field(default_factory=dict)  # device pk -> DeviceWrite
    events: list = field(default_factory=list)  # (device, ts, kind, message, data)
    acks: list = field(default_factory=list)  # (device pk, ack dict)
    completions: list = field(default_factory=list)  # (command pk, device pk)
    pools: dict = field(default_factory=dict)  # pool hex -> DeviceInfo (to broadcast)

    def __bool__(self) -> bool:
        return bool(
            self.samples
            or self.writes
            or self.events
            or self.acks
            or self.completions
            or self.pools
        )


def silence_seconds(
    *, protocol_name: str, settings: dict | None, factor: float
) -> float:
    """No message for this long means offline: `factor` telemetry intervals."""
    interval = DEFAULT_INTERVAL_S
    if protocol_name != LEGACY and isinstance(settings, dict):
        value = settings.get("telemetry_interval")
        if type(value) is int and 10 <= value <= 3600:
            interval = value
    return interval * factor


class Directory:
    """topic -> device for every broker the bridge serves; rebuilt, never queried."""

    def __init__(self) -> None:
        # broker id -> [(prefix + "/", {device id: DeviceInfo})], longest prefix first
        self.routes: dict[int, list[tuple[str, dict[str, DeviceInfo]]]] = {}
        self.by_pk: dict[int, DeviceInfo] = {}

    def prefixes(self, broker_id: int) -> list[str]:
        return [head[:-1] for head, _ in self.routes.get(broker_id, [])]

    def lookup(self, broker_id: int, topic: str) -> tuple[DeviceInfo | None, str]:
        """(device, suffix); device None when the topic names no device of ours."""
        for head, devices in self.routes.get(broker_id, ()):
            if topic.startswith(head):
                rest = topic[len(head) :]
                i = rest.find("/")
                if i <= 0:
                    return None, ""
                return devices.get(rest[:i]), rest[i + 1 :]
        return None, ""

    @classmethod
    def build(
        cls, rows, *, previous: "Directory | None" = None, silence_factor: float = 3.0
    ) -> "Directory":
        """From devices_for_bridge() rows. Known devices keep the bridge's own state,
        which is fresher than the database between two writes."""
        new = cls()
        now = time.time()
        grouped: dict[int, dict[str, dict[str, DeviceInfo]]] = defaultdict(dict)
        old = previous.by_pk if previous is not None else {}
        for row in rows:
            pool_code = row["pool__code"]
            info = DeviceInfo(
                pk=row["pk"],
                broker_id=row["broker_id"],
                device_id=row["device_id"],
                tenant_id=row["tenant_id"],
                tenant_hex=row["tenant__code"].hex,
                pool_id=row["pool_id"],
                pool_hex=pool_code.hex if pool_code else None,
                protocol=row["protocol"],
                silence_s=silence_seconds(
                    protocol_name=row["protocol"],
                    settings=row["pool__settings"],
                    factor=silence_factor,
                ),
                online=row["online"],
                state=dict(row["state"] or {}),
            )
            known = old.get(info.pk)
            if known is not None:
                info.state, info.last_seen = known.state, known.last_seen
                info.last_live, info.online_since = known.last_live, known.online_since
                # What this bridge saw recently beats the database; otherwise take
                # the database's flag (another bridge or the silence sweep set it).
                if now - known.last_seen < info.silence_s:
                    info.online = known.online
            grouped[row["broker_id"]].setdefault(row["topic_prefix"], {})[
                row["device_id"]
            ] = info
            new.by_pk[info.pk] = info
        for broker_id, prefixes in grouped.items():
            new.routes[broker_id] = sorted(
                ((prefix + "/", devices) for prefix, devices in prefixes.items()),
                key=lambda item: -len(item[0]),
            )
        return new


class IngestCore:
    """Turns MQTT messages into effects; single-threaded (the runner's worker)."""

    def __init__(self, directory: Directory | None = None) -> None:
        self.directory = directory or Directory()
        self.effects = Effects()
        # device pk -> [(command pk, expected, sent_at epoch)], set by the runner.
        self.awaiting: dict[int, list[tuple[int, dict, float]]] = {}
        self.counters: Counter = Counter()

    def drain(self) -> Effects:
        effects, self.effects = self.effects, Effects()
        return effects

    # --- the entry point -------------------------------------------------------------

    def handle(
        self,
        broker_id: int,
        topic: str,
        payload: bytes,
        received_at: float,
        retain: bool = False,
    ) -> bool:
        """Apply one message; False (and a counter) when it is dropped. Never raises."""
        self.counters["received"] += 1
        try:
            device, suffix = self.directory.lookup(broker_id, topic)
            if device is None:
                self.counters["unauthorised"] += 1
                return False
            try:
                kind, value = protocol.parse_device_message(suffix, payload)
            except protocol.ProtocolError as exc:
                self.counters["malformed"] += 1
                self.counters[f"malformed:{suffix[:20]}"] += 1
                logger.debug("malformed %s from %s: %s", suffix, device.device_id, exc)
                return False
            self._apply(device, kind, value, received_at, retain)
        except Exception:  # noqa: BLE001 - one bad message must never stop the bridge
            self.counters["errors"] += 1
            logger.exception("bridge core failed on a message on %r", topic[:200])
            return False
        self.counters["accepted"] += 1
        return True

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
            self._event(
                device,
                at,
                "online" if online else "offline",
                "Device online" if online else "Device offline",
                {},
            )
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
        wifi = dict(device.state.get("wifi") or {})
        if t["rssi"] is not None:
            wifi.update(
                status="connected",
                rssi=t["rssi"],
                quality=protocol.wifi_quality(t["rssi"]),
            )
        self._set(
            device,
            {
                "temperature": t["temp"],
                "pump": t["pump"],
                "valve": t["valve"],
                "timer": {**t["timer"], "at": iso(at)},
                "wifi": wifi,
                "uptime": t["uptime"],
                "mem_free": t["mem_free"],
                "switches": t["switches"],
                "fw": t["fw"],
            },
        )
        self._write(device).firmware_version = t["fw"]
        if not retain:
            ts = self._device_ts(t["ts"], at)
            self.effects.samples.append(
                (device, ts, t["temp"], t["pump"], t["valve"], t["rssi"])
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
