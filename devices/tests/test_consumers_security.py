"""The pool socket under attack: malformed and oversized messages, floods, the audit
trail of its commands, suspension mid-connection, and user text that must stay text."""

import json

import pytest
from channels.db import database_sync_to_async

from audit.models import AuditEvent
from devices.models import Command
from devices.tests.test_consumers import (
    TIMEOUT,
    access_token,
    assert_closed,
    pool_path,
    receive_type,
    session_cookie,
    socket,
)

pytestmark = pytest.mark.django_db(transaction=True)

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def online_device(device_a):
    device_a.online = True
    device_a.state = {"pump": False, "valve": 1}
    device_a.save()
    return device_a


CLIENT = ("198.51.100.7", 51234)


def client_socket(path, **kwargs):
    """A socket whose peer address is CLIENT (the test communicator sets none)."""
    comm = socket(path, **kwargs)
    # The application has not run yet: it reads this scope on the first await.
    comm.scope["client"] = CLIENT
    return comm


async def open_pool(membership, pool, **kwargs):
    comm = client_socket(
        pool_path(pool), cookie=await session_cookie(membership), **kwargs
    )
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_json_from(timeout=TIMEOUT))["type"] == "snapshot"
    return comm


async def still_alive(comm):
    """The consumer still answers (it did not crash on what came before)."""
    await comm.send_json_to({"type": "ping"})
    assert (await receive_type(comm, "pong"))["now"]


async def test_malformed_messages_get_a_clear_error_and_never_crash(
    olivia, online_device, pool_a
):
    comm = await open_pool(olivia, pool_a)
    cases = [
        ({"bytes_data": b"\x00\x01binary"}, "not binary"),
        ({"text_data": "x" * 20_000}, "too large"),
        ({"text_data": "[" * 5000 + "]" * 5000}, "JSON objects"),  # nested too deep
        ({"text_data": "{not json"}, "JSON objects"),
        ({"text_data": "[1, 2]"}, "JSON objects"),
        ({"text_data": '"a string"'}, "JSON objects"),
        ({"text_data": json.dumps({"type": ["command"]})}, "Unknown message type"),
        ({"text_data": json.dumps({"type": "command", "op": 5})}, "needs an op"),
        (
            {"text_data": json.dumps({"type": "command", "op": "pump", "value": []})},
            "",
        ),
        (
            {
                "text_data": json.dumps(
                    {"type": "command", "op": "timer", "value": {"mode": "²"}}
                )
            },
            "",
        ),
    ]
    for frame, expected in cases:
        await comm.send_to(**frame)
        error = await receive_type(comm, "error")
        assert expected.lower() in error["message"].lower(), (frame, error)
        await still_alive(comm)
    assert not await database_sync_to_async(Command.objects.exists)()
    await comm.disconnect()


async def test_message_flood_is_limited_per_socket(olivia, pool_a, monkeypatch):
    from devices.consumers import base

    monkeypatch.setattr(base, "MESSAGE_RATE", 0.1)
    monkeypatch.setattr(base, "MESSAGE_BURST", 4.0)
    comm = await open_pool(olivia, pool_a)
    for _ in range(7):
        await comm.send_json_to({"type": "snapshot"})
    replies = [await comm.receive_json_from(timeout=TIMEOUT) for _ in range(7)]
    assert [r["type"] for r in replies].count("snapshot") == 4
    limited = [r for r in replies if r["type"] == "error"]
    assert len(limited) == 3 and all(
        "Too many messages" in r["message"] for r in limited
    )
    await comm.disconnect()


async def test_socket_command_is_audited_as_websocket_with_ip_and_agent(
    olivia, online_device, pool_a
):
    comm = await open_pool(
        olivia,
        pool_a,
        headers=[(b"user-agent", b"PoolPhone/2.1 (test)")],
    )
    await comm.send_json_to({"type": "command", "op": "pump", "value": "ON", "ref": 1})
    reply = await receive_type(comm, "command")
    assert reply["status"] == "pending"
    event = await database_sync_to_async(AuditEvent.objects.get)(action="command.sent")
    assert event.source == "websocket"
    assert event.ip == CLIENT[0]
    assert event.user_agent == "PoolPhone/2.1 (test)"
    assert event.actor_id == olivia.user_id
    command = await database_sync_to_async(Command.objects.get)(code=reply["code"])
    assert command.source == "websocket"
    await comm.disconnect()


async def test_socket_command_ip_honours_trusted_proxies(
    olivia, online_device, pool_a, settings
):
    settings.TRUSTED_PROXY_COUNT = 1
    comm = await open_pool(
        olivia,
        pool_a,
        headers=[(b"x-forwarded-for", b"6.6.6.6, 203.0.113.9")],
    )
    await comm.send_json_to({"type": "command", "op": "pump", "value": "ON"})
    await receive_type(comm, "command")
    event = await database_sync_to_async(AuditEvent.objects.get)(action="command.sent")
    # The rightmost hop is what our one proxy saw; the left one is client-made.
    assert event.ip == "203.0.113.9"
    await comm.disconnect()


async def test_jwt_socket_command_is_audited_as_websocket(
    olivia, online_device, pool_a
):
    comm = client_socket(pool_path(pool_a))
    await comm.connect()
    await comm.send_json_to({"type": "auth", "token": await access_token(olivia)})
    await receive_type(comm, "snapshot")
    await comm.send_json_to({"type": "command", "op": "valve", "value": 2})
    await receive_type(comm, "command")
    event = await database_sync_to_async(AuditEvent.objects.get)(action="command.sent")
    assert event.source == "websocket" and event.ip == CLIENT[0]
    await comm.disconnect()


async def test_tenant_suspended_mid_connection_closes_both_sockets(
    olivia, online_device, pool_a, tenant_a
):
    from tenants.services import tenant_set_status

    pool = await open_pool(olivia, pool_a)
    jwt = socket(pool_path(pool_a))
    await jwt.connect()
    await jwt.send_json_to({"type": "auth", "token": await access_token(olivia)})
    await receive_type(jwt, "snapshot")
    overview = socket("/ws/tenant/", cookie=await session_cookie(olivia))
    assert (await overview.connect())[0]
    await receive_type(overview, "hello")

    await database_sync_to_async(tenant_set_status)(
        tenant=tenant_a, status="suspended", actor=None
    )
    for comm in (pool, jwt, overview):
        error = await receive_type(comm, "error")
        assert "withdrawn" in error["message"]
        await assert_closed(comm, 4403)


async def test_user_text_reaches_the_socket_as_data_not_markup(
    olivia, online_device, pool_a
):
    """Names and messages travel as JSON strings, unchanged: the page renders them
    with textContent (static/js), so markup in them never becomes markup."""
    pool_a.name = XSS
    pool_a.mode1_name = XSS
    await database_sync_to_async(pool_a.save)()
    comm = await open_pool(olivia, pool_a)
    await comm.send_json_to({"type": "snapshot"})
    snap = await receive_type(comm, "snapshot")
    assert snap["pool"]["name"] == XSS and snap["pool"]["mode1_name"] == XSS
    await comm.disconnect()


@pytest.mark.parametrize(
    "origin", [None, b"null", b"http://127.0.0.1.evil.test", b"https://evil.test"]
)
@pytest.mark.parametrize("path", ["pool", "/ws/tenant/"])
async def test_missing_or_foreign_origin_is_refused_even_with_a_token(
    olivia, pool_a, origin, path
):
    """Cross-site pages cannot ride the session, and a token does not bypass the
    Origin check either (browsers always send one; other clients send ours)."""
    headers = [(b"host", b"127.0.0.1")]
    if origin is not None:
        headers.append((b"origin", origin))
    headers.append((b"authorization", f"Bearer {await access_token(olivia)}".encode()))
    from channels.testing import WebsocketCommunicator

    from poolsaas.asgi import application

    comm = WebsocketCommunicator(
        application, pool_path(pool_a) if path == "pool" else path, headers=headers
    )
    connected, _ = await comm.connect()
    assert not connected
