"""Reads of the telemetry history: the one bucketing behind the pool's history page,
the API's history endpoint (JSON and CSV) and the raw CSV export.

Every function takes a pool already obtained through
devices.selectors.pool_get_for_member: the access check is done once by the caller,
and these only shape what is shown. All of them start from `pool_samples`, so that
which samples belong to a pool is decided in one place.
"""

import datetime as dt
from zoneinfo import ZoneInfo

from django.db import models
from django.db.models import QuerySet

from devices.models import Pool
from devices.selectors import pool_device
from telemetry.models import TelemetrySample


def pool_samples(*, pool: Pool, start, end) -> QuerySet[TelemetrySample] | None:
    """The samples of the pool's current device in [start, end), within the pool's
    tenant; None when the pool has no device."""
    device = pool_device(pool)
    if device is None:
        return None
    return TelemetrySample.objects.filter(
        device_id=device.pk, tenant_id=pool.tenant_id, ts__gte=start, ts__lt=end
    )


def pool_utc_offset(*, pool: Pool, at: dt.datetime) -> int:
    """Seconds east of UTC of the pool's time zone at `at`."""
    return int(at.astimezone(ZoneInfo(pool.timezone)).utcoffset().total_seconds())


class _EpochBucket(models.Func):
    """floor(epoch seconds of `expression` / size): the same bucket number on
    PostgreSQL and SQLite, so downsampling happens in SQL on both."""

    output_field = models.BigIntegerField()

    def __init__(self, expression, *, size: int, offset: int = 0):
        self.size = int(size)
        self.offset = int(offset)
        super().__init__(expression)

    def as_sql(self, compiler, connection, **extra):
        inner, params = compiler.compile(self.source_expressions[0])
        if connection.vendor == "postgresql":
            sql = (
                f"FLOOR((EXTRACT(EPOCH FROM {inner}) + {self.offset}) / {self.size})"
                "::bigint"
            )
        elif connection.vendor == "sqlite":
            # Django keeps SQLite datetimes as UTC text, which strftime('%s') reads;
            # without the fraction, which SQLite would round to the millisecond
            # (23:59:59.9999 would land in the next bucket).
            sql = (
                f"((CAST(strftime('%%s', substr({inner}, 1, 19)) AS INTEGER)"
                f" + {self.offset}) / {self.size})"
            )
        else:  # pragma: no cover - other databases are not supported
            raise NotImplementedError(connection.vendor)
        return sql, params


def telemetry_buckets(
    *, pool: Pool, start, end, size: int, offset: int = 0
) -> list[dict]:
    """The pool's samples in [start, end) folded into buckets of `size` seconds, in
    one aggregate query: avg/min/max temperature, the share of samples with the pump
    on, with the valve in mode 1 and in mode 2 while the pump ran. `offset` shifts the
    bucket edges (seconds east of UTC) so daily buckets follow local midnight."""
    samples = pool_samples(pool=pool, start=start, end=end)
    if samples is None:
        return []
    pump_on = models.Case(
        models.When(pump=True, then=models.Value(1.0)),
        models.When(pump=False, then=models.Value(0.0)),
        output_field=models.FloatField(),
    )

    def mode_share(mode: int):
        return models.Case(
            models.When(pump=True, valve=mode, then=models.Value(1.0)),
            models.When(pump__isnull=False, then=models.Value(0.0)),
            output_field=models.FloatField(),
        )

    rows = (
        samples.annotate(bucket=_EpochBucket("ts", size=size, offset=offset))
        .values("bucket")
        .annotate(
            t_avg=models.Avg("temperature"),
            t_min=models.Min("temperature"),
            t_max=models.Max("temperature"),
            pump_share=models.Avg(pump_on),
            mode1_share=models.Avg(mode_share(1)),
            mode2_share=models.Avg(mode_share(2)),
            n=models.Count("id"),
            t_n=models.Count("temperature"),
            pump_n=models.Count("pump"),
        )
        .order_by("bucket")
    )
    return [{**row, "start": int(row["bucket"]) * size - offset} for row in rows]


def telemetry_history(*, pool: Pool, start, end, size: int) -> list[dict]:
    """The one bucketing of a pool's history, for its page, its CSV and the API:
    buckets of `size` seconds over [start, end) whose edges follow the pool's local
    clock (a daily bucket starts at local midnight; the offset is the one in force
    at `end`). Each bucket: its `start` (UTC), `samples`, temperature avg/min/max,
    the shares (0..1) of samples with the pump on and with the pump on in mode 1 and
    in mode 2, and `seconds`, the part of the bucket inside [start, end) (the running
    bucket counts only its elapsed part), from which running time is estimated."""
    offset = pool_utc_offset(pool=pool, at=end)
    boundary = raw_boundary(pool=pool, start=start)
    if boundary is None:
        rows = telemetry_buckets(
            pool=pool, start=start, end=end, size=size, offset=offset
        )
    else:
        rows = _with_rollups(
            pool=pool, start=start, end=end, size=size, offset=offset, boundary=boundary
        )
    first, last = start.timestamp(), end.timestamp()

    def rounded(value):
        return None if value is None else round(value, 3)

    return [
        {
            "start": dt.datetime.fromtimestamp(row["start"], tz=dt.UTC),
            "samples": row["n"],
            "temperature_avg": rounded(row["t_avg"]),
            "temperature_min": row["t_min"],
            "temperature_max": row["t_max"],
            "pump_on": rounded(row["pump_share"]),
            "mode1": rounded(row["mode1_share"]),
            "mode2": rounded(row["mode2_share"]),
            "size": row.get("size", size),
            "seconds": max(
                0,
                min(last, row["start"] + row.get("size", size))
                - max(first, row["start"]),
            ),
        }
        for row in rows
    ]


def raw_boundary(*, pool: Pool, start) -> dt.datetime | None:
    """Where a range starting at `start` can be read from raw samples: the first
    local midnight after the plan's raw retention (`history_days`) begins, or None
    when the whole range is within it (or the tenant, without a plan, keeps
    everything), and no later than the end of the last rolled-up day. What is before
    it comes from the daily roll-ups."""
    from django.utils import timezone

    from tenants.models import Tenant

    days = (
        Tenant.objects.filter(pk=pool.tenant_id)
        .values_list("plan__history_days", flat=True)
        .first()
    )
    if days is None:
        return None
    raw_from = timezone.now() - dt.timedelta(days=days)
    if start >= raw_from:
        return None
    # Only as far as the roll-ups go: retention keeps the samples of every day not
    # rolled up yet (a roll-up catching up, or before its first run).
    from telemetry.rollups import rolled_up_until

    device = pool_device(pool)
    frontier = rolled_up_until(device) if device is not None else None
    if frontier is None or frontier <= start:
        return None
    tz = ZoneInfo(pool.timezone)
    local = raw_from.astimezone(tz)
    midnight = dt.datetime.combine(local.date(), dt.time(0), tzinfo=tz)
    if midnight < local:
        midnight = dt.datetime.combine(
            local.date() + dt.timedelta(days=1), dt.time(0), tzinfo=tz
        )
    return min(midnight.astimezone(dt.UTC), frontier)


def _merged(a: dict, b: dict) -> dict:
    """Two partial rows of one bucket (roll-up days and raw samples) as one."""

    def total(row, share, n):
        return (row[share] or 0.0) * row[n]

    t_n, pump_n = a["t_n"] + b["t_n"], a["pump_n"] + b["pump_n"]
    mins = [v for v in (a["t_min"], b["t_min"]) if v is not None]
    maxs = [v for v in (a["t_max"], b["t_max"]) if v is not None]
    out = {
        **a,
        "n": a["n"] + b["n"],
        "t_n": t_n,
        "pump_n": pump_n,
        "t_avg": (total(a, "t_avg", "t_n") + total(b, "t_avg", "t_n")) / t_n
        if t_n
        else None,
        "t_min": min(mins) if mins else None,
        "t_max": max(maxs) if maxs else None,
    }
    for share in ("pump_share", "mode1_share", "mode2_share"):
        out[share] = (
            (total(a, share, "pump_n") + total(b, share, "pump_n")) / pump_n
            if pump_n
            else None
        )
    return out


def _with_rollups(*, pool: Pool, start, end, size: int, offset: int, boundary):
    """The buckets of a range reaching past raw retention: the daily roll-ups
    before `boundary`, the raw samples after it; a bucket across it (daily or wider
    buckets) has both, merged."""
    from telemetry.rollups import rollup_buckets

    device = pool_device(pool)
    if device is None:
        return []
    old = rollup_buckets(
        device_id=device.pk,
        start=start,
        end=min(boundary, end),
        size=size,
        offset=offset,
    )
    new = (
        telemetry_buckets(pool=pool, start=boundary, end=end, size=size, offset=offset)
        if boundary < end
        else []
    )
    if old and new and old[-1]["start"] == new[0]["start"]:
        old[-1] = _merged(old[-1], new.pop(0))
    return old + new


def telemetry_for_export(*, pool: Pool, start, end):
    """The pool's raw samples in [start, end), oldest first, streamed in chunks:
    (ts, temperature, pump, valve, rssi)."""
    samples = pool_samples(pool=pool, start=start, end=end)
    if samples is None:
        return iter(())
    return (
        samples.order_by("ts")
        .values_list("ts", "temperature", "pump", "valve", "rssi")
        .iterator(chunk_size=2000)
    )
