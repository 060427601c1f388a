"""Weekly programs: validation, which one runs now, and what pump and valve should do.

Pure on purpose (no Django): the server-side scheduler for v3.1 pools, the programs
service and the tests all call it with plain values. A program is a dict
{"slot": 1..3, "enabled": bool, "days": [7 entries, Monday first]}, each day None or
{"mode": 1|2, "start": "HH:MM", "stop": "HH:MM"}.

The rules are the ones our firmware applies on the device (docs/protocol.md, 3.3), so a
pool behaves the same whichever side runs its programs:

- A window is active on its weekday while start <= local wall-clock time < stop. Windows
  never cross midnight (stop must be after start on the same day).
- When windows of several slots are active, the lowest slot wins (1 beats 2 beats 3).
- Because the test is on the wall clock, a spring-forward day skips a window that lies
  inside the missing hour and starts one that straddles it at the jump; on a fall-back
  day a window inside the repeated hour runs in both passes.
- A manual override pauses programs until the next local midnight; a running timer
  suspends them. While paused, programs decide nothing (the pump is left alone).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_PROGRAMS = 3
SLOTS = (1, 2, 3)
MODES = (1, 2)
WEEKDAYS = (
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
)
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")

PAUSED_BY_OVERRIDE = "override"
PAUSED_BY_TIMER = "timer"


# --- validation -----------------------------------------------------------------------


@dataclass(frozen=True)
class FieldError:
    """One problem in submitted programs; `field` is a path such as
    `programs[0].days[2].stop` (index into the submitted list, Monday = day 0)."""

    field: str
    message: str


def parse_hhmm(value: Any) -> int | None:
    """Minutes after midnight of an "HH:MM" string (00:00..23:59), else None."""
    if not isinstance(value, str):
        return None
    # fullmatch: "$" would let a trailing newline through.
    match = _HHMM.fullmatch(value)
    if match is None:
        return None
    return int(match.group(1)) * 60 + int(match.group(2))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_day(day: Any, where: str) -> list[FieldError]:
    if day is None:
        return []
    if not isinstance(day, Mapping):
        return [FieldError(where, "Expected no run (null) or a mode, start and stop.")]
    errors = []
    if not _is_int(day.get("mode")) or day.get("mode") not in MODES:
        errors.append(FieldError(f"{where}.mode", "The valve mode must be 1 or 2."))
    start = parse_hhmm(day.get("start"))
    stop = parse_hhmm(day.get("stop"))
    for part, minutes in (("start", start), ("stop", stop)):
        if minutes is None:
            missing = day.get(part) in (None, "")
            errors.append(
                FieldError(
                    f"{where}.{part}",
                    f"{part.capitalize()} time missing."
                    if missing
                    else f"Enter the {part} as HH:MM (24 h), for example 09:30.",
                )
            )
    if start is not None and stop is not None and stop <= start:
        errors.append(
            FieldError(
                f"{where}.stop",
                "The stop time must be after the start time on the same day "
                "(a program cannot run past midnight).",
            )
        )
    return errors


def validate_programs(programs: Any) -> list[FieldError]:
    """Every problem in a submitted list of programs; empty when it is valid.

    Rules: a list of at most 3 programs with distinct slots 1..3, `enabled` a boolean,
    `days` exactly 7 entries, each null or {"mode": 1|2, "start": "HH:MM",
    "stop": "HH:MM"} with stop after start. One slot holds one window per weekday, so
    windows of a slot cannot overlap; windows of different slots may, and then the
    lower slot wins (see `program_overlaps`).
    """
    if not isinstance(programs, Sequence) or isinstance(programs, str | bytes):
        return [FieldError("programs", "Expected a list of programs.")]
    errors: list[FieldError] = []
    if len(programs) > MAX_PROGRAMS:
        errors.append(
            FieldError("programs", f"At most {MAX_PROGRAMS} programs per pool.")
        )
    seen: set[int] = set()
    for index, program in enumerate(programs):
        where = f"programs[{index}]"
        if not isinstance(program, Mapping):
            errors.append(FieldError(where, "Expected a program object."))
            continue
        slot = program.get("slot")
        if not _is_int(slot) or slot not in SLOTS:
            errors.append(FieldError(f"{where}.slot", "The slot must be 1, 2 or 3."))
        elif slot in seen:
            errors.append(
                FieldError(f"{where}.slot", f"Slot {slot} is used more than once.")
            )
        else:
            seen.add(slot)
        if not isinstance(program.get("enabled"), bool):
            errors.append(
                FieldError(f"{where}.enabled", "Enabled must be true or false.")
            )
        days = program.get("days")
        if not isinstance(days, Sequence) or isinstance(days, str | bytes):
            errors.append(FieldError(f"{where}.days", "Expected 7 days, Monday first."))
            continue
        if len(days) != 7:
            errors.append(FieldError(f"{where}.days", "Expected 7 days, Monday first."))
            continue
        for d, day in enumerate(days):
            errors.extend(_validate_day(day, f"{where}.days[{d}]"))
    return errors


def normalize_programs(programs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A clean copy of valid programs, sorted by slot, unknown keys dropped.

    Call only after `validate_programs` returned no error.
    """
    out = []
    for program in sorted(programs, key=lambda p: p["slot"]):
        out.append(
            {
                "slot": program["slot"],
                "enabled": program["enabled"],
                "days": [
                    None
                    if day is None
                    else {
                        "mode": day["mode"],
                        "start": day["start"],
                        "stop": day["stop"],
                    }
                    for day in program["days"]
                ],
            }
        )
    return out


@dataclass(frozen=True)
class Overlap:
    """Two enabled slots whose windows overlap on a weekday; `winner` runs then."""

    weekday: int
    winner: int
    loser: int
    start: str
    stop: str

    def __str__(self) -> str:
        return (
            f"{WEEKDAYS[self.weekday]} {self.start}–{self.stop}: program {self.winner} "
            f"runs, program {self.loser} waits."
        )


def _fmt(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def program_overlaps(programs: Iterable[Mapping[str, Any]]) -> list[Overlap]:
    """Where enabled programs of valid input overlap, for showing the priority rule."""
    enabled = sorted((p for p in programs if p["enabled"]), key=lambda p: p["slot"])
    overlaps = []
    for weekday in range(7):
        for i, high in enumerate(enabled):
            a = high["days"][weekday]
            if a is None:
                continue
            for low in enabled[i + 1 :]:
                b = low["days"][weekday]
                if b is None:
                    continue
                start = max(parse_hhmm(a["start"]), parse_hhmm(b["start"]))
                stop = min(parse_hhmm(a["stop"]), parse_hhmm(b["stop"]))
                if start < stop:
                    overlaps.append(
                        Overlap(
                            weekday, high["slot"], low["slot"], _fmt(start), _fmt(stop)
                        )
                    )
    return overlaps


# --- time -----------------------------------------------------------------------------


def as_zone(tz: str | dt.tzinfo) -> dt.tzinfo:
    """A tzinfo for an IANA name (ValueError for an unknown one) or the tzinfo given."""
    if isinstance(tz, dt.tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"Unknown time zone {tz!r}.") from None


def _aware(value: dt.datetime, name: str) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware.")
    return value


def next_local_midnight(now_utc: dt.datetime, tz: str | dt.tzinfo) -> dt.datetime:
    """The first instant (UTC) of the local day after the one `now_utc` falls on.

    Where a DST change skips local midnight (the day starts at 01:00), this is the
    instant of the jump, which is when the new local day begins.
    """
    zone = as_zone(tz)
    local = _aware(now_utc, "now_utc").astimezone(zone)
    tomorrow = local.date() + dt.timedelta(days=1)
    # fold=0 maps a midnight inside a gap with the offset before the jump, which lands
    # exactly on the jump; in a repeated hour it picks the first pass. Both are the
    # first instant of the new day.
    midnight = dt.datetime.combine(tomorrow, dt.time(0), tzinfo=zone)
    return midnight.astimezone(dt.UTC)


# --- what should run ------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A program's window on one local date."""

    slot: int
    mode: int
    day: dt.date
    start: str
    stop: str

    @property
    def key(self) -> str:
        """Identifies this run of the window (same on both passes of a fall-back)."""
        return f"{self.slot}/{self.day.isoformat()}/{self.start}-{self.stop}"


@dataclass(frozen=True)
class DesiredState:
    """What the programs ask for at one instant.

    `pump`/`valve` are None when programs decide nothing: paused (`paused_by` says by
    what), or `valve` when no program runs (the valve is left where it is). `slot` and
    `window` name the program whose window is active, even when it is paused.
    """

    pump: bool | None
    valve: int | None
    slot: int | None
    window: Window | None
    paused_by: str | None = None

    @property
    def paused(self) -> bool:
        return self.paused_by is not None


def active_window(
    programs: Iterable[Mapping[str, Any]], tz: str | dt.tzinfo, now_utc: dt.datetime
) -> Window | None:
    """The window that runs now (lowest slot first), ignoring overrides and timers."""
    local = _aware(now_utc, "now_utc").astimezone(as_zone(tz))
    weekday = local.weekday()
    minute = local.hour * 60 + local.minute
    for program in sorted(programs, key=lambda p: p["slot"]):
        if not program["enabled"]:
            continue
        day = program["days"][weekday]
        if day is None:
            continue
        start, stop = parse_hhmm(day["start"]), parse_hhmm(day["stop"])
        if start is not None and stop is not None and start <= minute < stop:
            return Window(
                program["slot"], day["mode"], local.date(), day["start"], day["stop"]
            )
    return None


def override_active(override_until: dt.datetime | None, now_utc: dt.datetime) -> bool:
    return override_until is not None and _aware(now_utc, "now_utc") < _aware(
        override_until, "override_until"
    )


def desired_state(
    programs: Iterable[Mapping[str, Any]],
    tz: str | dt.tzinfo,
    now_utc: dt.datetime,
    *,
    override_until: dt.datetime | None = None,
    timer_active: bool = False,
) -> DesiredState:
    """What the pump and valve should be now according to the pool's programs."""
    window = active_window(programs, tz, now_utc)
    slot = window.slot if window else None
    # A timer in progress drives the pump itself; it wins over an override pause as
    # the reason shown, though either one keeps the programs quiet.
    if timer_active:
        return DesiredState(None, None, slot, window, PAUSED_BY_TIMER)
    if override_active(override_until, now_utc):
        return DesiredState(None, None, slot, window, PAUSED_BY_OVERRIDE)
    if window is None:
        return DesiredState(False, None, None, None)
    return DesiredState(True, window.mode, window.slot, window)


def timer_running(timer: Mapping[str, Any] | None, now_utc: dt.datetime) -> bool:
    """Whether a timer reported in Device.state (contract 1) is still counting down.

    A report says `active` and `remaining` seconds at `at`; a timer whose end has
    passed since is over even if the device has not said so yet.
    """
    if not isinstance(timer, Mapping) or timer.get("active") is not True:
        return False
    remaining = timer.get("remaining")
    at = timer.get("at")
    if not _is_int(remaining) or not isinstance(at, str):
        return True
    try:
        measured = dt.datetime.fromisoformat(at)
    except ValueError:
        return True
    if measured.tzinfo is None:
        measured = measured.replace(tzinfo=dt.UTC)
    return _aware(now_utc, "now_utc") < measured + dt.timedelta(seconds=remaining)


# --- POSIX TZ strings for the device --------------------------------------------------


def _tzif_bytes(name: str) -> bytes:
    """The compiled zone file, found where zoneinfo finds it: TZPATH, then tzdata."""
    import importlib.resources
    import os
    import zoneinfo

    as_zone(name)  # rejects unknown names and path tricks ("../", absolute paths)
    for root in zoneinfo.TZPATH:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                return handle.read()
    package, _, leaf = f"tzdata.zoneinfo.{name.replace('/', '.')}".rpartition(".")
    try:
        return importlib.resources.files(package).joinpath(leaf).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        raise ValueError(f"No zone file for {name!r}.") from None


def _posix_offset(seconds: int) -> str:
    # POSIX offsets are west-positive: UTC+1 is "-1".
    sign = "-" if seconds > 0 else ""
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{sign}{hours}"
    if minutes or secs:
        text += f":{minutes:02d}"
    if secs:
        text += f":{secs:02d}"
    return text


def tz_posix(name: str, *, now_utc: dt.datetime | None = None) -> str:
    """The POSIX TZ rule of an IANA zone ("CET-1CEST,M3.5.0,M10.5.0/3" for
    Europe/Madrid), which the firmware uses to keep local time without a zone
    database.

    It is the footer of the zone's TZif (version 2+) file: the rule that holds after
    the last transition in the table. A zone without one (none in current tzdata)
    falls back to its current fixed offset.
    """
    data = _tzif_bytes(name)
    if data[:4] != b"TZif":
        raise ValueError(f"{name!r} is not a TZif file.")
    rule = ""
    if data[4:5] not in (b"\0", b"") and data.endswith(b"\n"):
        start = data.rfind(b"\n", 0, len(data) - 1)
        if start != -1:
            rule = data[start + 1 : -1].decode("ascii", "replace")
    if rule and "\ufffd" not in rule:
        return rule
    now_utc = now_utc or dt.datetime.now(dt.UTC)
    offset = int(now_utc.astimezone(as_zone(name)).utcoffset().total_seconds())
    hours, minutes = divmod(abs(offset) // 60, 60)
    label = f"{'+' if offset >= 0 else '-'}{hours:02d}"
    if minutes:
        label += f"{minutes:02d}"
    return f"<{label}>{_posix_offset(offset)}"
