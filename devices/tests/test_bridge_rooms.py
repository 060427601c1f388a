"""A new app's MQTT room plugs in beside the devices room without touching the runner:
registered in settings.BRIDGE_ROOMS, subscribed on the broker, handed its messages
with the device resolved, its batches flushed and its publishing run.

The routing itself (pure) is tested on the dispatcher; the plug-in through the real
bridge, the machine's Mosquitto and the database.
"""

import threading
import uuid

import pytest

from devices.bridge.directory import Directory
from devices.bridge.rooms import Dispatcher, Room
from devices.mqtt import DevicesRoom
from devices.tests import test_bridge
from devices.tests.test_bridge import Publisher, client, esp_id, make_device, wait_for
from devices.tests.test_bridge_core import _row, telemetry

make_bridge = test_bridge.make_bridge
prefix = test_bridge.prefix

NOW = 1_764_400_000.0


class MeterRoom(Room):
    """A tiny room of a would-be metering app: counts what devices send on
    `meter/in/...`, writes the counts in its flush and answers on `meter/ack`."""

    name = "meter"
    suffixes = ("meter/in/#",)

    def __init__(self) -> None:
        self.seen: list[tuple[int, str, bytes]] = []
        self.pending_count = 0
        self.flushed: list[int] = []
        self.to_ack: list[tuple[int, str]] = []
        self.lock = threading.Lock()

    def handle(self, message, ctx) -> bool:
        if message.payload == b"bad":
            ctx.counters["meter_refused"] += 1
            return False
        self.seen.append((message.device.pk, message.suffix, message.payload))
        self.pending_count += 1
        with self.lock:
            self.to_ack.append((message.broker_id, message.topic))
        return True

    def drain(self):
        count, self.pending_count = self.pending_count, 0
        return count

    def flush(self, batch, out) -> None:
        self.flushed.append(batch)

    def publish(self, out) -> None:
        with self.lock:
            todo, self.to_ack = self.to_ack, []
        for broker_id, topic in todo:
            root = topic.rsplit("/meter/in/", 1)[0]
            out.publish(broker_id, f"{root}/meter/ack", b"ok", qos=1)

    def stats(self):
        return {"metered": len(self.seen)}


def test_the_dispatcher_routes_by_suffix_to_the_room_that_owns_it():
    meter, devices = MeterRoom(), DevicesRoom()
    rows = [_row(1, "ESP-A1A1A1")]
    dispatch = Dispatcher(rooms=[devices, meter], directory=Directory.build(rows))
    assert dispatch.handle(1, "devices/ESP-A1A1A1/meter/in/kwh", b"12", NOW)
    assert dispatch.handle(1, "devices/ESP-A1A1A1/meter/in/water/l", b"3", NOW)
    assert dispatch.handle(1, "devices/ESP-A1A1A1/telemetry", telemetry(), NOW)
    assert meter.seen == [(1, "meter/in/kwh", b"12"), (1, "meter/in/water/l", b"3")]
    assert devices.topics.effects.samples  # telemetry went to the devices room
    # A device of no broker of ours reaches no room; a suffix nobody owns neither.
    assert not dispatch.handle(2, "devices/ESP-A1A1A1/meter/in/kwh", b"1", NOW)
    assert not dispatch.handle(1, "devices/ESP-A1A1A1/meter/ack", b"1", NOW)
    assert not dispatch.handle(1, "devices/ESP-A1A1A1/meter/in/kwh", b"bad", NOW)
    assert len(meter.seen) == 2
    counters = dispatch.counters
    assert counters["unauthorised"] == 1 and counters["malformed"] == 1
    assert counters["meter_refused"] == 1 and counters["accepted"] == 3
    assert dispatch.suffixes()[-1] == "meter/in/#"


def test_two_rooms_cannot_claim_the_same_topic():
    class Greedy(Room):
        suffixes = ("telemetry",)

    with pytest.raises(ValueError, match="telemetry"):
        Dispatcher(rooms=[DevicesRoom(), Greedy()])


@pytest.mark.mqtt
@pytest.mark.django_db(transaction=True)
def test_a_room_from_settings_gets_its_topics_through_the_real_bridge(
    settings, make_bridge, prefix, pool_a, pool_b, platform_broker
):
    settings.BRIDGE_ROOMS = [
        "devices.mqtt.DevicesRoom",
        "devices.tests.test_bridge_rooms.MeterRoom",
    ]
    device = make_device(pool_a, prefix, esp_id(), broker=platform_broker)
    bridge = make_bridge()
    assert bridge.wait_ready()
    meter = bridge.room("meter")
    root = f"{prefix}/{device.device_id}"
    acks = []
    listener = client()
    listener.on_message = lambda c, u, m: acks.append((m.topic, m.payload))
    listener.connect(test_bridge.HOST, test_bridge.PORT)
    listener.subscribe(f"{root}/meter/ack", qos=1)
    listener.loop_start()
    pub = Publisher()
    try:
        pub.pub(f"{root}/meter/in/kwh", b"42")
        pub.pub(f"{prefix}/ESP-{uuid.uuid4().hex[:6].upper()}/meter/in/kwh", b"7")
        pub.pub(f"{root}/telemetry", telemetry(temp=21.5))
        wait_for(lambda: meter.seen, what="the meter room's message")
        wait_for(lambda: sum(meter.flushed) == 1, what="its batch flushed")
        wait_for(lambda: acks, what="its publish on the broker")
        device.refresh_from_db()
        wait_for(
            lambda: (
                (device.refresh_from_db() or device.state.get("temperature")) == 21.5
            ),
            what="the devices room still served",
        )
    finally:
        pub.close()
        listener.disconnect()
        listener.loop_stop()
    assert meter.seen == [(device.pk, "meter/in/kwh", b"42")]  # not the unknown device
    assert acks == [(f"{root}/meter/ack", b"ok")]
    stats = bridge.stats()
    assert stats["metered"] == 1 and stats["unauthorised"] >= 1
