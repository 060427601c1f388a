"""The live dashboard's WebSockets, through the real ASGI stack (Origin check, session
middleware, routing) and the real channel layer (Redis when REDIS_URL is set)."""

import asyncio
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from devices.models import Command, Device
from poolsaas.asgi import application
from poolsaas.live import groups as broadcast
from tenants.auth import SESSION_KEY

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = b"http://127.0.0.1"
TIMEOUT = 3


@database_sync_to_async
def session_cookie(membership) -> str:
    client = Client()
    client.force_login(membership.user)
    session = client.session
    session[SESSION_KEY] = membership.tenant.code.hex
    session.save()
    return client.cookies["sessionid"].value


@database_sync_to_async
def access_token(membership, *, tenant=True) -> str:
    """The access token /api/login hands this membership (or one without tenant)."""
    from rest_framework_simplejwt.tokens import AccessToken

    from poolsaas.api.testing import tokens_for

    if tenant:
        return str(tokens_for(membership).access_token)
    return str(AccessToken.for_user(membership.user))


def socket(path, *, cookie=None, origin=ORIGIN, headers=()):
    h = [(b"origin", origin), (b"host", b"127.0.0.1")]
    if cookie:
        h.append((b"cookie", f"sessionid={cookie}".encode()))
    h.extend(headers)
    return WebsocketCommunicator(application, path, headers=h)


def pool_path(pool) -> str:
    return f"/ws/pools/{pool.code.hex}/"


async def receive_type(comm, kind, *, timeout=TIMEOUT):
    """The next message of `kind`, skipping others (events arrive alongside)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise AssertionError(f"no {kind!r} message within {timeout}s")
        message = await comm.receive_json_from(timeout=left)
        if message["type"] == kind:
            return message


async def assert_closed(comm, code):
    message = await comm.receive_output(timeout=TIMEOUT)
    while message["type"] != "websocket.close":
        message = await comm.receive_output(timeout=TIMEOUT)
    assert message.get("code") == code


@pytest.fixture
def online_device(device_a):
    device_a.online = True
    device_a.state = {"pump": False, "valve": 1, "temperature": 24.5}
    device_a.save()
    return device_a


# --- authentication ---------------------------------------------------------------


async def test_session_user_gets_a_snapshot(olivia, online_device, pool_a):
    comm = socket(pool_path(pool_a), cookie=await session_cookie(olivia))
    connected, _ = await comm.connect()
    assert connected
    snap = await comm.receive_json_from(timeout=TIMEOUT)
    assert snap["type"] == "snapshot"
    assert snap["pool"]["code"] == pool_a.code.hex
    assert snap["pool"]["mode1_name"] == "Cascada"
    assert snap["device"]["device_id"] == "ESP-A1A1A1"
    assert snap["device"]["online"] is True
    assert snap["device"]["state"]["temperature"] == 24.5
    assert snap["can_control"] is True and snap["role"] == "operator"
    assert {"commands", "events", "programs"} <= set(snap)
    await comm.disconnect()


async def test_jwt_in_header(olivia, online_device, pool_a):
    token = await access_token(olivia)
    comm = socket(
        pool_path(pool_a), headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    connected, _ = await comm.connect()
    assert connected
    snap = await comm.receive_json_from(timeout=TIMEOUT)
    assert snap["type"] == "snapshot" and snap["pool"]["code"] == pool_a.code.hex
    await comm.disconnect()


async def test_jwt_in_first_message(victor, online_device, pool_a):
    comm = socket(pool_path(pool_a))
    connected, _ = await comm.connect()
    assert connected  # accepted only to wait for the auth message
    await comm.send_json_to({"type": "auth", "token": await access_token(victor)})
    snap = await comm.receive_json_from(timeout=TIMEOUT)
    assert snap["type"] == "snapshot" and snap["role"] == "viewer"
    assert snap["can_control"] is False
    await comm.disconnect()


async def test_jwt_without_tenant_claim_uses_the_only_membership(olivia, pool_a):
    comm = socket(pool_path(pool_a))
    await comm.connect()
    await comm.send_json_to(
        {"type": "auth", "token": await access_token(olivia, tenant=False)}
    )
    snap = await comm.receive_json_from(timeout=TIMEOUT)
    assert snap["type"] == "snapshot"
    await comm.disconnect()


async def test_jwt_of_another_tenant_cannot_open_the_pool(carol, pool_a):
    comm = socket(pool_path(pool_a))
    await comm.connect()
    await comm.send_json_to({"type": "auth", "token": await access_token(carol)})
    error = await comm.receive_json_from(timeout=TIMEOUT)
    assert error == {"type": "error", "message": "Not found."}
    await assert_closed(comm, 4404)


async def test_bad_token_is_refused(pool_a):
    comm = socket(pool_path(pool_a))
    await comm.connect()
    await comm.send_json_to({"type": "auth", "token": "not.a.token"})
    error = await comm.receive_json_from(timeout=TIMEOUT)
    assert error["type"] == "error" and "token" in error["message"].lower()
    await assert_closed(comm, 4401)


async def test_bad_token_in_header_refuses_the_handshake(pool_a):
    comm = socket(pool_path(pool_a), headers=[(b"authorization", b"Bearer nope")])
    connected, code = await comm.connect()
    assert not connected and code == 4401


async def test_token_in_the_url_is_not_enough(olivia, online_device, pool_a):
    comm = socket(f"{pool_path(pool_a)}?token={await access_token(olivia)}")
    await comm.connect()
    await comm.send_json_to({"type": "command", "op": "pump", "value": "ON"})
    error = await comm.receive_json_from(timeout=TIMEOUT)
    assert error["type"] == "error" and "Authenticate first" in error["message"]
    await assert_closed(comm, 4401)
    assert not await database_sync_to_async(Command.objects.exists)()


async def test_silent_anonymous_socket_is_closed(pool_a, monkeypatch):
    from devices.consumers import base

    monkeypatch.setattr(base, "AUTH_TIMEOUT_SECONDS", 0.2)
    comm = socket(pool_path(pool_a))
    await comm.connect()
    error = await comm.receive_json_from(timeout=TIMEOUT)
    assert error["message"] == "Authenticate first."
    await assert_closed(comm, 4408)


async def test_foreign_origin_is_refused(olivia, pool_a):
    comm = socket(
        pool_path(pool_a),
        cookie=await session_cookie(olivia),
        origin=b"https://evil.test",
    )
    connected, _ = await comm.connect()
    assert not connected


# --- authorisation ----------------------------------------------------------------


async def test_foreign_pool_is_refused(carol, pool_a, pool_b):
    comm = socket(pool_path(pool_a), cookie=await session_cookie(carol))
    connected, code = await comm.connect()
    assert not connected and code == 4404


@pytest.mark.parametrize("code", [uuid.uuid4().hex, "not-a-code", "1"])
async def test_made_up_pool_code_is_refused(olivia, pool_a, code):
    comm = socket(f"/ws/pools/{code}/", cookie=await session_cookie(olivia))
    connected, close_code = await comm.connect()
    assert not connected and close_code == 4404


async def test_suspended_tenant_is_refused(olivia, pool_a, tenant_a):
    tenant_a.status = "suspended"
    await database_sync_to_async(tenant_a.save)()
    comm = socket(pool_path(pool_a), cookie=await session_cookie(olivia))
    connected, code = await comm.connect()
    assert not connected and code == 4403


# --- snapshot, deltas, isolation --------------------------------------------------


async def test_snapshot_then_deltas_and_no_foreign_deltas(
    olivia, carol, online_device, device_b, pool_a, pool_b
):
    mine = socket(pool_path(pool_a), cookie=await session_cookie(olivia))
    theirs = socket(pool_path(pool_b), cookie=await session_cookie(carol))
    assert (await mine.connect())[0] and (await theirs.connect())[0]
    assert (await mine.receive_json_from(timeout=TIMEOUT))["type"] == "snapshot"
    assert (await theirs.receive_json_from(timeout=TIMEOUT))["type"] == "snapshot"
    state = {"pump": True, "valve": 2, "temperature": 26.0}
    await database_sync_to_async(broadcast.broadcast_now)(
        broadcast.pool_group(pool_a.code),
        {
            "type": "pool.state",
            "pool": pool_a.code.hex,
            "state": state,
            "online": True,
            "last_seen": "2026-11-29T07:00:00+00:00",
        },
    )
    delta = await mine.receive_json_from(timeout=TIMEOUT)
    assert delta["type"] == "state" and delta["state"] == state and delta["online"]
    await database_sync_to_async(broadcast.broadcast_now)(
        broadcast.pool_group(pool_a.code),
        {"type": "pool.event", "pool": pool_a.code.hex, "event": {"kind": "boot"}},
    )
    assert (await mine.receive_json_from(timeout=TIMEOUT))["event"]["kind"] == "boot"
    # Carol's socket on her own pool saw none of it.
    assert await theirs.receive_nothing(timeout=0.3)
    await mine.disconnect()
    await theirs.disconnect()


async def test_tenant_overview_socket(olivia, carol, pool_a, tenant_a):
    comm = socket("/ws/tenant/", cookie=await session_cookie(olivia))
    other = socket("/ws/tenant/", cookie=await session_cookie(carol))
    assert (await comm.connect())[0] and (await other.connect())[0]
    hello = await comm.receive_json_from(timeout=TIMEOUT)
    assert hello["type"] == "hello" and hello["tenant"] == tenant_a.code.hex
    await other.receive_json_from(timeout=TIMEOUT)
    await database_sync_to_async(broadcast.broadcast_now)(
        broadcast.tenant_group(tenant_a.code),
        {"type": "tenant.pool", "pool": pool_a.code.hex, "online": True, "state": {}},
    )
    update = await comm.receive_json_from(timeout=TIMEOUT)
    assert update["type"] == "pool" and update["pool"] == pool_a.code.hex
    assert await other.receive_nothing(timeout=0.3)
    await comm.disconnect()
    await other.disconnect()


# --- commands ---------------------------------------------------------------------


def _finish_latest(outcome: str):
    from devices.services.commands import command_complete, command_fail

    command = Command.objects.select_related("actor").latest("created_at")
    if outcome == "done":
        assert command_complete(command=command)
    else:
        assert command_fail(command=command, error="The pump relay did not switch")
    return command


async def test_command_pending_then_done_then_failed(olivia, online_device, pool_a):
    comm = socket(pool_path(pool_a), cookie=await session_cookie(olivia))
    await comm.connect()
    await comm.receive_json_from(timeout=TIMEOUT)

    await comm.send_json_to(
        {"type": "command", "op": "pump", "value": "ON", "ref": "a1"}
    )
    reply = await receive_type(comm, "command")
    assert reply["ref"] == "a1" and reply["status"] == "pending" and reply["code"]
    command = await database_sync_to_async(Command.objects.get)(code=reply["code"])
    assert command.op == "pump" and command.value == "ON"
    assert command.actor_id == olivia.user_id and command.source == "websocket"

    await database_sync_to_async(_finish_latest)("done")
    done = await receive_type(comm, "command")
    while done["status"] != "done":
        done = await receive_type(comm, "command")
    assert done["ref"] == "a1" and done["code"] == reply["code"]

    await comm.send_json_to({"type": "command", "op": "valve", "value": 2, "ref": "a2"})
    reply = await receive_type(comm, "command")
    assert reply["ref"] == "a2" and reply["status"] == "pending"
    await database_sync_to_async(_finish_latest)("failed")
    failed = await receive_type(comm, "command")
    while failed["status"] != "failed":
        failed = await receive_type(comm, "command")
    assert failed["ref"] == "a2"
    assert failed["error"] == "The pump relay did not switch"
    await comm.disconnect()


async def test_command_to_offline_device_fails_at_once(olivia, device_a, pool_a):
    comm = socket(pool_path(pool_a), cookie=await session_cookie(olivia))
    await comm.connect()
    await comm.receive_json_from(timeout=TIMEOUT)
    await comm.send_json_to({"type": "command", "op": "pump", "value": "ON", "ref": 7})
    reply = await receive_type(comm, "command")
    assert reply["ref"] == 7 and reply["status"] == "failed"
    assert "offline" in reply["error"]
    await comm.disconnect()


async def test_viewer_command_is_refused(victor, online_device, pool_a):
    comm = socket(pool_path(pool_a), cookie=await session_cookie(victor))
    await comm.connect()
    await comm.receive_json_from(timeout=TIMEOUT)
    await comm.send_json_to(
        {"type": "command", "op": "pump", "value": "ON", "ref": "v"}
    )
    error = await comm.receive_json_from(timeout=TIMEOUT)
    assert error["type"] == "error" and error["ref"] == "v"
    assert "operator role" in error["message"]
    assert not await database_sync_to_async(Command.objects.exists)()
    await comm.disconnect()


async def test_bad_command_value_is_refused(olivia, online_device, pool_a):
    comm = socket(pool_path(pool_a), cookie=await session_cookie(olivia))
    await comm.connect()
    await comm.receive_json_from(timeout=TIMEOUT)
    await comm.send_json_to(
        {"type": "command", "op": "pump", "value": "MAYBE", "ref": 1}
    )
    error = await comm.receive_json_from(timeout=TIMEOUT)
    assert error["type"] == "error" and error["ref"] == 1 and error["message"]
    await comm.send_json_to({"type": "command", "op": "launch", "ref": 2})
    error = await comm.receive_json_from(timeout=TIMEOUT)
    assert error["ref"] == 2 and "Unknown command" in error["message"]
    await comm.send_to(text_data="{not json")
    error = await comm.receive_json_from(timeout=TIMEOUT)
    assert error["type"] == "error"
    assert not await database_sync_to_async(Command.objects.exists)()
    await comm.disconnect()


async def test_command_rate_limit(olivia, device_a, pool_a, monkeypatch):
    from devices.consumers import pool as pool_consumer

    # A slow refill, so the burst of 5 is what the test measures on any machine.
    monkeypatch.setattr(pool_consumer, "COMMAND_RATE", 0.1)
    comm = socket(pool_path(pool_a), cookie=await session_cookie(olivia))
    await comm.connect()
    await comm.receive_json_from(timeout=TIMEOUT)
    for i in range(8):
        await comm.send_json_to(
            {"type": "command", "op": "pump", "value": "ON", "ref": i}
        )
    first_reply = {}  # ref -> the direct answer (later broadcasts repeat refs)
    while len(first_reply) < 8:
        message = await comm.receive_json_from(timeout=TIMEOUT)
        if message["type"] in ("command", "error") and message.get("ref") is not None:
            first_reply.setdefault(message["ref"], message)
    replies = list(first_reply.values())
    limited = [m for m in replies if m["type"] == "error"]
    assert len(limited) == 3 and all(
        "Too many commands" in m["message"] for m in limited
    )
    assert await database_sync_to_async(Command.objects.count)() == 8 - len(limited)
    await comm.disconnect()


# --- access changes ---------------------------------------------------------------


async def test_role_raise_keeps_the_socket_role_drop_and_removal_close_it(
    alice, olivia, victor, online_device, pool_a
):
    from tenants.services import membership_remove, membership_role_change

    # A viewer made operator keeps the socket, told what changed.
    comm = socket(pool_path(pool_a), cookie=await session_cookie(victor))
    await comm.connect()
    assert (await comm.receive_json_from(timeout=TIMEOUT))["can_control"] is False
    await database_sync_to_async(membership_role_change)(
        membership=alice, target=victor, role="operator"
    )
    access = await receive_type(comm, "access")
    assert access == {"type": "access", "role": "operator", "can_control": True}

    # An operator made viewer loses it (issue 4: "whose role drops, loses the
    # socket"); the page reloads under the new role.
    dropped = socket(pool_path(pool_a), cookie=await session_cookie(olivia))
    await dropped.connect()
    assert (await dropped.receive_json_from(timeout=TIMEOUT))["can_control"] is True
    await database_sync_to_async(membership_role_change)(
        membership=alice, target=olivia, role="viewer"
    )
    error = await receive_type(dropped, "error")
    assert "role changed to viewer" in error["message"]
    await assert_closed(dropped, 4403)
    assert not await database_sync_to_async(Command.objects.exists)()

    # Removal closes it too.
    await database_sync_to_async(membership_remove)(membership=alice, target=victor)
    error = await receive_type(comm, "error")
    assert "withdrawn" in error["message"]
    await assert_closed(comm, 4403)


async def test_jwt_socket_closes_when_access_is_revoked(alice, olivia, pool_a):
    from tenants.services import membership_remove

    comm = socket(pool_path(pool_a))
    await comm.connect()
    await comm.send_json_to({"type": "auth", "token": await access_token(olivia)})
    assert (await comm.receive_json_from(timeout=TIMEOUT))["type"] == "snapshot"
    await database_sync_to_async(membership_remove)(membership=alice, target=olivia)
    await receive_type(comm, "error")
    await assert_closed(comm, 4403)


async def test_device_changes_are_not_needed_for_snapshot(olivia, pool_a):
    """A pool without a device still opens, with device null and controls off."""
    comm = socket(pool_path(pool_a), cookie=await session_cookie(olivia))
    await comm.connect()
    snap = await comm.receive_json_from(timeout=TIMEOUT)
    assert snap["device"] is None
    assert not await database_sync_to_async(Device.objects.exists)()
    await comm.disconnect()


async def test_tenant_overview_catch_up_is_scoped_to_the_tenant(
    olivia, carol, device_a, device_b, pool_a, pool_b
):
    device_a.state = {"temperature": 21.5}
    await database_sync_to_async(device_a.save)()
    codes = [pool_a.code.hex, pool_b.code.hex, "junk", uuid.uuid4().hex]
    mine = socket("/ws/tenant/", cookie=await session_cookie(olivia))
    theirs = socket("/ws/tenant/", cookie=await session_cookie(carol))
    for comm in (mine, theirs):
        assert (await comm.connect())[0]
        await comm.receive_json_from(timeout=TIMEOUT)
        await comm.send_json_to({"type": "snapshot", "pools": codes})
    got = (await mine.receive_json_from(timeout=TIMEOUT))["pools"]
    assert [p["pool"] for p in got] == [pool_a.code.hex]
    assert got[0]["state"] == {"temperature": 21.5} and got[0]["online"] is False
    got = (await theirs.receive_json_from(timeout=TIMEOUT))["pools"]
    assert [p["pool"] for p in got] == [pool_b.code.hex]
    await mine.send_json_to({"type": "snapshot", "pools": "all"})
    assert (await mine.receive_json_from(timeout=TIMEOUT))["type"] == "error"
    await mine.disconnect()
    await theirs.disconnect()


@pytest.mark.redis
@pytest.mark.slow
async def test_an_idle_socket_stays_open(olivia, pool_a):
    """A page left open with nothing happening must keep its socket. redis-py 8
    defaults socket_timeout to 5 s, which aborts channels-redis' blocking receive
    (the consumer crashes, the page reconnects every 5 s and loses what was sent
    meanwhile); settings must set socket_timeout None for the channel layer."""
    comm = socket(pool_path(pool_a), cookie=await session_cookie(olivia))
    assert (await comm.connect())[0]
    await comm.receive_json_from(timeout=TIMEOUT)
    assert await comm.receive_nothing(timeout=6.5, interval=0.5)
    await database_sync_to_async(broadcast.broadcast_now)(
        broadcast.pool_group(pool_a.code),
        {"type": "pool.event", "pool": pool_a.code.hex, "event": {"kind": "boot"}},
    )
    message = await comm.receive_output(timeout=TIMEOUT)
    assert message["type"] == "websocket.send", message
    await comm.disconnect()


async def test_jwt_socket_closes_when_its_token_expires(olivia, pool_a):
    from datetime import timedelta

    from rest_framework_simplejwt.tokens import AccessToken

    from tenants.auth import TENANT_CLAIM

    token = AccessToken.for_user(olivia.user)
    token[TENANT_CLAIM] = olivia.tenant.code.hex
    token.set_exp(lifetime=timedelta(seconds=1))
    comm = socket(pool_path(pool_a))
    await comm.connect()
    await comm.send_json_to({"type": "auth", "token": str(token)})
    assert (await comm.receive_json_from(timeout=TIMEOUT))["type"] == "snapshot"
    error = await comm.receive_json_from(timeout=TIMEOUT)
    assert "expired" in error["message"]
    await assert_closed(comm, 4401)


async def test_unknown_group_message_is_ignored(olivia, pool_a):
    comm = socket(pool_path(pool_a), cookie=await session_cookie(olivia))
    await comm.connect()
    await comm.receive_json_from(timeout=TIMEOUT)
    group = broadcast.pool_group(pool_a.code)
    await database_sync_to_async(broadcast.broadcast_now)(group, {"type": "pool.new"})
    await database_sync_to_async(broadcast.broadcast_now)(
        group, {"type": "pool.event", "pool": pool_a.code.hex, "event": {"kind": "x"}}
    )
    assert (await comm.receive_json_from(timeout=TIMEOUT))["event"]["kind"] == "x"
    await comm.disconnect()


async def test_snapshot_on_request_reads_the_pool_again(olivia, pool_a):
    comm = socket(pool_path(pool_a), cookie=await session_cookie(olivia))
    await comm.connect()
    assert (await comm.receive_json_from(timeout=TIMEOUT))["pool"]["name"] == (
        "Acme Main Pool"
    )
    pool_a.mode1_name = "Waterfall"
    await database_sync_to_async(pool_a.save)()
    await comm.send_json_to({"type": "snapshot"})
    snap = await comm.receive_json_from(timeout=TIMEOUT)
    assert snap["type"] == "snapshot" and snap["pool"]["mode1_name"] == "Waterfall"
    await database_sync_to_async(pool_a.delete)()
    await comm.send_json_to({"type": "snapshot"})
    assert (await comm.receive_json_from(timeout=TIMEOUT))["type"] == "error"
    await assert_closed(comm, 4404)


async def test_logging_out_closes_that_sessions_sockets_only(
    olivia, online_device, pool_a
):
    cookie = await session_cookie(olivia)
    comm = socket(pool_path(pool_a), cookie=cookie)
    await comm.connect()
    assert (await comm.receive_json_from(timeout=TIMEOUT))["type"] == "snapshot"
    # The same user in another browser keeps working.
    other = socket(pool_path(pool_a), cookie=await session_cookie(olivia))
    await other.connect()
    assert (await other.receive_json_from(timeout=TIMEOUT))["type"] == "snapshot"

    @database_sync_to_async
    def log_out():
        client = Client()
        client.cookies["sessionid"] = cookie
        assert client.post("/logout/").status_code == 302

    await log_out()
    await receive_type(comm, "error")
    await assert_closed(comm, 4403)
    await other.send_json_to({"type": "ping"})
    assert (await other.receive_json_from(timeout=TIMEOUT))["type"] != "error"
    await other.disconnect()
