"""The live path under a burst, through the real processes: daphne (a subprocess on the
test database) serving 200 JSON sockets, the real bridge (in this process), Mosquitto
and Redis (the channel layer). Devices of two tenants publish a burst far faster than
the bridge's broadcast window; every socket must end with the latest state of its own
pool (the design delivers the latest state per pool, docs/architecture.md "The live
path"), and no socket may ever see a value of another pool, let alone another
tenant's."""

import asyncio
import gc
import json
import os
import time
import uuid
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest

from devices.models import Device, Pool
from devices.tests.test_browser import live_url, prefix, wait_for  # noqa: F401

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.redis,
    pytest.mark.postgres_only,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture(autouse=True)
def pubsub_layer(monkeypatch, settings):
    """The pub/sub layer (poolsaas/live/layer.py) here and in daphne (its env)."""
    from django.conf import settings as live

    monkeypatch.setenv("LIVE_CHANNEL_LAYER", "pubsub")
    hosts = [{"address": live.REDIS_URL, "socket_timeout": None}]
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "poolsaas.live.layer.LiveChannelLayer",
            "CONFIG": {
                "hosts": hosts,
                # As settings names it in daphne.
                "prefix": os.environ.get("LIVE_CHANNEL_PREFIX")
                or f"poolsaas.db{urlsplit(live.REDIS_URL).path.strip('/') or '0'}.",
                "capacity": 1000,
            },
        }
    }


POOLS_PER_TENANT = 10
SOCKETS_PER_POOL = 10  # 2 tenants x 10 pools x 10 sockets = 200 sockets
BURST = 10  # messages per device, back to back
WAIT = 60.0


def value(pool_index: int, k: int) -> float:
    """The temperature a device of pool `pool_index` sends k-th: the integer part
    names the pool, so a socket can tell whose value it got."""
    return pool_index + k / 10


def access_token(membership) -> str:
    from rest_framework_simplejwt.tokens import AccessToken

    from tenants.auth import TENANT_CLAIM

    token = AccessToken.for_user(membership.user)
    token[TENANT_CLAIM] = membership.tenant.code.hex
    return str(token)


@pytest.fixture
def world(olivia, carol, platform_broker, prefix):  # noqa: F811
    """Pools of two tenants, each with a v3.1 device, and the bridge running."""
    from devices.bridge.runner import Bridge

    pools = []
    for membership in (olivia, carol):
        for i in range(POOLS_PER_TENANT):
            pool = Pool.objects.create(tenant=membership.tenant, name=f"Fan {i}")
            device = Device.objects.create(
                tenant=membership.tenant,
                pool=pool,
                broker=platform_broker,
                device_id=f"esp32-{uuid.uuid4().hex[:8]}",
                topic_prefix=prefix,
                protocol="v3.1",
            )
            pools.append((membership, pool, device))
    bridge = Bridge(
        refresh_interval=0.3,
        sweep_interval=0.5,
        flush_interval=0.1,
        broadcast_window=0.05,
        min_backoff=0.1,
        max_backoff=0.5,
        share_group=f"fan{uuid.uuid4().hex[:8]}",
        stats_interval=3600,
    ).start()
    try:
        assert bridge.wait_ready(10)
        yield pools, bridge
    finally:
        bridge.stop()
        gc.collect()


async def open_socket(base, membership, pool, seen, ready, gate):
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake

    url = base.replace("http://", "ws://") + f"/ws/pools/{pool.code.hex}/"
    # A few handshakes at a time: daphne closes one its application has not accepted
    # within 5 s, and each costs a login check on a shared, loaded machine.
    # On a loaded machine a handshake may still miss daphne's 5 s: it is tried again
    # (what is tested is the delivery, not the handshake's speed).
    async with gate:
        for attempt in range(10):
            try:
                ws = await connect(
                    url,
                    additional_headers={
                        "Authorization": f"Bearer {access_token(membership)}"
                    },
                    origin=base,
                    open_timeout=30,
                    compression=None,
                    ping_interval=None,
                )
                break
            except (OSError, EOFError, InvalidHandshake):
                if attempt == 9:
                    raise
                await asyncio.sleep(1)
        first = json.loads(await ws.recv())
    assert first["type"] == "snapshot", first
    ready.append(ws)

    async def read():
        async for text in ws:
            message = json.loads(text)
            if message.get("type") in ("state", "snapshot"):
                state = message.get("state") or message.get("device", {}).get("state")
                temperature = (state or {}).get("temperature")
                if temperature is not None:
                    seen.append(temperature)

    return asyncio.ensure_future(read())


def publish_burst(pools, prefix):  # noqa: F811
    """Every device sends BURST temperatures back to back, interleaved."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"fan-{uuid.uuid4().hex[:8]}"
    )
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    try:
        infos = []
        for k in range(BURST):
            for index, (_, _, device) in enumerate(pools):
                infos.append(
                    client.publish(
                        f"{prefix}/{device.device_id}/temperature/state",
                        f"{value(index, k):.1f}",
                        qos=1,
                    )
                )
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def test_every_socket_ends_with_its_pools_latest_state_after_a_burst(
    live_url,  # noqa: F811
    world,
    prefix,  # noqa: F811
):
    pools, bridge = world

    async def run():
        sockets = []
        ready = []
        seen: list[list[float]] = []
        owners: list[int] = []
        gate = asyncio.Semaphore(3)
        for index, (membership, pool, _) in enumerate(pools):
            for _ in range(SOCKETS_PER_POOL):
                seen.append([])
                owners.append(index)
                sockets.append(
                    open_socket(live_url, membership, pool, seen[-1], ready, gate)
                )
        readers = await asyncio.gather(*sockets)
        assert len(ready) == len(pools) * SOCKETS_PER_POOL
        # The bridge knows the pools are watched (the announce, or its next read).
        watched = {f"pool.{pool.code.hex}" for _, pool, _ in pools}
        deadline = time.monotonic() + WAIT
        while not watched <= (bridge.live.watched or set()):
            assert time.monotonic() < deadline, "the bridge never saw the watchers"
            await asyncio.sleep(0.1)
        await asyncio.to_thread(publish_burst, pools, prefix)
        latest = [value(owner, BURST - 1) for owner in owners]
        deadline = time.monotonic() + WAIT
        while any(not s or s[-1] != want for s, want in zip(seen, latest, strict=True)):
            if time.monotonic() > deadline:
                behind = sum(
                    1
                    for s, want in zip(seen, latest, strict=True)
                    if not s or s[-1] != want
                )
                pytest.fail(f"{behind} sockets lack their pool's latest state")
            await asyncio.sleep(0.1)
        for ws in ready:
            await ws.close()
        for reader in readers:
            reader.cancel()
        return seen, owners

    seen, owners = asyncio.run(run())
    # Nothing of another pool, nor of the other tenant, ever reached a socket.
    for values, owner in zip(seen, owners, strict=True):
        foreign = [v for v in values if int(round(v * 10)) // 10 != owner]
        assert not foreign, f"pool {owner}'s socket got {foreign}"
    wait_for(
        lambda: all(
            Device.objects.get(pk=d.pk).state.get("temperature") == value(i, BURST - 1)
            for i, (_, _, d) in enumerate(pools)
        ),
        what="the latest state stored",
    )
