"""Dashboard socket minutes: the JSON live sockets (devices/consumers) count their
started minutes per tenant with the gateway's SocketUsage, handed to metering on a
heartbeat and at the close. Through the real ASGI stack and Redis."""

import pytest

from billing import metering
from devices.tests.test_consumers import pool_path, receive_type, session_cookie, socket
from gateway.tests.test_consumer import eventually, usage_total

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

KIND = metering.DASHBOARD_SOCKET_MINUTES


async def opened(path, member):
    comm = socket(path, cookie=await session_cookie(member))
    connected, _ = await comm.connect()
    assert connected
    await receive_type(comm, "snapshot" if path.startswith("/ws/pools/") else "hello")
    return comm


async def test_each_socket_counts_its_started_minute_on_the_heartbeat(
    olivia, carol, pool_a, settings, redis_clean
):
    settings.LIVE_USAGE_HEARTBEAT_SECONDS = 0.1
    a, b = olivia.tenant_id, carol.tenant_id
    overview = await opened("/ws/tenant/", olivia)
    pool = await opened(pool_path(pool_a), olivia)
    other = await opened("/ws/tenant/", carol)

    def used():
        return {t: usage_total(t, KIND) for t in (a, b)}

    # Every accepted socket has started its first minute: handed on by the heartbeat
    # while the sockets are still open...
    await eventually(lambda: used() == {a: 2, b: 1}, "the heartbeat's minutes")
    # ...and neither a later heartbeat nor the close counts that minute again.
    for comm in (overview, pool, other):
        await comm.disconnect()
    assert used() == {a: 2, b: 1}
    # Nothing else is counted for the dashboard (no messages kind).
    assert usage_total(a, metering.GATEWAY_SOCKET_MINUTES) == 0


async def test_the_close_hands_on_what_no_heartbeat_did(
    olivia, pool_a, settings, redis_clean
):
    settings.LIVE_USAGE_HEARTBEAT_SECONDS = 3600
    comm = await opened(pool_path(pool_a), olivia)
    assert usage_total(olivia.tenant_id, KIND) == 0
    await comm.disconnect()
    assert usage_total(olivia.tenant_id, KIND) == 1


async def test_a_refused_socket_counts_nothing(carol, pool_a, settings, redis_clean):
    settings.LIVE_USAGE_HEARTBEAT_SECONDS = 0.1
    # Another tenant's pool: refused at the handshake, never accepted.
    comm = socket(pool_path(pool_a), cookie=await session_cookie(carol))
    connected, _ = await comm.connect()
    assert not connected
    assert usage_total(carol.tenant_id, KIND) == 0
    assert usage_total(pool_a.tenant_id, KIND) == 0
