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
    rows = telemetry_buckets(pool=pool, start=start, end=end, size=size, offset=offset)
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
            "seconds": max(
                0, min(last, row["start"] + size) - max(first, row["start"])
            ),
        }
        for row in rows
    ]


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
