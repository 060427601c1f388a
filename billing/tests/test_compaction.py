"""Daily compaction of usage rows: minute rows older than USAGE_COMPACT_AFTER_DAYS
folded into one row per tenant, kind and UTC day, idempotently."""

import datetime as dt
import threading

import pytest
from django.db import connection

from billing import metering
from billing.models import UsageCounter
from billing.selectors import usage_daily, usage_totals
from billing.services import compact_after_days, usage_compact

pytestmark = pytest.mark.postgres_only

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
OLD = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)  # 18 days before NOW


def seed(tenant, *, day, kind=metering.MESSAGES_IN, minutes=(0, 1, 61, 1439), n=5):
    UsageCounter.objects.bulk_create(
        UsageCounter(
            tenant=tenant, kind=kind, minute=day + dt.timedelta(minutes=m), value=n
        )
        for m in minutes
    )


def rows(tenant, day):
    return sorted(
        (r.kind, r.minute, r.value)
        for r in UsageCounter.objects.filter(
            tenant=tenant, minute__gte=day, minute__lt=day + dt.timedelta(days=1)
        )
    )


@pytest.mark.django_db
def test_old_minute_rows_fold_into_one_row_per_day_and_twice_is_once(
    tenant_a, tenant_b
):
    seed(tenant_a, day=OLD)
    seed(tenant_a, day=OLD, kind=metering.API_CALLS, minutes=(30, 90), n=2)
    seed(tenant_b, day=OLD + dt.timedelta(days=1), minutes=(10, 20), n=7)
    UsageCounter.objects.create(
        tenant=tenant_a, kind=metering.ACTIVE_DEVICES, minute=OLD, value=3
    )
    recent = NOW - dt.timedelta(days=2)
    seed(tenant_a, day=recent.replace(hour=0), minutes=(5, 6), n=1)
    before = (usage_totals(tenant_a), usage_totals(tenant_b))
    daily = usage_daily(tenant=tenant_a, since=OLD, until=NOW)

    assert usage_compact(now=NOW) == 3 + 2 + 2  # rows deleted once folded
    assert rows(tenant_a, OLD) == [
        (metering.ACTIVE_DEVICES, OLD, 3),  # a gauge: left alone
        (metering.API_CALLS, OLD, 4),
        (metering.MESSAGES_IN, OLD, 20),
    ]
    assert rows(tenant_b, OLD + dt.timedelta(days=1)) == [
        (metering.MESSAGES_IN, OLD + dt.timedelta(days=1), 14)
    ]
    # Younger than the cut-off: untouched.
    assert len(rows(tenant_a, recent.replace(hour=0))) == 2
    # Totals (the quota, the invoice) and the per-day chart are what they were.
    assert (usage_totals(tenant_a), usage_totals(tenant_b)) == before
    assert usage_daily(tenant=tenant_a, since=OLD, until=NOW) == daily

    # Run again: nothing left to fold, nothing changes.
    assert usage_compact(now=NOW) == 0
    assert (usage_totals(tenant_a), usage_totals(tenant_b)) == before
    assert rows(tenant_a, OLD)[2] == (metering.MESSAGES_IN, OLD, 20)


@pytest.mark.django_db
def test_a_late_row_into_a_compacted_day_is_folded_in_next_time(tenant_a):
    seed(tenant_a, day=OLD)
    usage_compact(now=NOW)
    seed(tenant_a, day=OLD, minutes=(500,), n=1)
    usage_compact(now=NOW)
    assert rows(tenant_a, OLD) == [(metering.MESSAGES_IN, OLD, 21)]


@pytest.mark.django_db
def test_runs_are_bounded_and_resume(tenant_a):
    for d in range(5):
        seed(tenant_a, day=OLD + dt.timedelta(days=d), minutes=(1, 2))
    usage_compact(now=NOW, max_days=2)
    assert UsageCounter.objects.filter(tenant=tenant_a).count() == 2 + 3 * 2
    usage_compact(now=NOW, max_days=10)
    assert UsageCounter.objects.filter(tenant=tenant_a).count() == 5
    assert usage_totals(tenant_a) == {metering.MESSAGES_IN: 50}


def test_compaction_waits_longer_than_a_bucket_can_live(settings):
    settings.USAGE_COMPACT_AFTER_DAYS = 1
    assert compact_after_days() * 86400 > metering.BUCKET_TTL


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_compactions_count_once(tenant_a):
    for d in range(10):
        seed(tenant_a, day=OLD + dt.timedelta(days=d), minutes=range(0, 1440, 7), n=3)
    total = usage_totals(tenant_a)
    barrier = threading.Barrier(2)
    errors = []

    def run():
        barrier.wait(5)
        try:
            usage_compact(now=NOW + dt.timedelta(days=20))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert UsageCounter.objects.filter(tenant=tenant_a).count() == 10
    assert usage_totals(tenant_a) == total
