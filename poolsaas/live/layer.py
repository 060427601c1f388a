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
  messages. A socket that falls that far behind loses its backlog as a whole, counted
  in `drops`, and is handed one `live.resync` message instead: the consumers then
  re-check access and send the full current state (a snapshot), so the client ends
  with the latest state of everything it shows and is never silently missing updates;
- `group_send_many(pairs)`: several group messages in one pipelined round trip (the
  bridge's sender uses it for each burst of updates).

Redis pub/sub channels ignore the database number, so the prefix (settings) names
the Redis database: processes on another database never hear these messages.

What pub/sub does not do, and where the project relies on it not mattering: a message
to a channel or group with no subscriber at that moment is gone (the core layer kept
it for `expiry` seconds). Pages read their state from the database when they join;
the bridges' doorbell is backed by their database sweep; and every bridge that
listens on the doorbell channel hears a ring (the claim is a conditional UPDATE, so
a command is still published once).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

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

# Process-wide counts of what the layer threw away (read by stats and tests).
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

    def _name(self, channel: str) -> str:
        """Redis pub/sub channels are server-wide (no database number): every name
        carries the layer's prefix (settings: one per Redis database), so two
        deployments or test runs on one Redis never hear each other's doorbell."""
        return channel if channel.startswith(self.prefix) else self.prefix + channel

    async def send(self, channel, message):
        await super().send(self._name(channel), message)

    async def receive(self, channel):
        return await super().receive(self._name(channel))

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
        # Behind by `capacity`: drop the backlog, hand one resync instead.
        dropped = 0
        while not queue.empty():
            queue.get_nowait()
            dropped += 1
        drops["messages"] += dropped + 1
        drops["resyncs"] += 1
        logger.warning(
            "live channel %s fell %d messages behind: resynchronised", channel, dropped
        )
        queue.put_nowait(self._resync)

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
    """settings.CHANNEL_LAYERS' backend when Redis is configured."""

    async def group_send_many(self, pairs: list[tuple[str, dict]]) -> None:
        await self._get_layer().group_send_many(pairs)

    async def close_pools(self) -> None:
        """Close this loop's connections (as the core layer's close_pools). A plain
        method: the pub/sub layer's attribute fallback needs a running loop, and the
        bridge looks this up before running it."""
        layer = self._layers.pop(asyncio.get_running_loop(), None)
        if layer is not None:
            await layer.flush()

    def _get_layer(self):
        loop = asyncio.get_running_loop()
        try:
            return self._layers[loop]
        except KeyError:
            layer = LiveLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
            return layer
