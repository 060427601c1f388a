"""Daily telemetry roll-ups: per device and local day, the counts behind the history
charts (temperature min/max/average, pump and valve-mode shares), kept for
TELEMETRY_ROLLUP_DAYS (five years) while the raw samples go after the plan's
`history_days`.

Written by `device_rollup` just before retention prunes that device's samples
(telemetry.services.history_prune, hourly), for every complete local day since the
last one rolled up, the last two days again (samples that arrive late, from a
device's own buffer), by an upsert that *sets* each day: run twice, or on two workers
at once, a day is the same row. Retention never deletes samples of a day not yet
rolled up (`rolled_up_until`). Read by `rollup_buckets` for the part of a chart's
range past raw retention (telemetry.selectors.telemetry_history).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Count, Max, Min, Q, Sum
from django.db.models.functions import TruncDate

from telemetry.models import DailyRollup, TelemetrySample

# Days per aggregate query (one index range of the device's samples each).
CHUNK_DAYS = 31
# Days rolled up per device and run at most (the next run continues).
MAX_DAYS_PER_RUN = 62
# Complete days rolled up again each run, for samples that arrive late.
REDO_DAYS = 2


def rollup_days_kept() -> int:
    return int(getattr(settings, "TELEMETRY_ROLLUP_DAYS", 5 * 365))


def day_start(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=tz).astimezone(dt.UTC)


def device_timezone(device) -> ZoneInfo:
    pool = getattr(device, "pool", None)
    return ZoneInfo(pool.timezone if pool is not None else "UTC")


def _day_rows(device, tz: ZoneInfo, first: dt.date, last: dt.date) -> list:
    """The roll-up rows of the device's days [first, last], from its samples."""
    rows = (
        TelemetrySample.objects.filter(
            device_id=device.pk,
            ts__gte=day_start(first, tz),
            ts__lt=day_start(last + dt.timedelta(days=1), tz),
        )
        .annotate(day=TruncDate("ts", tzinfo=tz))
        .values("day")
        .annotate(
            samples=Count("id"),
            temperature_n=Count("temperature"),
            temperature_sum=Sum("temperature"),
            temperature_min=Min("temperature"),
            temperature_max=Max("temperature"),
            pump_n=Count("pump"),
            pump_on_n=Count("id", filter=Q(pump=True)),
            mode1_n=Count("id", filter=Q(pump=True, valve=1)),
            mode2_n=Count("id", filter=Q(pump=True, valve=2)),
        )
        .order_by("day")
    )
    out = []
    for row in rows:
        start = day_start(row["day"], tz)
        end = day_start(row["day"] + dt.timedelta(days=1), tz)
        out.append(
            DailyRollup(
                tenant_id=device.tenant_id,
                device_id=device.pk,
                start=start,
                seconds=int((end - start).total_seconds()),
                **row,
            )
        )
    return out


UPDATED = [
    "start",
    "seconds",
    "samples",
    "temperature_n",
    "temperature_sum",
    "temperature_min",
    "temperature_max",
    "pump_n",
    "pump_on_n",
    "mode1_n",
    "mode2_n",
]


def device_rollup(device, *, now: dt.datetime, max_days: int = MAX_DAYS_PER_RUN) -> int:
    """Roll up the device's complete local days not rolled up yet (and the last
    REDO_DAYS again), at most `max_days` of them. Reads one index range of samples
    per CHUNK_DAYS and upserts the rows (no lock on the samples: the bridge's
    inserts never wait). Returns the days written."""
    tz = device_timezone(device)
    today = now.astimezone(tz).date()
    last = (
        DailyRollup.objects.filter(device_id=device.pk)
        .order_by("-day")
        .values_list("day", flat=True)
        .first()
    )
    samples = TelemetrySample.objects.filter(
        device_id=device.pk, ts__lt=day_start(today, tz)
    )
    if last is not None:
        redo = min(last + dt.timedelta(days=1), today - dt.timedelta(days=REDO_DAYS))
        samples = samples.filter(ts__gte=day_start(redo, tz))
    # Straight to the first day with samples (a device silent for months costs
    # nothing): one index lookup.
    first_ts = samples.order_by("ts").values_list("ts", flat=True).first()
    if first_ts is None:
        return 0
    first = first_ts.astimezone(tz).date()
    stop = min(today - dt.timedelta(days=1), first + dt.timedelta(days=max_days - 1))
    written = 0
    while first <= stop:
        chunk_end = min(stop, first + dt.timedelta(days=CHUNK_DAYS - 1))
        rows = _day_rows(device, tz, first, chunk_end)
        DailyRollup.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["device", "day"],
            update_fields=UPDATED,
        )
        written += len(rows)
        first = chunk_end + dt.timedelta(days=1)
    return written


def rolled_up_until(device) -> dt.datetime | None:
    """The end of the device's last rolled-up day: retention keeps every sample
    after it."""
    last = (
        DailyRollup.objects.filter(device_id=device.pk)
        .order_by("-day")
        .values_list("start", "seconds")
        .first()
    )
    if last is None:
        return None
    return last[0] + dt.timedelta(seconds=last[1])


def rollups_prune(*, now: dt.datetime, batch: int = 2000, max_batches: int = 100):
    """Delete roll-ups older than TELEMETRY_ROLLUP_DAYS, in batches of ids."""
    from telemetry.services import _prune

    cutoff = now - dt.timedelta(days=rollup_days_kept())
    return _prune(
        DailyRollup.objects.filter(start__lt=cutoff), batch=batch, budget=[max_batches]
    )


def rollup_buckets(*, device_id: int, start, end, size: int, offset: int) -> list[dict]:
    """The device's roll-up days whose middle is in [start, end), in the shape of
    telemetry.selectors.telemetry_buckets' rows (plus their `size`): a bucket of
    `size` seconds (daily or wider, edges shifted by `offset`) folds its days; a
    narrower `size` gives each day as its own bucket."""
    days = DailyRollup.objects.filter(
        device_id=device_id,
        start__gte=start - dt.timedelta(days=1),
        start__lt=end,
    ).order_by("start")
    buckets: dict[int, dict] = {}
    for d in days:
        middle = d.start.timestamp() + d.seconds / 2
        if not (start.timestamp() <= middle < end.timestamp()):
            continue
        if size >= 86400:
            n = int((middle + offset) // size)
            key, b_start, b_size = n, n * size - offset, size
        else:
            key, b_start, b_size = (
                int(d.start.timestamp()),
                d.start.timestamp(),
                d.seconds,
            )
        b = buckets.setdefault(
            key,
            {
                "start": b_start,
                "size": b_size,
                "n": 0,
                "t_n": 0,
                "t_sum": 0.0,
                "t_min": None,
                "t_max": None,
                "pump_n": 0,
                "pump_on_n": 0,
                "mode1_n": 0,
                "mode2_n": 0,
            },
        )
        b["n"] += d.samples
        b["t_n"] += d.temperature_n
        b["t_sum"] += d.temperature_sum or 0.0
        for key_, value, pick in (
            ("t_min", d.temperature_min, min),
            ("t_max", d.temperature_max, max),
        ):
            if value is not None:
                b[key_] = value if b[key_] is None else pick(b[key_], value)
        for field in ("pump_n", "pump_on_n", "mode1_n", "mode2_n"):
            b[field] += getattr(d, field)
    out = []
    for b in buckets.values():
        pump_n = b["pump_n"]
        out.append(
            {
                "start": int(b["start"]),
                "size": int(b["size"]),
                "n": b["n"],
                "t_n": b["t_n"],
                "pump_n": pump_n,
                "t_avg": b["t_sum"] / b["t_n"] if b["t_n"] else None,
                "t_min": b["t_min"],
                "t_max": b["t_max"],
                "pump_share": b["pump_on_n"] / pump_n if pump_n else None,
                "mode1_share": b["mode1_n"] / pump_n if pump_n else None,
                "mode2_share": b["mode2_n"] / pump_n if pump_n else None,
            }
        )
    return sorted(out, key=lambda row: row["start"])
