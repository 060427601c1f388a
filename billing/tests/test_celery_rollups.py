"""The usage roll-up and the daily compaction, each run twice at once by TWO real
Celery worker processes (`celery -A poolsaas worker`, the alerts e2e test's
WorkerProcess) on the test database and this deployment's Redis: every count lands
once."""

import datetime as dt
import time

import pytest
from django.utils import timezone

from alerts.tests.test_e2e import WorkerProcess
from billing import metering
from billing.models import UsageCounter
from billing.selectors import usage_totals
from devices.tests.test_bridge import wait_for
from devices.tests.test_config_push import BridgeProcess
from poolsaas.celery import app

pytestmark = [
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.postgres_only,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def workers(tmp_path):
    env = BridgeProcess(tmp_path / "unused.log").env  # the test database's URL
    app.control.purge()  # tasks an earlier run left in the default queue
    started = [
        WorkerProcess(tmp_path / f"{name}.log", env, name).start()
        for name in ("w1", "w2")
    ]
    try:
        for worker in started:
            worker.wait_ready()
        yield started
    finally:
        for worker in started:
            worker.stop()


def run_on_both(workers, task: str) -> None:
    """Send `task` to each worker's own queue at once; wait until both finished."""
    ids = [app.send_task(task, queue=w.queue).id for w in workers]
    wait_for(
        lambda: all(w.finished(i) for w, i in zip(workers, ids, strict=True)),
        timeout=120,
        what=f"{task} to finish on both workers",
    )
    for w in workers:
        assert w.counts(task) == (1, 1), w.log()[-3000:]


def test_two_workers_roll_up_the_same_buckets_at_once_and_count_once(
    workers, redis_clean, tenant_a, tenant_b
):
    # 240 closed minute buckets (the last one two minutes old), two tenants.
    now = time.time()
    expected = {tenant_a.pk: 0, tenant_b.pk: 0}
    for i in range(240):
        at = now - 120 - 60 * i
        metering.add_many(
            {(tenant_a.pk, metering.MESSAGES_IN): i + 1, (tenant_b.pk, "api_calls"): 2},
            now=at,
        )
        expected[tenant_a.pk] += i + 1
        expected[tenant_b.pk] += 2
    run_on_both(workers, "billing.rollup_usage")
    assert usage_totals(tenant_a)[metering.MESSAGES_IN] == expected[tenant_a.pk]
    assert usage_totals(tenant_b)["api_calls"] == expected[tenant_b.pk]
    assert (
        UsageCounter.objects.filter(tenant=tenant_a, kind=metering.MESSAGES_IN).count()
        == 240
    )
    assert not list(redis_clean.scan_iter(match=f"{metering.PREFIX}*"))


def test_two_workers_compact_the_same_days_at_once_and_count_once(
    workers, tenant_a, tenant_b
):
    first = (timezone.now() - dt.timedelta(days=40)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    rows = [
        UsageCounter(
            tenant=tenant,
            kind=metering.MESSAGES_IN,
            minute=first + dt.timedelta(days=d, minutes=m),
            value=d + 1,
        )
        for tenant in (tenant_a, tenant_b)
        for d in range(20)
        for m in range(0, 1440, 15)
    ]
    UsageCounter.objects.bulk_create(rows, batch_size=2000)
    before = (usage_totals(tenant_a), usage_totals(tenant_b))
    run_on_both(workers, "billing.compact_usage")
    assert (usage_totals(tenant_a), usage_totals(tenant_b)) == before
    for tenant in (tenant_a, tenant_b):
        days = UsageCounter.objects.filter(tenant=tenant).order_by("minute")
        assert [r.minute for r in days] == [
            first + dt.timedelta(days=d) for d in range(20)
        ]
        assert [r.value for r in days] == [96 * (d + 1) for d in range(20)]
