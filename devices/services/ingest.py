"""Writes of what devices report, in batches: the bridge's only way into the database.

`ingest_write` takes the effects the bridge core collected over a short window and
writes them with a handful of statements whatever the number of messages: one
multi-row UPDATE merging each device's state delta (so two bridges sharing a broker
never overwrite each other's keys), one bulk INSERT of history samples (handed to
telemetry.services.samples_write), one of events.
`devices_mark_silent` is the silence rule: online devices not heard from for their
silence window go offline.

A row the database refuses never holds back anybody else's: a device removed since
the bridge's last directory refresh (its samples and events fail the foreign key) or
a value the database will not store costs only that device's rows of that batch.
"""

import datetime as dt
import json
import logging
from collections import Counter, defaultdict

from django.db import DataError, IntegrityError, connection, transaction
from django.utils import timezone

from devices.models import Device, DeviceEvent
from devices.services.events import device_presence_event
from telemetry.services import samples_write

logger = logging.getLogger(__name__)

CHUNK = 2000
# What the database says about the rows themselves, as opposed to being away.
ROW_FAULTS = (IntegrityError, DataError)


def _aware(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def _write_states_postgres(rows: list[tuple]) -> None:
    # One statement and one JSON parameter per chunk: no per-row placeholders to
    # build, and JSON is encoded at C speed on both sides. Chunks keep each encoding
    # step short, since it holds the GIL the bridge's other threads need.
    # Sorted, so that bridges sharing a broker lock device rows in the same order
    # and never deadlock each other.
    rows = sorted(rows, key=lambda row: row[0])
    for start in range(0, len(rows), CHUNK):
        _write_state_chunk(rows[start : start + CHUNK])


def _write_state_chunk(rows: list[tuple]) -> None:
    document = json.dumps(
        [
            {
                "id": pk,
                "delta": delta,
                "online": online,
                "seen": seen.isoformat() if seen else None,
                "fw": fw,
                "hw": hw,
                "cfg": cfg,
            }
            for pk, delta, online, seen, fw, hw, cfg in rows
        ],
        separators=(",", ":"),
    )
    with connection.cursor() as cursor:
        # Take the row locks in id order first: the UPDATE's join may visit rows in
        # any order, and two bridges locking in different orders would deadlock.
        cursor.execute(
            "SELECT 1 FROM devices_device WHERE id = ANY(%s) ORDER BY id "
            "FOR NO KEY UPDATE",
            [[row[0] for row in rows]],
        )
        cursor.execute(
            """
            UPDATE devices_device AS d SET
                state = COALESCE(d.state, '{}'::jsonb) || v.delta,
                online = COALESCE(v.online, d.online),
                last_seen_at = GREATEST(d.last_seen_at, v.seen),
                firmware_version = COALESCE(v.fw, d.firmware_version),
                hardware_model = COALESCE(v.hw, d.hardware_model),
                config_version_applied = COALESCE(v.cfg, d.config_version_applied)
            FROM jsonb_to_recordset(%s::jsonb) AS v(
                id bigint, delta jsonb, online boolean, seen timestamptz, fw text,
                hw text, cfg integer
            )
            WHERE d.id = v.id
            """,
            [document],
        )


def _write_states_generic(rows: list[tuple]) -> None:
    # SQLite (the embedded default) runs one bridge, so read-merge-write is safe.
    for pk, delta, online, seen, fw, hw, cfg in rows:
        device = Device.objects.filter(pk=pk).only(
            "state", "online", "last_seen_at", "firmware_version"
        )
        device = device.first()
        if device is None:
            continue
        fields = {"state": {**(device.state or {}), **delta}}
        if online is not None:
            fields["online"] = online
        if seen is not None and (
            device.last_seen_at is None or seen > device.last_seen_at
        ):
            fields["last_seen_at"] = seen
        if fw is not None:
            fields["firmware_version"] = fw
        if hw is not None:
            fields["hardware_model"] = hw
        if cfg is not None:
            fields["config_version_applied"] = cfg
        Device.objects.filter(pk=pk).update(**fields)


class _Rows:
    """One device's part of a batch."""

    __slots__ = ("states", "samples", "events")

    def __init__(self) -> None:
        self.states: list[tuple] = []
        self.samples: list[tuple] = []
        self.events: list[tuple] = []

    def count(self) -> int:
        return len(self.states) + len(self.samples) + len(self.events)


def _write_rows(parts) -> None:
    """One transaction for the rows of these devices (all or nothing)."""
    rows, samples, events = [], [], []
    for part in parts:
        rows += part.states
        samples += part.samples
        events += part.events
    if not (rows or samples or events):
        return
    # Built afresh for every attempt: a failed bulk_create leaves its objects marked
    # as saved.
    event_rows = [
        DeviceEvent(
            tenant_id=device.tenant_id,
            device_id=device.pk,
            pool_id=device.pool_id,
            ts=_aware(ts),
            kind=kind,
            message=message[:300],
            data=data,
        )
        for device, ts, kind, message, data in events
    ]
    with transaction.atomic():
        if rows:
            if connection.vendor == "postgresql":
                _write_states_postgres(rows)
            else:
                _write_states_generic(rows)
        if samples:
            samples_write(samples=samples)
        if event_rows:
            DeviceEvent.objects.bulk_create(event_rows, batch_size=500)


def ingest_write(
    *,
    writes: dict,
    samples: list[tuple],
    events: list[tuple],
    now: float,
) -> dict[int, int]:
    """Persist one batch of the bridge core's effects (see devices.mqtt.topics).

    writes: device pk -> DeviceWrite; samples: (DeviceInfo, ts, temperature, pump,
    valve, rssi); events: (DeviceInfo, ts, kind, message, data).

    Returns the rows dropped, as device pk -> count (empty when all were written).
    When the database refuses the batch for its content (IntegrityError, DataError),
    it is written again without the devices that no longer exist, and if that still
    fails, one device per transaction; the rows of a device that fails alone are
    dropped and logged. Any other error (the database away) propagates with nothing
    written, so that the caller can keep the batch and retry it.
    """
    stamp = _aware(now).isoformat()
    per_device: dict[int, _Rows] = defaultdict(_Rows)
    for pk, write in writes.items():
        delta = dict(write.delta)
        if delta:
            delta["updated_at"] = stamp
        per_device[pk].states.append(
            (
                pk,
                delta,
                write.online,
                _aware(write.last_seen) if write.last_seen else None,
                write.firmware_version,
                write.hardware_model,
                write.config_version_applied,
            )
        )
    for sample in samples:
        per_device[sample[0].pk].samples.append(sample)
    for event in events:
        per_device[event[0].pk].events.append(event)
    try:
        _write_rows(per_device.values())
        return {}
    except ROW_FAULTS as exc:
        logger.warning("ingest batch refused (%s); isolating the bad rows", exc)
    dropped: Counter = Counter()
    existing = set(
        Device.objects.filter(pk__in=list(per_device)).values_list("pk", flat=True)
    )
    for pk in set(per_device) - existing:
        dropped[pk] += per_device.pop(pk).count()
        logger.warning(
            "dropped %d rows of device %s: it no longer exists", dropped[pk], pk
        )
    if dropped:
        try:
            _write_rows(per_device.values())
            return dict(dropped)
        except ROW_FAULTS:
            pass  # something else is wrong too: find it device by device
    for pk in sorted(per_device):
        try:
            _write_rows([per_device[pk]])
        except ROW_FAULTS as exc:
            dropped[pk] += per_device[pk].count()
            logger.warning(
                "dropped %d rows of device %s: %s", per_device[pk].count(), pk, exc
            )
    return dict(dropped)


def devices_mark_silent(
    *, candidates: dict[int, float], now: dt.datetime | None = None
) -> list[int]:
    """Mark offline the devices (pk -> silence seconds) that are online but have not
    been heard from within their silence window. Each flip is a conditional UPDATE,
    so when several bridges sweep, one event is written per device. Returns the pks
    that went offline."""
    now = now or timezone.now()
    if not candidates:
        return []
    shortest = min(candidates.values())
    rows = Device.objects.filter(
        pk__in=list(candidates),
        online=True,
        last_seen_at__lt=now - dt.timedelta(seconds=shortest),
    ).values_list("pk", "last_seen_at", "tenant_id", "pool_id")
    flipped = []
    for pk, last_seen_at, tenant_id, pool_id in rows:
        cutoff = now - dt.timedelta(seconds=candidates[pk])
        if last_seen_at >= cutoff:
            continue
        with transaction.atomic():
            if not Device.objects.filter(
                pk=pk, online=True, last_seen_at__lt=cutoff
            ).update(online=False):
                continue
            kind, message, data = device_presence_event(
                online=False, silent_for=candidates[pk]
            )
            DeviceEvent.objects.create(
                tenant_id=tenant_id,
                device_id=pk,
                pool_id=pool_id,
                ts=now,
                kind=kind,
                message=message,
                data=data,
            )
        flipped.append(pk)
    return flipped
