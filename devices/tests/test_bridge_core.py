"""The bridge's pure core: routing, validation, effects. No broker, no database."""

import json
import uuid

import pytest

from devices.bridge.directory import Directory
from devices.tests.mqtt_driver import DevicesCore
from firmware import protocol

NOW = 1_764_400_000.0
BROKER, OTHER_BROKER = 1, 2


def _row(pk, device_id, *, broker=BROKER, prefix="devices", proto="ps1", tenant=1):
    return {
        "pk": pk,
        "broker_id": broker,
        "topic_prefix": prefix,
        "device_id": device_id,
        "protocol": proto,
        "tenant_id": tenant,
        "tenant__code": uuid.UUID(int=tenant),
        "pool_id": pk,
        "pool__code": uuid.UUID(int=1000 + pk),
        "pool__settings": {"telemetry_interval": 30},
        "online": False,
        "state": {},
    }


@pytest.fixture
def core():
    rows = [
        _row(1, "ESP-A1A1A1"),
        _row(2, "esp32-pool-01", proto="v3.1", prefix="acme/pools"),
        _row(3, "ESP-B2B2B2", broker=OTHER_BROKER, tenant=2),
    ]
    return DevicesCore(Directory.build(rows))


def telemetry(**over):
    body = {
        "ts": int(NOW),
        "seq": 1,
        "temp": 24.5,
        "pump": True,
        "valve": 2,
        "timer": {"active": False, "remaining": 0, "mode": 1, "duration": 0},
        "rssi": -61,
        "uptime": 3600,
        "mem_free": 81234,
        "fw": "ps1-0.1.0",
        "switches": {"pump": 3, "valve": 1},
    }
    body.update(over)
    return json.dumps(body).encode()


def test_telemetry_becomes_state_sample_and_online(core):
    assert core.handle(BROKER, "devices/ESP-A1A1A1/telemetry", telemetry(), NOW)
    fx = core.drain()
    (sample,) = fx.samples
    assert sample[0].pk == 1 and sample[2:] == (24.5, True, 2, -61)
    write = fx.writes[1]
    assert write.online is True and write.last_seen == NOW
    assert write.delta["temperature"] == 24.5 and write.delta["valve"] == 2
    assert write.delta["wifi"]["quality"] == "fair"
    assert write.firmware_version == "ps1-0.1.0"
    assert write.hardware_model is None  # no "hw": the stored model is kept
    assert [e[2] for e in fx.events] == ["online"]
    assert list(fx.pools) == [uuid.UUID(int=1001).hex]
    assert core.counters["accepted"] == 1


def test_telemetry_hardware_model_goes_to_the_write(core):
    core.handle(BROKER, "devices/ESP-A1A1A1/telemetry", telemetry(hw="esp32s3"), NOW)
    assert core.drain().writes[1].hardware_model == "esp32s3"


def test_v31_topics_and_will(core):
    root = "acme/pools/esp32-pool-01"
    core.handle(BROKER, f"{root}/pump/state", b"on", NOW)
    core.handle(BROKER, f"{root}/temperature/state", b"25.3", NOW + 1)
    core.handle(
        BROKER,
        f"{root}/timer/state",
        b'{"active":true,"remaining":5,"mode":2,"duration":60}',
        NOW + 2,
    )
    fx = core.drain()
    state = core.directory.by_pk[2].state
    assert state["pump"] is True and state["temperature"] == 25.3
    assert state["timer"]["remaining"] == 5 and "at" in state["timer"]
    assert [s[2] for s in fx.samples] == [None, 25.3]  # pump change, then temperature
    core.handle(BROKER, f"{root}/wifi/state", protocol.WIFI_DISCONNECTED.encode(), NOW)
    fx = core.drain()
    assert fx.writes[2].online is False
    assert [e[2] for e in fx.events] == ["offline"]


def test_retained_state_is_not_a_sign_of_life(core):
    core.handle(BROKER, "devices/ESP-A1A1A1/pump/state", b"ON", NOW, True)
    fx = core.drain()
    assert fx.writes[1].online is None and fx.writes[1].last_seen is None
    assert fx.samples == []
    assert core.directory.by_pk[1].state["pump"] is True
    core.handle(BROKER, "devices/ESP-A1A1A1/status", b"offline", NOW, True)
    assert core.drain().writes[1].online is None  # it already was offline
    core.handle(BROKER, "devices/ESP-A1A1A1/status", b"online", NOW, True)
    assert core.drain().writes[1].online is True


def test_other_brokers_and_unknown_devices_are_unauthorised(core):
    # ESP-B2B2B2 belongs to another broker (tenant B): not routable here.
    assert not core.handle(BROKER, "devices/ESP-B2B2B2/telemetry", telemetry(), NOW)
    # Tenant A's device id, arriving on tenant B's broker.
    assert not core.handle(
        OTHER_BROKER, "devices/ESP-A1A1A1/telemetry", telemetry(), NOW
    )
    assert not core.handle(BROKER, "devices/ESP-FFFFFF/telemetry", telemetry(), NOW)
    assert not core.handle(BROKER, "elsewhere/ESP-A1A1A1/telemetry", telemetry(), NOW)
    assert not core.handle(99, "devices/ESP-A1A1A1/telemetry", telemetry(), NOW)
    assert core.counters["unauthorised"] == 5
    assert not core.drain()
    assert core.directory.by_pk[1].state == {}


MALFORMED = [
    ("telemetry", b"\xff\xfe"),
    ("telemetry", b"not json"),
    ("telemetry", b"[1, 2]"),
    ("telemetry", b"{" * 5000),
    ("telemetry", b" " * 4097),
    ("telemetry", telemetry(temp=200.0)),
    ("telemetry", telemetry(temp=float("nan")).replace(b"NaN", b"NaN")),
    ("telemetry", telemetry(pump=1)),
    ("telemetry", telemetry(valve=3)),
    ("telemetry", telemetry(seq=-1)),
    ("telemetry", telemetry(ts=True)),
    ("telemetry", telemetry(fw="")),
    ("telemetry", telemetry(switches=None)),
    ("telemetry", telemetry(timer={"active": True})),
    ("telemetry", b'{"ts": 1}'),
    ("status", b"maybe"),
    ("ack", b'{"id": "bad id!", "ok": true}'),
    ("ack", b'{"id": "c1", "ok": false, "error": "meh"}'),
    ("ack", b'{"id": "c1", "ok": true, "error": "busy"}'),
    ("config/applied", b'{"version": -1, "ok": true}'),
    ("event", b'{"ts": 1, "type": "party"}'),
    ("event", b'{"ts": 1, "type": "boot", "data": [1]}'),
    ("pump/state", b"HALF"),
    ("valve/state", b"3"),
    ("timer/state", b'{"active": true, "remaining": -5, "mode": 1, "duration": 9}'),
    ("temperature/state", b"25.3C"),
    ("temperature/state", b"999.0"),
    ("temperature/state", b"nan"),
    ("wifi/state", b'{"status": "connected", "rssi": 12}'),
    ("wifi/state", b'{"status": "sleeping"}'),
    ("pump/set", b"ON"),  # a cloud-to-device topic is not a device message
    ("ota/offer", b"{}"),
]


@pytest.mark.parametrize("suffix,payload", MALFORMED)
def test_malformed_is_counted_and_changes_nothing(core, suffix, payload):
    assert not core.handle(BROKER, f"devices/ESP-A1A1A1/{suffix}", payload, NOW)
    assert core.counters["malformed"] == 1
    assert not core.drain()
    assert core.directory.by_pk[1].state == {}
    # and the next good message is served
    assert core.handle(BROKER, "devices/ESP-A1A1A1/telemetry", telemetry(), NOW)


def test_ack_event_and_config_effects(core):
    root = "devices/ESP-A1A1A1"
    core.handle(
        BROKER, f"{root}/ack", protocol.encode_ack("abc", False, "busy", "r"), NOW
    )
    core.handle(
        BROKER,
        f"{root}/event",
        protocol.encode_event(0, "error", {"msg": "relay"}),
        NOW,
    )
    core.handle(
        BROKER, f"{root}/config/applied", protocol.encode_config_applied(7, True), NOW
    )
    fx = core.drain()
    assert fx.acks == [(1, {"id": "abc", "ok": False, "error": "busy", "reason": "r"})]
    kinds = [e[2] for e in fx.events]
    assert kinds == ["online", "device.error", "config.applied"]
    assert fx.events[1][3] == "Device error: relay"
    assert fx.events[1][1] == NOW  # ts 0: the device clock was not set
    assert fx.writes[1].config_version_applied == 7


def test_awaiting_v31_command_completes_on_matching_state(core):
    root = "acme/pools/esp32-pool-01"
    core.awaiting = {2: [(55, {"kind": "pump", "value": True}, NOW)]}
    core.handle(BROKER, f"{root}/pump/state", b"OFF", NOW + 1)
    assert core.drain().completions == []
    core.handle(BROKER, f"{root}/pump/state", b"ON", NOW - 5)  # before it was sent
    assert core.drain().completions == []
    core.handle(BROKER, f"{root}/pump/state", b"ON", NOW + 2)
    assert core.drain().completions == [(55, 2)]
    core.handle(BROKER, f"{root}/pump/state", b"ON", NOW + 3)
    assert core.drain().completions == []  # only once


@pytest.mark.parametrize(
    "ts",
    [
        1764812345.0,  # whole second: no fraction shown
        1764812345.5,
        1764812345.0000005,  # rounds half to even, down
        1764812345.0000015,  # and up
        1764812345.9999996,  # rounds into the next second
        1764812346.123456,
        0.0,
        951782400.25,  # 2000-02-29
    ],
)
def test_iso_is_datetime_isoformat(ts):
    import datetime as dt

    from devices.bridge.directory import iso

    expected = dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()
    assert iso(ts) == expected
    assert iso(ts) == expected  # from the cached second


def test_device_info_names_its_live_groups():
    from devices.bridge.directory import DeviceInfo
    from poolsaas.live.groups import pool_group, tenant_group

    pool, tenant = uuid.uuid4(), uuid.uuid4()
    fields = dict(pk=1, broker_id=1, device_id="d", tenant_id=1, tenant_hex=tenant.hex)
    info = DeviceInfo(
        **fields, pool_id=1, pool_hex=pool.hex, protocol="ps1", silence_s=60
    )
    assert (info.pool_group, info.tenant_group) == (
        pool_group(pool),
        tenant_group(tenant),
    )
    lone = DeviceInfo(
        **fields, pool_id=None, pool_hex=None, protocol="ps1", silence_s=60
    )
    assert lone.pool_group is None


def test_a_room_whose_updates_fail_does_not_end_the_worker(monkeypatch, caplog):
    """OTA's lookups in the worker thread (which campaign a device may download)
    raised through the worker when the database was away, ending the thread that
    handles all telemetry. Now the worker counts it, logs it once and goes on."""
    from devices.bridge.runner import Bridge

    bridge = Bridge(live=False)
    ota = bridge.room("ota")

    def away(out):
        raise ConnectionError("the database is away")

    monkeypatch.setattr(ota, "updates", away)
    with caplog.at_level("ERROR", logger="devices.bridge.worker"):
        bridge._updates()
        bridge._updates()
    assert bridge.db_errors == 2
    assert len([r for r in caplog.records if "could not send" in r.message]) == 1
    monkeypatch.setattr(ota, "updates", lambda out: None)
    bridge._updates()
    assert bridge._updates_failing == set()
