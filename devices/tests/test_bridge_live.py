"""The bridge's live sender: merging updates must never drop another pool's."""

import asyncio
import os
import time
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers

from devices.bridge.live import LiveChannel
from poolsaas.live.groups import watch_announce

pytestmark = pytest.mark.skipif(
    not os.environ.get("REDIS_URL"), reason="the live sender runs on channels-redis"
)


def own_layer():
    # A layer of the test's own: the live sender's loop receives on the shared one.
    return channel_layers.make_backend("default")


def receive_all(layer, channel, seconds=1.5):
    got = []

    async def drain():
        while True:
            try:
                got.append(await asyncio.wait_for(layer.receive(channel), seconds))
            except TimeoutError:
                return

    async_to_sync(drain)()
    return got


def test_a_tenant_group_gets_every_pools_update_within_one_window():
    layer = own_layer()
    group = f"tenant.{uuid.uuid4().hex}"
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(group, channel)
    async_to_sync(watch_announce)(layer, group)  # as the overview's socket does
    live = LiveChannel(doorbell=None, on_doorbell=lambda message: None, window=0.5)
    live.start()
    try:
        pools = [uuid.uuid4().hex for _ in range(3)]
        # Three pools, then a second update of the first, all inside one window.
        live.send_many(
            [(group, {"type": "tenant.pool", "pool": p, "n": 1}) for p in pools]
        )
        live.send_many([(group, {"type": "tenant.pool", "pool": pools[0], "n": 2})])
        got = receive_all(layer, channel)
    finally:
        live.stop()
        async_to_sync(layer.group_discard)(group, channel)
    latest = {}
    for message in got:
        latest[message["pool"]] = message["n"]
    # Every pool arrives; the first pool's two updates merge into its newest one.
    assert latest == {pools[0]: 2, pools[1]: 1, pools[2]: 1}


def test_a_group_announced_by_a_page_is_sent_to_before_the_next_scan():
    layer = own_layer()
    group = f"pool.{uuid.uuid4().hex}"
    # A scan once a minute: only the page's announcement can make it known in time.
    live = LiveChannel(
        doorbell=None, on_doorbell=lambda message: None, watch_interval=60
    )
    live.start()
    try:
        deadline = time.monotonic() + 5
        while live.watched is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the first scan has run
        assert live.watched is not None and group not in live.watched
        channel = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)(group, channel)
        async_to_sync(watch_announce)(layer, group)
        while group not in live.watched and time.monotonic() < deadline:
            time.sleep(0.02)
        live.send_many([(group, {"type": "pool.state", "pool": "p", "n": 1})])
        got = receive_all(layer, channel)
    finally:
        live.stop()
    assert [m["n"] for m in got] == [1]
    assert live.counters["skipped"] == 0
