"""The ingest services the bridge writes through, on both databases (no broker)."""

import datetime as dt
import json
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from devices.bridge.directory import Directory
from devices.models import Device, DeviceEvent
from devices.selectors import devices_for_bridge
from devices.services.ingest import devices_mark_silent, ingest_write
from devices.tests.mqtt_driver import DevicesCore
from firmware import protocol
from telemetry.models import TelemetrySample

pytestmark = pytest.mark.django_db


def telemetry(temp=24.5, **over):
    body = {
        "ts": 0,
        "seq": 1,
        "temp": temp,
        "pump": True,
        "valve": 2,
        "timer": {"active": False, "remaining": 0, "mode": 1, "duration": 0},
        "rssi": -55,
        "uptime": 10,
        "mem_free": 1000,
        "fw": "ps1-9.9",
        "switches": {"pump": 1, "valve": 2},
    }
    body.update(over)
    return json.dumps(body).encode()


@pytest.fixture
def core(device_a, device_b):
    broker = device_a.broker_id
    return DevicesCore(Directory.build(devices_for_bridge(broker_ids=[broker])))


def flush(core):
    fx = core.drain()
    ingest_write(
        writes=fx.writes, samples=fx.samples, events=fx.events, now=time.time()
    )
    return fx


def test_a_batch_is_a_few_statements_whatever_its_size(core, device_a, device_b):
    now = time.time()
    for i in range(50):
        for device in (device_a, device_b):
            core.handle(
                device.broker_id,
                f"devices/{device.device_id}/telemetry",
                telemetry(temp=20 + i / 10),
                now + i,
            )
    with CaptureQueriesContext(connection) as queries:
        flush(core)
    if connection.vendor == "postgresql":
        assert len(queries) <= 6  # savepoint/commit, states, samples COPY, events
    assert TelemetrySample.objects.filter(device=device_a).count() == 50
    assert TelemetrySample.objects.filter(device=device_b).count() == 50
    device_a.refresh_from_db()
    assert device_a.online is True
    assert device_a.state["temperature"] == 24.9
    assert device_a.firmware_version == "ps1-9.9"
    assert device_a.last_seen_at == dt.datetime.fromtimestamp(now + 49, dt.UTC)
    assert DeviceEvent.objects.filter(kind="online").count() == 2


def test_state_writes_merge_keys(core, device_a):
    Device.objects.filter(pk=device_a.pk).update(state={"fw": "kept", "pump": False})
    root = f"devices/{device_a.device_id}"
    core.handle(device_a.broker_id, f"{root}/valve/state", b"2", time.time())
    flush(core)
    device_a.refresh_from_db()
    # Keys this batch did not touch stay (another bridge may have written them).
    assert device_a.state["fw"] == "kept" and device_a.state["pump"] is False
    assert device_a.state["valve"] == 2 and "updated_at" in device_a.state


def test_tenant_of_rows_comes_from_the_device(core, device_a, device_b):
    core.handle(
        device_b.broker_id,
        f"devices/{device_b.device_id}/event",
        protocol.encode_event(0, "boot", {"reason": "x"}),
        time.time(),
    )
    flush(core)
    event = DeviceEvent.objects.get(kind="device.boot")
    assert event.tenant_id == device_b.tenant_id and event.pool_id == device_b.pool_id


def test_silence_marks_offline_once(device_a, device_b):
    long_ago = timezone.now() - dt.timedelta(minutes=10)
    Device.objects.filter(pk__in=[device_a.pk, device_b.pk]).update(
        online=True, last_seen_at=long_ago
    )
    Device.objects.filter(pk=device_b.pk).update(last_seen_at=timezone.now())
    flipped = devices_mark_silent(candidates={device_a.pk: 180.0, device_b.pk: 180.0})
    assert flipped == [device_a.pk]
    assert devices_mark_silent(candidates={device_a.pk: 180.0}) == []
    assert DeviceEvent.objects.filter(device=device_a, kind="offline").count() == 1
    assert Device.objects.get(pk=device_b.pk).online is True


def test_the_hardware_model_is_stored_kept_and_replaced_like_the_firmware(
    core, device_a
):
    topic = f"devices/{device_a.device_id}/telemetry"
    now = time.time()
    core.handle(device_a.broker_id, topic, telemetry(hw="esp32s3"), now)
    flush(core)
    device_a.refresh_from_db()
    assert (device_a.hardware_model, device_a.firmware_version) == (
        "esp32s3",
        "ps1-9.9",
    )
    # Firmware from before the model sends none: what we know stays.
    core.handle(device_a.broker_id, topic, telemetry(fw="ps1-9.8"), now + 1)
    flush(core)
    device_a.refresh_from_db()
    assert (device_a.hardware_model, device_a.firmware_version) == (
        "esp32s3",
        "ps1-9.8",
    )
    core.handle(device_a.broker_id, topic, telemetry(hw="esp32"), now + 2)
    flush(core)
    device_a.refresh_from_db()
    assert device_a.hardware_model == "esp32"
    # A bad one rejects the message (counted), nothing changes.
    for bad in ("", "m" * 33, None, 7):
        assert not core.handle(
            device_a.broker_id, topic, telemetry(hw=bad, fw="ps1-1.0"), now + 3
        )
    assert core.counters["malformed"] == 4
    flush(core)
    device_a.refresh_from_db()
    assert (device_a.hardware_model, device_a.firmware_version) == (
        "esp32",
        "ps1-9.9",
    )


def test_a_batch_held_while_the_database_is_away_keeps_the_hardware_model(
    core, device_a
):
    topic = f"devices/{device_a.device_id}/telemetry"
    now = time.time()
    core.handle(device_a.broker_id, topic, telemetry(hw="esp32s3"), now)
    held = core.drain()
    core.handle(device_a.broker_id, topic, telemetry(fw="ps1-9.8"), now + 1)
    merged = core.room.merge(held, core.drain(), None)
    ingest_write(
        writes=merged.writes, samples=merged.samples, events=merged.events, now=now
    )
    device_a.refresh_from_db()
    assert (device_a.hardware_model, device_a.firmware_version) == (
        "esp32s3",
        "ps1-9.8",
    )
    core.handle(device_a.broker_id, topic, telemetry(hw="esp32"), now + 2)
    held = core.drain()
    core.handle(device_a.broker_id, topic, telemetry(hw="esp32c3"), now + 3)
    merged = core.room.merge(held, core.drain(), None)
    assert merged.writes[device_a.pk].hardware_model == "esp32c3"
