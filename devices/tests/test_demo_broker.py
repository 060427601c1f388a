"""Issue 9.3: `make run`'s own Mosquitto runs with dynamic security, so the demo shows
real per-device credentials, and its simulated devices connect with theirs.

Drives run_demo's broker start-up and simulator start (the parts that concern the
broker) against a Mosquitto of its own on a free port, with a private state folder.
"""

import io
import json
import queue
import shutil
import socket
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from audit.models import AuditEvent
from devices.models import Device
from devices.tests import test_dynsec
from poolsaas.management.commands.run_demo import Command

WAIT = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def demo(settings):
    if not Command._dynsec_available():
        pytest.skip("Mosquitto's dynamic-security plugin is not installed")
    # Not pytest's tmp_path: Mosquitto drops root and must reach its folder.
    var = Path(tempfile.mkdtemp(prefix="poolsaas-demo-test-"))
    var.chmod(0o755)
    settings.VAR_DIR = var
    command = Command(stdout=io.StringIO())
    command.children = []
    port = free_port()
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    yield command, port, env
    command._stop_all()
    deadline = time.monotonic() + WAIT
    while port_open(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not port_open(port), "the demo's Mosquitto outlived the demo"
    shutil.rmtree(var, ignore_errors=True)


def listen(port: int, username: str, password: str, topic: str) -> tuple:
    messages: queue.Queue = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-watch")
    client.username_pw_set(username, password)
    client.on_message = lambda c, u, m: messages.put((m.topic, m.payload))
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client, messages


@pytest.mark.mqtt
def test_the_demo_broker_gives_each_simulated_device_its_own_password(
    demo, device_a, device_b
):
    command, port, env = demo
    command._start_broker("127.0.0.1", port, env)
    assert env["MQTT_DYNSEC_ENABLED"] == "true"
    assert "dynamic security" in command.stdout.getvalue()

    credentials = json.loads(command.sim_credentials.read_text())
    assert set(credentials) == {"ESP-A1A1A1", "ESP-B2B2B2"}
    assert command.sim_credentials.stat().st_mode & 0o077 == 0
    for device in (device_a, device_b):
        fresh = Device.objects.get(pk=device.pk)
        assert fresh.mqtt_password == credentials[device.device_id]["password"]
    assert AuditEvent.objects.filter(action="device.credentials_issued").count() == 2

    # Anonymous and wrong logins are refused: this broker wants credentials.
    probe = test_dynsec.MqttProbe("ESP-A1A1A1")
    probe.client.username_pw_set("ESP-A1A1A1", "wrong")
    probe.client.connect("127.0.0.1", port)
    deadline = time.monotonic() + WAIT
    while not probe.connected.is_set() and time.monotonic() < deadline:
        probe.client.loop(timeout=0.05)
    assert probe.connect_code.is_failure
    probe.client.disconnect()

    watcher, messages = listen(
        port, env["MQTT_USERNAME"], env["MQTT_PASSWORD"], "devices/ESP-A1A1A1/status"
    )
    try:
        command._start_devices("127.0.0.1", port, env)
        topic, payload = messages.get(timeout=WAIT)
        assert topic == "devices/ESP-A1A1A1/status"
        assert payload == b"online"
    finally:
        watcher.disconnect()
        watcher.loop_stop()


@pytest.mark.mqtt
def test_a_second_start_reuses_the_admin_password(demo, device_a):
    command, port, env = demo
    command._start_broker("127.0.0.1", port, env)
    first = env["MQTT_PASSWORD"]
    command._stop_all()
    deadline = time.monotonic() + WAIT
    while port_open(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    command.children = []
    command._start_broker("127.0.0.1", port, env)
    assert env["MQTT_PASSWORD"] == first
    # The admin still logs in to the state kept from the first start.
    from devices.services.dynsec import DynsecConfig, dynsec_device_exists

    config = DynsecConfig("127.0.0.1", port, False, env["MQTT_USERNAME"], first)
    assert dynsec_device_exists(device_id="ESP-A1A1A1", config=config)
