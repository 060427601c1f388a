"""v3.1 Wi-Fi clear, end to end: the bridge publishes wifi/clear, and the command is
done only when the device reports Wi-Fi disconnected (its only answer), not on any
other report. Real Mosquitto, the database and the bridge in-process."""

import uuid

import pytest

from devices.models import Device
from devices.services.commands import command_send
from devices.tests import test_bridge as tb
from firmware import protocol

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.django_db(transaction=True),
]

prefix = tb.prefix
make_bridge = tb.make_bridge


class ClearableV31(tb.V31Device):
    """Does what the v3.1 contract says on wifi/clear, when told to."""

    def __init__(self, *args, clears: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.clears = clears

    def _on_message(self, c, userdata, msg):
        super()._on_message(c, userdata, msg)
        if msg.topic.endswith("/wifi/clear"):
            if self.clears:
                self.pub("wifi/state", protocol.WIFI_DISCONNECTED)
            else:
                # Still connected: a periodic report that must not count as done.
                self.pub(
                    "wifi/state",
                    '{"status":"connected","ssid":"home","ip":"10.0.0.9",'
                    '"rssi":-61,"quality":"good"}',
                )
                self.pub("temperature/state", "26.7")


def _setup(pool, prefix, platform_broker, make_bridge, clears):
    device_id = f"esp32-{uuid.uuid4().hex[:6]}"
    device = tb.make_device(
        pool, prefix, device_id, broker=platform_broker, proto="v3.1"
    )
    assert make_bridge().wait_ready()
    v31 = ClearableV31(prefix, device_id, clears=clears).start()
    tb.wait_for(lambda: Device.objects.get(pk=device.pk).online, what="online")
    return device, v31


def test_wifi_clear_is_done_when_the_device_reports_disconnected(
    make_bridge, prefix, alice, pool_a, platform_broker
):
    device, v31 = _setup(pool_a, prefix, platform_broker, make_bridge, clears=True)
    try:
        command = command_send(membership=alice, pool=pool_a, op="wifi_clear")
        tb.wait_for(lambda: tb.status(command) == "done", what="wifi clear done")
        assert [s for s in v31.sets if s[0] == "wifi/clear"] == [("wifi/clear", b"1")]
        assert Device.objects.get(pk=device.pk).state["wifi"] == {
            "status": "disconnected"
        }
    finally:
        v31.stop()


def test_wifi_clear_is_not_done_while_the_device_stays_connected(
    make_bridge, prefix, alice, pool_a, platform_broker
):
    device, v31 = _setup(pool_a, prefix, platform_broker, make_bridge, clears=False)
    try:
        command = command_send(membership=alice, pool=pool_a, op="wifi_clear")
        tb.wait_for(lambda: tb.status(command) == "sent", what="sent")
        # The temperature comes after the connected report: once it is stored, the
        # connected report has been seen too.
        tb.wait_for(
            lambda: Device.objects.get(pk=device.pk).state.get("temperature") == 26.7,
            what="later report stored",
        )
        assert Device.objects.get(pk=device.pk).state["wifi"]["rssi"] == -61
        assert tb.status(command) == "sent"
    finally:
        v31.stop()
