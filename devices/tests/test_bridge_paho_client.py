"""The bridge's paho client hands every PUBLISH straight to on_message while no
filtered callback is registered (paho's matcher skipped), and paho's own dispatch
still runs when one is: on the machine's Mosquitto."""

import threading
import uuid

import paho.mqtt.client as mqtt
import pytest

from devices.bridge.paho_client import BufferedClient
from devices.tests.test_bridge import HOST, PORT, Publisher, wait_for

pytestmark = [pytest.mark.mqtt]


def test_on_message_gets_every_publish_and_filtered_callbacks_still_work():
    prefix = f"paho-{uuid.uuid4().hex[:8]}"
    client = BufferedClient(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"paho-test-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv311,
    )
    client.vet_addresses = False
    got, filtered, subscribed = [], [], []
    client.on_message = lambda c, u, m: got.append((m.topic, m.payload))
    client.on_subscribe = lambda *a: subscribed.append(True)
    client.connect(HOST, PORT)
    stop = threading.Event()

    def serve():
        # As the bridge's connection runs it (BrokerConnection._serve): packets
        # already read into the client's buffer are handled before the next select.
        while not stop.is_set():
            client.loop(timeout=0.05)
            while client.buffered():
                before = client.buffered()
                client.loop_read()
                if client.buffered() == before:
                    break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    pub = Publisher()
    try:
        client.subscribe(f"{prefix}/#", 1)
        wait_for(lambda: subscribed, what="the subscription")
        pub.pub(f"{prefix}/a/telemetry", b"one")
        wait_for(lambda: got, what="the first message")
        assert got == [(f"{prefix}/a/telemetry", b"one")]

        client.message_callback_add(
            f"{prefix}/f/+", lambda c, u, m: filtered.append(m.topic)
        )
        pub.pub(f"{prefix}/f/x", b"two")
        pub.pub(f"{prefix}/b/telemetry", b"three")
        wait_for(lambda: len(got) == 2 and filtered, what="the next messages")
        # paho's rule: a message a filtered callback takes is not on_message's.
        assert filtered == [f"{prefix}/f/x"]
        assert got[1] == (f"{prefix}/b/telemetry", b"three")

        # No on_message: nothing takes it, and nothing fails. (Messages of one
        # publisher arrive in order: once "five" is in, "four" was handled.)
        client.on_message = None
        pub.pub(f"{prefix}/c/telemetry", b"four")
        pub.pub(f"{prefix}/f/y", b"five")
        wait_for(lambda: len(filtered) == 2, what="the message after")
        assert len(got) == 2

        client.message_callback_remove(f"{prefix}/f/+")
        client.on_message = lambda c, u, m: got.append((m.topic, m.payload))
        pub.pub(f"{prefix}/f/z", b"six")
        wait_for(lambda: len(got) == 3, what="the last message")
        assert got[2] == (f"{prefix}/f/z", b"six")
        assert len(filtered) == 2
    finally:
        pub.close()
        stop.set()
        thread.join(5)
        client.disconnect()
