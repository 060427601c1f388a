"""The channel layer (poolsaas/live/layer.py) on the real Redis: group sends in one
round trip, a socket that falls behind keeps each pool's newest state, and one that
falls too far behind gets one counted resync instead of silent gaps."""

import asyncio
import uuid

import pytest
from django.conf import settings

from poolsaas.live import layer as live_layer
from poolsaas.live import messages

pytestmark = [pytest.mark.redis]


def make_layer(capacity: int):
    if not getattr(settings, "REDIS_URL", ""):
        pytest.skip("needs Redis")
    return live_layer.LiveChannelLayer(
        hosts=[{"address": settings.REDIS_URL, "socket_timeout": None}],
        prefix=f"test{uuid.uuid4().hex[:8]}.",
        capacity=capacity,
    )


async def joined(layer, group: str) -> str:
    """A channel in `group`, once Redis delivers to it (SUBSCRIBE is asynchronous)."""
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    probe = {"type": "probe"}
    # Never cancelled: the pub/sub layer forgets a channel whose receive is.
    waiting = asyncio.ensure_future(layer.receive(channel))
    for _ in range(100):
        await layer.group_send(group, probe)
        done, _ = await asyncio.wait({waiting}, timeout=0.1)
        if done:
            break
    # Drain stray probes.
    await asyncio.sleep(0.2)
    inner = layer._get_layer()
    while not inner.channels[channel].empty():
        inner.channels[channel].get_nowait()
    return channel


def state(pool: str, value: int) -> dict:
    return messages.pool_state(
        pool=pool, state={"temperature": value}, online=True, last_seen=None
    )


async def received(layer, channel, n: int) -> list[dict]:
    return [await layer.receive(channel) for _ in range(n)]


async def test_a_backlog_keeps_each_pools_newest_state_and_every_other_message():
    layer = make_layer(capacity=4)
    try:
        channel = await joined(layer, "g")
        before = dict(live_layer.drops)
        event = messages.pool_event(pool="a", event={"kind": "x"})
        await layer.group_send_many(
            [("g", state("a", 1)), ("g", event), ("g", state("b", 1))]
            + [("g", state("a", n)) for n in range(2, 6)]
        )
        got = await received(layer, channel, 3)
        assert got == [event, state("b", 1), state("a", 5)]
        assert live_layer.drops["merged"] - before.get("merged", 0) == 4
        assert live_layer.drops["resyncs"] == before.get("resyncs", 0)
    finally:
        await layer.close_pools()


async def test_a_socket_too_far_behind_gets_one_resync_counted():
    layer = make_layer(capacity=3)
    try:
        channel = await joined(layer, "g")
        before = dict(live_layer.drops)
        # Five distinct pools: nothing merges, so the backlog cannot shrink.
        await layer.group_send_many([("g", state(f"p{n}", n)) for n in range(5)])
        await asyncio.sleep(0.3)
        got = await received(layer, channel, 2)
        assert got == [messages.live_resync(), state("p4", 4)]
        assert live_layer.drops["resyncs"] - before.get("resyncs", 0) == 1
        assert live_layer.drops["messages"] - before.get("messages", 0) == 4
    finally:
        await layer.close_pools()


async def test_groups_carry_the_prefix_so_other_databases_hear_nothing():
    one, other = make_layer(capacity=10), make_layer(capacity=10)
    try:
        mine = await joined(one, "bridges.watch")
        theirs = await joined(other, "bridges.watch")
        await one.group_send("bridges.watch", {"type": "watch", "group": "x"})
        assert (await one.receive(mine))["group"] == "x"
        await asyncio.sleep(0.3)
        assert other._get_layer().channels[theirs].empty()
    finally:
        await one.close_pools()
        await other.close_pools()


async def test_a_named_channel_queues_until_one_receiver_takes_it():
    """The bridges' doorbell: rung before any bridge listens, taken by one."""
    layer = make_layer(capacity=10)
    name = f"test-doorbell-{uuid.uuid4().hex[:8]}"
    try:
        await layer.send(name, {"type": "command.new", "command": "c"})
        assert (await asyncio.wait_for(layer.receive(name), 5))["command"] == "c"
    finally:
        await layer.close_pools()
