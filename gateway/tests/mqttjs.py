"""The MQTT.js recordings of fixtures/mqttjs_frames.json (see capture_mqttjs.cjs)."""

import json
from functools import cache
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "mqttjs_frames.json"


@cache
def recording() -> dict:
    return json.loads(FIXTURE.read_text())


def frames(name: str = "session") -> list[bytes]:
    """The WebSocket frames as MQTT.js sent them (Node splits a CONNECT in 13)."""
    return [bytes.fromhex(f["hex"]) for f in recording()[name]["frames"]]


def splittings(name: str = "session") -> dict[str, list[bytes]]:
    """The same bytes as captured, one byte per frame, and all in one frame (as
    Chromium sends several packets in one)."""
    captured = frames(name)
    stream = b"".join(captured)
    return {
        "captured": captured,
        "bytewise": [stream[i : i + 1] for i in range(len(stream))],
        "merged": [stream],
    }


def server_packet(name: str) -> bytes:
    """A server packet as MQTT.js's own codec (mqtt-packet) generates it."""
    return bytes.fromhex(recording()["server_packets"][name])
