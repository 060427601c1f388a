"""What a telemetry message leaves in a device's state: the same values as before
the bridge's allocation savings (a wifi dict kept while unchanged, the timer's `at`
in the parse's own dict, one firmware version string)."""

import json

from devices.bridge.directory import Directory, iso
from devices.tests.mqtt_driver import DevicesCore
from devices.tests.test_bridge_core import BROKER, NOW, _row
from devices.tests.test_bridge_ingest import telemetry

A, B = "devices/ESP-A1A1A1", "devices/ESP-B2B2B2"


def _core():
    return DevicesCore(Directory.build([_row(1, "ESP-A1A1A1"), _row(2, "ESP-B2B2B2")]))


def test_the_wifi_dict_is_kept_while_unchanged_and_replaced_when_anything_changes():
    core = _core()
    device = core.directory.by_pk[1]
    core.handle(BROKER, f"{A}/telemetry", telemetry(rssi=-61), NOW)
    first = device.state["wifi"]
    assert first == {"status": "connected", "rssi": -61, "quality": "fair"}
    core.handle(BROKER, f"{A}/telemetry", telemetry(rssi=-61), NOW + 1)
    assert device.state["wifi"] is first
    core.handle(BROKER, f"{A}/telemetry", telemetry(rssi=-75), NOW + 2)
    assert device.state["wifi"] == {
        "status": "connected",
        "rssi": -75,
        "quality": "weak",
    }
    assert first == {"status": "connected", "rssi": -61, "quality": "fair"}  # as sent

    # A wifi/state report keeps its ssid and ip and its own quality; telemetry with
    # the same rssi then sets the quality the rssi gives.
    report = {"status": "connected", "ssid": "home", "ip": "10.0.0.9", "rssi": -75}
    report["quality"] = "excellent"
    core.handle(BROKER, f"{A}/wifi/state", json.dumps(report).encode(), NOW + 3)
    core.handle(BROKER, f"{A}/telemetry", telemetry(rssi=-75), NOW + 4)
    assert device.state["wifi"] == {**report, "quality": "weak"}
    core.handle(BROKER, f"{A}/wifi/state", b'{"status":"disconnected"}', NOW + 5)
    core.handle(BROKER, f"{A}/telemetry", telemetry(rssi=-75), NOW + 6)
    assert device.state["wifi"] == {
        "status": "connected",
        "rssi": -75,
        "quality": "weak",
    }
    # No rssi: the wifi as it was.
    before = device.state["wifi"]
    core.handle(BROKER, f"{A}/telemetry", telemetry(rssi=None), NOW + 7)
    assert device.state["wifi"] == before
    writes = core.drain().writes
    assert writes[1].delta["wifi"] == before


def test_a_stored_wifi_that_is_not_connected_becomes_connected():
    row = _row(1, "ESP-A1A1A1")
    row["state"] = {"wifi": {"status": "disconnected", "rssi": -75, "quality": "weak"}}
    core = DevicesCore(Directory.build([row]))
    core.handle(BROKER, f"{A}/telemetry", telemetry(rssi=-75), NOW)
    wifi = core.directory.by_pk[1].state["wifi"]
    assert wifi == {"status": "connected", "rssi": -75, "quality": "weak"}


def test_the_timer_carries_its_time_and_the_firmware_version_is_one_string():
    core = _core()
    core.handle(BROKER, f"{A}/telemetry", telemetry(), NOW + 0.25)
    core.handle(BROKER, f"{B}/telemetry", telemetry(), NOW + 1)
    one, two = core.directory.by_pk[1].state, core.directory.by_pk[2].state
    assert one["timer"] == {
        "active": False,
        "remaining": 0,
        "mode": 1,
        "duration": 0,
        "at": iso(NOW + 0.25),
    }
    assert two["timer"]["at"] == iso(NOW + 1)
    assert one["fw"] == "ps1-9.9" and one["fw"] is two["fw"]
    fx = core.drain()
    assert fx.writes[1].firmware_version is one["fw"]
    assert [s[2] for s in fx.samples] == [24.5, 24.5]
