"""The simulator's pure parts: ids, broker URLs, the pool model (no broker needed)."""

import pytest

from firmware import protocol as P
from firmware.sim import PoolModel, VirtualDevice, make_ids, parse_broker_url


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
