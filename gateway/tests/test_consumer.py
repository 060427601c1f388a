"""/mqtt through the real ASGI stack and the real channel layer (Redis when REDIS_URL
is set): CONNECT by token, SUBSCRIBE over the tenant's devices with the retained
state, live changes, PUBLISH to commands, and the socket's end on access changes."""

import asyncio
import struct

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from devices.models import Command
from gateway import consumer as gateway_consumer
from poolsaas.asgi import application
from poolsaas.live import groups as broadcast

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 3


# --- client packets (MQTT 3.1.1), written out so the test does not trust the codec


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    n, out = len(body), bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes([first]) + bytes(out) + body


def connect(password: str, *, client_id="dash-1", keepalive=30, level=4) -> bytes:
    flags = 0x02 | 0x80 | 0x40  # clean session, username, password
    body = _str("MQTT") + bytes([level, flags]) + struct.pack("!H", keepalive)
    body += _str(client_id) + _str("user@example.test") + _str(password)
    return _packet(0x10, body)


def subscribe(packet_id: int, *filters: str, qos=1) -> bytes:
    body = struct.pack("!H", packet_id)
    for f in filters:
        body += _str(f) + bytes([qos])
    return _packet(0x82, body)


def publish(topic: str, payload: bytes, *, qos=0, packet_id=1) -> bytes:
    body = _str(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return _packet(0x30 | (qos << 1), body)


# --- server packets --------------------------------------------------------------


def parse(stream: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i < len(stream):
        first = stream[i]
        i += 1
        mult = length = 0
        while True:
            byte = stream[i]
            i += 1
            length += (byte & 0x7F) << (7 * mult)
            mult += 1
            if not byte & 0x80:
                break
        out.append((first, stream[i : i + length]))
        i += length
    return out


def as_publish(first: int, body: bytes) -> tuple[str, bytes, bool]:
    n = struct.unpack("!H", body[:2])[0]
    topic = body[2 : 2 + n].decode()
    rest = body[2 + n :]
    if (first >> 1) & 3:
        rest = rest[2:]
    return topic, rest, bool(first & 1)


async def packets(comm, count: int, timeout=TIMEOUT) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    while len(got) < count:
        message = await comm.receive_output(timeout=timeout)
        if message["type"] == "websocket.close":
            raise AssertionError(f"closed after {got}")
        got += parse(message["bytes"])
    return got


async def assert_closed(comm):
    while True:
        message = await comm.receive_output(timeout=TIMEOUT)
        if message["type"] == "websocket.close":
            return


@database_sync_to_async
def access_token(membership) -> str:
    from poolsaas.api.testing import tokens_for

    return str(tokens_for(membership).access_token)


async def opened(subprotocols=("mqtt",)):
    comm = WebsocketCommunicator(
        application,
        "/mqtt",
        headers=[(b"origin", b"https://elsewhere.example"), (b"host", b"127.0.0.1")],
        subprotocols=list(subprotocols),
    )
    connected, subprotocol = await comm.connect(timeout=TIMEOUT)
    return comm, connected, subprotocol


async def connected_as(membership, **kw):
    comm, ok, subprotocol = await opened()
    assert ok and subprotocol == "mqtt"
    await comm.send_to(bytes_data=connect(await access_token(membership), **kw))
    [(first, body)] = await packets(comm, 1)
    assert (first, body) == (0x20, b"\x00\x00")
    return comm


@pytest.fixture
def online_device(device_a):
    device_a.online = True
    device_a.state = {"pump": False, "valve": 1, "temperature": 24.5}
    device_a.save()
    return device_a


async def test_subscribe_gets_retained_state_then_live_changes(olivia, online_device):
    comm = await connected_as(olivia)
    await comm.send_to(bytes_data=subscribe(7, "devices/+/pump/state", "#"))
    got = await packets(comm, 1 + 4)
    assert got[0] == (0x90, b"\x00\x07\x01\x01")
    messages = {as_publish(f, b)[0]: as_publish(f, b) for f, b in got[1:]}
    root = "devices/ESP-A1A1A1"
    assert messages[f"{root}/pump/state"][1:] == (b"OFF", True)
    assert messages[f"{root}/valve/state"][1:] == (b"1", True)
    assert messages[f"{root}/temperature/state"][1:] == (b"24.5", True)
    assert messages[f"{root}/status"][1:] == (b"online", True)

    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    await layer.group_send(
        broadcast.pool_group(online_device.pool.code),
        {
            "type": "pool.state",
            "pool": online_device.pool.code.hex,
            "state": {"pump": True, "valve": 1, "temperature": 24.5},
            "online": True,
            "last_seen": None,
        },
    )
    [(first, body)] = await packets(comm, 1)
    assert as_publish(first, body) == (f"{root}/pump/state", b"ON", False)
    await comm.disconnect()


async def test_publish_set_sends_a_gateway_command(olivia, online_device):
    comm = await connected_as(olivia)
    await comm.send_to(
        bytes_data=publish("devices/ESP-A1A1A1/pump/set", b"ON", qos=1, packet_id=3)
    )
    [(first, body)] = await packets(comm, 1)
    assert (first, body) == (0x40, b"\x00\x03")  # PUBACK

    async def command():
        for _ in range(100):
            c = await database_sync_to_async(
                lambda: Command.objects.filter(pool=online_device.pool).first()
            )()
            if c is not None:
                return c
            await asyncio.sleep(0.05)

    cmd = await command()
    assert cmd is not None
    assert (cmd.op, cmd.value, cmd.source, cmd.actor_id) == (
        "pump",
        "ON",
        "gateway",
        olivia.user_id,
    )
    await comm.disconnect()


async def test_viewer_publish_creates_no_command(victor, online_device):
    before = gateway_consumer.counters["publish_refused:role"]
    comm = await connected_as(victor)
    await comm.send_to(bytes_data=publish("devices/ESP-A1A1A1/pump/set", b"ON"))
    # The socket stays up (a ping is answered) and nothing was created.
    await comm.send_to(bytes_data=b"\xc0\x00")
    [(first, _)] = await packets(comm, 1)
    assert first == 0xD0
    assert gateway_consumer.counters["publish_refused:role"] == before + 1
    assert not await database_sync_to_async(Command.objects.exists)()
    await comm.disconnect()


async def test_other_tenant_gets_subscription_failures(carol, online_device):
    comm = await connected_as(carol)
    await comm.send_to(
        bytes_data=subscribe(
            1, "devices/ESP-A1A1A1/pump/state", "devices/+/pump/state", "missing/#"
        )
    )
    [(first, body)] = await packets(comm, 1)
    assert (first, body) == (0x90, b"\x00\x01\x80\x80\x80")
    await comm.send_to(bytes_data=publish("devices/ESP-A1A1A1/pump/set", b"ON"))
    await comm.send_to(bytes_data=b"\xc0\x00")
    [(first, _)] = await packets(comm, 1)
    assert first == 0xD0
    assert not await database_sync_to_async(Command.objects.exists)()
    await comm.disconnect()


@pytest.mark.parametrize(
    "password,code", [("not-a-token", 0x04), ("", 0x04)], ids=["bad", "empty"]
)
async def test_bad_token_is_refused_and_closed(db, password, code):
    comm, ok, _ = await opened()
    assert ok
    await comm.send_to(bytes_data=connect(password))
    [(first, body)] = await packets(comm, 1)
    assert (first, body) == (0x20, bytes([0, code]))
    await assert_closed(comm)


async def test_suspended_tenant_is_not_authorised(olivia):
    token = await access_token(olivia)

    def suspend():
        from tenants.models import Tenant

        Tenant.objects.filter(pk=olivia.tenant_id).update(
            status=Tenant.Status.SUSPENDED
        )

    await database_sync_to_async(suspend)()
    comm, ok, _ = await opened()
    await comm.send_to(bytes_data=connect(token))
    [(first, body)] = await packets(comm, 1)
    assert (first, body) == (0x20, b"\x00\x05")
    await assert_closed(comm)


async def test_without_the_mqtt_subprotocol_the_socket_is_refused(db):
    comm, ok, _ = await opened(subprotocols=())
    assert not ok


async def test_role_change_closes_the_socket(alice, olivia, online_device):
    from tenants.services import membership_role_change

    comm = await connected_as(olivia)
    await database_sync_to_async(membership_role_change)(
        membership=alice, target=olivia, role="viewer"
    )
    await assert_closed(comm)


async def test_removal_closes_the_socket(alice, olivia, online_device):
    comm = await connected_as(olivia)

    def remove():
        from tenants.services.accounts import access_changed

        user = olivia.user
        olivia.delete()
        access_changed(user)

    await database_sync_to_async(remove)()
    await assert_closed(comm)


async def test_newer_socket_with_the_same_client_id_wins(olivia, online_device):
    older = await connected_as(olivia, client_id="tab")
    newer = await connected_as(olivia, client_id="tab")
    await assert_closed(older)
    await newer.send_to(bytes_data=b"\xc0\x00")
    [(first, _)] = await packets(newer, 1)
    assert first == 0xD0
    # Another client id of the same user is left alone.
    other = await connected_as(olivia, client_id="other")
    await newer.send_to(bytes_data=b"\xc0\x00")
    [(first, _)] = await packets(newer, 1)
    assert first == 0xD0
    await newer.disconnect()
    await other.disconnect()


async def refused_over_the_cap(membership, client_id):
    comm, ok, _ = await opened()
    await comm.send_to(
        bytes_data=connect(await access_token(membership), client_id=client_id)
    )
    [(kind, body)] = await packets(comm, 1)
    assert (kind, body) == (0x20, b"\x00\x05")
    await assert_closed(comm)


async def test_sockets_per_user_are_capped(olivia, settings):
    settings.GATEWAY_MAX_SOCKETS_PER_USER = 2
    first = await connected_as(olivia, client_id="a")
    second = await connected_as(olivia, client_id="b")
    await refused_over_the_cap(olivia, "c")
    # At the cap, a reconnect with a client id already held takes over its slot.
    again = await connected_as(olivia, client_id="a")
    await assert_closed(first)
    await refused_over_the_cap(olivia, "c")
    # A socket that leaves frees its slot.
    await second.disconnect()
    third = await connected_as(olivia, client_id="c")
    await refused_over_the_cap(olivia, "d")
    await again.disconnect()
    await third.disconnect()


def usage_total(tenant_id: int, kind: str) -> int:
    """The tenant's count of `kind` in every minute bucket not yet rolled up."""
    from billing import metering

    r = metering.client()
    return sum(
        int(r.hget(key, f"{tenant_id}:{kind}") or 0)
        for key in r.scan_iter(match=f"{metering.PREFIX}*")
    )


async def eventually(predicate, what: str):
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.redis
async def test_socket_minutes_and_messages_are_metered_per_tenant(
    olivia, carol, online_device, settings
):
    from billing.metering import GATEWAY_MESSAGES, GATEWAY_SOCKET_MINUTES

    if not settings.REDIS_URL:
        pytest.skip("metering is off without REDIS_URL")
    settings.GATEWAY_HEARTBEAT_SECONDS = 0.1
    a, b = olivia.tenant_id, carol.tenant_id

    def totals():
        return {
            (t, k): usage_total(t, k)
            for t in (a, b)
            for k in (GATEWAY_SOCKET_MINUTES, GATEWAY_MESSAGES)
        }

    before = totals()

    def used():
        return {key: n - before[key] for key, n in totals().items()}

    comm = await connected_as(olivia)
    await comm.send_to(bytes_data=subscribe(1, "#"))
    assert len(await packets(comm, 1 + 4)) == 5  # SUBACK, four retained messages
    await comm.send_to(
        bytes_data=publish("devices/ESP-A1A1A1/pump/set", b"ON", qos=1, packet_id=2)
    )
    assert (await packets(comm, 1)) == [(0x40, b"\x00\x02")]
    other = await connected_as(carol)
    await other.send_to(bytes_data=subscribe(1, "#"))
    assert (await packets(other, 1)) == [(0x90, b"\x00\x01\x80")]
    expected = {
        (a, GATEWAY_SOCKET_MINUTES): 1,
        (a, GATEWAY_MESSAGES): 5,  # four out, one in
        (b, GATEWAY_SOCKET_MINUTES): 1,
        (b, GATEWAY_MESSAGES): 0,
    }
    # Handed to metering by the heartbeat, while the sockets are open...
    await eventually(lambda: used() == expected, "the heartbeat's counts")
    # ...and the close adds nothing already counted.
    await comm.disconnect()
    await other.disconnect()
    assert used() == expected


async def test_garbage_closes_only_that_socket(olivia):
    comm, ok, _ = await opened()
    await comm.send_to(bytes_data=b"\xff\xff\xff\xff\xff")
    await assert_closed(comm)
    good = await connected_as(olivia)
    await good.send_to(bytes_data=b"\xc0\x00")
    [(first, _)] = await packets(good, 1)
    assert first == 0xD0
    await good.disconnect()


@pytest.mark.parametrize("how", ["logout", "password", "other_sessions"])
async def test_a_revoked_login_closes_its_socket_and_is_refused_next(olivia, how):
    from poolsaas.api.testing import tokens_for

    refresh = await database_sync_to_async(tokens_for)(olivia)
    token = str(refresh.access_token)
    comm, ok, _ = await opened()
    await comm.send_to(bytes_data=connect(token))
    assert (await packets(comm, 1)) == [(0x20, b"\x00\x00")]

    def revoke():
        from tenants import services
        from tenants.services.accounts import access_changed

        user = olivia.user
        if how == "logout":
            refresh.blacklist()  # as POST /api/logout, which then says so:
            services.auth_logged_out(user=user, tenant=olivia.tenant)
        elif how == "password":
            user.set_password("another-horse-battery")
            user.save()
            access_changed(user)
        else:
            from django.db.models import F

            type(user).objects.filter(pk=user.pk).update(
                token_epoch=F("token_epoch") + 1
            )
            access_changed(user)

    await database_sync_to_async(revoke)()
    await assert_closed(comm)
    again, ok, _ = await opened()
    await again.send_to(bytes_data=connect(token))
    assert (await packets(again, 1)) == [(0x20, b"\x00\x04")]
    await assert_closed(again)
