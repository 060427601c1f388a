"""Writes of the telemetry history.

`samples_write` stores one batch of samples; the bridge reaches it through
devices.services.ingest.ingest_write, which writes a batch's device states, samples
and events in one transaction and isolates the rows the database refuses.

Retention will live here too: a `samples_prune(*, tenant, before)` that deletes a
tenant's samples older than its plan's `history_days` (billing.Plan), run daily by a
thin task in telemetry/tasks.py. There is none yet: samples are kept for ever.
"""

import datetime as dt

from django.db import connection

from telemetry.models import TelemetrySample

CHUNK = 2000


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
