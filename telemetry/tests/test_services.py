"""telemetry.services.samples_write, the batched write of history samples (COPY on
PostgreSQL, bulk INSERT elsewhere), on the database of the run."""

import datetime as dt
from types import SimpleNamespace

import pytest

from telemetry import services
from telemetry.models import TelemetrySample
from telemetry.services import samples_write

pytestmark = pytest.mark.django_db


def info(device):
    """What the bridge hands over for a device (its DeviceInfo): pk and tenant."""
    return SimpleNamespace(pk=device.pk, tenant_id=device.tenant_id)


def test_samples_are_written_with_their_empty_values(device_a, device_b):
    at = dt.datetime(2026, 11, 2, 10, 0, 0, 250000, tzinfo=dt.UTC)
    samples_write(
        samples=[
            (info(device_a), at.timestamp(), 25.5, True, 2, -61),
            (info(device_a), at.timestamp() + 60, None, None, None, None),
            (info(device_b), at.timestamp(), 19.0, False, 1, -70),
        ]
    )
    rows = list(
        TelemetrySample.objects.order_by("device_id", "ts").values_list(
            "tenant_id", "device_id", "ts", "temperature", "pump", "valve", "rssi"
        )
    )
    assert rows == [
        (device_a.tenant_id, device_a.pk, at, 25.5, True, 2, -61),
        (
            device_a.tenant_id,
            device_a.pk,
            at + dt.timedelta(seconds=60),
            None,
            None,
            None,
            None,
        ),
        (device_b.tenant_id, device_b.pk, at, 19.0, False, 1, -70),
    ]


def test_a_batch_larger_than_a_chunk_is_written_whole(device_a, monkeypatch):
    monkeypatch.setattr(services, "CHUNK", 3)
    start = dt.datetime(2026, 11, 2, tzinfo=dt.UTC).timestamp()
    samples_write(
        samples=[
            (info(device_a), start + i, 20.0 + i, i % 2 == 0, 1, -60) for i in range(8)
        ]
    )
    temperatures = TelemetrySample.objects.order_by("ts").values_list(
        "temperature", flat=True
    )
    assert list(temperatures) == [20.0 + i for i in range(8)]


def test_nothing_to_write_touches_nothing(django_assert_num_queries):
    with django_assert_num_queries(0):
        samples_write(samples=[])
