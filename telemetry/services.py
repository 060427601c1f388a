"""Writes of the telemetry history.

`samples_write` stores one batch of samples; the bridge reaches it through
devices.services.ingest.ingest_write, which writes a batch's device states, samples
and events in one transaction and isolates the rows the database refuses.

Retention lives here too: `history_prune` deletes, for every tenant with a plan,
the samples, device events and finished commands older than the plan's
`history_days` (billing.Plan), in small batches (see its docstring); run hourly by
telemetry/tasks.py. A tenant without a plan keeps its history. Before a device's
samples go, its days are rolled up (telemetry.rollups), kept far longer.
"""

import datetime as dt
import logging

from django.db import connection
from django.utils import timezone

from telemetry.models import TelemetrySample
from telemetry.rollups import device_rollup, rolled_up_until

logger = logging.getLogger(__name__)

CHUNK = 2000
# Rows per DELETE: each is its own short transaction over rows found by an index
# range, so the bridge's inserts and device updates never wait behind a long lock.
PRUNE_BATCH = 2000


def _aware(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def _tsv(value) -> str:
    return "\\N" if value is None else str(value)


def _copy_chunk(samples: list[tuple]) -> None:
    lines = []
    for device, ts, temperature, pump, valve, rssi in samples:
        lines.append(
            f"{device.tenant_id}\t{device.pk}\t{_aware(ts).isoformat()}\t"
            f"{_tsv(temperature)}\t{_tsv(pump)}\t{_tsv(valve)}\t{_tsv(rssi)}\n"
        )
    with connection.cursor() as cursor:
        with cursor.cursor.copy(
            f"COPY {TelemetrySample._meta.db_table} "
            "(tenant_id, device_id, ts, temperature, pump, valve, rssi) FROM STDIN"
        ) as copy:
            copy.write("".join(lines).encode())


def samples_write(*, samples: list[tuple]) -> None:
    """Insert one batch of history samples, each (device, ts, temperature, pump,
    valve, rssi) where `device` has `pk` and `tenant_id` (the bridge's DeviceInfo) and
    `ts` is epoch seconds.

    Runs in the caller's transaction and lets the database's refusal (a device gone,
    a value out of range) propagate, so that the caller can isolate the bad rows.
    Not audited: samples are measurements, not state changes anybody made.
    """
    if not samples:
        return
    if connection.vendor == "postgresql":
        # COPY of text blocks: far cheaper than a multi-row INSERT on both sides.
        for start in range(0, len(samples), CHUNK):
            _copy_chunk(samples[start : start + CHUNK])
        return
    TelemetrySample.objects.bulk_create(
        [
            TelemetrySample(
                tenant_id=device.tenant_id,
                device_id=device.pk,
                ts=_aware(ts),
                temperature=temperature,
                pump=pump,
                valve=valve,
                rssi=rssi,
            )
            for device, ts, temperature, pump, valve, rssi in samples
        ],
        batch_size=500,
    )


def _prune(queryset, *, batch: int, budget: list[int]) -> int:
    """Delete the rows of `queryset` in batches of ids (autocommit: one short
    transaction each) until none is left or the run's budget of batches is spent."""
    deleted = 0
    while budget[0] > 0:
        ids = list(queryset.order_by().values_list("pk", flat=True)[:batch])
        if not ids:
            break
        budget[0] -= 1
        # A fast delete (one DELETE … WHERE id IN): nothing references these rows.
        n, _ = queryset.model.objects.filter(pk__in=ids).delete()
        deleted += n
        if len(ids) < batch:
            break
    return deleted


def history_prune(
    *,
    now: dt.datetime | None = None,
    batch: int = PRUNE_BATCH,
    max_batches: int = 500,
) -> dict[str, int]:
    """Delete history past each plan's retention (`history_days`): telemetry samples,
    device events and finished commands; pending commands stay whatever their age.

    Each batch is found through an index range of one device (samples by (device,
    ts), events by (device, ts) or (pool, ts)) or one tenant (commands by (tenant,
    created_at)), never a scan of the table, and deleted in its own transaction. At
    most `max_batches` batches per run: what is left waits for the next run.
    Returns the rows deleted per kind."""
    from devices.models import Command, Device, DeviceEvent, Pool
    from tenants.models import Tenant

    now = now or timezone.now()
    budget = [max_batches]
    out = {"samples": 0, "events": 0, "commands": 0}
    tenants = Tenant.objects.filter(plan__isnull=False).values_list(
        "pk", "plan__history_days"
    )
    for tenant_id, days in tenants.order_by("pk"):
        cutoff = now - dt.timedelta(days=days)
        devices = Device.objects.filter(tenant_id=tenant_id).select_related("pool")
        for device in devices.only("pk", "tenant_id", "pool__timezone"):
            # The days about to go are rolled up first, and no sample of a day not
            # rolled up yet is deleted (a roll-up still catching up holds them).
            device_rollup(device, now=now)
            frontier = rolled_up_until(device)
            if frontier is not None:
                out["samples"] += _prune(
                    TelemetrySample.objects.filter(
                        device_id=device.pk, ts__lt=min(cutoff, frontier)
                    ),
                    batch=batch,
                    budget=budget,
                )
            out["events"] += _prune(
                DeviceEvent.objects.filter(device_id=device.pk, ts__lt=cutoff),
                batch=batch,
                budget=budget,
            )
        for pool_id in Pool.objects.filter(tenant_id=tenant_id).values_list(
            "pk", flat=True
        ):
            out["events"] += _prune(
                DeviceEvent.objects.filter(
                    pool_id=pool_id, device__isnull=True, ts__lt=cutoff
                ),
                batch=batch,
                budget=budget,
            )
        out["events"] += _prune(
            DeviceEvent.objects.filter(
                tenant_id=tenant_id,
                device__isnull=True,
                pool__isnull=True,
                ts__lt=cutoff,
            ),
            batch=batch,
            budget=budget,
        )
        out["commands"] += _prune(
            Command.objects.filter(tenant_id=tenant_id, created_at__lt=cutoff).exclude(
                status__in=[Command.Status.PENDING, Command.Status.SENT]
            ),
            batch=batch,
            budget=budget,
        )
        if budget[0] <= 0:
            break
    if any(out.values()):
        logger.info("history pruned: %s", out)
    return out
