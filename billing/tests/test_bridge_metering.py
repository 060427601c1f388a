"""Metering end to end with the real bridge, Mosquitto, PostgreSQL and Redis.

- Two `manage.py mqtt_bridge` processes share the platform broker's subscriptions:
  every message is counted once, exactly (the roll-up sums what both counted).
- A Redis that loses its data between roll-ups (FLUSHDB of this worktree's own DB,
  as a restart without persistence) loses what was not rolled up yet, nothing more.
- A tenant over its monthly message quota: its history is counted and dropped in the
  bridge, while the device stays online and commands still complete.
"""

import ast
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from django.utils import timezone

from billing import metering
from billing.models import UsageCounter
from billing.selectors import period_bounds, usage_totals
from billing.services import quota_snapshot_publish, rollup
from devices.models import Device, DeviceEvent
from devices.services.commands import command_send
from devices.tests.test_bridge import esp_id, make_device, status, wait_for
from devices.tests.test_bridge_core import telemetry
from devices.tests.test_config_push import BridgeProcess
from firmware.sim import VirtualDevice
from telemetry.models import TelemetrySample

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.redis,
    pytest.mark.postgres_only,
    pytest.mark.django_db(transaction=True),
]

# Past every bucket written during the test: the roll-up may take them all.
LATER = 600


class Publisher:
    """Publishes QoS 1 and waits for each PUBACK: the broker has every message."""

    def __init__(self):
        self.c = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"meter-{uuid.uuid4().hex[:8]}",
        )
        self.c.connect("127.0.0.1", 1883)
        self.c.loop_start()

    def send(self, topic: str, payloads) -> int:
        infos = [self.c.publish(topic, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(10)
        return len(infos)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def bridges(tmp_path, platform_broker, redis_clean):
    procs = [BridgeProcess(tmp_path / f"bridge{i}.log") for i in (1, 2)]
    yield procs
    for proc in procs:
        proc.stop()


def stopped_stats(proc: BridgeProcess) -> dict:
    """The stats the bridge prints on its way out."""
    line = proc.log().rsplit("mqtt bridge stopped: ", 1)[1].splitlines()[0]
    return ast.literal_eval(line)


def stored(device) -> int:
    return TelemetrySample.objects.filter(device=device).count()


def prime(pub, prefix, pool, broker) -> None:
    """Until a bridge is subscribed to `prefix`: messages of a probe device of
    another tenant until one is stored (some may land later; they are counted for
    that tenant, never for the one under test)."""
    probe = make_device(pool, prefix, esp_id(), broker=broker)
    topic = f"{prefix}/{probe.device_id}/telemetry"
    for seq in range(200):
        pub.send(topic, [telemetry(seq=seq)])
        try:
            wait_for(lambda: stored(probe) > 0, timeout=0.5)
            return
        except AssertionError:
            continue
    raise AssertionError("no bridge subscribed")


def test_two_bridge_processes_count_every_message_once(
    bridges, prefix, pool_a, pool_b, platform_broker
):
    device = make_device(pool_a, prefix, esp_id(), broker=platform_broker)
    topic = f"{prefix}/{device.device_id}/telemetry"
    for proc in bridges:
        proc.start()
    pub = Publisher()
    try:
        prime(pub, prefix, pool_b, platform_broker)
        count = 400
        pub.send(topic, (telemetry(seq=1000 + i) for i in range(count)))
        wait_for(lambda: stored(device) == count, timeout=120, what="stored")
    finally:
        pub.close()
    for proc in bridges:
        proc.stop()  # drains: the last counts reach Redis on the way out
    one, two = (stopped_stats(p) for p in bridges)
    # Both took part (with the probe's messages, which may be a few).
    assert one.get("accepted", 0) > 0 and two.get("accepted", 0) > 0, (one, two)
    assert one["accepted"] + two["accepted"] >= count

    # Rolled up twice: counted once.
    rollup(now=time.time() + LATER)
    rollup(now=time.time() + LATER)
    totals = usage_totals(pool_a.tenant)
    assert totals[metering.MESSAGES_IN] == count
    assert totals[metering.SAMPLES_STORED] == count
    assert stored(device) == count


def test_redis_losing_its_data_loses_only_what_was_not_rolled_up(
    bridges, redis_clean, prefix, pool_a, pool_b, platform_broker
):
    device = make_device(pool_a, prefix, esp_id(), broker=platform_broker)
    topic = f"{prefix}/{device.device_id}/telemetry"
    bridge = bridges[0].start()
    pub = Publisher()
    try:
        prime(pub, prefix, pool_b, platform_broker)
        first = pub.send(topic, (telemetry(seq=i) for i in range(50)))
        wait_for(lambda: stored(device) == first, timeout=120, what="first batch")
        # Samples are written after the drain that hands their counts to Redis.
        wait_for(lambda: sum_pending(redis_clean, device) == 2 * first, timeout=60)
        # A roll-up sees closed buckets only: let the bridge's minute pass first
        # (rolling up the minute it still writes in would be a clock running ahead,
        # the caveat of docs/billing.md).
        last = max(bucket_minutes(redis_clean))
        wait_for(lambda: metering.minute_of() > last, timeout=70, what="next minute")
        rollup(now=time.time() + LATER)
        assert usage_totals(pool_a.tenant)[metering.MESSAGES_IN] == first

        lost = pub.send(topic, (telemetry(seq=100 + i) for i in range(30)))
        wait_for(lambda: stored(device) == first + lost, timeout=120, what="2nd")
        wait_for(lambda: sum_pending(redis_clean, device) == 2 * lost, timeout=60)
        redis_clean.flushdb()  # Redis restarted without its data

        after = pub.send(topic, (telemetry(seq=200 + i) for i in range(40)))
        wait_for(
            lambda: stored(device) == first + lost + after, timeout=120, what="3rd"
        )
    finally:
        pub.close()
    bridge.stop()
    rollup(now=time.time() + LATER)
    totals = usage_totals(pool_a.tenant)
    # The window stated in docs/billing.md: what was counted since the last roll-up
    # is gone, everything before it and after the restart is exact.
    assert totals[metering.MESSAGES_IN] == first + after
    assert totals[metering.SAMPLES_STORED] == first + after


def bucket_minutes(r) -> list[int]:
    return [int(k.decode().split(":")[1]) for k in r.scan_iter(f"{metering.PREFIX}*")]


def sum_pending(r, device) -> int:
    """messages_in + samples_stored of the device's tenant in the open buckets."""
    fields = [f"{device.tenant_id}:{k}" for k in ("messages_in", "samples_stored")]
    return sum(
        int(r.hget(key, f) or 0)
        for key in r.scan_iter(f"{metering.PREFIX}*")
        for f in fields
    )


def test_over_quota_history_is_dropped_and_commands_still_work(
    make_bridge,
    redis_clean,
    make_plan,
    prefix,
    alice,
    pool_a,
    platform_broker,
):
    tenant = pool_a.tenant
    tenant.plan = make_plan(messages_per_month=10)
    tenant.save()
    UsageCounter.objects.create(
        tenant=tenant,
        kind=metering.MESSAGES_IN,
        minute=period_bounds(timezone.now())[0],  # earlier this month
        value=10,
    )
    assert quota_snapshot_publish() == {tenant.pk}
    device = make_device(pool_a, prefix, esp_id(), broker=platform_broker)
    bridge = make_bridge()
    assert bridge.wait_ready()
    with VirtualDevice(
        device.device_id, prefix=prefix, clean_session=True, reconnect_delay=(1, 2)
    ) as sim:
        sim.wait_connected()
        wait_for(lambda: Device.objects.get(pk=device.pk).online, what="online")
        wait_for(
            lambda: DeviceEvent.objects.filter(device=device, kind="device.boot"),
            what="boot event (events are never dropped)",
        )
        wait_for(lambda: bridge.stats().get("over_quota", 0) > 0, what="a drop")
        command = command_send(
            membership=alice, pool=pool_a, op="timer", value={"mode": 2, "duration": 60}
        )
        wait_for(lambda: status(command) == "done", what="the ack")
    dropped = bridge.stats()["over_quota"]
    bridge.stop()
    assert not TelemetrySample.objects.filter(device=device).exists(), (
        list(TelemetrySample.objects.filter(device=device).values()),
        bridge.stats(),
    )
    device.refresh_from_db()
    assert device.last_seen_at is not None  # presence kept
    rollup(now=time.time() + LATER)
    totals = usage_totals(tenant)
    assert totals[metering.MESSAGES_DROPPED] == dropped
    assert totals[metering.MESSAGES_IN] >= 10 + dropped
    assert metering.SAMPLES_STORED not in totals
