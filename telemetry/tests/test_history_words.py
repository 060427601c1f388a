"""The history page in the pool's words (issue 9): the CSV in the pool's mode names,
and the page and the API telling the same story from one bucketing."""

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone

from poolsaas.api.testing import api_client
from telemetry.models import TelemetrySample

pytestmark = pytest.mark.django_db


def test_the_page_csv_uses_the_pool_mode_names(login, victor, device_a, pool_a):
    TelemetrySample.objects.create(
        tenant=pool_a.tenant,
        device=device_a,
        ts=timezone.now() - timedelta(minutes=3),
        temperature=25.0,
        pump=True,
        valve=1,
    )
    response = login(victor).get(
        reverse("pool_history", args=[pool_a.code]), {"range": "day", "format": "csv"}
    )
    body = b"".join(response.streaming_content).decode()
    assert ",on,Cascada," in body


def test_page_and_api_share_one_bucketing(login, victor, device_a, pool_a):
    # Two whole local days of samples, a week back: the page's daily running time
    # and the API's daily buckets must tell the same story.
    tz = ZoneInfo(pool_a.timezone)
    midnight = timezone.now().astimezone(tz).replace(
        hour=0, minute=0, second=0, microsecond=0
    ) - timedelta(days=3)
    samples = []
    for minute in range(0, 2 * 24 * 60, 10):
        ts = midnight + timedelta(minutes=minute)
        on = 8 <= ts.astimezone(tz).hour < 14
        samples.append(
            TelemetrySample(
                tenant=pool_a.tenant,
                device=device_a,
                ts=ts,
                temperature=25.0,
                pump=on,
                valve=2,
            )
        )
    TelemetrySample.objects.bulk_create(samples)
    client = login(victor)
    page = client.get(reverse("pool_history", args=[pool_a.code]), {"range": "week"})
    html = page.content.decode()
    start = html.index('<script id="history-data" type="application/json">')
    chart = json.loads(html[start:].split(">", 1)[1].split("</script>", 1)[0])
    by_day = {row[0]: row for row in chart["runtime"]}
    api = (
        api_client(victor)
        .get(
            f"/api/v1/pools/{pool_a.code.hex}/telemetry/",
            {
                "start": (midnight - timedelta(days=1)).isoformat(),
                "end": (midnight + timedelta(days=3)).isoformat(),
                "resolution": 86400,
            },
        )
        .json()
    )
    whole = [b for b in api["buckets"] if b["samples"] == 144]  # the two full days
    assert len(whole) == 2
    for bucket in whole:
        ts = datetime.fromisoformat(bucket["start"].replace("Z", "+00:00"))
        assert (ts.astimezone(tz).hour, ts.astimezone(tz).minute) == (0, 0)
        row = by_day[ts.timestamp()]
        assert row[1] == pytest.approx(6.0, abs=0.01)  # hours of pump that day
        assert bucket["pump_on"] * 24 == pytest.approx(row[1], abs=0.01)
        assert bucket["mode2"] * 24 == pytest.approx(row[3], abs=0.01)
