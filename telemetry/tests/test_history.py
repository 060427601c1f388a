"""History: bucketed aggregates in SQL (PostgreSQL and SQLite alike), the charts page
and the CSV export."""

import csv
import io
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from telemetry.models import TelemetrySample
from telemetry.selectors import telemetry_buckets


def sample(device, ts, **values):
    return TelemetrySample(tenant=device.tenant, device=device, ts=ts, **values)


def chart_of(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="history-data" type="application/json">')
    return json.loads(html[start:].split(">", 1)[1].split("</script>", 1)[0])


def test_buckets_average_min_max_and_shares(device_a, device_b, pool_a):
    base = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # on a 5-minute edge
    TelemetrySample.objects.bulk_create(
        [
            sample(device_a, base, temperature=20.0, pump=True, valve=1),
            sample(device_a, base + timedelta(minutes=1), temperature=22.0, pump=True),
            sample(device_a, base + timedelta(minutes=2), temperature=24.0, pump=False),
            sample(
                device_a,
                base + timedelta(minutes=3),
                temperature=None,
                pump=True,
                valve=2,
            ),
            # next bucket
            sample(device_a, base + timedelta(minutes=5), temperature=30.0, pump=False),
            # another tenant's device never counts
            sample(device_b, base, temperature=99.0, pump=True, valve=2),
        ]
    )
    rows = telemetry_buckets(
        pool=pool_a, start=base, end=base + timedelta(hours=1), size=300
    )
    assert [r["start"] for r in rows] == [
        int(base.timestamp()),
        int(base.timestamp()) + 300,
    ]
    first, second = rows
    assert first["n"] == 4
    assert first["t_avg"] == pytest.approx(22.0)
    assert (first["t_min"], first["t_max"]) == (20.0, 24.0)
    assert first["pump_share"] == pytest.approx(0.75)
    assert first["mode1_share"] == pytest.approx(0.25)  # pump on in mode 1: 1 of 4
    assert first["mode2_share"] == pytest.approx(0.25)
    assert second["t_avg"] == pytest.approx(30.0) and second["pump_share"] == 0


def test_daily_buckets_follow_local_midnight(device_a, pool_a):
    # 23:30 and 00:30 in Madrid (UTC+1 in November) fall on two local days.
    before = datetime(2026, 11, 2, 22, 30, tzinfo=UTC)
    after = datetime(2026, 11, 2, 23, 30, tzinfo=UTC)
    TelemetrySample.objects.bulk_create(
        [sample(device_a, before, pump=True), sample(device_a, after, pump=False)]
    )
    rows = telemetry_buckets(
        pool=pool_a,
        start=before - timedelta(days=1),
        end=after + timedelta(days=1),
        size=86400,
        offset=3600,
    )
    assert len(rows) == 2
    local_midnight = datetime(2026, 11, 2, 23, 0, tzinfo=UTC).timestamp()
    assert rows[1]["start"] == local_midnight


def test_history_page_downsamples_a_month_of_minutes(
    login, victor, device_a, pool_a, django_assert_max_num_queries
):
    now = timezone.now()
    TelemetrySample.objects.bulk_create(
        (
            sample(
                device_a,
                now - timedelta(minutes=m),
                temperature=20 + (m % 60) / 10,
                pump=m % 2 == 0,
                valve=1 + m % 2,
            )
            for m in range(1, 30 * 24 * 60)
        ),
        batch_size=5000,
    )
    client = login(victor)
    started = time.perf_counter()
    with django_assert_max_num_queries(12):
        response = client.get(
            reverse("pool_history", args=[pool_a.code]), {"range": "month"}
        )
    elapsed = time.perf_counter() - started
    assert response.status_code == 200
    chart = chart_of(response)
    assert 300 <= len(chart["temperature"]) <= 500
    assert 29 <= len(chart["runtime"]) <= 31
    # Every other minute the pump ran: about 12 h a full day.
    full_days = [row for row in chart["runtime"][1:-1]]
    assert all(11.5 <= row[1] <= 12.5 for row in full_days)
    assert "vendor/chartjs/chart.umd.min.js" in response.content.decode()
    assert elapsed < 5  # generous: the budget is for slow CI machines


@pytest.mark.parametrize("range_name", ["day", "week"])
def test_history_ranges(login, olivia, device_a, pool_a, range_name):
    TelemetrySample.objects.create(
        tenant=pool_a.tenant,
        device=device_a,
        ts=timezone.now() - timedelta(minutes=3),
        temperature=25.5,
        pump=True,
        valve=1,
    )
    response = login(olivia).get(
        reverse("pool_history", args=[pool_a.code]), {"range": range_name}
    )
    assert response.status_code == 200
    chart = chart_of(response)
    assert chart["range"] == range_name
    assert chart["temperature"][0][1] == pytest.approx(25.5)


def test_history_bad_range_is_400(login, olivia, pool_a):
    response = login(olivia).get(
        reverse("pool_history", args=[pool_a.code]), {"range": "year"}
    )
    assert response.status_code == 400
    assert b"Pick a range of day, week or month" in response.content


def test_history_of_foreign_or_made_up_pool_is_404(login, carol, pool_a, device_a):
    client = login(carol)
    assert client.get(reverse("pool_history", args=[pool_a.code])).status_code == 404
    csv_url = reverse("pool_history", args=[pool_a.code]) + "?range=day&format=csv"
    assert client.get(csv_url).status_code == 404
    assert client.get(f"/pools/{uuid.uuid4().hex}/history/").status_code == 404


def test_history_csv_export(login, victor, device_a, device_b, pool_a):
    now = timezone.now()
    TelemetrySample.objects.bulk_create(
        [
            sample(
                device_a,
                now - timedelta(minutes=2),
                temperature=25.0,
                pump=True,
                valve=2,
                rssi=-61,
            ),
            sample(device_a, now - timedelta(minutes=1), temperature=None, pump=False),
            sample(device_a, now - timedelta(days=3), temperature=10.0),
            sample(device_b, now - timedelta(minutes=1), temperature=99.0),
        ]
    )
    response = login(victor).get(
        reverse("pool_history", args=[pool_a.code]), {"range": "day", "format": "csv"}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == [
        "time_utc",
        "time_local (Europe/Madrid)",
        "temperature_c",
        "pump",
        "valve",
        "rssi_dbm",
    ]
    # The valve in the pool's own mode names, not "2".
    assert [r[2:] for r in rows[1:]] == [
        ["25.0", "on", "Eyectores", "-61"],
        ["", "off", "", ""],
    ]
    local = (now - timedelta(minutes=2)).astimezone(ZoneInfo("Europe/Madrid"))
    assert rows[1][1] == local.strftime("%Y-%m-%d %H:%M:%S")


def test_history_without_device_is_empty(login, olivia, pool_a):
    with CaptureQueriesContext(connection):
        response = login(olivia).get(reverse("pool_history", args=[pool_a.code]))
    assert response.status_code == 200
    assert b"No temperature readings" in response.content
