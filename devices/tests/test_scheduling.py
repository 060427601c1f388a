"""The pure scheduling rules: validation, priority, pauses, DST days, local midnight."""

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from devices.scheduling import (
    PAUSED_BY_OVERRIDE,
    PAUSED_BY_TIMER,
    FieldError,
    Overlap,
    _posix_offset,
    active_window,
    desired_state,
    next_local_midnight,
    normalize_programs,
    parse_hhmm,
    program_overlaps,
    timer_running,
    tz_posix,
    validate_programs,
)

UTC = dt.UTC
MON, TUE, SUN = 0, 1, 6


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def program(slot, windows=None, *, every_day=None, enabled=True):
    """A program with {weekday: (start, stop, mode)} windows, or one for every day."""
    days = [None] * 7
    if every_day is not None:
        start, stop, mode = every_day
        days = [{"mode": mode, "start": start, "stop": stop} for _ in range(7)]
    for weekday, (start, stop, mode) in (windows or {}).items():
        days[weekday] = {"mode": mode, "start": start, "stop": stop}
    return {"slot": slot, "enabled": enabled, "days": days}


def active_intervals(programs, tz, start_utc, end_utc):
    """[(slot, first active minute, first inactive minute)] between two UTC instants,
    evaluated every minute, as the scheduler would see them."""
    out = []
    current = None
    t = start_utc
    while t < end_utc:
        window = active_window(programs, tz, t)
        slot = window.slot if window else None
        if slot != (current[0] if current else None):
            if current:
                out.append((current[0], current[1], t))
            current = (slot, t) if slot else None
        t += dt.timedelta(minutes=1)
    if current:
        out.append((current[0], current[1], end_utc))
    return out


# --- validation -----------------------------------------------------------------------


def test_valid_programs_have_no_errors():
    programs = [
        program(1, {MON: ("10:00", "12:30", 1), SUN: ("00:00", "23:59", 2)}),
        program(3, every_day=("08:00", "09:00", 2), enabled=False),
        {"slot": 2, "enabled": True, "days": [None] * 7},
    ]
    assert validate_programs(programs) == []
    assert validate_programs([]) == []


def _fields(errors):
    return [e.field for e in errors]


@pytest.mark.parametrize(
    ("programs", "field", "words"),
    [
        ("nope", "programs", "list"),
        ({"slot": 1}, "programs", "list"),
        ([program(1), program(2), program(3), program(1)], "programs", "At most 3"),
        (["x"], "programs[0]", "object"),
        ([program(0)], "programs[0].slot", "1, 2 or 3"),
        ([program(4)], "programs[0].slot", "1, 2 or 3"),
        ([{**program(1), "slot": True}], "programs[0].slot", "1, 2 or 3"),
        ([{**program(1), "slot": "1"}], "programs[0].slot", "1, 2 or 3"),
        ([program(2), program(2)], "programs[1].slot", "more than once"),
        ([{**program(1), "enabled": "yes"}], "programs[0].enabled", "true or false"),
        ([{**program(1), "days": [None] * 6}], "programs[0].days", "7 days"),
        ([{**program(1), "days": "MTWTFSS"}], "programs[0].days", "7 days"),
        ([{"slot": 1, "enabled": True}], "programs[0].days", "7 days"),
        (
            [{**program(1), "days": [["10:00", "11:00"]] + [None] * 6}],
            "programs[0].days[0]",
            "null",
        ),
        (
            [program(1, {TUE: ("10:00", "11:00", 3)})],
            "programs[0].days[1].mode",
            "1 or 2",
        ),
        (
            [program(1, {TUE: ("10:00", "11:00", True)})],
            "programs[0].days[1].mode",
            "1 or 2",
        ),
        (
            [program(1, {MON: ("7:00", "11:00", 1)})],
            "programs[0].days[0].start",
            "HH:MM",
        ),
        (
            [program(1, {MON: ("24:00", "23:00", 1)})],
            "programs[0].days[0].start",
            "HH:MM",
        ),
        (
            [program(1, {MON: ("10:00", "12:60", 1)})],
            "programs[0].days[0].stop",
            "HH:MM",
        ),
        ([program(1, {MON: ("10:00", 1100, 1)})], "programs[0].days[0].stop", "HH:MM"),
        (
            [program(1, {MON: ("10:00", "11:00:00", 1)})],
            "programs[0].days[0].stop",
            "HH:MM",
        ),
        (
            [program(1, {MON: ("10:00", "10:00", 1)})],
            "programs[0].days[0].stop",
            "after",
        ),
        (
            [program(1, {SUN: ("22:00", "02:00", 1)})],
            "programs[0].days[6].stop",
            "after",
        ),
    ],
)
def test_invalid_programs_name_the_field(programs, field, words):
    errors = validate_programs(programs)
    assert field in _fields(errors), errors
    message = next(e.message for e in errors if e.field == field)
    assert words in message


def test_every_problem_is_reported_at_once():
    programs = [
        program(1, {MON: ("11:00", "10:00", 3)}),
        {**program(1), "enabled": None},
    ]
    assert _fields(validate_programs(programs)) == [
        "programs[0].days[0].mode",
        "programs[0].days[0].stop",
        "programs[1].slot",
        "programs[1].enabled",
    ]
    assert all(isinstance(e, FieldError) for e in validate_programs(programs))


def test_parse_hhmm():
    assert parse_hhmm("00:00") == 0
    assert parse_hhmm("23:59") == 23 * 60 + 59
    assert parse_hhmm("09:05") == 545
    for bad in ("9:05", "24:00", "12:5", "ab:cd", "", None, 905, "12:00 ", "12:00\n"):
        assert parse_hhmm(bad) is None


def test_normalize_sorts_by_slot_and_drops_unknown_keys():
    raw = [
        {**program(2, {MON: ("10:00", "11:00", 2)}), "name": "evening"},
        program(1),
    ]
    raw[0]["days"][0]["colour"] = "red"
    assert normalize_programs(raw) == [
        program(1),
        program(2, {MON: ("10:00", "11:00", 2)}),
    ]


def test_overlaps_between_slots_are_listed_with_the_winner():
    programs = [
        program(3, {MON: ("09:00", "12:00", 1)}),
        program(1, {MON: ("10:00", "11:00", 2), TUE: ("10:00", "11:00", 2)}),
        program(2, {TUE: ("11:00", "12:00", 1)}),  # only touches slot 1 on Tuesday
    ]
    overlaps = program_overlaps(programs)
    assert overlaps == [Overlap(MON, 1, 3, "10:00", "11:00")]
    assert str(overlaps[0]) == "Monday 10:00–11:00: program 1 runs, program 3 waits."
    # A disabled program conflicts with nothing.
    programs[1]["enabled"] = False
    assert program_overlaps(programs) == []


# --- what runs ------------------------------------------------------------------------

MADRID = "Europe/Madrid"


def test_slot_one_beats_two_beats_three():
    programs = [
        program(3, every_day=("08:00", "20:00", 1)),
        program(2, every_day=("09:00", "12:00", 2)),
        program(1, every_day=("10:00", "11:00", 1)),
    ]
    # Monday 2026-06-01, Madrid is UTC+2.
    intervals = active_intervals(
        programs, MADRID, utc(2026, 6, 1, 5), utc(2026, 6, 1, 19)
    )
    assert intervals == [
        (3, utc(2026, 6, 1, 6), utc(2026, 6, 1, 7)),
        (2, utc(2026, 6, 1, 7), utc(2026, 6, 1, 8)),
        (1, utc(2026, 6, 1, 8), utc(2026, 6, 1, 9)),
        (2, utc(2026, 6, 1, 9), utc(2026, 6, 1, 10)),
        (3, utc(2026, 6, 1, 10), utc(2026, 6, 1, 18)),
    ]


def test_disabled_program_never_runs_and_lower_slot_takes_over():
    programs = [
        program(1, every_day=("10:00", "11:00", 2), enabled=False),
        program(2, every_day=("10:00", "11:00", 1)),
    ]
    state = desired_state(programs, MADRID, utc(2026, 6, 1, 8, 30))
    assert (state.pump, state.valve, state.slot) == (True, 1, 2)


def test_start_is_inclusive_and_stop_exclusive():
    programs = [program(1, {MON: ("10:00", "12:30", 2)})]
    assert active_window(programs, MADRID, utc(2026, 6, 1, 7, 59, 59)) is None
    window = active_window(programs, MADRID, utc(2026, 6, 1, 8, 0))
    assert window is not None
    assert (window.slot, window.mode, window.day) == (1, 2, dt.date(2026, 6, 1))
    assert window.key == "1/2026-06-01/10:00-12:30"
    assert active_window(programs, MADRID, utc(2026, 6, 1, 10, 29, 59)) is not None
    assert active_window(programs, MADRID, utc(2026, 6, 1, 10, 30)) is None


def test_weekday_is_the_local_one_across_the_utc_day_boundary():
    # Sunday 2026-05-31 23:30 UTC is Monday 01:30 in Madrid and still Sunday 19:30 in
    # New York.
    programs = [program(1, {MON: ("01:00", "02:00", 1), SUN: ("19:00", "20:00", 2)})]
    now = utc(2026, 5, 31, 23, 30)
    assert active_window(programs, MADRID, now).day == dt.date(2026, 6, 1)
    assert active_window(programs, MADRID, now).mode == 1
    assert active_window(programs, "America/New_York", now).day == dt.date(2026, 5, 31)
    assert active_window(programs, "America/New_York", now).mode == 2
    # Sydney is already Monday 09:30: nothing.
    assert active_window(programs, "Australia/Sydney", now) is None


def test_window_ending_at_2359_and_starting_at_midnight():
    programs = [program(1, {SUN: ("23:00", "23:59", 1), MON: ("00:00", "00:30", 2)})]
    # Madrid in June is UTC+2: Sunday 23:58 local = 21:58 UTC.
    assert active_window(programs, MADRID, utc(2026, 5, 31, 21, 58)).mode == 1
    assert active_window(programs, MADRID, utc(2026, 5, 31, 21, 59)) is None
    assert active_window(programs, MADRID, utc(2026, 5, 31, 22, 0)).mode == 2


def test_idle_means_pump_off_and_valve_untouched():
    state = desired_state(
        [program(1, {MON: ("10:00", "11:00", 2)})], MADRID, utc(2026, 6, 2, 8)
    )
    assert (state.pump, state.valve, state.slot, state.window) == (
        False,
        None,
        None,
        None,
    )
    assert not state.paused
    assert desired_state([], MADRID, utc(2026, 6, 2, 8)).pump is False


def test_override_pauses_until_it_expires():
    programs = [program(1, every_day=("10:00", "12:00", 2))]
    now = utc(2026, 6, 1, 8, 30)
    until = next_local_midnight(now, MADRID)
    paused = desired_state(programs, MADRID, now, override_until=until)
    assert paused.paused_by == PAUSED_BY_OVERRIDE
    assert (paused.pump, paused.valve) == (None, None)
    assert paused.slot == 1  # shown as the program that would run
    # The same program the next day runs again: the pause ended at local midnight.
    tomorrow = desired_state(
        programs, MADRID, now + dt.timedelta(days=1), override_until=until
    )
    assert (tomorrow.pump, tomorrow.valve, tomorrow.paused_by) == (True, 2, None)
    # The pause also keeps an idle pool from being switched off.
    idle = desired_state(programs, MADRID, utc(2026, 6, 1, 15), override_until=until)
    assert idle.pump is None and idle.paused_by == PAUSED_BY_OVERRIDE


def test_override_ends_exactly_at_its_instant():
    programs = [program(1, every_day=("00:00", "01:00", 1))]
    until = utc(2026, 6, 1, 22)  # Madrid midnight
    assert desired_state(programs, MADRID, until, override_until=until).pump is True
    before = until - dt.timedelta(microseconds=1)
    assert desired_state(programs, MADRID, before, override_until=until).paused


def test_running_timer_suspends_programs():
    programs = [program(1, every_day=("10:00", "12:00", 2))]
    state = desired_state(programs, MADRID, utc(2026, 6, 1, 9), timer_active=True)
    assert state.paused_by == PAUSED_BY_TIMER
    assert (state.pump, state.valve, state.slot) == (None, None, 1)


def test_naive_instants_and_unknown_zones_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        desired_state([], MADRID, dt.datetime(2026, 6, 1, 9))
    with pytest.raises(ValueError, match="timezone-aware"):
        desired_state(
            [], MADRID, utc(2026, 6, 1), override_until=dt.datetime(2026, 6, 2)
        )
    with pytest.raises(ValueError, match="Unknown time zone"):
        desired_state([], "Mars/Olympus_Mons", utc(2026, 6, 1))
    with pytest.raises(ValueError, match="Unknown time zone"):
        next_local_midnight(utc(2026, 6, 1), "../etc/passwd")


# --- DST days -------------------------------------------------------------------------
# 2026 changes: Madrid 29 Mar 02:00->03:00 and 25 Oct 03:00->02:00 (both Sundays);
# New York 8 Mar 02:00->03:00 and 1 Nov 02:00->01:00; Sydney 5 Apr 03:00->02:00 and
# 4 Oct 02:00->03:00.


@pytest.mark.parametrize(
    ("tz", "day_start_utc", "gap_start_utc"),
    [
        (MADRID, utc(2026, 3, 28, 23), utc(2026, 3, 29, 1)),
        ("America/New_York", utc(2026, 3, 8, 5), utc(2026, 3, 8, 7)),
        ("Australia/Sydney", utc(2026, 10, 3, 14), utc(2026, 10, 3, 16)),
    ],
)
def test_spring_forward_skips_windows_inside_the_gap(tz, day_start_utc, gap_start_utc):
    programs = [program(1, {SUN: ("02:30", "02:45", 1)})]
    day_end = day_start_utc + dt.timedelta(hours=23)
    assert active_intervals(programs, tz, day_start_utc, day_end) == []
    # The same window a week later (no DST change) runs for its 15 minutes.
    week = dt.timedelta(days=7)
    later = active_intervals(programs, tz, day_start_utc + week, day_end + week)
    assert len(later) == 1
    assert later[0][2] - later[0][1] == dt.timedelta(minutes=15)
    # A window straddling the gap starts at the jump (local 03:00).
    straddle = [program(1, {SUN: ("02:30", "04:00", 2)})]
    intervals = active_intervals(straddle, tz, day_start_utc, day_end)
    assert intervals == [(1, gap_start_utc, gap_start_utc + dt.timedelta(hours=1))]
    assert desired_state(straddle, tz, gap_start_utc).valve == 2
    assert (
        desired_state(straddle, tz, gap_start_utc - dt.timedelta(minutes=1)).pump
        is False
    )


@pytest.mark.parametrize(
    ("tz", "day_start_utc", "repeat_start_utc", "hour"),
    [
        # The repeated local hour: Madrid 02:00-03:00, New York 01:00-02:00,
        # Sydney 02:00-03:00; repeat_start_utc is the first pass.
        (MADRID, utc(2026, 10, 24, 22), utc(2026, 10, 25, 0), "02"),
        ("America/New_York", utc(2026, 11, 1, 4), utc(2026, 11, 1, 5), "01"),
        ("Australia/Sydney", utc(2026, 4, 4, 13), utc(2026, 4, 4, 15), "02"),
    ],
)
def test_fall_back_runs_a_window_of_the_repeated_hour_in_both_passes(
    tz, day_start_utc, repeat_start_utc, hour
):
    programs = [program(1, {SUN: (f"{hour}:15", f"{hour}:45", 2)})]
    day_end = day_start_utc + dt.timedelta(hours=25)
    first = repeat_start_utc + dt.timedelta(minutes=15)
    second = first + dt.timedelta(hours=1)
    thirty = dt.timedelta(minutes=30)
    assert active_intervals(programs, tz, day_start_utc, day_end) == [
        (1, first, first + thirty),
        (1, second, second + thirty),
    ]
    # Both passes are the same window (same key), which the scheduler relies on.
    assert (
        active_window(programs, tz, first).key
        == active_window(programs, tz, second).key
    )


def test_a_window_spanning_the_change_lasts_longer_or_shorter_in_real_time():
    programs = [program(1, {SUN: ("01:00", "04:00", 1)})]
    spring = active_intervals(
        programs, MADRID, utc(2026, 3, 28, 23), utc(2026, 3, 29, 23)
    )
    autumn = active_intervals(
        programs, MADRID, utc(2026, 10, 24, 22), utc(2026, 10, 25, 23)
    )
    assert [(b - a) for _, a, b in spring] == [dt.timedelta(hours=2)]
    assert [(b - a) for _, a, b in autumn] == [dt.timedelta(hours=4)]


# --- local midnight -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "tz", "expected"),
    [
        # An ordinary summer day in Madrid (UTC+2).
        (utc(2026, 6, 1, 10), MADRID, utc(2026, 6, 1, 22)),
        # One microsecond before local midnight, and exactly at it.
        (utc(2026, 6, 1, 21, 59, 59, 999999), MADRID, utc(2026, 6, 1, 22)),
        (utc(2026, 6, 1, 22), MADRID, utc(2026, 6, 2, 22)),
        # 15:00 UTC is already 01:00 tomorrow in Sydney (UTC+10 in June).
        (utc(2026, 6, 1, 15), "Australia/Sydney", utc(2026, 6, 2, 14)),
        # Before and after the change, the offset of the *next* midnight counts.
        (utc(2026, 3, 28, 12), MADRID, utc(2026, 3, 28, 23)),
        (utc(2026, 3, 29, 10), MADRID, utc(2026, 3, 29, 22)),
        # Both passes of 02:30 on the fall-back day.
        (utc(2026, 10, 25, 0, 30), MADRID, utc(2026, 10, 25, 23)),
        (utc(2026, 10, 25, 1, 30), MADRID, utc(2026, 10, 25, 23)),
        (utc(2026, 11, 1, 5, 30), "America/New_York", utc(2026, 11, 2, 5)),
        (utc(2026, 3, 8, 6, 59), "America/New_York", utc(2026, 3, 9, 4)),
        (utc(2026, 4, 4, 15, 30), "Australia/Sydney", utc(2026, 4, 5, 14)),
        # Santiago jumps from 00:00 to 01:00: the new day starts at the jump.
        (utc(2026, 9, 5, 20), "America/Santiago", utc(2026, 9, 6, 4)),
        # Havana repeats 00:00-01:00: the first pass of midnight starts the day, and
        # inside the second pass the next midnight is the day after.
        (utc(2026, 10, 31, 20), "America/Havana", utc(2026, 11, 1, 4)),
        (utc(2026, 11, 1, 5, 30), "America/Havana", utc(2026, 11, 2, 5)),
    ],
)
def test_next_local_midnight(now, tz, expected):
    assert next_local_midnight(now, tz) == expected


@pytest.mark.parametrize(
    "tz", [MADRID, "America/New_York", "Australia/Sydney", "America/Santiago", "UTC"]
)
def test_next_local_midnight_is_the_first_instant_of_the_next_local_day(tz):
    zone = ZoneInfo(tz)
    t = utc(2026, 1, 1, 0, 7)
    second = dt.timedelta(seconds=1)
    while t.year == 2026:
        midnight = next_local_midnight(t, tz)
        here = t.astimezone(zone).date()
        assert midnight > t
        assert midnight.tzinfo is UTC
        assert midnight.astimezone(zone).date() == here + dt.timedelta(days=1)
        assert (midnight - second).astimezone(zone).date() == here
        t += dt.timedelta(hours=5, minutes=3)


# --- timers from Device.state ---------------------------------------------------------


def test_timer_running_from_device_state():
    now = utc(2026, 6, 1, 10)
    at = (now - dt.timedelta(seconds=100)).isoformat()
    assert timer_running({"active": True, "remaining": 300, "at": at}, now)
    assert not timer_running({"active": True, "remaining": 60, "at": at}, now)
    assert not timer_running({"active": False, "remaining": 300, "at": at}, now)
    # Without a measurement time, trust the device's word.
    assert timer_running({"active": True, "remaining": 60}, now)
    assert not timer_running(None, now)
    assert not timer_running({}, now)
    assert not timer_running({"active": "yes"}, now)


# --- POSIX TZ rules for the firmware --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        (MADRID, "CET-1CEST,M3.5.0,M10.5.0/3"),
        ("America/New_York", "EST5EDT,M3.2.0,M11.1.0"),
        ("Australia/Sydney", "AEST-10AEDT,M10.1.0,M4.1.0/3"),
        ("Asia/Kolkata", "IST-5:30"),
        ("America/Sao_Paulo", "<-03>3"),
        ("UTC", "UTC0"),
    ],
)
def test_tz_posix_is_the_footer_of_the_zone_file(name, rule):
    assert tz_posix(name) == rule


def test_every_zone_gives_a_rule_the_firmware_accepts():
    from zoneinfo import available_timezones

    from firmware import tzrules

    for name in available_timezones():
        rule = tz_posix(name)
        assert 0 < len(rule) <= 64, name
        tzrules.parse(rule)


def test_tz_posix_refuses_unknown_names():
    for name in ("Mars/Base", "../../etc/passwd", "/etc/localtime"):
        with pytest.raises(ValueError):
            tz_posix(name)


def test_a_zone_file_without_a_rule_falls_back_to_its_fixed_offset(tmp_path):
    import zoneinfo

    data = (Path(zoneinfo.TZPATH[0]) / "Asia" / "Kolkata").read_bytes()
    if data[4:5] == b"\0":
        pytest.skip("system zone files are version 1")
    body = data[: data.rindex(b"\n", 0, len(data) - 1)]
    (tmp_path / "Test").mkdir()
    (tmp_path / "Test" / "NoRule").write_bytes(body + b"\n\n")
    zoneinfo.reset_tzpath(to=[str(tmp_path)])
    try:
        assert tz_posix("Test/NoRule", now_utc=utc(2026, 6, 1)) == "<+0530>-5:30"
    finally:
        zoneinfo.reset_tzpath()


def test_posix_offsets_are_west_positive():
    assert _posix_offset(3600) == "-1"
    assert _posix_offset(-5 * 3600) == "5"
    assert _posix_offset(5 * 3600 + 45 * 60) == "-5:45"
    assert _posix_offset(-(9 * 3600 + 30 * 60 + 15)) == "9:30:15"
    assert _posix_offset(0) == "0"
