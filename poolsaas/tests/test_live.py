"""The channel layer's messages and the watch registry (poolsaas.live).

- every channel-layer message dict is written in poolsaas/live/messages.py only;
- a watched group counts while its page's task runs, and for WATCH_TTL after;
- the registry works on Redis (keys we own) and in memory (no Redis at all).
"""

import asyncio
import os
import re
import time
import uuid
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync

from poolsaas.live import messages, watch

ROOT = Path(__file__).resolve().parents[2]
BUILDER = ROOT / "poolsaas" / "live" / "messages.py"
SKIP = {".venv", "node_modules", "tests", "firmware", "bench", "var", "static"}
# Types that go over the channel layer: their dicts belong to the builder module.
TYPE_LITERAL = re.compile(
    r"""["']type["']\s*:\s*["'](?:(?:pool|tenant|command|config|device|access)\.|watch["'])"""
    r"""|\btype\s*=\s*["'](?:pool|tenant|command|config|device|access)\."""
)
CONSTANTS = [
    name for name, value in vars(messages).items() if name.isupper() and "." in value
]
TYPE_CONSTANT = re.compile(
    r"""["']type["']\s*:\s*(?:messages\.)?(?:""" + "|".join(CONSTANTS) + r")\b"
)


def _server_files():
    for path in ROOT.rglob("*.py"):
        parts = set(path.relative_to(ROOT).parts[:-1])
        if parts & SKIP or path.name.startswith("test_"):
            continue
        yield path


def test_channel_layer_messages_are_built_only_in_the_builder_module():
    offenders = []
    for path in _server_files():
        if path == BUILDER:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if TYPE_LITERAL.search(line) or TYPE_CONSTANT.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_check_catches_a_dict_built_elsewhere(tmp_path):
    # The check itself, on lines as a service would write them.
    assert TYPE_LITERAL.search('broadcast(g, {"type": "pool.event", "pool": p})')
    assert TYPE_LITERAL.search("{'type': 'watch', 'group': g}")
    assert TYPE_LITERAL.search('dict(type="access.changed")')
    assert TYPE_CONSTANT.search('layer.send(DOORBELL, {"type": CONFIG_PUBLISH})')
    # What consumers send to browsers is not a channel-layer message.
    assert not TYPE_LITERAL.search('send_json({"type": "access", "role": r})')
    assert not TYPE_LITERAL.search('send_json({"type": "command", **c})')


def test_builders_keep_the_shapes_consumers_read():
    assert messages.pool_state(
        pool="p", state={"a": 1}, online=True, last_seen=None
    ) == {
        "type": "pool.state",
        "pool": "p",
        "state": {"a": 1},
        "online": True,
        "last_seen": None,
    }
    assert messages.tenant_pool(pool="p", online=False, state={}) == {
        "type": "tenant.pool",
        "pool": "p",
        "online": False,
        "state": {},
    }
    assert messages.access_changed() == {"type": "access.changed"}
    assert messages.retained_clear(broker=3, root="r/ESP-1") == {
        "type": "device.retained_clear",
        "broker": 3,
        "root": "r/ESP-1",
    }


def test_the_same_presence_event_reads_the_same_from_every_builder():
    from devices.services.events import device_presence_event, event_payload

    kind, text, data = device_presence_event(online=False, silent_for=90.0)
    assert (kind, text, data) == (
        "offline",
        "Device offline (no message for 90 s)",
        {"reason": "silence"},
    )
    shown = event_payload(code=None, kind=kind, message=text, ts="t", actor=None)
    assert shown["label"] == "Offline" and shown["tone"] == "bad"


@pytest.fixture(params=["memory", "redis"])
def registry(request, monkeypatch):
    if request.param == "redis":
        url = os.environ.get("REDIS_URL")
        if not url:
            pytest.skip("needs REDIS_URL")
        reg = watch.RedisRegistry(url, key=f"poolsaas:watch:test:{uuid.uuid4().hex}")
    else:
        reg = watch.MemoryRegistry()
    monkeypatch.setattr(watch, "registry", lambda: reg)
    yield reg
    if request.param == "redis":
        reg.client.delete(reg.key)


def test_a_touched_group_counts_until_its_time_to_live_runs_out(registry):
    group = f"pool.{uuid.uuid4().hex}"
    registry.touch([group], ttl=0.5)
    assert group in watch.watched_groups()
    registry.touch([group], ttl=0.1)  # a shorter touch never shortens it
    time.sleep(0.25)
    assert group in watch.watched_groups()
    time.sleep(0.4)
    assert group not in watch.watched_groups()


def test_a_page_holds_its_group_while_its_task_runs(registry, monkeypatch):
    from poolsaas.live.groups import watch_announce

    monkeypatch.setattr(watch, "WATCH_TTL", 0.6)
    monkeypatch.setattr(watch, "WATCH_REFRESH", 0.2)
    monkeypatch.setattr(watch, "_refresher", None)  # a refresher with these times
    group = f"pool.{uuid.uuid4().hex}"

    class Layer:
        sent = []

        async def group_send(self, name, message):
            self.sent.append((name, message))

    async def page(open_for):
        await watch_announce(Layer(), group)
        await asyncio.sleep(open_for)

    async def scenario():
        task = asyncio.ensure_future(page(1.5))
        await asyncio.sleep(1.2)  # twice past the time to live: refreshed
        assert group in watch.watched_groups()
        await task
        await asyncio.sleep(1.0)  # closed: gone once its time to live ran out
        assert group not in watch.watched_groups()

    orig_touch = registry.touch
    monkeypatch.setattr(
        registry, "touch", lambda groups, ttl=None: orig_touch(groups, ttl=0.6)
    )
    async_to_sync(scenario)()
    assert Layer.sent == [("bridges.watch", {"type": "watch", "group": group})]


def test_broadcast_through_hands_this_threads_messages_to_the_sink(monkeypatch):
    import threading

    from poolsaas.live import groups

    def no_layer():
        raise AssertionError("a thread with a sink needs no round trip of its own")

    monkeypatch.setattr(groups, "get_channel_layer", no_layer)
    got, elsewhere = [], []
    groups.broadcast_through(got.extend)
    try:
        assert groups.broadcast_now("pool.ab", {"type": "pool.state"}) is True
        assert got == [("pool.ab", {"type": "pool.state"})]

        def other_thread():
            monkeypatch.setattr(groups, "get_channel_layer", lambda: None)
            elsewhere.append(groups.broadcast_now("pool.cd", {"type": "x"}))

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert elsewhere == [False]  # its own round trip (here: no layer)
        assert len(got) == 1

        def broken(pairs):
            raise RuntimeError("loop closed")

        class Layer:
            sent = []

            async def group_send(self, group, message):
                self.sent.append((group, message))

        # A sink that cannot take it (its loop stopped): sent here, not lost.
        monkeypatch.setattr(groups, "get_channel_layer", Layer)
        groups.broadcast_through(broken)
        assert groups.broadcast_now("pool.ab", {"type": "x"}) is True
        assert Layer.sent == [("pool.ab", {"type": "x"})]
    finally:
        groups.broadcast_through(None)
    monkeypatch.setattr(groups, "get_channel_layer", lambda: None)
    assert groups.broadcast_now("pool.ab", {"type": "x"}) is False
    assert len(got) == 1


def test_the_bridges_threads_broadcast_through_its_live_channel():
    """What the services called by the bridge's writer, sweeps and control thread
    broadcast goes through the live channel's loop and connection (in the OTA bench,
    every progress report had run a new event loop and opened a Redis connection)."""
    from devices.bridge.runner import Bridge
    from poolsaas.live import groups

    bridge = Bridge(live=True)
    seen = []
    thread = bridge._thread(
        lambda: seen.append(getattr(groups._through, "send", None)), "t"
    )
    thread.start()
    thread.join()
    assert seen == [bridge.live.hand_over]
    with pytest.raises(RuntimeError):  # not started: the caller sends it itself
        bridge.live.hand_over([("pool.ab", {"type": "x"})])
    quiet = Bridge(live=False)
    thread = quiet._thread(
        lambda: seen.append(getattr(groups._through, "send", None)), "t"
    )
    thread.start()
    thread.join()
    assert seen[1] is None
