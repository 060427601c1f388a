"""The pool controller: a pure state machine shared by the board and the simulator.

No hardware, no network, no global state: the clock is injected (a callable returning
Unix seconds, UTC), relays are driven through an optional callback, and persistence goes
through a store object. The link layer feeds it ticks, sensor readings, commands and
configuration, and publishes what it returns. Rules are those of docs/protocol.md
section 3.3.
"""

import os

try:
    from firmware import protocol_device as protocol
    from firmware import tzrules
except ImportError:  # MicroPython: flat filesystem
    import protocol_device as protocol
    import tzrules

FW_VERSION = "ps1-0.1.0"
# Anything before 2020 means the RTC was never set (no NTP answer yet).
CLOCK_VALID_AFTER = 1577836800
RECENT_IDS = 16
RATE_WINDOW_S = 10
RATE_MAX = 10
# A tick further than this from the previous one is a clock step (NTP), not elapsed
# time.
MAX_TICK_GAP_S = 120

DEFAULT_CONFIG = {
    "version": 0,
    "tz": "UTC",
    "tz_posix": "UTC0",
    "telemetry_interval": 60,
    "thresholds": {
        "freeze_on_c": 2.0,
        "freeze_hysteresis_c": 1.0,
        "pump_max_run_s_day": 0,
        "min_switch_interval_s": 3,
    },
    "programs": [],
}


def _copy(obj):
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy(v) for v in obj]
    return obj


def clock_valid(t):
    return t >= CLOCK_VALID_AFTER


class FileStore:
    """JSON state file, replaced atomically: a power cut leaves the old or the new."""

    def __init__(self, path):
        self.path = path

    def load(self):
        import json

        for p in (self.path, self.path + ".tmp"):
            try:
                with open(p) as f:
                    data = json.loads(f.read())
                if isinstance(data, dict):
                    return data
            except (OSError, ValueError):
                pass
        return None

    def save(self, data):
        import json

        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            # Streamed: no second copy of the whole state as one string in a small heap.
            json.dump(data, f)
            # On a PC (the simulator) the data must be on disk before the rename, or
            # a crash can leave an empty file in place; MicroPython has no fsync and
            # closing the file writes it through.
            sync = getattr(os, "fsync", None)
            if sync is not None:
                f.flush()
                sync(f.fileno())
        try:
            os.rename(tmp, self.path)
        except OSError:
            # FAT (and some ports) refuse to rename over an existing file.
            try:
                os.remove(self.path)
            except OSError:
                pass
            os.rename(tmp, self.path)


class MemoryStore:
    """Keeps the state in memory (simulator devices that need no files)."""

    def __init__(self):
        self.data = None

    def load(self):
        return _copy(self.data) if self.data is not None else None

    def save(self, data):
        self.data = _copy(data)


class Controller:
    """Pump, valve, timer, weekly programs, override, freeze and runtime protection."""

    def __init__(self, clock, store=None, on_relays=None, fw=FW_VERSION, hw=None):
        self.clock = clock
        self.store = store
        self.on_relays = on_relays
        self.fw = fw
        self.hw = hw  # the hardware model telemetry names (None: not sent)
        self.config = _copy(DEFAULT_CONFIG)
        self.tz = tzrules.parse(self.config["tz_posix"])
        # Relays as they physically are; boards power up with both relays released.
        self.pump = False
        self.valve = 1
        # What manual actions, the timer and programs ask for.
        self.pump_req = False
        self.valve_req = 1
        self.timer_active = False
        self.timer_mode = 1
        self.timer_duration = 0
        self.timer_ends = 0
        self.timer_remaining = 0
        self.program_slot = None
        self.override_until = 0
        self.skip_until = 0
        self.run_day = None
        self.run_s = 0
        self.maxed = False
        self.freeze = False
        self.temp = None
        self.switches = {"pump": 0, "valve": 0}
        self.last_switch = {"pump": -(10**9), "valve": -(10**9)}
        self.recent = []
        self.seq = 0
        self.events = []
        self.changed = True
        self.action = None
        self._cmd_times = []
        self._last_tick = None
        # Set by the board's link: the device id a `credentials` username must belong
        # to, and the callable that starts a credential switch (see handle_command).
        self.device_id = None
        self.on_credentials = None
        self._restore()

    # --- persistence ------------------------------------------------------------------

    def _snapshot(self):
        return {
            "config": self.config,
            "pump_req": self.pump_req,
            "valve_req": self.valve_req,
            "timer": [
                self.timer_active,
                self.timer_mode,
                self.timer_duration,
                self.timer_ends,
                self.timer_remaining,
            ],
            "program_slot": self.program_slot,
            "override_until": self.override_until,
            "skip_until": self.skip_until,
            "run": [self.run_day, self.run_s, self.maxed],
            "freeze": self.freeze,
            "switches": self.switches,
            "last_switch": self.last_switch,
            "recent": self.recent,
        }

    def save(self):
        if self.store is None:
            return
        try:
            self.store.save(self._snapshot())
        except OSError as e:
            self._event("error", {"msg": "state not saved: " + str(e)})

    def _restore(self):
        data = self.store.load() if self.store is not None else None
        if not data:
            return
        try:
            self._load(data)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            # A damaged file must not brick the pool: start from defaults, say so.
            store = self.store
            self.__init__(self.clock, None, self.on_relays, self.fw, self.hw)
            # ...and keep saving to it, so the next change replaces the damaged file
            # (without the store, persistence would stay off until the next reboot).
            self.store = store
            self._event("error", {"msg": "state file unreadable: " + str(e)})

    def _load(self, d):
        # Every value is type-checked here: a file that parses as JSON but holds
        # something else must fail now (defaults), not crash a later tick.
        cfg = protocol.validate_config(d["config"])
        t = d["timer"]
        run = d["run"]
        if len(t) != 5 or len(run) != 3:
            raise ValueError("timer or run: wrong length")
        if run[0] is not None:
            _ints(run[0])
        _ints(t[1], t[2], t[3], t[4], run[1], d["override_until"], d["skip_until"])
        if t[1] not in (1, 2) or d["program_slot"] not in (None, 1, 2, 3):
            raise ValueError("timer mode or program slot out of range")
        switches = {"pump": d["switches"]["pump"], "valve": d["switches"]["valve"]}
        last = {"pump": d["last_switch"]["pump"], "valve": d["last_switch"]["valve"]}
        _ints(*switches.values())
        _ints(*last.values())
        recent = []
        for r in d["recent"][-RECENT_IDS:]:
            if not isinstance(r[0], str) or not isinstance(r[1], dict):
                raise ValueError("recent: [id, result] expected")
            recent.append([r[0], r[1]])
        self.config = cfg
        self.tz = tzrules.parse(cfg["tz_posix"])
        self.pump_req = bool(d["pump_req"])
        self.valve_req = 2 if d["valve_req"] == 2 else 1
        self.timer_active, self.timer_mode, self.timer_duration = bool(t[0]), t[1], t[2]
        self.timer_ends, self.timer_remaining = t[3], t[4]
        self.program_slot = d["program_slot"]
        self.override_until = d["override_until"]
        self.skip_until = d["skip_until"]
        self.run_day, self.run_s, self.maxed = run[0], run[1], bool(run[2])
        self.freeze = bool(d["freeze"])
        self.switches = switches
        self.last_switch = last
        self.recent = recent
        now = self.clock()
        if self.timer_active:
            if clock_valid(now):
                if now >= self.timer_ends:
                    # The timer ran out while the power was off.
                    self._timer_end("reboot")
                else:
                    self.timer_remaining = self.timer_ends - now
            else:
                # No wall clock yet: count down what was left at the last save.
                self.timer_ends = now + self.timer_remaining

    # --- helpers ----------------------------------------------------------------------

    def _event(self, etype, data=None):
        now = self.clock()
        if etype == "error":
            data = {"msg": data["msg"][:200]}  # the spec's limit: longer is dropped
        self.events.append((now if clock_valid(now) else 0, etype, data))

    def pop_events(self):
        ev, self.events = self.events, []
        return ev

    def pop_action(self):
        """'reboot' or 'wifi_clear' when one was just executed, else None."""
        a, self.action = self.action, None
        return a

    def pop_changed(self):
        c, self.changed = self.changed, False
        return c

    @property
    def thresholds(self):
        return self.config["thresholds"]

    def _wait_s(self, relay, now):
        """Seconds until the relay may switch again (0 = now)."""
        since = now - self.last_switch[relay]
        if since < 0:
            return 0  # the clock went back (RTC lost): nothing to protect against
        return max(0, self.thresholds["min_switch_interval_s"] - since)

    def _local_day(self, now):
        return self.tz.local(now) // tzrules.DAY

    def active_program(self, now):
        """(slot, mode, stop Unix time) of the highest-priority program running now."""
        if not clock_valid(now):
            return None
        local = self.tz.local(now)
        day = local // tzrules.DAY
        sod = local - day * tzrules.DAY
        wd = tzrules.weekday(day)
        for p in self.config["programs"]:
            if not p["enabled"]:
                continue
            entry = p["days"][wd]
            if entry is None:
                continue
            start = _minutes(entry["start"]) * 60
            stop = _minutes(entry["stop"]) * 60
            if start <= sod < stop:
                return (
                    p["slot"],
                    entry["mode"],
                    self.tz.to_utc(day * tzrules.DAY + stop),
                )
        return None

    def timer_state(self):
        return {
            "active": self.timer_active,
            "remaining": self.timer_remaining if self.timer_active else 0,
            "mode": self.timer_mode,
            "duration": self.timer_duration if self.timer_active else 0,
        }

    def state(self):
        return {"pump": self.pump, "valve": self.valve, "timer": self.timer_state()}

    def telemetry(self, rssi=None, uptime=0, mem_free=0):
        now = self.clock()
        tel = {
            "ts": now if clock_valid(now) else 0,
            "seq": self.seq,
            "temp": self.temp,
            "pump": self.pump,
            "valve": self.valve,
            "timer": self.timer_state(),
            "rssi": rssi,
            "uptime": uptime,
            "mem_free": mem_free,
            "fw": self.fw,
            "hw": self.hw,
            "switches": dict(self.switches),
        }
        # In the literal, so that the board's dict is built once at its size; a
        # controller without a model (the simulator's older firmware) sends none.
        if not self.hw:
            del tel["hw"]
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        return tel

    # --- the rules --------------------------------------------------------------------

    def _timer_end(self, reason):
        self.timer_active = False
        self.timer_remaining = 0
        self.pump_req = False
        self.changed = True
        self._event("timer_end", {"reason": reason})

    def _pause_program(self, now):
        if self.program_slot is None:
            return
        self.override_until = self.tz.next_midnight(now)
        self._event(
            "override", {"slot": self.program_slot, "until": self.override_until}
        )
        self.program_slot = None

    def _apply_relays(self, now):
        """Move the relays towards what the rules ask, within the switch interval."""
        want_pump = self.freeze or (self.pump_req and not self.maxed)
        moved = False
        if self.valve != self.valve_req and self._wait_s("valve", now) == 0:
            self.valve = self.valve_req
            self.switches["valve"] += 1
            self.last_switch["valve"] = now
            moved = True
        if self.pump != want_pump and self._wait_s("pump", now) == 0:
            self.pump = want_pump
            self.switches["pump"] += 1
            self.last_switch["pump"] = now
            moved = True
        if moved:
            self.changed = True
            if self.on_relays is not None:
                self.on_relays(self.pump, self.valve)
        return moved

    def tick(self, temp=None, valid=True):
        """Advance to clock(); temp is the latest water reading (None = bad sensor).

        valid=False means "no new reading this tick" (keeps the last one).
        """
        now = self.clock()
        dirty = False
        last = self._last_tick
        self._last_tick = now
        if last is not None:
            gap = now - last
            if gap > MAX_TICK_GAP_S or gap < 0:
                # Clock stepped (NTP): keep the timer's remaining time, not its end.
                if self.timer_active:
                    self.timer_ends = now + self.timer_remaining
                gap = 0
            if self.pump and clock_valid(now):
                self.run_s += gap
        if valid:
            self.temp = None if temp is None else round(temp, 1)
        th = self.thresholds

        if clock_valid(now):
            day = self._local_day(now)
            if day != self.run_day:
                self.run_day, self.run_s, self.maxed = day, 0, False
                dirty = True
            if self.override_until and now >= self.override_until:
                self.override_until = 0
                dirty = True

        # Freeze protection, with hysteresis; an invalid reading changes nothing.
        if self.temp is not None:
            if not self.freeze and self.temp < th["freeze_on_c"]:
                self.freeze = True
                self._event("freeze_protect", {"active": True, "temp": self.temp})
                dirty = True
            elif self.freeze and self.temp >= round(
                th["freeze_on_c"] + th["freeze_hysteresis_c"], 3
            ):
                # Rounded: 0.2 + 0.1 is 0.30000000000000004, and a 0.3 reading is the
                # release point.
                self.freeze = False
                self._event("freeze_protect", {"active": False, "temp": self.temp})
                dirty = True

        if self.timer_active:
            remaining = self.timer_ends - now
            if remaining <= 0:
                self._timer_end("done")
                dirty = True
            else:
                self.timer_remaining = remaining
                # Save the countdown now and then: after a power cut without a clock
                # (no NTP yet) it resumes from here, at most 30 s off.
                if remaining % 30 == 0:
                    dirty = True

        limit = th["pump_max_run_s_day"]
        if limit and not self.maxed and self.run_s >= limit:
            self.maxed = True
            self._event("max_runtime", {"run_s": self.run_s})
            if self.timer_active:
                self._timer_end("max_runtime")
            self.pump_req = False
            dirty = True

        dirty = self._run_programs(now) or dirty
        if self._apply_relays(now):
            dirty = True
        if dirty:
            self.save()

    def _run_programs(self, now):
        if not clock_valid(now):
            # No wall clock (RTC lost, no NTP yet): nobody can tell whether a program
            # restored from flash is still inside its window, and the daily maximum
            # cannot count either, so stop it rather than run the pump for ever.
            if self.program_slot is None:
                return False
            self._event(
                "program_stop", {"slot": self.program_slot, "mode": self.valve_req}
            )
            self.program_slot = None
            self.pump_req = False
            return True
        active = None
        if not (self.timer_active or self.override_until or now < self.skip_until):
            active = self.active_program(now)
        if active is None:
            if self.program_slot is None:
                return False
            self._event(
                "program_stop", {"slot": self.program_slot, "mode": self.valve_req}
            )
            self.program_slot = None
            self.pump_req = False
            return True
        slot, mode, _ = active
        if slot == self.program_slot:
            return False
        if self.program_slot is not None:
            self._event(
                "program_stop", {"slot": self.program_slot, "mode": self.valve_req}
            )
        self.program_slot = slot
        self.valve_req = mode
        self.pump_req = True
        self._event("program_start", {"slot": slot, "mode": mode})
        return True

    # --- commands ---------------------------------------------------------------------

    def execute(self, op, value):
        """Run one manual action: (ok, error, reason). Shared by cmd and v3.1 sets."""
        now = self.clock()
        if op == "pump":
            target = (not self.pump) if value == "TOGGLE" else value == "ON"
            if not target and self.freeze:
                return False, "busy", "freeze protection holds the pump on"
            if target and self.maxed:
                return False, "busy", "daily maximum pump run time reached"
            if target != self.pump:
                wait = self._wait_s("pump", now)
                if wait:
                    return False, "busy", f"min switch interval, retry in {wait} s"
            self._pause_program(now)
            if not target and self.timer_active:
                self._timer_end("manual")
            self.pump_req = target
        elif op == "valve":
            target = (3 - self.valve) if value == "TOGGLE" else value
            if target != self.valve:
                wait = self._wait_s("valve", now)
                if wait:
                    return False, "busy", f"min switch interval, retry in {wait} s"
            self._pause_program(now)
            self.valve_req = target
        elif op == "timer":
            mode, duration = value["mode"], value["duration"]
            if duration == 0:
                if self.timer_active:
                    self._timer_end("stopped")
                self.pump_req = False
            else:
                if self.maxed:
                    return False, "busy", "daily maximum pump run time reached"
                wait = 0
                if not self.pump:
                    wait = self._wait_s("pump", now)
                if mode != self.valve:
                    wait = max(wait, self._wait_s("valve", now))
                if wait:
                    return False, "busy", f"min switch interval, retry in {wait} s"
                active = self.active_program(now) if self.program_slot else None
                if self.program_slot is not None:
                    self._event(
                        "program_stop",
                        {"slot": self.program_slot, "mode": self.valve_req},
                    )
                    # Cancelled for the rest of its window, as the v3.1 dashboard did.
                    self.skip_until = active[2] if active else now
                    self.program_slot = None
                self.timer_active = True
                self.timer_mode = mode
                self.timer_duration = duration
                self.timer_ends = now + duration
                self.timer_remaining = duration
                self.valve_req = mode
                self.pump_req = True
                self._event("timer_start", {"mode": mode, "duration": duration})
        elif op == "override_clear":
            self.override_until = 0
            self._run_programs(now)
        elif op in ("wifi_clear", "reboot"):
            # Carried out by the link once the ack is out (see pop_action); a
            # redelivered
            # duplicate never gets here, so it cannot restart the board twice.
            self.action = op
        else:
            return False, "unsupported", "unknown op"
        self.changed = True
        self._apply_relays(now)
        self.save()
        return True, None, None

    def handle_command(self, payload):
        """Ack dict for a raw cmd payload; None when there is no id to answer to, or
        when the link acknowledges it later (`credentials`, see record())."""
        try:
            cmd = protocol.parse_command(payload, self.device_id)
        except protocol.ProtocolError as e:
            if e.cmd_id is None:
                return None
            # The bridge drops an ack whose reason is over 200 chars (the command
            # would time out instead of failing with its reason).
            return {"id": e.cmd_id, "ok": False, "error": e.code, "reason": e.msg[:200]}
        for rid, result in self.recent:
            if rid == cmd["id"]:
                # QoS 1 redelivery or a server retry: same answer, no second execution.
                ack = dict(result)
                ack["id"] = rid
                return ack
        now = self.clock()
        if clock_valid(now) and cmd["exp"] < now:
            return {"id": cmd["id"], "ok": False, "error": "expired"}
        self._cmd_times = [t for t in self._cmd_times if now - t < RATE_WINDOW_S]
        if len(self._cmd_times) >= RATE_MAX:
            return {"id": cmd["id"], "ok": False, "error": "rate_limited"}
        self._cmd_times.append(now)
        if cmd["op"] == "credentials":
            if self.on_credentials is None:
                return self.record(
                    cmd["id"], False, "unsupported", "no credential rotation here"
                )
            # The link switches connections and answers once the broker decided
            # (None), or answers now (busy, failed, already in use).
            done = self.on_credentials(cmd["id"], cmd["value"])
            if done is None:
                return None
            return self.record(cmd["id"], *done)
        ok, error, reason = self.execute(cmd["op"], cmd["value"])
        return self.record(cmd["id"], ok, error, reason, self.state() if ok else None)

    def record(self, cmd_id, ok, error=None, reason=None, state=None):
        """Remember the result of command cmd_id in the ring of executed ids (a
        redelivery gets the same answer) and return its ack dict."""
        result = {"ok": ok}
        if ok:
            if state is not None:
                result["state"] = state
        else:
            result["error"] = error
            if reason:
                result["reason"] = reason[:200]
        self.recent.append([cmd_id, result])
        del self.recent[:-RECENT_IDS]
        self.save()
        ack = dict(result)
        ack["id"] = cmd_id
        return ack

    def handle_v31_set(self, suffix, payload):
        """A v3.1 set topic: (op, ok). Malformed payloads are ignored, as on v3.1."""
        try:
            op, value = protocol.parse_v31_set(suffix, payload)
        except protocol.ProtocolError:
            return None, False
        ok = self.execute(op, value)[0]
        return op, ok

    def handle_config(self, payload):
        """config/applied dict for a raw config/set payload."""
        try:
            cfg = protocol.parse_config(payload)
        except protocol.ProtocolError as e:
            version = getattr(e, "version", None)
            return {"version": version or 0, "ok": False, "error": e.msg[:200]}
        return self.apply_config(cfg)

    def apply_config(self, cfg):
        if cfg["version"] != self.config["version"] or cfg != self.config:
            self.config = cfg
            self.tz = tzrules.parse(cfg["tz_posix"])
            self.changed = True
            self.save()
            # Programs, thresholds and the day counter follow at the next tick.
        return {"version": cfg["version"], "ok": True}


def _ints(*values):
    for v in values:
        if type(v) is not int:
            raise TypeError("int expected in the state file")


def _minutes(hhmm):
    return int(hhmm[:2]) * 60 + int(hhmm[3:])
