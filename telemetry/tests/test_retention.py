"""History retention: samples, device events and finished commands past the plan's
`history_days` are deleted, in bounded batches of short transactions; nothing else."""

import datetime as dt
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.tests.conftest import make_plan  # noqa: F401, F811 - the fixture
from devices.models import Command, DeviceEvent
from telemetry.models import TelemetrySample
from telemetry.services import history_prune

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 11, 15, 12, 0, tzinfo=dt.UTC)


def history(device, *, days_ago: float, n: int = 1):
    at = NOW - dt.timedelta(days=days_ago)
    TelemetrySample.objects.bulk_create(
        TelemetrySample(tenant=device.tenant, device=device, ts=at, temperature=20.0)
        for _ in range(n)
    )
    DeviceEvent.objects.bulk_create(
        DeviceEvent(
            tenant=device.tenant, device=device, pool=device.pool, ts=at, kind="x"
        )
        for _ in range(n)
    )
    # A pool-level event (no device), as the services write for a device added.
    DeviceEvent.objects.create(tenant=device.tenant, pool=device.pool, ts=at, kind="p")
    for status in ("done", "pending"):
        command = Command.objects.create(
            tenant=device.tenant,
            device=device,
            pool=device.pool,
            op="pump",
            value="ON",
            status=status,
            expires_at=at,
        )
        Command.objects.filter(pk=command.pk).update(created_at=at)


@pytest.fixture
def plans(tenant_a, tenant_b, make_plan):  # noqa: F811
    tenant_a.plan = make_plan(history_days=7)
    tenant_a.save()
    tenant_b.plan = make_plan(history_days=30)
    tenant_b.save()


def counts(device):
    return (
        TelemetrySample.objects.filter(device=device).count(),
        DeviceEvent.objects.filter(pool=device.pool).count(),
        Command.objects.filter(device=device).count(),
    )


def test_deletes_past_the_plans_retention_and_nothing_else(plans, device_a, device_b):
    for device in (device_a, device_b):
        history(device, days_ago=10, n=5)  # past A's 7 days, within B's 30
        history(device, days_ago=6, n=3)  # within both
        history(device, days_ago=40, n=2)  # past both
    out = history_prune(now=NOW)
    # A: the 10- and 40-day-old samples (5 + 2), events (6 + 3), done commands (2).
    assert out == {"samples": 7 + 2, "events": 9 + 3, "commands": 2 + 1}
    assert counts(device_a) == (3, 4, 3 + 1)  # pending commands all stay
    cutoff = NOW - dt.timedelta(days=7)
    assert not TelemetrySample.objects.filter(device=device_a, ts__lt=cutoff).exists()
    # B: only what is past 30 days.
    assert counts(device_b) == (5 + 3, 6 + 4, 6 - 1)
    assert history_prune(now=NOW) == {"samples": 0, "events": 0, "commands": 0}


def test_a_tenant_without_a_plan_keeps_its_history(tenant_a, device_a):
    history(device_a, days_ago=4000, n=3)
    assert history_prune(now=NOW) == {"samples": 0, "events": 0, "commands": 0}
    assert counts(device_a) == (3, 4, 2)


def test_deletes_in_bounded_batches_and_resumes(plans, device_a):
    history(device_a, days_ago=10, n=10)
    with CaptureQueriesContext(connection) as queries:
        out = history_prune(now=NOW, batch=3, max_batches=3)
    deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3
    # Each DELETE names its batch of ids (at most 3), no condition of its own.
    for sql in deletes:
        ids = re.search(r"WHERE \S+\.\"id\" IN \(([^)]*)\)$", sql)
        assert ids, sql
        assert len(ids.group(1).split(",")) <= 3
    assert out["samples"] == 9 and out["events"] == 0
    # The next runs pick up where this one stopped.
    history_prune(now=NOW, batch=3, max_batches=100)
    assert counts(device_a) == (0, 0, 1)  # the pending command stays
