"""Cross-check tzrules against CPython's zoneinfo for the zones our pools are in."""

import datetime
import random
import zoneinfo

import pytest

from firmware import tzrules

ZONES = [
    ("Europe/Madrid", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("Europe/London", "GMT0BST,M3.5.0/1,M10.5.0"),
    ("America/New_York", "EST5EDT,M3.2.0,M11.1.0"),
    ("Australia/Sydney", "AEST-10AEDT,M10.1.0,M4.1.0/3"),
    ("Pacific/Auckland", "NZST-12NZDT,M9.5.0,M4.1.0/3"),
    ("America/Sao_Paulo", "<-03>3"),
    ("Asia/Kolkata", "IST-5:30"),
]


@pytest.mark.parametrize(("name", "spec"), ZONES)
def test_offsets_match_zoneinfo(name, spec):
    tz = tzrules.parse(spec)
    zone = zoneinfo.ZoneInfo(name)
    rng = random.Random(name)
    start = int(datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC).timestamp())
    stamps = [rng.randrange(start, start + 10 * 365 * 86400) for _ in range(3000)]
    # Around every transition too, to the second.
    for year in range(2025, 2035):
        for month in range(1, 13):
            t = int(datetime.datetime(year, month, 1, tzinfo=datetime.UTC).timestamp())
            for h in range(0, 31 * 24, 1):
                a, b = t + h * 3600 - 1, t + h * 3600
                if zone.utcoffset(
                    datetime.datetime.fromtimestamp(a, datetime.UTC)
                ) != zone.utcoffset(datetime.datetime.fromtimestamp(b, datetime.UTC)):
                    stamps += [a, b]
    for t in stamps:
        want = datetime.datetime.fromtimestamp(t, zone).utcoffset().total_seconds()
        assert tz.utcoffset(t) == want, (name, t)


@pytest.mark.parametrize(("name", "spec"), ZONES)
def test_next_midnight_matches_zoneinfo(name, spec):
    tz = tzrules.parse(spec)
    zone = zoneinfo.ZoneInfo(name)
    rng = random.Random(name + "m")
    for _ in range(500):
        t = rng.randrange(1735689600, 2050000000)
        local = datetime.datetime.fromtimestamp(t, zone)
        nxt = datetime.datetime.combine(
            local.date() + datetime.timedelta(days=1), datetime.time(0), zone
        )
        assert tz.next_midnight(t) == int(nxt.timestamp())
