"""The pool's weekly programs editor: 3 slots of 7 days, saved through
devices.services.programs.programs_save."""

import re

from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from devices.scheduling import program_overlaps
from devices.selectors import pool_device, pool_get_for_member
from devices.selectors import pool_programs as pool_programs_list
from devices.views.member_page import form_errors, member_page
from tenants.roles import Action, role_allows

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
SLOTS = (1, 2, 3)


_LOOSE_TIME = re.compile(r"([0-9]{1,2})[:.hH]?([0-9]{2})")


def _time_from_post(value: str) -> str:
    """A typed time in the editor's one format, HH:MM (24 h): "930", "9:30" and
    "09.30" become "09:30"; anything else goes to the validator as typed."""
    value = value.strip()
    match = _LOOSE_TIME.fullmatch(value)
    if match is None:
        return value
    return f"{int(match[1]):02d}:{match[2]}"


def _programs_from_post(post) -> list[dict]:
    """The 3 slots × 7 days of the editor form, as programs_save takes them. A day with
    neither start nor stop is off; anything else goes to the service to validate."""
    programs = []
    for slot in SLOTS:
        days = []
        for day in range(7):
            prefix = f"s{slot}_d{day}_"
            start = _time_from_post(post.get(prefix + "start", ""))
            stop = _time_from_post(post.get(prefix + "stop", ""))
            mode = post.get(prefix + "mode", "1").strip()
            if not start and not stop:
                days.append(None)
                continue
            days.append(
                {
                    "mode": int(mode) if mode in ("1", "2") else mode,
                    "start": start,
                    "stop": stop,
                }
            )
        programs.append(
            {
                "slot": slot,
                "enabled": post.get(f"s{slot}_enabled") == "on",
                "days": days,
            }
        )
    return programs


def _programs_rows(programs: list[dict], errors: dict[str, list[str]]) -> list[dict]:
    """The editor's programs: one entry per slot with its 7 days and the errors that
    belong to each field, for the template. A program is shown open when it is on,
    has days or has errors; the others fold to one line."""
    by_slot = {p.get("slot"): p for p in programs if isinstance(p, dict)}
    rows = []
    for slot in SLOTS:
        program = by_slot.get(slot) or {"enabled": False, "days": [None] * 7}
        days = list(program.get("days") or []) + [None] * 7
        entries = []
        for i in range(7):
            fields = {
                part: errors.get(f"s{slot}_d{i}_{part}", [])
                for part in ("mode", "start", "stop")
            }
            day_errors = errors.get(f"s{slot}_d{i}", [])
            every = day_errors + fields["start"] + fields["stop"] + fields["mode"]
            entries.append(
                {
                    "index": i,
                    "name": DAYS[i],
                    "value": days[i] if isinstance(days[i], dict) else {},
                    "errors": day_errors,
                    "mode_errors": fields["mode"],
                    "start_errors": fields["start"],
                    "stop_errors": fields["stop"],
                    "all_errors": every,
                    "has_error": bool(every),
                }
            )
        slot_errors = errors.get(f"s{slot}", [])
        day_count = sum(1 for d in days[:7] if isinstance(d, dict))
        has_error = bool(slot_errors) or any(e["has_error"] for e in entries)
        rows.append(
            {
                "slot": slot,
                "enabled": program.get("enabled", False),
                "errors": slot_errors,
                "days": entries,
                "day_count": day_count,
                "open": bool(program.get("enabled")) or day_count > 0 or has_error,
            }
        )
    if not any(row["open"] for row in rows):
        rows[0]["open"] = True  # a pool without programs: start with the first
    return rows


def _error_lookup(errors: dict[str, list[str]]) -> dict[str, list[str]]:
    """programs_save's error paths ("programs[0].days[2].stop") keyed to the editor's
    fields (s1_d2_stop); the form always sends slots 1..3 in order, so index i is slot
    i + 1. What names no slot is shown above the table."""
    placed: dict[str, list[str]] = {}
    for key, messages in errors.items():
        match = re.match(r"programs\[(\d+)\](?:\.days\[(\d+)\](?:\.(\w+))?)?", key)
        target = "__all__"
        if match:
            target = f"s{int(match[1]) + 1}"
            if match[2] is not None:
                target += f"_d{match[2]}"
                if match[3] in ("mode", "start", "stop"):
                    target += f"_{match[3]}"
        placed.setdefault(target, []).extend(messages)
    return placed


@member_page
@require_http_methods(["GET", "POST"])
def pool_programs(request, code):
    pool = pool_get_for_member(membership=request.membership, code=code)
    errors: dict[str, list[str]] = {}
    status = 200
    if request.method == "POST":
        from devices.services.programs import programs_save

        programs = _programs_from_post(request.POST)
        version = request.POST.get("config_version", "").strip()
        try:
            # ASCII digits only: "²".isdigit() is true, and int() of 5,000 digits
            # raises; both are a damaged form, not a server error.
            if version and not re.fullmatch(r"[0-9]{1,9}", version):
                raise ValidationError(
                    "This form is damaged or out of date (its version is not a "
                    "number): reload the page and enter your changes again."
                )
            programs_save(
                membership=request.membership,
                pool=pool,
                programs=programs,
                expected_version=int(version) if version else None,
            )
        except ValidationError as exc:
            errors = _error_lookup(form_errors(exc))
            status = 400
        else:
            from django.contrib import messages

            messages.success(request, "Programs saved.")
            return redirect("pool_programs", code=pool.code)
    else:
        programs = [
            {"slot": p.slot, "enabled": p.enabled, "days": p.days}
            for p in pool_programs_list(pool=pool)
        ]
    overlaps = [] if errors else [str(o) for o in program_overlaps(programs)]
    return render(
        request,
        "devices/pool_programs.html",
        {
            "pool": pool,
            "device": pool_device(pool),
            "rows": _programs_rows(programs, errors),
            "config_version": pool.config_version,
            "errors": errors,
            "general_errors": errors.get("__all__", []),
            "overlaps": overlaps,
            "can_control": role_allows(request.membership.role, Action.CONTROL),
        },
        status=status,
    )
