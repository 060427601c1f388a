"""firmware.controller: every rule of docs/protocol.md 3.3, on a fake clock.

Runs on CPython (pytest) and on MicroPython (firmware/tools/check.sh).
"""

import json

try:
    from firmware import controller, protocol, tzrules
    from firmware.tests.helpers import tmpdir
except ImportError:  # MicroPython: flat filesystem
    import controller
    import protocol
    import tzrules
    from helpers import tmpdir

CET = "CET-1CEST,M3.5.0,M10.5.0/3"
DAY = 86400


def utc(y, m, d, hh=0, mm=0, ss=0):
    return tzrules.days_from_civil(y, m, d) * DAY + hh * 3600 + mm * 60 + ss


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def day(mode, start, stop):
    return {"mode": mode, "start": start, "stop": stop}


def config(programs=(), tz=CET, version=1, **th):
    thresholds = {
        "freeze_on_c": 2.0,
        "freeze_hysteresis_c": 1.0,
        "pump_max_run_s_day": 0,
        "min_switch_interval_s": 0,
    }
    thresholds.update(th)
    return {
        "version": version,
        "tz": "Europe/Madrid",
        "tz_posix": tz,
        "telemetry_interval": 60,
        "thresholds": thresholds,
        "programs": list(programs),
    }


def every_day(slot, mode, start, stop, enabled=True):
    return {"slot": slot, "enabled": enabled, "days": [day(mode, start, stop)] * 7}


def make(t, cfg=None, store=None, temp=20.0):
    clock = Clock(t)
    c = controller.Controller(clock, store)
    if cfg is not None:
        assert c.apply_config(protocol.validate_config(cfg))["ok"]
    c.tick(temp)
    return c, clock


def run(c, clock, seconds, step=1, temp=20.0):
    end = clock.t + seconds
    while clock.t < end:
        clock.t = min(end, clock.t + step)
        c.tick(temp)


def types(c):
    return [e[1] for e in c.pop_events()]


def cmd(c, op, value=None, cid="c1", exp=None):
    exp = c.clock() + 30 if exp is None else exp
    return c.handle_command(protocol.encode_command(cid, exp, op, value))


# Monday 2026-06-01 08:00 UTC = 10:00 CEST.
T0 = utc(2026, 6, 1, 8, 0)


def test_pump_and_valve_commands_switch_relays_and_count():
    relays = []
    c = controller.Controller(Clock(T0), None, lambda p, v: relays.append((p, v)))
    c.apply_config(protocol.validate_config(config()))
    assert c.execute("pump", "ON") == (True, None, None)
    assert c.pump and relays[-1] == (True, 1)
    assert c.execute("pump", "TOGGLE")[0] and not c.pump
    assert c.execute("valve", "TOGGLE")[0] and c.valve == 2
    assert c.execute("valve", 1)[0] and c.valve == 1
    assert c.switches == {"pump": 2, "valve": 2}
    # Asking for the state it is already in is not a switch.
    assert c.execute("valve", 1)[0]
    assert c.switches["valve"] == 2


def test_min_switch_interval_refuses_commands_and_defers_automatic_switches():
    c, clock = make(T0, config(min_switch_interval_s=10))
    assert c.execute("pump", "ON")[0]
    ok, err, reason = c.execute("pump", "OFF")
    assert (ok, err) == (False, "busy") and "retry in 10 s" in reason
    assert c.pump
    clock.t += 10
    assert c.execute("pump", "OFF")[0] and not c.pump
    # A 3 s timer started right after a switch ends late: the relay waits its turn.
    clock.t += 10
    assert c.execute("timer", {"mode": 1, "duration": 3})[0] and c.pump
    run(c, clock, 3)
    assert not c.timer_active and c.pump
    run(c, clock, 7)
    assert not c.pump
    assert c.switches["pump"] == 4


def test_timer_runs_and_stops_pump():
    c, clock = make(T0, config())
    c.pop_events()
    assert c.execute("timer", {"mode": 2, "duration": 60})[0]
    assert c.pump and c.valve == 2
    assert c.timer_state() == {
        "active": True,
        "remaining": 60,
        "mode": 2,
        "duration": 60,
    }
    run(c, clock, 59)
    assert c.pump and c.timer_state()["remaining"] == 1
    run(c, clock, 1)
    assert not c.pump and not c.timer_active
    assert c.timer_state() == {
        "active": False,
        "remaining": 0,
        "mode": 2,
        "duration": 0,
    }
    ev = c.pop_events()
    assert [e[1] for e in ev] == ["timer_start", "timer_end"]
    assert ev[1][2] == {"reason": "done"}


def test_timer_zero_stops_and_pump_off_stops_timer():
    c, clock = make(T0, config())
    c.execute("timer", {"mode": 1, "duration": 600})
    run(c, clock, 5)
    assert c.execute("timer", {"mode": 1, "duration": 0})[0]
    assert not c.pump and not c.timer_active
    c.execute("timer", {"mode": 1, "duration": 600})
    c.pop_events()
    assert c.execute("pump", "OFF")[0]
    assert not c.timer_active and not c.pump
    assert c.pop_events()[0][2] == {"reason": "manual"}


def test_program_runs_in_its_window_local_time():
    # 10:00-11:00 local (CEST = UTC+2) on Mondays only.
    prog = {"slot": 1, "enabled": True, "days": [day(2, "10:00", "11:00")] + [None] * 6}
    c, clock = make(T0 - 60, config([prog]))
    assert not c.pump
    run(c, clock, 60)
    assert c.pump and c.valve == 2 and c.program_slot == 1
    run(c, clock, 3599, step=60)
    assert c.pump
    run(c, clock, 1)
    assert not c.pump and c.program_slot is None
    assert types(c) == ["program_start", "program_stop"]
    # Tuesday same time: nothing.
    clock.t = T0 + DAY
    c.tick(20.0)
    assert not c.pump


def test_slot_priority():
    progs = [
        every_day(2, 2, "09:00", "12:00"),
        every_day(1, 1, "10:00", "11:00"),
        every_day(3, 2, "10:00", "13:00", enabled=False),
    ]
    c, clock = make(utc(2026, 6, 1, 7, 30), config(progs))
    assert c.program_slot == 2 and c.valve == 2
    run(c, clock, 1800, step=60)  # 10:00 local
    assert c.program_slot == 1 and c.valve == 1 and c.pump
    run(c, clock, 3600, step=60)  # 11:00: slot 1 over, slot 2 still in its window
    assert c.program_slot == 2 and c.valve == 2 and c.pump
    run(c, clock, 3600, step=60)  # 12:00: all over; disabled slot 3 never runs
    assert c.program_slot is None and not c.pump


def test_manual_action_pauses_program_until_local_midnight():
    progs = [
        every_day(1, 1, "10:00", "12:00"),
        every_day(2, 1, "23:00", "23:30"),
    ]
    c, clock = make(T0 + 60, config(progs))
    assert c.pump
    c.pop_events()
    assert c.execute("pump", "OFF")[0]
    ev = c.pop_events()
    assert ev[0][1] == "override"
    # Local midnight in CEST is 22:00 UTC.
    assert ev[0][2]["until"] == utc(2026, 6, 1, 22, 0) == c.override_until
    run(c, clock, 3600, step=60)
    assert not c.pump
    # Still paused for the 23:00 local program of the same day (21:00 UTC)...
    clock.t = utc(2026, 6, 1, 21, 10)
    c.tick(20.0)
    assert not c.pump
    # ...and back at local midnight: the next morning's program runs.
    clock.t = utc(2026, 6, 1, 22, 0)
    c.tick(20.0)
    assert c.override_until == 0
    clock.t = utc(2026, 6, 2, 8, 1)
    c.tick(20.0)
    assert c.pump and c.program_slot == 1


def test_valve_change_also_pauses_and_override_clear_resumes():
    c, clock = make(T0 + 60, config([every_day(1, 1, "10:00", "12:00")]))
    assert c.execute("valve", 2)[0]
    assert c.override_until and c.program_slot is None
    assert c.pump  # the pause keeps what the user left running
    assert cmd(c, "override_clear")["ok"]
    assert c.override_until == 0 and c.program_slot == 1 and c.valve == 1


def test_manual_action_without_program_sets_no_override():
    c, clock = make(T0, config())
    c.execute("pump", "ON")
    assert c.override_until == 0


def test_timer_cancels_program_until_its_stop_time():
    c, clock = make(T0 + 60, config([every_day(1, 1, "10:00", "12:00")]))
    assert c.program_slot == 1
    c.pop_events()
    assert c.execute("timer", {"mode": 2, "duration": 600})[0]
    assert types(c) == ["program_stop", "timer_start"]
    assert c.valve == 2 and c.pump
    run(c, clock, 600, step=10)
    assert not c.pump and not c.timer_active
    # The program does not restart for the rest of its window...
    run(c, clock, 3000, step=60)
    assert not c.pump and c.program_slot is None
    # ...but runs again the next day.
    clock.t = T0 + DAY + 60
    c.tick(20.0)
    assert c.pump and c.program_slot == 1


def test_program_window_opening_during_timer_waits_for_the_timer():
    c, clock = make(T0 - 300, config([every_day(1, 2, "10:00", "12:00")]))
    c.execute("timer", {"mode": 1, "duration": 600})
    run(c, clock, 400, step=10)
    assert c.timer_active and c.valve == 1 and c.program_slot is None
    run(c, clock, 200, step=10)
    assert not c.timer_active
    assert c.program_slot == 1 and c.pump and c.valve == 2


def test_freeze_protection_with_hysteresis():
    c, clock = make(T0, config(freeze_on_c=2.0, freeze_hysteresis_c=1.0))
    c.pop_events()
    run(c, clock, 1, temp=1.9)
    assert c.pump and c.freeze
    assert c.execute("pump", "OFF")[:2] == (False, "busy")
    run(c, clock, 1, temp=2.5)
    assert c.pump
    run(c, clock, 1, temp=None)  # invalid reading: keep protecting
    assert c.pump and c.temp is None
    run(c, clock, 1, temp=3.0)
    assert not c.pump and not c.freeze
    ev = c.pop_events()
    assert [(e[1], e[2]["active"]) for e in ev] == [
        ("freeze_protect", True),
        ("freeze_protect", False),
    ]


def test_freeze_release_returns_to_requested_state():
    c, clock = make(T0, config())
    c.execute("pump", "ON")
    run(c, clock, 1, temp=0.5)
    run(c, clock, 1, temp=5.0)
    assert c.pump  # the user wanted it on before the frost


def test_max_runtime_per_local_day():
    c, clock = make(utc(2026, 6, 1, 20, 0), config(pump_max_run_s_day=600))
    c.pop_events()
    c.execute("timer", {"mode": 1, "duration": 3600})
    run(c, clock, 599)
    assert c.pump
    run(c, clock, 1)
    assert not c.pump and not c.timer_active
    ev = c.pop_events()
    assert [e[1] for e in ev] == ["timer_start", "max_runtime", "timer_end"]
    assert ev[2][2] == {"reason": "max_runtime"}
    assert c.execute("pump", "ON")[:2] == (False, "busy")
    assert c.execute("timer", {"mode": 1, "duration": 60})[:2] == (False, "busy")
    # Frost beats the limit.
    run(c, clock, 1, temp=1.0)
    assert c.pump
    run(c, clock, 1, temp=10.0)
    assert not c.pump
    # 22:00 UTC is local midnight in summer: the day counter starts again.
    clock.t = utc(2026, 6, 1, 22, 0)
    c.tick(20.0)
    assert c.run_s == 0 and not c.maxed
    assert c.execute("pump", "ON")[0] and c.pump


def test_runtime_counts_only_while_pump_on():
    c, clock = make(T0, config())
    run(c, clock, 100)
    assert c.run_s == 0
    c.execute("pump", "ON")
    run(c, clock, 100, step=10)
    assert c.run_s == 100


def test_dst_spring_forward_window_straddling_gap_starts_at_jump():
    # 2026-03-29 (Sunday): 02:00 CET jumps to 03:00 CEST at 01:00 UTC.
    sunday = [None] * 6
    progs = [
        {"slot": 1, "enabled": True, "days": sunday + [day(1, "02:30", "03:30")]},
        {"slot": 2, "enabled": True, "days": sunday + [day(2, "02:10", "02:50")]},
    ]
    c, clock = make(utc(2026, 3, 29, 0, 50), config(progs))
    assert not c.pump
    run(c, clock, 9 * 60, step=60)  # 00:59 UTC = 01:59 CET
    assert not c.pump
    run(c, clock, 60)  # 01:00 UTC = 03:00 CEST
    assert c.pump and c.program_slot == 1  # slot 2's window never existed
    run(c, clock, 29 * 60, step=60)  # 03:29 CEST
    assert c.pump
    run(c, clock, 60)
    assert not c.pump
    assert [e[2]["slot"] for e in c.pop_events() if e[1] == "program_start"] == [1]


def test_dst_fall_back_repeated_hour_runs_twice():
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET at 01:00 UTC.
    prog = {"slot": 1, "enabled": True, "days": [None] * 6 + [day(1, "02:30", "02:45")]}
    c, clock = make(utc(2026, 10, 25, 0, 0), config([prog]))
    starts = 0
    for _ in range(150):
        was = c.pump
        run(c, clock, 60)
        starts += 1 if c.pump and not was else 0
    assert starts == 2


def test_override_until_midnight_across_dst_change():
    tz = tzrules.parse(CET)
    # Saturday before spring forward: still CET, midnight is 23:00 UTC.
    assert tz.next_midnight(utc(2026, 3, 28, 12)) == utc(2026, 3, 28, 23)
    # The DST Sunday: midnight is 22:00 UTC (CEST).
    assert tz.next_midnight(utc(2026, 3, 29, 12)) == utc(2026, 3, 29, 22)
    # Fall-back Sunday: a 25 hour day ending at 23:00 UTC.
    assert tz.next_midnight(utc(2026, 10, 24, 22, 30)) == utc(2026, 10, 25, 23)


def test_midnight_edges():
    progs = [
        {
            "slot": 1,
            "enabled": True,
            # Sunday 23:00-23:59, Monday 00:00-00:30 (local, CEST).
            "days": [day(2, "00:00", "00:30")]
            + [None] * 5
            + [day(1, "23:00", "23:59")],
        }
    ]
    sunday_2330 = utc(2026, 5, 31, 21, 30)
    c, clock = make(sunday_2330, config(progs))
    assert c.pump and c.valve == 1
    run(c, clock, 29 * 60 - 1, step=60)  # 23:58:59
    assert c.pump
    run(c, clock, 1)  # 23:59:00: stop
    assert not c.pump
    run(c, clock, 59)  # 23:59:59
    assert not c.pump
    run(c, clock, 1)  # 00:00:00 Monday local: Monday's entry starts
    assert c.pump and c.valve == 2
    run(c, clock, 30 * 60, step=60)
    assert not c.pump


def test_reboot_mid_timer_resumes_countdown():
    path = tmpdir() + "/state.json"
    c, clock = make(T0, config(), controller.FileStore(path))
    assert c.execute("timer", {"mode": 2, "duration": 900})[0]
    run(c, clock, 100, step=10)
    # Power cut for 200 s: a new controller reads the same file.
    c2, clock2 = make(clock.t + 200, None, controller.FileStore(path))
    assert c2.timer_active and c2.timer_remaining == 600
    assert c2.pump and c2.valve == 2  # relays restored at the first tick
    assert c2.config["tz_posix"] == CET
    run(c2, clock2, 600, step=10)
    assert not c2.pump and not c2.timer_active


def test_reboot_after_timer_expired_ends_it():
    path = tmpdir() + "/state.json"
    c, clock = make(T0, config(), controller.FileStore(path))
    c.execute("timer", {"mode": 1, "duration": 60})
    c2, _ = make(T0 + 3600, None, controller.FileStore(path))
    assert not c2.timer_active and not c2.pump
    assert ("timer_end", {"reason": "reboot"}) in [
        (e[1], e[2]) for e in c2.pop_events()
    ]


def test_reboot_without_clock_counts_down_saved_remaining():
    path = tmpdir() + "/state.json"
    c, clock = make(T0, config(), controller.FileStore(path))
    c.execute("timer", {"mode": 1, "duration": 300})
    run(c, clock, 100, step=10)
    c.save()
    # RTC lost: the board thinks it is the year 2000.
    c2, clock2 = make(946684800, None, controller.FileStore(path))
    assert c2.timer_active and c2.timer_remaining == 200 and c2.pump
    run(c2, clock2, 200, step=10)
    assert not c2.timer_active


def test_persistence_keeps_programs_switch_counts_and_survives_damage():
    path = tmpdir() + "/state.json"
    store = controller.FileStore(path)
    c, clock = make(T0 + 60, config([every_day(1, 2, "10:00", "12:00")]), store)
    assert c.pump
    c.execute("valve", 1)
    saved = json.loads(open(path).read())
    assert saved["switches"] == {"pump": 1, "valve": 2}
    c2, _ = make(clock.t, None, controller.FileStore(path))
    # Power-up released the pump relay; energising it again is a real switch.
    assert c2.switches == {"pump": 2, "valve": 2} and c2.pump and c2.valve == 1
    assert c2.override_until == c.override_until and c2.config == c.config
    # A torn write leaves only the .tmp file: it is used.
    with open(path + ".tmp", "w") as f:
        f.write(open(path).read())
    with open(path, "w") as f:
        f.write('{"config": ')
    c3, _ = make(clock.t, None, controller.FileStore(path))
    assert c3.config["version"] == 1
    # Garbage that parses as JSON but is not a state: defaults plus an error event.
    with open(path, "w") as f:
        f.write('{"config": {"version": "x"}}')
    c4 = controller.Controller(Clock(clock.t), controller.FileStore(path))
    assert c4.config["version"] == 0
    assert [e[1] for e in c4.pop_events()] == ["error"]


def test_command_ack_duplicate_and_state():
    c, clock = make(T0, config())
    ack = cmd(c, "pump", "TOGGLE", cid="a1")
    assert ack["ok"] and ack["state"]["pump"] is True and ack["id"] == "a1"
    # Redelivery: same answer, not toggled back.
    again = cmd(c, "pump", "TOGGLE", cid="a1")
    assert again == ack and c.pump and c.switches["pump"] == 1
    assert protocol.parse_ack(protocol.dumps(again))["ok"]


def test_command_expired_rate_limited_invalid_unsupported():
    c, clock = make(T0, config())
    ack = cmd(c, "pump", "ON", cid="old", exp=T0 - 1)
    assert ack == {"id": "old", "ok": False, "error": "expired"} and not c.pump
    for i in range(10):
        assert cmd(c, "valve", "TOGGLE", cid="r" + str(i))["ok"]
    assert cmd(c, "valve", "TOGGLE", cid="r10")["error"] == "rate_limited"
    clock.t += 10
    assert cmd(c, "valve", "TOGGLE", cid="r11")["ok"]
    bad = c.handle_command(b'{"id":"x1","exp":1,"op":"valve","value":7}')
    assert bad["error"] == "invalid" and bad["id"] == "x1"
    unk = c.handle_command(b'{"id":"x2","exp":1,"op":"fly","value":null}')
    assert unk["error"] == "unsupported"
    assert c.handle_command(b"not json") is None
    assert c.handle_command(b'{"op":"reboot"}') is None


def test_reboot_runs_once_even_when_redelivered_after_restart():
    path = tmpdir() + "/state.json"
    c, clock = make(T0, config(), controller.FileStore(path))
    assert cmd(c, "reboot", cid="boot-1")["ok"]
    assert c.pop_action() == "reboot" and c.pop_action() is None
    # The broker redelivers the unacknowledged QoS 1 message to the rebooted board.
    c2, _ = make(T0 + 5, None, controller.FileStore(path))
    assert cmd(c2, "reboot", cid="boot-1")["ok"]
    assert c2.pop_action() is None
    assert c2.handle_v31_set("wifi/clear", b"1") == ("wifi_clear", True)
    assert c2.pop_action() == "wifi_clear"


def test_duplicate_ring_is_bounded():
    c, clock = make(T0, config())
    for i in range(20):
        clock.t += 2
        cmd(c, "valve", "TOGGLE", cid="d" + str(i))
    assert len(c.recent) == controller.RECENT_IDS
    switches = c.switches["valve"]
    # d0 fell out of the ring, so it executes again; d19 is still remembered.
    cmd(c, "valve", "TOGGLE", cid="d19")
    assert c.switches["valve"] == switches
    cmd(c, "valve", "TOGGLE", cid="d0")
    assert c.switches["valve"] == switches + 1


def test_unsynchronised_clock_executes_commands_and_runs_no_programs():
    c, clock = make(946684800 + 50, config([every_day(1, 1, "00:00", "23:00")]))
    assert not c.pump and c.program_slot is None
    assert cmd(c, "pump", "ON", exp=1)["ok"]
    tel = c.telemetry()
    assert tel["ts"] == 0


def test_config_apply_and_reject():
    c, clock = make(T0, config())
    cfg = config([every_day(1, 1, "10:00", "12:00")], tz="EST5EDT,M3.2.0,M11.1.0")
    cfg["version"] = 5
    assert c.handle_config(json.dumps(cfg)) == {"version": 5, "ok": True}
    assert c.tz.spec == "EST5EDT,M3.2.0,M11.1.0"
    bad = config(version=6)
    bad["programs"] = [every_day(1, 1, "12:00", "10:00")]
    applied = c.handle_config(json.dumps(bad))
    assert applied["version"] == 6 and not applied["ok"] and "stop" in applied["error"]
    assert c.config["version"] == 5
    assert protocol.parse_config_applied(protocol.encode_config_applied(**applied))
    assert c.handle_config(b"{")["ok"] is False


def test_v31_set_topics_drive_the_same_rules():
    c, clock = make(T0, config())
    assert c.handle_v31_set("pump/set", b"1") == ("pump", True)
    assert c.pump
    assert c.handle_v31_set("valve/set", b"TOGGLE") == ("valve", True)
    assert c.valve == 2
    assert c.handle_v31_set("timer/set", b'{"mode":1,"duration":30}') == ("timer", True)
    assert c.timer_active and c.valve == 1
    assert c.handle_v31_set("pump/set", b"maybe") == (None, False)
    assert c.handle_v31_set("wifi/clear", b"") == ("wifi_clear", True)


def test_telemetry_is_valid_protocol_and_sequenced():
    c, clock = make(T0, config(), temp=24.56)
    t1 = protocol.parse_telemetry(protocol.encode_telemetry(c.telemetry(-60, 5, 1000)))
    t2 = protocol.parse_telemetry(protocol.encode_telemetry(c.telemetry(-60, 6, 1000)))
    assert (t1["seq"], t2["seq"]) == (0, 1)
    assert t1["temp"] == 24.6 and t1["ts"] == T0
    c.tick(None)
    assert c.telemetry()["temp"] is None


def test_telemetry_names_the_hardware_model_when_the_board_has_one():
    c = controller.Controller(Clock(T0), None, None, "ps1-0.1.0", "esp32s3")
    t = protocol.parse_telemetry(protocol.encode_telemetry(c.telemetry(-60, 5, 1000)))
    assert (t["fw"], t["hw"]) == ("ps1-0.1.0", "esp32s3")
    # Without one (the simulator's old-firmware mode) the key is not sent at all.
    c, _ = make(T0, config())
    assert "hw" not in c.telemetry()
    assert (
        protocol.parse_telemetry(protocol.encode_telemetry(c.telemetry()))["hw"] is None
    )
    # A damaged state file restarts the controller from defaults: the model stays.
    path = tmpdir() + "/state.json"
    with open(path, "w") as f:
        f.write('{"config": {"version": "x"}}')
    c = controller.Controller(Clock(T0), controller.FileStore(path), None, "f", "m1")
    assert [e[1] for e in c.pop_events()] == ["error"]
    assert c.telemetry()["hw"] == "m1"


def test_clock_step_keeps_timer_remaining():
    c, clock = make(946684800, config())
    c.execute("timer", {"mode": 1, "duration": 300})
    run(c, clock, 100, step=10)
    clock.t = T0  # NTP answered: jump of 26 years
    c.tick(20.0)
    assert c.timer_active and c.timer_remaining == 200
    assert c.run_s == 0


# --- added by the firmware review: one test per gap found -----------------------------


def test_v31_set_payloads_are_case_insensitive_and_numeric():
    c, clock = make(T0, config())
    for payload, pump in (
        (b"on", True),
        (b"Off", False),
        (b" 1\n", True),
        (b"0", False),
    ):
        assert c.handle_v31_set("pump/set", payload) == ("pump", True)
        assert c.pump is pump
    assert c.handle_v31_set("pump/set", b"toggle") == ("pump", True) and c.pump
    assert c.handle_v31_set("pump/set", b"Toggle") == ("pump", True) and not c.pump
    assert c.handle_v31_set("valve/set", b"2") == ("valve", True) and c.valve == 2
    assert c.handle_v31_set("valve/set", b"toggle") == ("valve", True) and c.valve == 1
    # duration 0 stops the timer and the pump (v3.1).
    c.handle_v31_set("timer/set", b'{"mode":2,"duration":600}')
    assert c.timer_active and c.pump and c.valve == 2
    assert c.handle_v31_set("timer/set", b'{"mode":2,"duration":0}') == ("timer", True)
    assert not c.timer_active and not c.pump


def test_wifi_clear_accepts_any_payload():
    # v3.1: "wifi/clear | anything" - even bytes that are not text.
    c, clock = make(T0, config())
    assert c.handle_v31_set("wifi/clear", b"\xff\xfe") == ("wifi_clear", True)
    assert c.pop_action() == "wifi_clear"
    assert c.handle_v31_set("wifi/clear", b"x" * 5000) == ("wifi_clear", True)


def test_damaged_state_file_is_replaced_by_new_saves():
    path = tmpdir() + "/state.json"
    with open(path, "w") as f:
        f.write('{"config": {"version": "x"}}')
    c = controller.Controller(Clock(T0), controller.FileStore(path))
    assert [e[1] for e in c.pop_events()] == ["error"]
    # The damaged file must not disable persistence for good: the next change is saved.
    assert c.execute("timer", {"mode": 2, "duration": 900})[0]
    c2, _ = make(T0 + 100, None, controller.FileStore(path))
    assert c2.timer_active and c2.timer_remaining == 800 and c2.pump


def test_state_file_with_wrong_types_starts_from_defaults():
    path = tmpdir() + "/state.json"
    c, clock = make(T0, config(), controller.FileStore(path))
    c.execute("pump", "ON")
    good = json.loads(open(path).read())
    for key, bad in (
        ("switches", [1, 2]),
        ("last_switch", None),
        ("timer", [True, 1, "x", 0, 0]),
        ("run", [None, "x", False]),
        ("recent", 5),
        ("override_until", "soon"),
        ("program_slot", 9),
    ):
        state = dict(good)
        state[key] = bad
        with open(path, "w") as f:
            f.write(json.dumps(state))
        c2 = controller.Controller(Clock(T0 + 10), controller.FileStore(path))
        assert [e[1] for e in c2.pop_events()] == ["error"], key
        # ...and it runs: a tick and a command do not crash.
        c2.tick(20.0)
        assert c2.execute("pump", "ON")[0], key


def test_program_running_at_power_cut_stops_when_clock_is_lost():
    # A program was running; the board reboots without a valid RTC and without NTP
    # (no internet). It cannot know whether the window is over: the pump must not run
    # on for ever (the daily maximum cannot count without a clock either).
    path = tmpdir() + "/state.json"
    c, clock = make(
        T0 + 60, config([every_day(1, 1, "10:00", "12:00")]), controller.FileStore(path)
    )
    assert c.pump and c.program_slot == 1
    c2, clock2 = make(946684800, None, controller.FileStore(path))
    assert not c2.pump and c2.program_slot is None
    assert "program_stop" in types(c2)
    # Once NTP answers inside the window, the program runs again.
    clock2.t = T0 + 120
    c2.tick(20.0)
    assert c2.pump and c2.program_slot == 1


def test_freeze_release_at_exact_threshold_despite_float_sum():
    # 0.2 + 0.1 is 0.30000000000000004 in binary floating point; a 0.3 reading is
    # the release point all the same.
    c, clock = make(T0, config(freeze_on_c=0.2, freeze_hysteresis_c=0.1))
    run(c, clock, 1, temp=0.1)
    assert c.freeze and c.pump
    run(c, clock, 1, temp=0.3)
    assert not c.freeze and not c.pump


def test_clock_step_is_persisted_at_once():
    path = tmpdir() + "/state.json"
    c, clock = make(946684800, config(), controller.FileStore(path))
    c.execute("timer", {"mode": 1, "duration": 300})
    run(c, clock, 15, step=5)
    clock.t = T0  # NTP answered
    c.tick(20.0)
    # Power cut right after: the saved end time is on the new clock, not the year 2000.
    c2, _ = make(T0 + 5, None, controller.FileStore(path))
    assert c2.timer_active and c2.timer_remaining == 280


def test_ack_reason_is_capped_for_the_bridge():
    c, clock = make(T0, config())
    ack = c.handle_command(protocol.dumps({"id": "z1", "exp": T0 + 9, "op": "y" * 500}))
    assert ack["error"] == "unsupported" and len(ack["reason"]) <= 200
    assert protocol.parse_ack(protocol.dumps(ack))["error"] == "unsupported"
