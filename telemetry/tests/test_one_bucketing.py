"""telemetry.selectors.telemetry_history, the one bucketing of a pool's history: its
edges, the pool's time zone, empty ranges, and the same figures through the history
page, its CSV export, and the API as JSON and as CSV."""

import csv
import io
import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from devices.models import Pool
from poolsaas.api.testing import api_client
from telemetry import selectors
from telemetry.models import TelemetrySample
from telemetry.selectors import pool_utc_offset, telemetry_history

pytestmark = pytest.mark.django_db


def sample(device, ts, **values):
    return TelemetrySample(tenant=device.tenant, device=device, ts=ts, **values)


def chart_of(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="history-data" type="application/json">')
    return json.loads(html[start:].split(">", 1)[1].split("</script>", 1)[0])


# --- edges -------------------------------------------------------------------------


def test_bucket_edges_start_is_in_end_is_out(device_a, pool_a):
    # Madrid is UTC+1 in November: 5-minute edges are the same as in UTC.
    edge = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    start, end = edge - timedelta(seconds=100), edge + timedelta(seconds=350)
    TelemetrySample.objects.bulk_create(
        [
            sample(device_a, start - timedelta(seconds=1), temperature=1.0),  # out
            sample(device_a, start, temperature=10.0),  # in: start is inclusive
            sample(device_a, edge - timedelta(seconds=1), temperature=12.0),
            sample(device_a, edge, temperature=20.0),  # an edge opens a bucket
            sample(device_a, edge + timedelta(seconds=299), temperature=22.0),
            sample(device_a, edge + timedelta(seconds=300), temperature=30.0),
            sample(device_a, end, temperature=99.0),  # out: end is exclusive
        ]
    )
    rows = telemetry_history(pool=pool_a, start=start, end=end, size=300)
    assert [r["start"] for r in rows] == [
        edge - timedelta(seconds=300),
        edge,
        edge + timedelta(seconds=300),
    ]
    assert [r["samples"] for r in rows] == [2, 2, 1]
    assert [(r["temperature_min"], r["temperature_max"]) for r in rows] == [
        (10.0, 12.0),
        (20.0, 22.0),
        (30.0, 30.0),
    ]
    # Only the part of a bucket inside [start, end) counts as lived.
    assert [r["seconds"] for r in rows] == [100, 300, 50]


def test_a_sample_on_the_last_second_of_a_bucket_stays_in_it(device_a, pool_a):
    edge = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    TelemetrySample.objects.bulk_create(
        [sample(device_a, edge - timedelta(microseconds=1), temperature=5.0)]
    )
    (row,) = telemetry_history(
        pool=pool_a, start=edge - timedelta(hours=1), end=edge, size=300
    )
    assert row["start"] == edge - timedelta(seconds=300)


# --- the pool's time zone ------------------------------------------------------------


@pytest.mark.parametrize(
    "zone, size, first_start",
    [
        # Kolkata is UTC+5:30: hours and days begin at half past in UTC.
        ("Asia/Kolkata", 3600, datetime(2026, 11, 2, 9, 30, tzinfo=UTC)),
        ("Asia/Kolkata", 86400, datetime(2026, 11, 1, 18, 30, tzinfo=UTC)),
        # New York is UTC-5 in November: its day begins at 05:00 UTC.
        ("America/New_York", 86400, datetime(2026, 11, 2, 5, 0, tzinfo=UTC)),
        ("Europe/Madrid", 86400, datetime(2026, 11, 1, 23, 0, tzinfo=UTC)),
        ("UTC", 86400, datetime(2026, 11, 2, 0, 0, tzinfo=UTC)),
    ],
)
def test_buckets_follow_the_pool_time_zone(device_a, pool_a, zone, size, first_start):
    Pool.objects.filter(pk=pool_a.pk).update(timezone=zone)
    pool_a.refresh_from_db()
    at = datetime(2026, 11, 2, 10, 15, tzinfo=UTC)
    TelemetrySample.objects.bulk_create([sample(device_a, at, temperature=25.0)])
    (row,) = telemetry_history(
        pool=pool_a, start=at - timedelta(days=2), end=at + timedelta(days=2), size=size
    )
    assert row["start"] == first_start
    assert row["start"] <= at < row["start"] + timedelta(seconds=size)


def test_the_offset_is_the_one_in_force_at_the_end_of_the_range(device_a, pool_a):
    # Madrid: UTC+2 in July, UTC+1 in January. Days end at local midnight of `end`.
    summer = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    winter = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    assert pool_utc_offset(pool=pool_a, at=summer) == 7200
    assert pool_utc_offset(pool=pool_a, at=winter) == 3600
    TelemetrySample.objects.bulk_create(
        [sample(device_a, summer - timedelta(hours=1), pump=True)]
    )
    (row,) = telemetry_history(
        pool=pool_a, start=summer - timedelta(days=1), end=summer, size=86400
    )
    assert row["start"] == datetime(2026, 6, 30, 22, 0, tzinfo=UTC)


# --- empty ranges --------------------------------------------------------------------


def test_empty_ranges_have_no_buckets(login, victor, device_a, pool_a, pool_b):
    at = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    TelemetrySample.objects.bulk_create([sample(device_a, at, temperature=25.0)])
    window = {"size": 300}
    # No sample inside, an empty range, a reversed one, a pool without a device.
    assert (
        telemetry_history(
            pool=pool_a,
            start=at + timedelta(seconds=1),
            end=at + timedelta(hours=1),
            **window,
        )
        == []
    )
    assert telemetry_history(pool=pool_a, start=at, end=at, **window) == []
    assert (
        telemetry_history(pool=pool_a, start=at + timedelta(hours=1), end=at, **window)
        == []
    )
    assert (
        telemetry_history(
            pool=pool_b,
            start=at - timedelta(hours=1),
            end=at + timedelta(hours=1),
            **window,
        )
        == []
    )
    assert (
        list(
            selectors.telemetry_for_export(
                pool=pool_b, start=at - timedelta(hours=1), end=at + timedelta(hours=1)
            )
        )
        == []
    )
    body = (
        api_client(victor)
        .get(
            f"/api/v1/pools/{pool_a.code}/telemetry/",
            {"start": "2026-11-03T00:00:00Z", "end": "2026-11-04T00:00:00Z"},
        )
        .json()
    )
    assert body["buckets"] == []


# --- one data set, four ways ------------------------------------------------------


@pytest.fixture
def hours_of_samples(device_a, device_b):
    """Every minute of 18 whole hours ending 2 h before the last full hour: a
    temperature that wanders (some missing), the pump on 20 minutes an hour, the valve
    alternating by hour; plus another tenant's samples that must never count."""
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    rows = []
    for m in range(2 * 60 + 1, 20 * 60 + 1):
        ts = hour - timedelta(minutes=m)
        rows.append(
            sample(
                device_a,
                ts,
                temperature=None if m % 17 == 0 else round(24 + math.sin(m / 50), 2),
                pump=(m % 60) < 20,
                valve=1 + (m // 60) % 2,
                rssi=-60,
            )
        )
        rows.append(sample(device_b, ts, temperature=99.0, pump=True, valve=2))
    TelemetrySample.objects.bulk_create(rows, batch_size=2000)
    return rows


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def test_page_api_and_csv_show_the_same_figures(
    login, victor, pool_a, hours_of_samples
):
    page = login(victor).get(reverse("pool_history", args=[pool_a.code]))
    chart = chart_of(page)
    span = {"start": _iso(chart["start"]), "end": _iso(chart["end"])}
    api = api_client(victor)
    endpoint = f"/api/v1/pools/{pool_a.code}/telemetry/"

    # Temperature: the page's 5-minute points are the API's 5-minute buckets.
    buckets = api.get(endpoint, {**span, "resolution": 300}).json()["buckets"]
    assert len(buckets) == 18 * 12
    points = {round(p[0], 3): p[1:] for p in chart["temperature"]}
    with_temperature = [b for b in buckets if b["temperature_avg"] is not None]
    assert len(points) == len(with_temperature) > 200
    for bucket in with_temperature:
        start = datetime.fromisoformat(bucket["start"]).timestamp()
        assert points[round(start + 150, 3)] == [
            bucket["temperature_avg"],
            bucket["temperature_min"],
            bucket["temperature_max"],
        ]

    # Running time: the page's hourly hours are the API's hourly shares (whole hours).
    hourly = api.get(endpoint, {**span, "resolution": 3600}).json()["buckets"]
    runtime = {row[0]: row[1:] for row in chart["runtime"]}
    assert len(hourly) == len(runtime) == 18
    for bucket in hourly:
        start = datetime.fromisoformat(bucket["start"]).timestamp()
        assert runtime[start] == [
            round(bucket[key], 2) for key in ("pump_on", "mode1", "mode2")
        ]
        assert bucket["pump_on"] == 0.333  # 20 minutes an hour, rounded to 3 places

    # The API's CSV is its JSON, row for row.
    response = api.get(endpoint, {**span, "resolution": 300, "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [r["start"] for r in rows] == [
        datetime.fromisoformat(b["start"]).isoformat() for b in buckets
    ]
    for row, bucket in zip(rows, buckets, strict=True):
        for key in ("temperature_avg", "temperature_min", "temperature_max"):
            expected = "" if bucket[key] is None else str(bucket[key])
            assert row[key] == expected
        assert int(row["samples"]) == bucket["samples"]

    # The page's CSV has the raw samples; folded the same way, the same figures.
    export = login(victor).get(
        reverse("pool_history", args=[pool_a.code]), {"format": "csv"}
    )
    raw = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert len(raw) - 1 == 18 * 60  # the other tenant's samples are not there
    offset = chart["offset"]
    folded: dict[int, list[float]] = {}
    for time_utc, _, temperature, *_ in raw[1:]:
        if temperature:
            ts = datetime.fromisoformat(time_utc).timestamp()
            bucket = int((ts + offset) // 300) * 300 - offset
            folded.setdefault(bucket, []).append(float(temperature))
    by_start = {int(datetime.fromisoformat(b["start"]).timestamp()): b for b in buckets}
    assert set(folded) == {s for s, b in by_start.items() if b["temperature_avg"]}
    for start, values in folded.items():
        bucket = by_start[start]
        # The API rounds to 3 places; the database's sum may differ from Python's in
        # the last bits, so a mean on a rounding boundary may round either way.
        assert sum(values) / len(values) == pytest.approx(
            bucket["temperature_avg"], abs=0.0005 + 1e-9
        )
        assert (min(values), max(values)) == (
            bucket["temperature_min"],
            bucket["temperature_max"],
        )


def test_page_csv_and_api_all_read_through_pool_samples(
    login, victor, pool_a, hours_of_samples, monkeypatch
):
    """Which samples are a pool's is decided once (telemetry.selectors.pool_samples)."""
    calls = []
    real = selectors.pool_samples

    def spy(**kwargs):
        calls.append(kwargs["pool"].pk)
        return real(**kwargs)

    monkeypatch.setattr(selectors, "pool_samples", spy)
    client = login(victor)
    client.get(reverse("pool_history", args=[pool_a.code]))
    assert len(calls) == 2  # the temperature and the running-time buckets
    export = client.get(reverse("pool_history", args=[pool_a.code]), {"format": "csv"})
    b"".join(export.streaming_content)
    assert len(calls) == 3
    endpoint = f"/api/v1/pools/{pool_a.code}/telemetry/"
    api = api_client(victor)
    assert api.get(endpoint).status_code == 200
    assert api.get(endpoint, {"format": "csv"}).status_code == 200
    assert calls == [pool_a.pk] * 5
