"""The bridge's own endpoint (devices.bridge.probes), over the real bridge process:
`manage.py mqtt_bridge --http-port N` on the test database, Mosquitto, Redis and a
simulated device (firmware.sim.VirtualDevice, the real controller code). /metrics
counts what the device published; /ready says the platform broker is connected.
Every wait is on a condition with a bounded timeout.
"""

import json
import re
import socket
import urllib.error
import urllib.request

import pytest

from devices.tests.test_bridge import wait_for
from devices.tests.test_config_push import (  # noqa: F401 - fixtures
    bridge,
    prefix,
    ps1_pool,
    sims,
)

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text: str, name: str, labels: str = "") -> float:
    """One sample of the Prometheus text (0 when absent)."""
    pattern = "^" + re.escape(name + (f"{{{labels}}}" if labels else "")) + r" (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_bridge_metrics_count_what_a_device_publishes(bridge, ps1_pool, sims):  # noqa: F811
    pool, device = ps1_pool
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    bridge.start(args=("--http-port", str(port)))
    wait_for(
        lambda: get(base + "/ready")[0] == 200, timeout=30, what="the bridge ready"
    )
    status, body = get(base + "/ready")
    assert json.loads(body)["checks"]["platform_broker"] == "ok"
    assert get(base + "/health")[0] == 200

    before = get(base + "/metrics")[1]
    start_in = sample(before, "poolsaas_bridge_messages_in_total")
    start_accepted = sample(before, "poolsaas_bridge_messages_accepted_total")

    sim = sims(device)
    sim.wait_connected()
    sim.local("pump", True)  # a state change, published at once

    def counted() -> bool:
        text = get(base + "/metrics")[1]
        return (
            sample(text, "poolsaas_bridge_messages_accepted_total") > start_accepted
            and sample(text, "poolsaas_bridge_flushes_total") > 0
        )

    wait_for(counted, timeout=30, what="the bridge to count the device's messages")
    text = get(base + "/metrics")[1]
    assert sample(text, "poolsaas_bridge_messages_in_total") > start_in
    assert sample(text, "poolsaas_bridge_ingest_lag_seconds_count") > 0
    assert sample(text, "poolsaas_bridge_write_batch_seconds_count") > 0
    platform = f'broker="{device.broker_id}",platform="1"'
    assert sample(text, "poolsaas_bridge_broker_connected", platform) == 1
    assert "poolsaas_bridge_messages_dropped_total" in text
    assert get(base + "/nothing")[0] == 404


def test_bridge_endpoint_is_off_unless_asked(bridge, ps1_pool):  # noqa: F811
    # The tests' environment sets BRIDGE_HTTP_PORT=0, as an operator may.
    bridge.start()
    assert "bridge http endpoint" not in bridge.log()
