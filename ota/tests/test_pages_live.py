"""The campaign page's live part, through the real ASGI stack and channel layer: a
device's report moves its update, and the tenant's socket (/ws/tenant/) carries it
as an "ota" message; another tenant's socket hears nothing."""

import pytest
from channels.db import database_sync_to_async

from devices.tests.test_consumers import receive_type, session_cookie, socket
from ota.tests.web_fixtures import *  # noqa: F403
from ota.tests.web_fixtures import report

pytestmark = pytest.mark.django_db(transaction=True)


async def test_tenant_socket_carries_update_progress(olivia, carol, running_a, fleet):
    old, _ = fleet
    comm = socket("/ws/tenant/", cookie=await session_cookie(olivia))
    assert (await comm.connect(timeout=10))[0]
    await receive_type(comm, "hello", timeout=10)
    theirs = socket("/ws/tenant/", cookie=await session_cookie(carol))
    assert (await theirs.connect(timeout=10))[0]
    await receive_type(theirs, "hello", timeout=10)

    await database_sync_to_async(report)(
        running_a, old, "downloading", percent=40, corrupted=1
    )
    message = await receive_type(comm, "ota", timeout=10)
    assert message["update"] == {
        "campaign": running_a.code.hex,
        "device": old.code.hex,
        "state": "downloading",
        "percent": 40,
        "reason": "",
        "corrupted_chunks": 1,
    }
    await database_sync_to_async(report)(running_a, old, "failed", reason="bad hash")
    message = await receive_type(comm, "ota", timeout=10)
    assert (message["update"]["state"], message["update"]["reason"]) == (
        "failed",
        "bad hash",
    )
    assert await theirs.receive_nothing(timeout=0.5)
    await comm.disconnect()
    await theirs.disconnect()
