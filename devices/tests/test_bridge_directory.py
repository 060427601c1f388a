"""The bridge's directory rebuild: known devices updated in place, moved ones anew,
new ones with their stored state read once, rows read in pages (PostgreSQL or SQLite
for the selector; the rest is pure)."""

import time
import uuid

import pytest

from devices.bridge.directory import Directory
from devices.models import Device, Pool
from devices.selectors import device_states, devices_for_bridge
from devices.tests.mqtt_driver import DevicesCore
from devices.tests.test_bridge_core import BROKER, NOW, _row
from devices.tests.test_bridge_ingest import telemetry

PS1 = "devices/ESP-A1A1A1"


def _stateless(pk, device_id, **kw):
    row = _row(pk, device_id, **kw)
    del row["state"]
    return row


def test_a_known_device_is_the_same_entry_after_a_rebuild_with_its_state():
    core = DevicesCore(Directory.build([_row(1, "ESP-A1A1A1")]))
    core.handle(BROKER, f"{PS1}/telemetry", telemetry(temp=23.0), NOW)
    before = core.directory.by_pk[1]
    asked = []
    rows = [_stateless(1, "ESP-A1A1A1"), _stateless(2, "ESP-B2B2B2")]
    rows[0]["pool__settings"] = {"telemetry_interval": 120}
    rebuilt = Directory.build(
        rows,
        previous=core.directory,
        states=lambda *, pks: asked.append(pks) or {2: {"temperature": 9.5}},
    )
    info = rebuilt.by_pk[1]
    assert info is before  # updated in place: nothing allocated for it
    assert info.state["temperature"] == 23.0 and info.last_seen == NOW
    assert info.silence_s == 360.0  # what changed in the row is taken
    # Only the device new to the bridge has its state read, in one query.
    assert asked == [[2]]
    assert rebuilt.by_pk[2].state == {"temperature": 9.5}
    # One tenant: one hex and one group name for all its devices.
    assert rebuilt.by_pk[2].tenant_group is info.tenant_group
    assert rebuilt.lookup(BROKER, "devices/ESP-B2B2B2/telemetry")[0] is rebuilt.by_pk[2]


def test_a_device_moved_to_another_pool_is_a_new_entry_that_keeps_its_state():
    core = DevicesCore(Directory.build([_row(1, "ESP-A1A1A1")]))
    core.handle(BROKER, f"{PS1}/telemetry", telemetry(temp=23.0), NOW)
    before = core.directory.by_pk[1]
    moved = _stateless(1, "ESP-A1A1A1")
    moved["pool__code"] = uuid.UUID(int=77)
    rebuilt = Directory.build(
        [moved], previous=core.directory, states=lambda *, pks: pytest.fail(pks)
    )
    info = rebuilt.by_pk[1]
    assert info is not before and before.pool_hex != info.pool_hex
    assert info.pool_hex == uuid.UUID(int=77).hex
    assert info.pool_group == f"pool.{info.pool_hex}"
    assert info.state is before.state and info.last_seen == NOW


def test_the_database_flag_wins_once_the_bridge_has_not_heard_from_the_device():
    core = DevicesCore(Directory.build([_row(1, "ESP-A1A1A1")]))
    core.handle(BROKER, f"{PS1}/status", b"online", NOW)
    info = core.directory.by_pk[1]
    assert info.online is True
    info.last_seen = time.time()  # heard just now
    Directory.build([_row(1, "ESP-A1A1A1")], previous=core.directory)
    assert info.online is True  # the row says offline; the bridge knows better
    info.last_seen = time.time() - 10 * info.silence_s  # long ago
    Directory.build([_row(1, "ESP-A1A1A1")], previous=core.directory)
    assert info.online is False


@pytest.mark.django_db
def test_devices_for_bridge_reads_every_device_in_pages_without_state(
    tenant_a, platform_broker
):
    pools = Pool.objects.bulk_create(
        [Pool(tenant=tenant_a, name=f"p{i}") for i in range(7)]
    )
    devices = Device.objects.bulk_create(
        [
            Device(
                tenant=tenant_a,
                pool=pool,
                broker=platform_broker,
                device_id=f"ESP-00000{i}",
                topic_prefix="pages",
                state={"temperature": float(i)},
            )
            for i, pool in enumerate(pools)
        ]
    )
    rows = list(devices_for_bridge(broker_ids=[platform_broker.pk], page=3))
    assert [row["pk"] for row in rows] == sorted(d.pk for d in devices)
    assert all("state" not in row for row in rows)
    assert list(devices_for_bridge(broker_ids=[platform_broker.pk + 99])) == []
    states = device_states(pks=[devices[2].pk, devices[5].pk])
    assert states == {
        devices[2].pk: {"temperature": 2.0},
        devices[5].pk: {"temperature": 5.0},
    }
    built = Directory.build(devices_for_bridge(broker_ids=[platform_broker.pk], page=2))
    assert sorted(built.by_pk) == sorted(d.pk for d in devices)
    assert built.by_pk[devices[4].pk].state == {"temperature": 4.0}
