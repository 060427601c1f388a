"""Daily telemetry roll-ups: written before retention prunes, kept far longer than
the raw samples, and read by the history (page and API) past raw retention."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.tests.conftest import make_plan  # noqa: F401 - the fixture
from poolsaas.api.testing import api_client
from telemetry.models import DailyRollup, TelemetrySample
from telemetry.rollups import device_rollup, rollups_prune
from telemetry.selectors import pool_utc_offset, telemetry_history
from telemetry.services import history_prune

pytestmark = pytest.mark.django_db


def local_midnight(pool, days_ago: int) -> dt.datetime:
    tz = ZoneInfo(pool.timezone)
    day = timezone.now().astimezone(tz).date() - dt.timedelta(days=days_ago)
    return dt.datetime.combine(day, dt.time(0), tzinfo=tz).astimezone(dt.UTC)


def samples(device, start, *, hours=24, every=10):
    """A sample every `every` minutes for `hours`: temperature 20 + the hour, the
    pump on in even hours (valve 1 before noon, 2 after), every fifth without a
    temperature."""
    rows = []
    for i in range(hours * 60 // every):
        hour = i * every // 60
        rows.append(
            TelemetrySample(
                tenant=device.tenant,
                device=device,
                ts=start + dt.timedelta(minutes=i * every),
                temperature=None if i % 5 == 4 else 20.0 + hour,
                pump=hour % 2 == 0,
                valve=1 if hour < 12 else 2,
            )
        )
    TelemetrySample.objects.bulk_create(rows)


@pytest.fixture
def free(tenant_a, make_plan):  # noqa: F811
    tenant_a.plan = make_plan(history_days=7)
    tenant_a.save()


def test_a_day_rolls_up_exactly_and_twice_is_once(device_a, pool_a):
    start = local_midnight(pool_a, 3)
    samples(device_a, start)
    samples(device_a, start + dt.timedelta(days=1), hours=2)
    device_rollup(device_a, now=timezone.now())
    device_rollup(device_a, now=timezone.now())
    days = list(DailyRollup.objects.filter(device=device_a).order_by("day"))
    assert len(days) == 2
    day = days[0]
    raw = TelemetrySample.objects.filter(
        device=device_a, ts__gte=start, ts__lt=start + dt.timedelta(days=1)
    )
    temps = [t for t in raw.values_list("temperature", flat=True) if t is not None]
    assert day.day == start.astimezone(ZoneInfo(pool_a.timezone)).date()
    assert (day.samples, day.temperature_n) == (144, len(temps))
    assert (day.temperature_min, day.temperature_max) == (min(temps), max(temps))
    assert day.temperature_sum == pytest.approx(sum(temps))
    assert (day.pump_n, day.pump_on_n) == (144, 72)
    assert (day.mode1_n, day.mode2_n) == (36, 36)
    # Today is not complete: not rolled up.
    samples(device_a, local_midnight(pool_a, 0), hours=1)
    device_rollup(device_a, now=timezone.now())
    assert DailyRollup.objects.filter(device=device_a).count() == 2


def test_history_past_raw_retention_reads_the_rollups(free, device_a, pool_a):
    old = local_midnight(pool_a, 20)
    for d in range(3):
        samples(device_a, old + dt.timedelta(days=d))
    samples(device_a, local_midnight(pool_a, 2))
    # Either side of the retention boundary: in one weekly bucket, merged.
    samples(device_a, local_midnight(pool_a, 7), hours=3)
    samples(device_a, local_midnight(pool_a, 6), hours=3)
    end = timezone.now()
    start = end - dt.timedelta(days=30)
    daily_before = telemetry_history(pool=pool_a, start=start, end=end, size=86400)
    # A bucket width whose edge is not the midnight between those two days.
    offset = pool_utc_offset(pool=pool_a, at=end)
    midnight = local_midnight(pool_a, 6).timestamp()
    wide = next(d * 86400 for d in (2, 3, 5, 7) if (midnight + offset) % (d * 86400))
    wide_before = telemetry_history(pool=pool_a, start=start, end=end, size=wide)

    out = history_prune(now=timezone.now())
    assert out["samples"] >= 3 * 144  # the raw days past 7 went...
    assert not TelemetrySample.objects.filter(
        device=device_a, ts__lt=old + dt.timedelta(days=5)
    ).exists()
    # ...their roll-ups stay (every complete day is rolled up, not only those).
    assert DailyRollup.objects.filter(device=device_a).count() == 6

    # Daily buckets are what they were, to the rounding of the average.
    daily_after = telemetry_history(pool=pool_a, start=start, end=end, size=86400)
    assert [
        {k: v for k, v in row.items() if k != "temperature_avg"} for row in daily_after
    ] == [
        {k: v for k, v in row.items() if k != "temperature_avg"} for row in daily_before
    ]
    for a, b in zip(daily_after, daily_before, strict=True):
        assert a["temperature_avg"] == pytest.approx(b["temperature_avg"], abs=1e-3)

    wide_after = telemetry_history(pool=pool_a, start=start, end=end, size=wide)
    across = [
        r
        for r in wide_after
        if r["start"].timestamp() < midnight < r["start"].timestamp() + wide
    ]
    assert across[0]["samples"] == 36  # 18 rolled up + 18 raw, in one bucket
    assert len(wide_after) == len(wide_before)
    for a, b in zip(wide_after, wide_before, strict=True):
        assert a == {
            **b,
            "temperature_avg": pytest.approx(b["temperature_avg"], abs=1e-3),
        }

    # Narrower buckets: each rolled-up day is one bucket of its own length.
    fine = telemetry_history(pool=pool_a, start=start, end=end, size=7200)
    rolled = [row for row in fine if row["start"] < local_midnight(pool_a, 6)]
    assert [row["start"] for row in rolled] == [
        old + dt.timedelta(days=d) for d in range(3)
    ] + [local_midnight(pool_a, 7)]
    assert {row["size"] for row in rolled} == {86400}
    assert rolled[0]["temperature_min"] == 20.0 and rolled[0]["temperature_max"] == 43.0
    assert rolled[0]["pump_on"] == 0.5
    recent = [row for row in fine if row["start"] >= local_midnight(pool_a, 6)]
    assert len(recent) == 12 + 2 and {row["size"] for row in recent} == {7200}


def test_the_page_and_the_api_chart_the_pruned_days(
    free, login, client, olivia, device_a, pool_a
):
    old = local_midnight(pool_a, 20)
    samples(device_a, old)
    history_prune(now=timezone.now())
    assert not TelemetrySample.objects.filter(device=device_a).exists()

    login(olivia)
    response = client.get(
        reverse("pool_history", args=[pool_a.code]), {"range": "month"}
    )
    assert response.status_code == 200
    chart = response.context["chart"]
    assert chart["temperature"][0][0] == old.timestamp() + 43200  # mid-day
    assert chart["temperature"][0][2:] == [20.0, 43.0]
    assert chart["runtime"][0][1] == 12.0  # hours of pump that day

    end = timezone.now()
    body = (
        api_client(olivia)
        .get(
            f"/api/v1/pools/{pool_a.code}/telemetry/",
            {
                "start": (end - dt.timedelta(days=30)).isoformat(),
                "end": end.isoformat(),
                "resolution": 86400,
            },
        )
        .json()
    )
    [bucket] = body["buckets"]
    assert bucket["samples"] == 144 and bucket["pump_on"] == 0.5


def test_retention_never_deletes_a_day_not_rolled_up(
    free, device_a, pool_a, monkeypatch
):
    import telemetry.rollups as rollups

    for d in range(5):
        samples(device_a, local_midnight(pool_a, 30 - d), hours=1)
    # The roll-up can only catch up two days a run.
    monkeypatch.setattr(rollups, "MAX_DAYS_PER_RUN", 2)
    monkeypatch.setattr(
        "telemetry.services.device_rollup",
        lambda device, now: rollups.device_rollup(device, now=now, max_days=2),
    )
    history_prune(now=timezone.now())
    assert DailyRollup.objects.filter(device=device_a).count() == 2
    assert TelemetrySample.objects.filter(device=device_a).count() == 3 * 6
    history_prune(now=timezone.now())
    history_prune(now=timezone.now())
    assert DailyRollup.objects.filter(device=device_a).count() == 5
    assert not TelemetrySample.objects.filter(device=device_a).exists()


def test_rollups_are_kept_for_years_then_go(free, device_a, pool_a, settings):
    samples(device_a, local_midnight(pool_a, 20), hours=1)
    history_prune(now=timezone.now())
    assert rollups_prune(now=timezone.now()) == 0
    assert rollups_prune(now=timezone.now() + dt.timedelta(days=4 * 365)) == 0
    settings.TELEMETRY_ROLLUP_DAYS = 10
    assert rollups_prune(now=timezone.now()) == 1
    assert not DailyRollup.objects.exists()


def test_a_tenant_without_a_plan_reads_raw_only(device_a, pool_a):
    samples(device_a, local_midnight(pool_a, 400), hours=1)
    history_prune(now=timezone.now())
    assert not DailyRollup.objects.exists()
    end = timezone.now()
    rows = telemetry_history(
        pool=pool_a, start=end - dt.timedelta(days=500), end=end, size=86400
    )
    assert [row["samples"] for row in rows] == [6]
