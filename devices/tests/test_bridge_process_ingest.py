"""A bridge process (`manage.py mqtt_bridge`) on the machine's Mosquitto, with the
bridge-side telemetry parse (devices.mqtt.fastparse) and the directory read in pages:
valid telemetry is stored, each kind of bad payload is rejected with nothing stored
and the device's state unchanged, and a device added while it runs is picked up
with its stored state (read for it alone: the directory's rows carry no state)."""

import json
import time
import uuid

import pytest

from devices.models import Device, DeviceEvent
from devices.tests.test_bridge import Publisher, clear_retained, wait_for
from devices.tests.test_config_push import BridgeProcess
from firmware import protocol
from telemetry.models import TelemetrySample

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


def body(**over) -> dict:
    out = {
        "ts": int(time.time()),
        "seq": 1,
        "temp": 24.5,
        "pump": True,
        "valve": 1,
        "timer": {"active": False, "remaining": 0, "mode": 1, "duration": 0},
        "rssi": -61,
        "uptime": 3600,
        "mem_free": 81234,
        "fw": "ps1-0.1.0",
        "switches": {"pump": 3, "valve": 1},
    }
    out.update(over)
    return out


def raw(**over) -> bytes:
    return json.dumps(body(**over)).encode()


GOOD = raw(temp=24.46)
BAD = [
    raw(temp=float("nan")),  # json.dumps writes NaN, which standard json reads back
    raw(temp=float("inf")),
    raw(ts=2**64),  # past 64 bits: orjson reads it as a float
    raw(pump=1),  # a bool as an int
    raw(valve=True),  # an int as a bool
    raw(fw="x" * 33),
    raw(fw="a\x00b"),
    raw(switches=[1, 2]),
    raw(timer={"active": False, "remaining": 0, "mode": 3, "duration": 0}),
    raw(extra={"deep": [[[[{"junk": None}]]]]}).replace(b'"temp": 24.5', b'"temp": {}'),
    GOOD.replace(b"ps1-0.1.0", b"ps1-\xff.1"),  # not UTF-8
    GOOD[:-1] + b', "temp": 200}',  # a duplicate key: the last one counts
    GOOD + b" " * protocol.MAX_PAYLOAD,  # too large
    b"[]",
    b"",
]


@pytest.fixture
def prefix():
    value = f"ing-{uuid.uuid4().hex[:10]}"
    yield value
    clear_retained(value)


@pytest.fixture
def bridge(tmp_path, platform_broker):
    process = BridgeProcess(tmp_path / "bridge.log")
    yield process
    process.stop()


def test_a_bridge_process_stores_telemetry_and_rejects_bad_payloads(
    bridge, pool_a, pool_b, platform_broker, prefix
):
    device = Device.objects.create(
        tenant=pool_a.tenant,
        pool=pool_a,
        broker=platform_broker,
        device_id="ESP-A1B2C3",
        topic_prefix=prefix,
    )
    bridge.start()
    pub = Publisher()
    try:
        topic = f"{prefix}/{device.device_id}/telemetry"
        pub.pub(topic, GOOD)
        wait_for(
            lambda: TelemetrySample.objects.filter(device=device).count() == 1,
            what="the first sample",
        )
        stored = Device.objects.get(pk=device.pk).state
        for payload in BAD:
            pub.pub(topic, payload)
        # The last message is valid: once it is stored, every bad one before it on
        # the same connection has been handled.
        pub.pub(topic, raw(seq=2, temp=26, rssi=-75, fw="ps1-0.2.0"))
        wait_for(
            lambda: TelemetrySample.objects.filter(device=device).count() >= 2,
            what="the last sample",
        )
        time.sleep(0.5)  # a late bad row would land by now
        samples = list(
            TelemetrySample.objects.filter(device=device)
            .order_by("id")
            .values_list("temperature", "pump", "valve", "rssi")
        )
        assert samples == [(24.5, True, 1, -61), (26.0, True, 1, -75)]
        assert stored["temperature"] == 24.5 and stored["fw"] == "ps1-0.1.0"
        assert stored["wifi"] == {"status": "connected", "rssi": -61, "quality": "fair"}
        assert set(stored["timer"]) == {"active", "remaining", "mode", "duration", "at"}
        state = Device.objects.get(pk=device.pk)
        assert state.state["temperature"] == 26.0
        assert state.state["wifi"] == {
            "status": "connected",
            "rssi": -75,
            "quality": "weak",
        }
        assert state.firmware_version == "ps1-0.2.0"

        # A device added while the bridge runs: its stored state is read once (it is
        # new to the bridge) and its telemetry lands.
        later = Device.objects.create(
            tenant=pool_b.tenant,
            pool=pool_b,
            broker=platform_broker,
            device_id="ESP-D4E5F6",
            topic_prefix=prefix,
            state={"config": {"version": 3, "ok": True}},
        )
        late_topic = f"{prefix}/{later.device_id}/telemetry"

        def landed():
            pub.pub(late_topic, raw(temp=21.0))
            return TelemetrySample.objects.filter(device=later).exists()

        wait_for(landed, timeout=30, what="the new device's sample")
        wait_for(
            lambda: Device.objects.get(pk=later.pk).state.get("temperature") == 21.0,
            what="the new device's state",
        )
        # The bridge knows its stored answer: the same answer again is no news (no
        # event), a new one is logged.
        answers = f"{prefix}/{later.device_id}/config/applied"
        pub.pub(answers, protocol.encode_config_applied(3, True))
        pub.pub(answers, protocol.encode_config_applied(4, True))
        wait_for(
            lambda: DeviceEvent.objects.filter(
                device=later, kind="config.applied"
            ).exists(),
            what="the new answer's event",
        )
        assert list(
            DeviceEvent.objects.filter(device=later, kind="config.applied").values_list(
                "message", flat=True
            )
        ) == ["Configuration 4 applied"]
        assert TelemetrySample.objects.filter(device=device).count() == 2
    finally:
        pub.close()
