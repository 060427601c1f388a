"""docs/architecture.md names the function at each hop of the two main paths: each
name it uses must exist where the doc says, so the picture cannot drift from the code.
"""

import importlib
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"

# The name as the doc writes it -> where it lives.
NAMES = {
    "BrokerConnection._on_message": "devices.bridge.connection",
    "WorkerThreads._work": "devices.bridge.worker",
    "Dispatcher.handle": "devices.bridge.rooms",
    "DevicesRoom.handle": "devices.mqtt",
    "DeviceTopics": "devices.mqtt.topics",
    "DevicesRoom.updates": "devices.mqtt",
    "messages.pool_state": "poolsaas.live",
    "LiveChannel.send_many": "devices.bridge.live",
    "PoolConsumer.pool_state": "devices.consumers",
    "DevicesRoom.flush": "devices.mqtt",
    "ingest_write": "devices.services.ingest",
    "samples_write": "telemetry.services",
    "PoolConsumer.command": "devices.consumers",
    "command_send": "devices.services.commands",
    "doorbell_ring": "devices.services.commands",
    "messages.command_new": "poolsaas.live",
    "LiveChannel._doorbell": "devices.bridge.live",
    "PublisherThread._on_doorbell": "devices.bridge.publisher",
    "DevicesRoom.publish": "devices.mqtt",
    "Outgoing._publish_command": "devices.mqtt.outgoing",
    "commands_claim": "devices.services.commands",
    "Outbox.publish": "devices.bridge.rooms",
    "_settle_commands": "devices.mqtt.DevicesRoom",
    "command_ack": "devices.services.commands",
    "messages.pool_command": "poolsaas.live",
    "PoolConsumer.pool_command": "devices.consumers",
    "command_v31_done": "devices.services.commands",
    "TenantMiddleware": "tenants.middleware",
    "doorbell_ring_bridges": "poolsaas.live.groups",
    "Outgoing.publish_now": "devices.mqtt.outgoing",
    "command_claim": "devices.services.commands",
    "command_answer": "devices.services.commands",
    "LiveChannel.send_now": "devices.bridge.live",
}


def _resolve(path: str):
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


@pytest.mark.parametrize("name", sorted(NAMES))
def test_every_name_on_the_paths_exists(name):
    assert re.search(rf"\b{re.escape(name)}\b", DOC.read_text()), name
    obj = _resolve(f"{NAMES[name]}.{name}")
    assert callable(obj), name


def test_the_doc_draws_both_paths_as_mermaid():
    text = DOC.read_text()
    assert "```mermaid" in text
    assert "A device message reaches the browser" in text
    assert "A click reaches the device" in text
