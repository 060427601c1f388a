"""The channel layer with Redis: channels-redis's pub/sub layer, bounded and counted.

Why pub/sub (docs/architecture.md, "The live path"): channels-redis's core layer puts
every group message into one Redis list per web process (its inbox, `capacity`
messages for all of its sockets) and the process takes them out again, about four
Redis round trips per message on one event loop. At 1,000 device messages a second
that inbox filled and channels-redis silently dropped the overflow (46 % of the
messages reached no socket in bench/gateway.py). With pub/sub a group is a Redis
channel: a group send is one PUBLISH, each web process holds one subscribed
connection, and Redis pushes every message to it with no round trip per message.

What this adds to channels_redis.pubsub.RedisPubSubChannelLayer:
- each channel's queue (one per socket, in its web process) holds at most `capacity`
  messages. When a socket falls that far behind, its backlog is first merged (of each
  pool's whole states only the newest is kept: latest state wins); if that is not
  enough, the backlog goes as a whole, counted in `drops`, and one `live.resync`
  message takes its place: the consumers then re-check access and send the full
  current state (a snapshot), so the client ends with the latest state of everything
  it shows and is never silently missing updates;
- `group_send_many(pairs)`: several group messages in one pipelined round trip (the
  bridge's sender uses it for each burst of updates).

Redis pub/sub channels ignore the database number, so the prefix (settings) names
the Redis database: processes on another database never hear these messages. A
channel known by name (the bridges' doorbell) stays on the core layer: queued until
one bridge takes it.

What pub/sub does not do, and where the project relies on it not mattering: a message
to a group with no subscriber at that moment is gone (the core layer kept it for
`expiry` seconds). Pages read their state from the database after they join, and the
rings to every bridge (DOORBELL_GROUP) are backed by the bridges' database sweep.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
    _wrap_close,
)

from poolsaas.live import messages

logger = logging.getLogger(__name__)

# Per channel (one socket): what it may be behind before it is resynchronised.
DEFAULT_CAPACITY = 1000

# Whole states of one pool: a newer one makes an older one in a backlog worthless.
MERGEABLE = frozenset({messages.POOL_STATE, messages.TENANT_POOL})

# Process-wide counts (read by stats and tests): "merged", older states of a pool
# dropped from a backlog for its newest; "messages" and "resyncs", backlogs dropped
# whole for a resync.
drops: Counter = Counter()


class LiveShard(RedisSingleShardConnection):
    """One Redis connection of a loop's layer, delivering into bounded queues."""

    def _receive_message(self, message):
        if message is None:
            return
        name = message["channel"]
        data = message["data"]
        if isinstance(name, bytes):
            name = name.decode()
        layer = self.channel_layer
        if name in layer.channels:
            layer.deliver(name, data)
        elif name in layer.groups:
            for channel_name in layer.groups[name]:
                if channel_name in layer.channels:
                    layer.deliver(channel_name, data)

    async def publish_many(self, pairs: list[tuple[str, bytes]]) -> None:
        """PUBLISH each (channel, data) in one pipelined round trip."""
        async with self._lock:
            self._ensure_redis()
            async with self._redis.pipeline(transaction=False) as pipe:
                for channel, data in pairs:
                    pipe.publish(channel, data)
                await pipe.execute()


class LiveLoopLayer(RedisPubSubLoopLayer):
    """The layer of one event loop (channels-redis makes one per loop)."""

    def __init__(self, *args, capacity: int = DEFAULT_CAPACITY, **kwargs):
        super().__init__(*args, **kwargs)
        self.capacity = max(1, int(capacity))
        self._shards = [LiveShard(shard.host, self) for shard in self._shards]
        self._resync = self.channel_layer.serialize(messages.live_resync())
        # Tasks waiting in receive(), so that flush() can end them (below).
        self._receiving: set[asyncio.Task] = set()

    async def receive(self, channel):
        task = asyncio.current_task()
        self._receiving.add(task)
        try:
            return await super().receive(channel)
        finally:
            self._receiving.discard(task)

    async def flush(self):
        """As channels-redis's flush (on close_pools, and when the loop closes), but
        a receive still waiting is cancelled first, while the loop runs: its queue
        is forgotten here, so it could never return, and a pending receive the loop
        closes under is torn down by the garbage collector later, in another test or
        thread ("Event loop is closed" from its queue's get). The bridge's doorbell
        leaves one: a receive it keeps across turns of its rejoin timer."""
        current = asyncio.current_task()
        waiting = [t for t in self._receiving if t is not current and not t.done()]
        for task in waiting:
            task.cancel()
        if waiting:
            await asyncio.wait(waiting, timeout=5)
        await super().flush()

    async def _subscribe_to_channel(self, channel):
        # Unbounded: deliver() bounds it, so that the newest message is never the
        # one refused.
        self.channels[channel] = asyncio.Queue()
        await self._get_shard(channel).subscribe(channel)

    def deliver(self, channel: str, data: bytes) -> None:
        queue = self.channels[channel]
        if queue.qsize() < self.capacity:
            queue.put_nowait(data)
            return
        # Behind by `capacity`. First, latest state wins: of each pool's states in
        # the backlog only the newest is kept, in its place; everything else stays.
        backlog = [queue.get_nowait() for _ in range(queue.qsize())] + [data]
        kept = self._coalesce(backlog)
        if len(kept) < self.capacity:
            drops["merged"] += len(backlog) - len(kept)
            for item in kept:
                queue.put_nowait(item)
            return
        # Still too far behind: the backlog goes as a whole, and one resync (the
        # socket's full state, read again) takes its place.
        drops["messages"] += len(backlog)
        drops["resyncs"] += 1
        logger.warning(
            "live channel %s fell %d messages behind: resynchronised",
            channel,
            len(backlog),
        )
        queue.put_nowait(self._resync)

    def _coalesce(self, backlog: list[bytes]) -> list[bytes]:
        kept: list[bytes] = []
        seen: set[tuple[str, str]] = set()
        for item in reversed(backlog):
            try:
                message = self.channel_layer.deserialize(item)
            except Exception:  # noqa: BLE001 - kept as it is, never lost here
                kept.append(item)
                continue
            kind, pool = message.get("type"), message.get("pool")
            if kind in MERGEABLE and isinstance(pool, str):
                if (kind, pool) in seen:
                    continue
                seen.add((kind, pool))
            kept.append(item)
        kept.reverse()
        return kept

    async def group_send_many(self, pairs: list[tuple[str, dict]]) -> None:
        """Send each (group, message), one pipelined round trip per shard."""
        by_shard: dict[int, list[tuple[str, bytes]]] = {}
        for group, message in pairs:
            name = self._get_group_channel_name(group)
            index = self._shards.index(self._get_shard(name))
            by_shard.setdefault(index, []).append(
                (name, self.channel_layer.serialize(message))
            )
        for index, batch in by_shard.items():
            await self._shards[index].publish_many(batch)


class LiveChannelLayer(RedisPubSubChannelLayer):
    """settings.CHANNEL_LAYERS' backend when Redis is configured.

    Groups and the channels this layer makes (`new_channel`: every socket's, the
    bridges' listeners) ride pub/sub. A channel known by name (the bridges' doorbell,
    poolsaas.live.groups.DOORBELL) keeps channels-redis's core layer: a ring waits in
    its list until one bridge takes it, as before."""

    def __init__(self, hosts=None, prefix="poolsaas.", expiry=30, **kwargs):
        super().__init__(hosts=hosts, prefix=prefix, **kwargs)
        self.prefix = prefix
        self._named = RedisChannelLayer(
            hosts=hosts, expiry=expiry, capacity=kwargs.get("capacity", 100)
        )

    def _pubsub(self, channel: str) -> bool:
        return channel.startswith(self.prefix)

    async def send(self, channel, message):
        if self._pubsub(channel):
            return await self._get_layer().send(channel, message)
        return await self._named.send(channel, message)

    async def receive(self, channel):
        if self._pubsub(channel):
            return await self._get_layer().receive(channel)
        return await self._named.receive(channel)

    async def group_send_many(self, pairs: list[tuple[str, dict]]) -> None:
        await self._get_layer().group_send_many(pairs)

    async def flush(self):
        await self._get_layer().flush()
        await self._named.flush()

    async def close_pools(self) -> None:
        """Close this loop's connections (as the core layer's close_pools). A plain
        method: the pub/sub layer's attribute fallback needs a running loop, and the
        bridge looks this up before running it."""
        layer = self._layers.pop(asyncio.get_running_loop(), None)
        if layer is not None:
            await layer.flush()
        await self._named.close_pools()

    def _get_layer(self):
        loop = asyncio.get_running_loop()
        try:
            return self._layers[loop]
        except KeyError:
            layer = LiveLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
            return layer
