"""docker-compose.yml and its Mosquitto, checked without Docker (none runs here): the
file's structure (two web processes, two bridges, a worker, one beat; every service
it names exists), and the broker's configuration as production has it: dynamic
security, no anonymous clients, a TLS listener. The configuration itself is started
with this machine's Mosquitto, on loopback ports, with a certificate made here and
the dynamic-security file that the compose entrypoint makes."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

yaml = pytest.importorskip("yaml")

BASE_DIR = Path(__file__).resolve().parents[2]
COMPOSE = BASE_DIR / "docker-compose.yml"
MOSQUITTO = BASE_DIR / "deploy" / "mosquitto"
HOST = "127.0.0.1"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def commands(services: dict, word: str) -> list[str]:
    return [name for name, s in services.items() if word in str(s.get("command", ""))]


def test_two_of_each_process_and_one_beat():
    services = compose()["services"]
    assert len(commands(services, "daphne")) == 2
    bridges = commands(services, "mqtt_bridge")
    assert len(bridges) == 2
    names = [services[b]["command"].split("--name ")[1] for b in bridges]
    assert len(set(names)) == 2  # each bridge its own name (client ids, leases)
    assert len(commands(services, "worker")) == 1
    assert len(commands(services, "beat")) == 1
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                path = BASE_DIR / source
                assert path.exists() or source.endswith("/certs"), volume
    for bridge in bridges:
        env = services[bridge]["environment"]
        assert env["REDIS_URL"] and env["MQTT_USERNAME"]
        assert env["MQTT_DYNSEC_ENABLED"] == "true"


def test_the_broker_is_configured_as_production():
    services = compose()["services"]
    broker = services["mosquitto"]
    assert any("compose.conf" in v for v in broker["volumes"])
    # Only the TLS listener is published, on the host's loopback.
    assert broker["ports"] == ["127.0.0.1:8883:8883"]
    lines = [
        line.split("#")[0].strip()
        for line in (MOSQUITTO / "compose.conf").read_text().splitlines()
    ]
    assert "allow_anonymous false" in lines
    assert any(
        line.startswith("plugin ") and "dynamic_security" in line for line in lines
    )
    assert "listener 8883" in lines and any(
        line.startswith("certfile ") for line in lines
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _connect(port: int, *, username=None, password=None, tls=None) -> int:
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311
    )
    if username:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(ca_certs=tls)
    codes = []
    client.on_connect = lambda c, u, f, rc, p: codes.append(rc.value)
    client.connect(HOST, port, 5)
    deadline = time.monotonic() + 10
    while not codes and time.monotonic() < deadline:
        client.loop(0.1)
    client.disconnect()
    assert codes, "no CONNACK"
    return codes[0]


@pytest.mark.mqtt
def test_the_compose_broker_starts_and_refuses_anonymous_clients(tmp_path):
    tools = ("mosquitto", "mosquitto_ctrl", "openssl")
    plugin = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
    if not all(shutil.which(t) for t in tools) or not plugin.exists():
        pytest.skip("needs mosquitto, mosquitto_ctrl, openssl and the dynsec plugin")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", "privkey.pem", "-out", "fullchain.pem"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    # The entrypoint's first start, up to Mosquitto itself.
    state = tmp_path / "dynamic-security.json"
    env = {
        **os.environ,
        "DYNSEC_STATE": str(state),
        "MQTT_USERNAME": "poolsaas-admin",
        "MQTT_PASSWORD": "compose-test-password",
        "DYNSEC_INIT_ONLY": "1",
    }
    subprocess.run(
        ["sh", str(MOSQUITTO / "compose-entrypoint.sh")], env=env, check=True
    )
    plain, tls = _free_port(), _free_port()
    conf = (MOSQUITTO / "compose.conf").read_text()
    conf = (
        conf.replace("listener 1883", f"listener {plain} {HOST}")
        .replace("listener 8883", f"listener {tls} {HOST}")
        .replace("/mosquitto/certs", str(tmp_path))
        .replace("/usr/lib/mosquitto_dynamic_security.so", str(plugin))
        .replace("/mosquitto/data/dynamic-security.json", str(state))
        .replace("persistence true", "persistence false")
        .replace("log_dest stdout", f"log_dest file {tmp_path}/mosquitto.log")
    )
    (tmp_path / "mosquitto.conf").write_text(f"user root\n{conf}")
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(tmp_path / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, tls), 0.2).close()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "mosquitto.log").read_text()
                time.sleep(0.1)
        assert _connect(plain) in (5, 135)  # anonymous: not authorised
        admin = {"username": "poolsaas-admin", "password": "compose-test-password"}
        assert _connect(plain, **admin) == 0
        assert _connect(tls, tls=str(tmp_path / "fullchain.pem"), **admin) == 0
    finally:
        proc.kill()
        proc.wait(5)
