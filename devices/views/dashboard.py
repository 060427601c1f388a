"""The live dashboard pages: one pool (controls and event log), its programs, its
history, and the tenant's devices (add, replace, remove with a provisioning bundle).

Views only parse, authorise through the access layer, call one service and answer;
the pool page's live part is static/js/pool.js talking to devices.consumers.
"""

import csv
import functools
import json
import re
import urllib.parse
from datetime import timedelta
from zoneinfo import ZoneInfo

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from devices.models import Device
from devices.scheduling import program_overlaps
from devices.selectors import (
    brokers_usable_by_member,
    device_get_for_member,
    devices_for_member,
    pool_device,
    pool_get_for_member,
    pool_snapshot,
    pools_for_member,
    telemetry_for_export,
    telemetry_history,
)
from devices.selectors import (
    pool_programs as pool_programs_list,
)
from firmware.protocol import wifi_quality
from tenants.roles import Action, role_allows

UNSHOWN_SECRETS = (
    *("mqtt_password", "pending_mqtt_username", "pending_mqtt_password"),
    *("broker__username", "broker__password"),
    *("broker__pending_username", "broker__pending_password"),
)

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
SLOTS = (1, 2, 3)
# range -> (span, temperature bucket, runtime bucket): at most ~360 points a chart.
RANGES = {
    "day": (timedelta(days=1), 300, 3600),
    "week": (timedelta(days=7), 1800, 86400),
    "month": (timedelta(days=30), 7200, 86400),
}


def member_page(view):
    """Login required, a current tenant required (else 404), and a role too low
    answered as a 403 page that says which role is needed."""

    @login_required
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.membership is None:
            raise Http404("Not found.")
        try:
            return view(request, *args, **kwargs)
        except PermissionDenied as exc:
            return render(
                request,
                "devices/pool_forbidden.html",
                {"message": str(exc) or "You may not do this."},
                status=403,
            )

    return wrapper


def _errors(exc: ValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return {key: list(value) for key, value in exc.message_dict.items()}
    return {"__all__": list(exc.messages)}


@member_page
def pool_detail(request, code):
    pool = pool_get_for_member(membership=request.membership, code=code)
    snapshot = pool_snapshot(membership=request.membership, pool=pool)
    return render(
        request,
        "devices/pool_detail.html",
        {"pool": pool, "device": pool_device(pool), "snapshot": snapshot},
    )


# --- programs ---------------------------------------------------------------------


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
            errors = _error_lookup(_errors(exc))
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


# --- history ----------------------------------------------------------------------


@member_page
def pool_history(request, code):
    pool = pool_get_for_member(membership=request.membership, code=code)
    range_name = request.GET.get("range", "day")
    if range_name not in RANGES:
        return render(
            request,
            "devices/pool_history.html",
            {
                "pool": pool,
                "error": "Pick a range of day, week or month.",
                "ranges": RANGES,
            },
            status=400,
        )
    span, size, runtime_size = RANGES[range_name]
    end = timezone.now()
    start = end - span
    if request.GET.get("format") == "csv":
        return _history_csv(pool, start, end, range_name)
    temperature = telemetry_history(pool=pool, start=start, end=end, size=size)
    runtime = telemetry_history(pool=pool, start=start, end=end, size=runtime_size)
    now_ts = end.timestamp()
    chart = {
        "range": range_name,
        "timezone": pool.timezone,
        "offset": int(
            end.astimezone(ZoneInfo(pool.timezone)).utcoffset().total_seconds()
        ),
        # Each point sits mid-bucket; the running bucket's at most at "now".
        "temperature": [
            [
                min(row["start"].timestamp() + size / 2, now_ts),
                row["temperature_avg"],
                row["temperature_min"],
                row["temperature_max"],
            ]
            for row in temperature
            if row["temperature_avg"] is not None
        ],
        # Hours of pump (and of each valve mode while pumping) per bucket, estimated
        # from the share of samples over the part of the bucket already lived.
        "runtime": [
            [
                row["start"].timestamp(),
                *(
                    round((row[key] or 0) * row["seconds"] / 3600, 2)
                    for key in ("pump_on", "mode1", "mode2")
                ),
            ]
            for row in runtime
        ],
        "runtime_size": runtime_size,
        "start": start.timestamp(),
        "end": end.timestamp(),
        "mode1_name": pool.mode1_name,
        "mode2_name": pool.mode2_name,
    }
    return render(
        request,
        "devices/pool_history.html",
        {
            "pool": pool,
            "range": range_name,
            "ranges": RANGES,
            "chart": chart,
            "points": len(chart["temperature"]),
        },
    )


class _Echo:
    def write(self, value):
        return value


def _history_csv(pool, start, end, range_name):
    """Every sample of the range, in the pool's words: its local time and its valve
    mode names."""
    writer = csv.writer(_Echo())
    tz = ZoneInfo(pool.timezone)
    names = {1: pool.mode1_name, 2: pool.mode2_name}

    def rows():
        yield writer.writerow(
            [
                "time_utc",
                f"time_local ({pool.timezone})",
                "temperature_c",
                "pump",
                "valve",
                "rssi_dbm",
            ]
        )
        for ts, temperature, pump, valve, rssi in telemetry_for_export(
            pool=pool, start=start, end=end
        ):
            yield writer.writerow(
                [
                    ts.isoformat(),
                    ts.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"),
                    "" if temperature is None else temperature,
                    "" if pump is None else ("on" if pump else "off"),
                    "" if valve is None else names.get(valve, valve),
                    "" if rssi is None else rssi,
                ]
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    filename = f"pool-{pool.code.hex[:8]}-{range_name}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# --- devices ----------------------------------------------------------------------


def _bundle_context(device, bundle: dict) -> dict:
    from devices.services.provisioning import (
        bundle_filename,
        bundle_json,
        bundle_qr_svg,
    )

    text = bundle_json(bundle)
    return {
        "device": device,
        "bundle_pretty": json.dumps(bundle, indent=2),
        "bundle_href": "data:application/json;charset=utf-8,"
        + urllib.parse.quote(text),
        "bundle_filename": bundle_filename(bundle),
        "qr_svg": bundle_qr_svg(bundle),
        "has_password": bool(bundle["mqtt"]["password"]),
    }


def _bundle_response(request, device, bundle):
    response = render(
        request, "devices/devices_bundle.html", _bundle_context(device, bundle)
    )
    # The password is in this page: never cached, never shown again.
    response["Cache-Control"] = "no-store"
    return response


def uptime_text(seconds) -> str:
    if not isinstance(seconds, int) or seconds < 0:
        return "—"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {rest // 60} min"
    return f"{rest // 60} min"


@member_page
def devices(request):
    membership = request.membership
    # The page shows no secret: do not even load (and decrypt) them, per row.
    rows = list(devices_for_member(membership=membership).defer(*UNSHOWN_SECRETS))
    from devices.views.credentials import rotation_annotate

    rotation_annotate(rows)
    for device in rows:
        device.uptime_text = uptime_text((device.state or {}).get("uptime"))
        rssi = ((device.state or {}).get("wifi") or {}).get("rssi")
        number = isinstance(rssi, int | float) and not isinstance(rssi, bool)
        device.rssi = rssi if number else None
        # The v3.1 words for the signal, as the device sends them; none unread.
        device.signal = "" if device.rssi is None else wifi_quality(device.rssi)
    return render(
        request,
        "devices/devices_list.html",
        {
            "devices": rows,
            "can_manage": role_allows(membership.role, Action.MANAGE),
        },
    )


@member_page
@never_cache
@require_http_methods(["GET", "POST"])
def device_add(request):
    membership = request.membership
    from tenants.selectors import membership_require

    membership_require(membership=membership, action=Action.MANAGE)
    pools = pools_for_member(membership=membership).filter(device__isnull=True)
    brokers = brokers_usable_by_member(membership=membership)
    values = {
        "device_id": "",
        "pool": request.GET.get("pool", ""),
        "broker": "",
        "protocol": "ps1",
        "claim_code": "",
    }
    errors: dict[str, list[str]] = {}
    status = 200
    if request.method == "POST":
        from devices.services.onboarding import device_add as device_add_service
        from devices.services.onboarding import device_broker_choose

        values = {key: request.POST.get(key, "").strip() for key in values}
        pool = broker = None
        try:
            pool = pool_get_for_member(membership=membership, code=values["pool"])
        except Http404:
            errors["pool"] = ["Pick one of your pools."]
        try:
            broker = device_broker_choose(membership=membership, code=values["broker"])
        except ValidationError as exc:
            errors.update(_errors(exc))
        if values["protocol"] not in Device.Protocol.values:
            errors["protocol"] = ["Pick poolsaas firmware or v3.1."]
        if not errors:
            try:
                device, bundle = device_add_service(
                    membership=membership,
                    pool=pool,
                    device_id=values["device_id"],
                    broker=broker,
                    protocol=values["protocol"],
                    claim_code=values["claim_code"],
                )
            except ValidationError as exc:
                errors = _errors(exc)
            else:
                if bundle:
                    return _bundle_response(request, device, bundle)
                from django.contrib import messages

                messages.success(
                    request,
                    f"{device.device_id} added. It uses the credentials of its "
                    "broker; no bundle is needed.",
                )
                return redirect("devices")
        status = 400
    return render(
        request,
        "devices/devices_add.html",
        {
            "pools": pools,
            "brokers": brokers,
            "values": values,
            "errors": errors,
            "general_errors": errors.get("__all__", []),
            "protocols": Device.Protocol.choices,
        },
        status=status,
    )


@member_page
@require_http_methods(["GET", "POST"])
def device_remove(request, code):
    device = device_get_for_member(
        membership=request.membership, code=code, action=Action.MANAGE
    )
    if request.method == "POST":
        from django.contrib import messages

        from devices.services.onboarding import device_remove as device_remove_service

        device_remove_service(membership=request.membership, device=device)
        messages.success(
            request, f"{device.device_id} removed; its broker credentials are revoked."
        )
        return redirect("devices")
    return render(request, "devices/devices_remove.html", {"device": device})


@member_page
@never_cache
@require_http_methods(["GET", "POST"])
def device_replace(request, code):
    pool = pool_get_for_member(
        membership=request.membership, code=code, action=Action.MANAGE
    )
    old = pool_device(pool)
    errors: dict[str, list[str]] = {}
    device_id = ""
    status = 200
    if request.method == "POST":
        from devices.services.onboarding import device_replace as replace_service

        device_id = request.POST.get("device_id", "").strip()
        try:
            result = replace_service(
                membership=request.membership,
                pool=pool,
                device_id=device_id,
                claim_code=request.POST.get("claim_code", ""),
            )
        except ValidationError as exc:
            errors = _errors(exc)
            status = 400
        else:
            device, bundle = result if isinstance(result, tuple) else (result, None)
            if bundle:
                return _bundle_response(request, device, bundle)
            from django.contrib import messages

            messages.success(request, f"{device.device_id} now controls {pool.name}.")
            return redirect(reverse("pool_detail", args=[pool.code]))
    return render(
        request,
        "devices/devices_replace.html",
        {
            "pool": pool,
            "old": old,
            "device_id": device_id,
            "errors": errors,
            "general_errors": errors.get("__all__", []),
        },
        status=status,
    )
