"""firmware.tzrules: POSIX TZ parsing, DST transitions and calendar maths.

Runs on CPython (pytest) and on MicroPython (firmware/tools/check.sh).
"""

try:
    from firmware import tzrules
    from firmware.tests.helpers import raises
except ImportError:  # MicroPython: flat filesystem
    import tzrules
    from helpers import raises

H = 3600


def utc(y, m, d, hh=0, mm=0, ss=0):
    return tzrules.days_from_civil(y, m, d) * 86400 + hh * H + mm * 60 + ss


def test_calendar():
    assert tzrules.days_from_civil(1970, 1, 1) == 0
    assert tzrules.civil_from_days(0) == (1970, 1, 1)
    assert tzrules.days_from_civil(2000, 3, 1) == 11017
    assert tzrules.civil_from_days(tzrules.days_from_civil(2024, 2, 29)) == (
        2024,
        2,
        29,
    )
    assert tzrules.weekday(tzrules.days_from_civil(2026, 6, 1)) == 0  # Monday
    assert tzrules.split(utc(2026, 3, 29, 1, 2, 3)) == (2026, 3, 29, 1, 2, 3, 6)
    for z in range(-1000, 30000, 7):
        assert tzrules.days_from_civil(*tzrules.civil_from_days(z)) == z


def test_central_europe_transitions():
    tz = tzrules.parse("CET-1CEST,M3.5.0,M10.5.0/3")
    assert tz.std == H and tz.dst == 2 * H
    spring = utc(2026, 3, 29, 1)  # 02:00 CET -> 03:00 CEST
    assert tz.utcoffset(spring - 1) == H and tz.utcoffset(spring) == 2 * H
    autumn = utc(2026, 10, 25, 1)  # 03:00 CEST -> 02:00 CET
    assert tz.utcoffset(autumn - 1) == 2 * H and tz.utcoffset(autumn) == H
    assert tz.utcoffset(utc(2026, 1, 15)) == H
    assert tz.utcoffset(utc(2026, 7, 15)) == 2 * H


def test_us_eastern_and_default_rules():
    tz = tzrules.parse("EST5EDT,M3.2.0,M11.1.0")
    assert tz.utcoffset(utc(2026, 3, 8, 7) - 1) == -5 * H  # 2 am EST
    assert tz.utcoffset(utc(2026, 3, 8, 7)) == -4 * H
    assert tz.utcoffset(utc(2026, 11, 1, 6) - 1) == -4 * H
    assert tz.utcoffset(utc(2026, 11, 1, 6)) == -5 * H
    # No rule given: POSIX leaves it to the implementation; we use the US one.
    assert tzrules.parse("EST5EDT").utcoffset(utc(2026, 7, 1)) == -4 * H


def test_southern_hemisphere_dst_spans_new_year():
    tz = tzrules.parse("AEST-10AEDT,M10.1.0,M4.1.0/3")
    assert tz.utcoffset(utc(2026, 1, 1)) == 11 * H
    assert tz.utcoffset(utc(2026, 7, 1)) == 10 * H
    assert tz.utcoffset(utc(2026, 12, 31)) == 11 * H
    # 2026-04-05 03:00 AEDT -> 02:00 AEST at 16:00 UTC on the 4th.
    assert tz.utcoffset(utc(2026, 4, 4, 16) - 1) == 11 * H
    assert tz.utcoffset(utc(2026, 4, 4, 16)) == 10 * H


def test_fixed_offsets_quoted_names_minutes_and_julian_rules():
    assert tzrules.parse("UTC0").utcoffset(0) == 0
    assert tzrules.parse("<-03>3").utcoffset(utc(2026, 1, 1)) == -3 * H
    assert tzrules.parse("IST-5:30").utcoffset(0) == 5 * H + 1800
    j = tzrules.parse("XST3XDT,J60,J300")  # J60 is always March 1
    assert j.utcoffset(utc(2024, 3, 1, 5)) == -2 * H
    assert j.utcoffset(utc(2024, 2, 29, 12)) == -3 * H
    n = tzrules.parse("XST3XDT,59,300")  # zero-based: day 59 is Feb 29 in 2024
    assert n.utcoffset(utc(2024, 2, 29, 12)) == -2 * H
    assert tzrules.parse("<+0330>-3:30<+0430>,J79/24,J263/24").std == 3 * H + 1800


def test_bad_specs():
    for bad in (
        "",
        "Europe/Madrid",
        "CET",
        "CE-1",
        "CET-1CEST,M13.5.0,M10.5.0",
        "CET-1CEST,M3.6.0,M10.5.0",
        "CET-1CEST,M3.5.7,M10.5.0",
        "CET-1CEST,M3.5.0",
        "CET-1CEST,M3.5.0,M10.5.0/3x",
        "<AB>1",
        "<ABC1",
        "X" * 65,
        "CET-25",
    ):
        raises(ValueError, tzrules.parse, bad)
    raises(ValueError, tzrules.parse, None)


def test_to_utc_and_gaps():
    tz = tzrules.parse("CET-1CEST,M3.5.0,M10.5.0/3")
    day = tzrules.days_from_civil(2026, 3, 29) * 86400
    assert tz.to_utc(day + 1 * H) == utc(2026, 3, 29, 0)
    assert tz.to_utc(day + 4 * H) == utc(2026, 3, 29, 2)
    # 02:30 does not exist that night: the answer is the moment of the jump or after.
    assert tz.to_utc(day + 2 * H + 1800) >= utc(2026, 3, 29, 1)
    assert tz.local(utc(2026, 7, 1, 22)) == tzrules.days_from_civil(2026, 7, 2) * 86400
