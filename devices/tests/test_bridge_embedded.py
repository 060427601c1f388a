"""The embedded default of `make run`: the bridge on the Python broker (amqtt), which
has no shared subscriptions and keeps the retain flag on live messages."""

import socket
import subprocess
import sys
import time
import uuid

import pytest

from devices.models import Device
from devices.tests.test_bridge import free_port, wait_for
from telemetry.models import TelemetrySample

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def embedded_broker():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "poolsaas.embedded_broker", "--port", str(port)]
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("the embedded broker did not start")
    yield port
    process.terminate()
    process.wait(10)


def test_a_legacy_device_is_seen_online_through_the_embedded_broker(
    embedded_broker, settings, pool_a
):
    from devices.bridge.runner import Bridge
    from devices.services.brokers import broker_ensure_platform
    from firmware.sim import VirtualDevice

    settings.MQTT_URL = f"mqtt://127.0.0.1:{embedded_broker}"
    settings.MQTT_SHARED_SUBSCRIPTIONS = False
    broker = broker_ensure_platform()
    device_id = f"legacy-{uuid.uuid4().hex[:6]}"
    device = Device.objects.create(
        tenant=pool_a.tenant,
        pool=pool_a,
        broker=broker,
        device_id=device_id,
        protocol=Device.Protocol.LEGACY,
    )
    bridge = Bridge(refresh_interval=0.3, flush_interval=0.1, stats_interval=3600)
    bridge.start()
    sim = VirtualDevice(
        device_id,
        broker=settings.MQTT_URL,
        legacy=True,
        interval=1,
    )
    try:
        assert bridge.wait_ready(10)
        sim.start()
        # Its first messages may read as retained replays; the next ones prove it.
        wait_for(
            lambda: Device.objects.get(pk=device.pk).online, what="online", timeout=20
        )
        wait_for(
            lambda: TelemetrySample.objects.filter(device=device).exists(),
            what="a stored temperature",
        )
    finally:
        sim.stop()
        bridge.stop()


def test_a_retained_flag_counts_as_a_replay_only_right_after_subscribing():
    from devices.bridge.connection import RETAIN_REPLAY_WINDOW, is_replay

    assert is_replay(True, received_at=100.5, subscribed_at=100.0)
    assert not is_replay(
        True, received_at=100.0 + RETAIN_REPLAY_WINDOW + 1, subscribed_at=100.0
    )
    assert not is_replay(False, received_at=100.5, subscribed_at=100.0)
