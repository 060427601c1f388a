"""Issue 10 (settle): removing a device clears its retained messages, so the next
device with its id (perhaps another tenant's) never gets the previous tenant's
programs and time zone, nor its old status.

Real bridge, real Mosquitto, the removal through the service as the page calls it.
"""

import pytest

from devices.models import Device
from devices.services.onboarding import device_remove
from devices.tests import test_bridge
from devices.tests.test_bridge import Publisher, client, esp_id, make_device, wait_for
from firmware import protocol

# The bridge tests' fixtures.
make_bridge, prefix = test_bridge.make_bridge, test_bridge.prefix

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.postgres_only,
    pytest.mark.django_db(transaction=True),
]


def retained_under(root: str) -> dict[str, bytes]:
    """What a new subscriber to `root/#` is handed as retained, right now."""
    found: dict[str, bytes] = {}
    done = []
    c = client()
    c.on_message = lambda cl, u, m: m.retain and found.__setitem__(m.topic, m.payload)
    c.on_subscribe = lambda *a: done.append(True)
    c.connect("127.0.0.1", 1883)
    c.loop_start()
    c.subscribe(f"{root}/#", qos=1)
    wait_for(lambda: done, what="SUBACK")
    # Retained messages are sent right after the SUBACK; a ping round trip later
    # they have all arrived.
    c.publish(f"{root}/__probe__", b"", qos=1).wait_for_publish(3)
    c.disconnect()
    c.loop_stop()
    return {topic: payload for topic, payload in found.items() if payload}


def test_removing_a_device_clears_its_retained_messages(
    make_bridge, prefix, alice, pool_a, pool_b, platform_broker
):
    device = make_device(pool_a, prefix, esp_id(), broker=platform_broker)
    neighbour = make_device(pool_b, prefix, esp_id(), broker=platform_broker)
    bridge = make_bridge()
    assert bridge.wait_ready()
    publisher = Publisher()
    try:
        for target in (device, neighbour):
            root = target.topic_root
            publisher.pub(f"{root}/{protocol.STATUS}", b"online", retain=True)
            publisher.pub(f"{root}/pump/state", b"ON", retain=True)
            publisher.pub(
                f"{root}/{protocol.CONFIG_SET}",
                b'{"version":4,"tz":"Europe/Madrid","programs":[]}',
                retain=True,
            )
    finally:
        publisher.close()
    wait_for(lambda: len(retained_under(device.topic_root)) == 3, what="retained")

    device_remove(membership=alice, device=device)

    assert not Device.objects.filter(pk=device.pk).exists()
    wait_for(lambda: not retained_under(device.topic_root), what="retained cleared")
    # Only that device's topics: its neighbour under the same prefix keeps its own.
    assert len(retained_under(neighbour.topic_root)) == 3
