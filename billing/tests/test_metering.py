"""Usage counters in Redis and their idempotent roll-up into PostgreSQL."""

import threading

import pytest
from django.db import connection

from billing import metering
from billing.models import UsageCounter
from billing.selectors import usage_totals
from billing.services import rollup, usage_bucket_store
from devices.bridge.directory import DeviceInfo
from devices.bridge.rooms import Dispatcher

pytestmark = [pytest.mark.redis, pytest.mark.postgres_only]

T0 = 1_800_000_000.0  # a fixed instant: no wall clock in these tests


@pytest.mark.django_db
def test_counts_roll_up_once_when_run_twice(redis_clean, tenant_a, tenant_b):
    metering.add_many(
        {(tenant_a.pk, metering.MESSAGES_IN): 7, (tenant_b.pk, "api_calls"): 3},
        now=T0,
    )
    metering.add(tenant_a.pk, metering.MESSAGES_IN, 5, now=T0)
    # The bucket is still open in its own minute, then in its grace minute.
    assert rollup(now=T0) == 0
    assert rollup(now=T0 + 60) == 0
    assert rollup(now=T0 + 120) == 2
    assert rollup(now=T0 + 120) == 0
    assert usage_totals(tenant_a) == {metering.MESSAGES_IN: 12}
    assert usage_totals(tenant_b) == {"api_calls": 3}


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_rollups_count_once(redis_clean, tenant_a):
    for i in range(5):
        metering.add(tenant_a.pk, metering.MESSAGES_IN, 10, now=T0 + i * 60)
    barrier = threading.Barrier(2)

    def run():
        barrier.wait(5)
        try:
            rollup(now=T0 + 600)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert UsageCounter.objects.filter(tenant=tenant_a).count() == 5
    assert usage_totals(tenant_a) == {metering.MESSAGES_IN: 50}


@pytest.mark.django_db
def test_a_rollup_that_died_before_deleting_its_bucket_is_redone_once(
    redis_clean, tenant_a
):
    metering.add(tenant_a.pk, metering.MESSAGES_IN, 6, now=T0)
    key = f"{metering.PREFIX}{metering.minute_of(T0)}"
    # The first worker stored the bucket, then died before deleting it.
    usage_bucket_store(minute=metering.minute_of(T0), fields=redis_clean.hgetall(key))
    assert redis_clean.exists(key)
    rollup(now=T0 + 120)
    rollup(now=T0 + 120)
    assert usage_totals(tenant_a) == {metering.MESSAGES_IN: 6}


@pytest.mark.django_db
def test_redis_loss_between_rollups_loses_only_unrolled_buckets(redis_clean, tenant_a):
    metering.add(tenant_a.pk, metering.MESSAGES_IN, 4, now=T0)
    rollup(now=T0 + 120)
    # Counted after the last roll-up, then Redis loses everything.
    metering.add(tenant_a.pk, metering.MESSAGES_IN, 9, now=T0 + 120)
    redis_clean.flushdb()  # this worktree's own DB: as a restart without persistence
    rollup(now=T0 + 240)
    # The window stated in docs/billing.md: what was not rolled up yet, nothing more.
    assert usage_totals(tenant_a) == {metering.MESSAGES_IN: 4}


def test_dispatcher_counts_each_accepted_message_once_per_tenant():
    class Room:
        name = "r"
        suffixes = ["telemetry"]

        def handle(self, message, ctx):
            return message.payload != b"bad"

    class Directory:
        def lookup(self, broker_id, topic):
            tenant = 1 if "/a/" in topic else 2
            info = DeviceInfo(
                pk=tenant, broker_id=1, device_id="d", tenant_id=tenant,
                tenant_hex="", pool_id=None, pool_hex=None, protocol="v4",
                silence_s=60,
            )  # fmt: skip
            return info, "telemetry"

    d = Dispatcher(rooms=[Room()], directory=Directory())
    for payload in (b"1", b"2", b"bad"):
        d.handle(1, "p/a/telemetry", payload, 0.0)
    d.handle(1, "p/b/telemetry", b"1", 0.0)
    assert dict(d.usage) == {1: 2, 2: 1}


def test_over_quota_history_is_counted_and_dropped_the_rest_handled():
    handled, shed = [], []

    class Room:
        name = "r"
        suffixes = ["telemetry", "ack"]
        sheddable = ("telemetry",)

        def sheds(self, message):
            return message.suffix in self.sheddable

        def handle(self, message, ctx):
            handled.append((message.device.tenant_id, message.suffix))
            return True

        def shed(self, message, ctx):
            shed.append((message.device.tenant_id, message.suffix))

    class Directory:
        def lookup(self, broker_id, topic):
            tenant = 1 if "/a/" in topic else 2
            info = DeviceInfo(
                pk=tenant, broker_id=1, device_id="d", tenant_id=tenant,
                tenant_hex="", pool_id=None, pool_hex=None, protocol="v4",
                silence_s=60,
            )  # fmt: skip
            return info, topic.rsplit("/", 1)[1]

    d = Dispatcher(rooms=[Room()], directory=Directory())
    d.over_quota = frozenset({1})
    assert not d.handle(1, "p/a/telemetry", b"{}", 0.0)
    assert d.handle(1, "p/a/ack", b"{}", 0.0)  # commands still settle
    assert d.handle(1, "p/b/telemetry", b"{}", 0.0)  # another tenant: as usual
    assert shed == [(1, "telemetry")]
    assert handled == [(1, "ack"), (2, "telemetry")]
    assert dict(d.usage) == {1: 2, 2: 1} and dict(d.shed) == {1: 1}
    assert d.counters["over_quota"] == 1


@pytest.mark.django_db
def test_the_over_quota_snapshot_names_tenants_at_their_monthly_quota(
    redis_clean, tenant_a, tenant_b, make_plan
):
    import datetime as dt

    from billing.models import UsageCounter
    from billing.services import quota_snapshot_publish

    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    tenant_a.plan = make_plan(messages_per_month=100)
    tenant_a.save()
    tenant_b.plan = make_plan(messages_per_month=100)
    tenant_b.save()
    for tenant, value, at in (
        (tenant_a, 60, now),
        (tenant_a, 40, now - dt.timedelta(days=3)),
        (tenant_b, 99, now),
        (tenant_b, 500, now - dt.timedelta(days=30)),  # last month's
    ):
        UsageCounter.objects.create(
            tenant=tenant, kind=metering.MESSAGES_IN, minute=at, value=value
        )
    assert quota_snapshot_publish(now=now) == {tenant_a.pk}
    assert metering.over_quota() == {tenant_a.pk}
    redis_clean.delete(metering.OVER_QUOTA_KEY)
    assert metering.over_quota() == frozenset()  # no snapshot: nobody refused


def pending(r, tenant_id: int, kind: str) -> int:
    """What the buckets hold for (tenant, kind), whatever minute they are of."""
    field = f"{tenant_id}:{kind}"
    return sum(
        int(r.hget(key, field) or 0) for key in r.scan_iter(f"{metering.PREFIX}*")
    )


@pytest.mark.django_db
def test_commands_by_source_and_api_calls_are_metered(
    redis_clean, alice, victor, device_a, django_capture_on_commit_callbacks
):
    from devices.services.commands import command_send
    from poolsaas.api.testing import api_client

    tenant_id = alice.tenant_id
    device_a.online = True
    device_a.save()
    with django_capture_on_commit_callbacks(execute=True):
        command_send(membership=alice, pool=device_a.pool, op="pump", value="ON")
        command_send(
            membership=alice, pool=device_a.pool, op="pump", value="OFF", source="api"
        )
    device_a.online = False
    device_a.save()
    with django_capture_on_commit_callbacks(execute=True):
        # Failed at once (offline): nothing goes out, nothing is counted.
        command_send(membership=alice, pool=device_a.pool, op="pump", value="ON")
    assert pending(redis_clean, tenant_id, metering.commands_out("web")) == 1
    assert pending(redis_clean, tenant_id, "commands_out:page") == 1
    assert pending(redis_clean, tenant_id, "commands_out:api") == 1

    client = api_client(victor)
    for _ in range(3):
        assert client.get("/api/v1/pools/").status_code == 200
    metering.batcher.flush()
    assert pending(redis_clean, tenant_id, metering.API_CALLS) == 3


@pytest.mark.django_db
def test_active_devices_is_a_daily_gauge(tenant_a, device_a, device_b):
    import datetime as dt

    from billing.services import active_devices_record

    now = dt.datetime(2026, 11, 20, 15, tzinfo=dt.UTC)
    device_a.last_seen_at = now - dt.timedelta(hours=2)
    device_a.save()
    device_b.last_seen_at = now - dt.timedelta(days=1)  # yesterday: not today
    device_b.save()
    assert active_devices_record(now=now) == 1
    assert active_devices_record(now=now) == 1  # set, not added
    assert usage_totals(tenant_a) == {metering.ACTIVE_DEVICES: 1}
