"""Faults one tenant (its devices, its broker, its DNS) must not turn against the
others: a row the database refuses, a broker that sends what MQTT forbids or more
than we hold, a broker name that resolves elsewhere on the second look.

The ingest tests run on both databases; the bridge tests use the real bridge, the
machine's Mosquitto (or a private one) and PostgreSQL.
"""

import contextlib
import time

import pytest
from django.db import connection

from devices.bridge.core import Directory, IngestCore
from devices.models import Device, DeviceEvent, TelemetrySample
from devices.selectors import devices_for_bridge
from devices.services.ingest import ingest_write
from devices.services.onboarding import device_remove
from devices.tests import test_bridge
from devices.tests.test_bridge import Publisher, esp_id, make_device, wait_for
from devices.tests.test_bridge_ingest import telemetry
from firmware import protocol

# The bridge tests' fixtures, shared.
make_bridge = test_bridge.make_bridge
prefix = test_bridge.prefix


def _core(*devices):
    brokers = sorted({d.broker_id for d in devices})
    return IngestCore(Directory.build(devices_for_bridge(broker_ids=brokers)))


def _report(core, device, temp, at):
    root = f"devices/{device.device_id}"
    core.handle(device.broker_id, f"{root}/telemetry", telemetry(temp=temp), at)
    core.handle(
        device.broker_id,
        f"{root}/event",
        protocol.encode_event(0, "boot", {"reason": "x"}),
        at,
    )


def _write(effects):
    return ingest_write(
        writes=effects.writes,
        samples=effects.samples,
        events=effects.events,
        now=time.time(),
    )


# --- defect 1: a refused row must not hold back anybody else's ----------------------


@pytest.mark.django_db(transaction=True)
def test_rows_of_a_removed_device_are_dropped_and_the_rest_written(device_a, device_b):
    core = _core(device_a, device_b)
    now = time.time()
    for i in range(3):
        _report(core, device_a, 20 + i, now + i)
        _report(core, device_b, 30 + i, now + i)
    effects = core.drain()
    # Removed after the bridge built its directory: its rows fail the foreign keys.
    gone = device_b.pk
    device_b.delete()

    dropped = _write(effects)

    assert set(dropped) == {gone} and dropped[gone] >= 4
    assert TelemetrySample.objects.filter(device=device_a).count() == 3
    assert DeviceEvent.objects.filter(device=device_a, kind="device.boot").exists()
    assert Device.objects.get(pk=device_a.pk).state["temperature"] == 22
    assert not TelemetrySample.objects.filter(device_id=gone).exists()


@pytest.mark.django_db(transaction=True)
def test_a_value_the_database_refuses_costs_only_its_device(device_a, device_b):
    """Whatever else the database may refuse (here a number JSON cannot hold, which
    the protocol parser would never let through): found device by device, the
    others' rows are written."""
    core = _core(device_a, device_b)
    now = time.time()
    _report(core, device_a, 21, now)
    _report(core, device_b, 31, now)
    effects = core.drain()
    info_b = core.directory.by_pk[device_b.pk]
    effects.events.append((info_b, now, "device.error", "x", {"n": float("inf")}))

    dropped = _write(effects)

    assert set(dropped) == {device_b.pk}
    assert TelemetrySample.objects.filter(device=device_a).count() == 1
    assert DeviceEvent.objects.filter(device=device_a).exists()
    assert not DeviceEvent.objects.filter(device=device_b).exists()
    assert not TelemetrySample.objects.filter(device=device_b).exists()


bridge_test = [
    pytest.mark.mqtt,
    pytest.mark.postgres_only,
    pytest.mark.django_db(transaction=True),
]


def _mark(*marks):
    def apply(test):
        for mark in marks:
            test = mark(test)
        return test

    return apply


@_mark(*bridge_test)
def test_removing_a_publishing_device_does_not_stop_anybody_elses_ingest(
    make_bridge,
    prefix,
    alice,
    pool_a,
    pool_b,
    platform_broker,
):
    removed = make_device(pool_a, prefix, esp_id(), broker=platform_broker)
    other = make_device(pool_b, prefix, esp_id(), broker=platform_broker)
    # No refresh after the first: the removed device stays in the bridge's
    # directory, as it does for up to 5 s in production.
    bridge = make_bridge(refresh_interval=3600)
    assert bridge.wait_ready()
    pub = Publisher()
    try:
        for device in (removed, other):
            pub.pub(f"{prefix}/{device.device_id}/telemetry", telemetry(temp=20.0))
        wait_for(
            lambda: TelemetrySample.objects.filter(device=other).count() == 1,
            what="first sample",
        )
        device_remove(membership=alice, device=removed)
        for i in range(1, 4):
            # The removed device keeps publishing, in the same batches as tenant B.
            pub.pub(f"{prefix}/{removed.device_id}/telemetry", telemetry(temp=30.0))
            pub.pub(f"{prefix}/{other.device_id}/telemetry", telemetry(temp=20.0 + i))
            wait_for(
                lambda i=i: (
                    TelemetrySample.objects.filter(device=other).count() == i + 1
                ),
                what=f"tenant B's sample {i + 1}",
            )
    finally:
        pub.close()
    assert Device.objects.get(pk=other.pk).state["temperature"] == 23.0
    assert bridge.stats()["rows_dropped"] >= 1
    assert bridge._retry is None


@contextlib.contextmanager
def _database_refusing_connections():
    """The test database refuses every new connection, as a database that is down
    does (the bridge opens one per flush); this test's own connection stays open."""
    import psycopg

    params = connection.settings_dict
    name = params["NAME"]
    admin = psycopg.connect(
        host=params["HOST"],
        port=params["PORT"] or 5432,
        user=params["USER"],
        password=params["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )
    try:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        yield
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.close()


@_mark(*bridge_test)
def test_a_database_outage_keeps_the_batch_until_the_database_is_back(
    make_bridge,
    prefix,
    pool_a,
    platform_broker,
):
    device = make_device(pool_a, prefix, esp_id(), broker=platform_broker)
    bridge = make_bridge()
    assert bridge.wait_ready()
    pub = Publisher()
    try:
        with _database_refusing_connections():
            pub.pub(f"{prefix}/{device.device_id}/telemetry", telemetry(temp=26.5))
            wait_for(
                lambda: bridge._retry is not None and bridge._retry.samples,
                what="the batch held for a retry",
            )
            held = bridge.write_failures
            wait_for(lambda: bridge.write_failures > held + 1, what="retried")
            assert not TelemetrySample.objects.filter(device=device).exists()
        wait_for(
            lambda: TelemetrySample.objects.filter(
                device=device, temperature=26.5
            ).exists(),
            what="the held sample written",
        )
    finally:
        pub.close()
    assert TelemetrySample.objects.filter(device=device).count() == 1
