"""The simulator's pure parts: ids, broker URLs, the pool model (no broker needed)."""

import importlib
import sys
import types

import pytest

from firmware import config
from firmware import protocol as P
from firmware.sim import PoolModel, VirtualDevice, make_ids, parse_broker_url
from firmware.sim.device import SIM_HW
from firmware.tests.test_updater import KEY


def test_make_ids():
    assert make_ids(3) == ["ESP-A00001", "ESP-A00002", "ESP-A00003"]
    assert all(P.is_ps1_id(i) for i in make_ids(50))
    assert make_ids(2, legacy=True) == ["esp32-pool-01", "esp32-pool-02"]
    assert make_ids(1, "demo-") == ["demo-01"]


def test_parse_broker_url():
    assert parse_broker_url("mqtt://127.0.0.1:1883") == (
        "127.0.0.1",
        1883,
        False,
        None,
        None,
    )
    assert parse_broker_url("mqtts://u%40x:p%3Aw@broker.example") == (
        "broker.example",
        8883,
        True,
        "u@x",
        "p:w",
    )
    with pytest.raises(ValueError, match="scheme"):
        parse_broker_url("http://x")


def test_bad_device_id_or_prefix_refused():
    with pytest.raises(ValueError):
        VirtualDevice("bad/id")
    with pytest.raises(ValueError):
        VirtualDevice("ESP-A1B2C3", prefix="a/#")


def test_pool_water_follows_air_faster_with_pump():
    still = PoolModel(water=26.0, air_mean=12.0, air_swing=0.0, seed=1)
    pumped = PoolModel(water=26.0, air_mean=12.0, air_swing=0.0, seed=1)
    for hour in range(48):
        still.step(3600, hour * 3600, False)
        pumped.step(3600, hour * 3600, True)
    assert 12.0 < pumped.water < still.water < 26.0
    warm = PoolModel(water=10.0, air_mean=25.0, air_swing=0.0)
    warm.step(3600, 0, False)
    assert warm.water > 10.0


def test_pool_air_has_a_daily_curve_and_sensor_can_fail():
    p = PoolModel(air_mean=20.0, air_swing=6.0)
    assert p.air(17 * 3600) > p.air(5 * 3600) + 10
    p.sensor_ok = False
    assert p.reading() is None
    assert p.step(1, 0, True) is None


def test_the_simulators_hardware_model_is_the_boards(monkeypatch):
    # firmware/hardware.py needs `machine`; an empty stand-in is enough to read MODEL.
    monkeypatch.setitem(sys.modules, "machine", types.ModuleType("machine"))
    monkeypatch.delitem(sys.modules, "firmware.hardware", raising=False)
    hardware = importlib.import_module("firmware.hardware")
    assert SIM_HW == hardware.MODEL == "esp32"
    assert config.HW_MODEL is None  # the board's own unless local_config names one


def test_virtual_device_reports_its_hardware_model(tmp_path):
    def reported(dev):
        tel = P.encode_telemetry(dev.controller.telemetry(-60, 1, 1000))
        return P.parse_telemetry(tel)["hw"]

    assert reported(VirtualDevice("ESP-A1B2C3")) == SIM_HW
    s3 = VirtualDevice(
        "ESP-A1B2C4", hw_model="esp32s3", ota_key=KEY.hex(), ota_root=tmp_path / "a"
    )
    assert reported(s3) == "esp32s3"
    assert s3.ota.model == s3.ota.updater.model == "esp32s3"  # what it accepts
    # After a reboot (a new controller) it still says so.
    s3._boot()
    assert reported(s3) == "esp32s3"
    # Firmware from before the model: no "hw" at all; its updater took esp32.
    old = VirtualDevice(
        "ESP-A1B2C5", hw_model=None, ota_key=KEY.hex(), ota_root=tmp_path / "b"
    )
    assert "hw" not in old.controller.telemetry() and reported(old) is None
    assert old.ota.model == SIM_HW
