"""/api/v1/pools/{code}/telemetry/: the pool's history in buckets, as JSON and CSV."""

import csv
import datetime as dt
import io

import pytest
from django.utils import timezone

from poolsaas.api.testing import api_client, assert_error
from telemetry.models import TelemetrySample

POOLS = "/api/v1/pools/"


def url(pool, suffix=""):
    return f"{POOLS}{pool.code}/{suffix}"


@pytest.fixture
def day_of_samples(device_a):
    start = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    TelemetrySample.objects.bulk_create(
        TelemetrySample(
            tenant=device_a.tenant,
            device=device_a,
            ts=start + dt.timedelta(minutes=i),
            temperature=20.0 + (i // 60),  # one degree more each hour
            pump=(i // 60) % 2 == 0,
            valve=1,
        )
        for i in range(24 * 60)
    )
    return start


def test_telemetry_is_downsampled_into_buckets(victor, day_of_samples, device_a):
    start = day_of_samples
    response = api_client(victor).get(
        url(device_a.pool, "telemetry/"),
        {
            "start": start.isoformat(),
            "end": (start + dt.timedelta(days=1)).isoformat(),
            "resolution": 3600,
        },
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["resolution"] == 3600
    assert len(body["buckets"]) == 24
    first, second = body["buckets"][:2]
    assert first["samples"] == 60
    assert first["temperature_avg"] == 20.0 and second["temperature_avg"] == 21.0
    assert first["pump_on"] == 1.0 and second["pump_on"] == 0.0
    assert first["mode1"] == 1.0


def test_telemetry_picks_a_resolution(victor, day_of_samples, device_a):
    start = day_of_samples
    body = (
        api_client(victor)
        .get(
            url(device_a.pool, "telemetry/"),
            {
                "start": start.isoformat(),
                "end": (start + dt.timedelta(days=7)).isoformat(),
            },
        )
        .json()
    )
    assert body["resolution"] == 900  # 672 buckets of 15 minutes for a week
    assert sum(b["samples"] for b in body["buckets"]) == 24 * 60


def test_telemetry_as_csv(victor, day_of_samples, device_a):
    start = day_of_samples
    params = {
        "start": start.isoformat(),
        "end": (start + dt.timedelta(hours=2)).isoformat(),
        "resolution": 3600,
    }
    client = api_client(victor)
    for response in (
        client.get(url(device_a.pool, "telemetry/"), {**params, "format": "csv"}),
        client.get(url(device_a.pool, "telemetry/"), params, HTTP_ACCEPT="text/csv"),
    ):
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.content.decode())))
        assert len(rows) == 2
        assert rows[0]["start"].startswith("2026-06-01T00:00:00")
        assert float(rows[1]["temperature_avg"]) == 21.0


def test_telemetry_defaults_to_the_last_day(victor, device_a):
    TelemetrySample.objects.create(
        tenant=device_a.tenant,
        device=device_a,
        ts=timezone.now() - dt.timedelta(hours=1),
        temperature=24.0,
    )
    TelemetrySample.objects.create(
        tenant=device_a.tenant,
        device=device_a,
        ts=timezone.now() - dt.timedelta(days=3),
        temperature=10.0,
    )
    body = api_client(victor).get(url(device_a.pool, "telemetry/")).json()
    assert [b["temperature_avg"] for b in body["buckets"]] == [24.0]


@pytest.mark.parametrize(
    "params, field",
    [
        ({"start": "yesterday"}, "start"),
        ({"start": "2026-06-02T00:00:00Z", "end": "2026-06-01T00:00:00Z"}, "start"),
        ({"resolution": 5}, "resolution"),
        (
            {
                "start": "2026-01-01T00:00:00Z",
                "end": "2026-06-01T00:00:00Z",
                "resolution": 60,
            },
            "resolution",
        ),
    ],
)
def test_telemetry_bad_query_is_400(victor, device_a, params, field):
    response = api_client(victor).get(url(device_a.pool, "telemetry/"), params)
    error = assert_error(response, 400, "invalid")
    assert field in error["fields"]


def test_telemetry_of_another_tenant_is_404(carol, day_of_samples, device_a):
    assert_error(api_client(carol).get(url(device_a.pool, "telemetry/")), 404)


def test_telemetry_errors_stay_json_when_csv_was_asked(victor, device_a):
    response = api_client(victor).get(
        url(device_a.pool, "telemetry/"), {"format": "csv", "resolution": 1}
    )
    assert response["Content-Type"] == "application/json"
    assert "resolution" in assert_error(response, 400)["fields"]
