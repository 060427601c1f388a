"""The live part of the alerts pages, through the real ASGI stack and channel layer:
the pool socket's snapshot carries the firing alerts and every change follows as an
"alert" message; the overview's socket says hello with the tenant's firing alerts
and follows their changes; another tenant hears nothing."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from alerts.models import AlertRule, Kind
from alerts.services import alert_acknowledge_by_member, alert_fire, alert_resolve
from alerts.tests.web_fixtures import fire
from devices.tests.test_consumers import (
    pool_path,
    receive_type,
    session_cookie,
    socket,
)

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def fire_by_service(pool):
    rule, _ = AlertRule.objects.get_or_create(
        tenant=pool.tenant, pool=None, kind=Kind.WATER_BELOW, defaults={"threshold": 20}
    )
    return alert_fire(pool=pool, rule=rule, value=18.5, now=timezone.now()).alert


async def nothing_more(comm, wait=0.5):
    assert await comm.receive_nothing(timeout=wait)


async def test_pool_socket_snapshot_then_fired_acknowledged_resolved(
    olivia, carol, pool_a, pool_b
):
    old = await database_sync_to_async(fire)(pool_a)
    comm = socket(pool_path(pool_a), cookie=await session_cookie(olivia))
    assert (await comm.connect(timeout=10))[0]
    snap = await receive_type(comm, "snapshot", timeout=10)
    assert [a["code"] for a in snap["alerts"]] == [old.code.hex]
    other = socket(pool_path(pool_b), cookie=await session_cookie(carol))
    assert (await other.connect(timeout=10))[0]
    await receive_type(other, "snapshot", timeout=10)

    alert = await fire_by_service(pool_a)
    message = await receive_type(comm, "alert", timeout=10)
    assert message["alert"]["code"] == alert.code.hex
    assert message["alert"]["state"] == "firing"
    assert message["alert"]["kind"] == "water_below"
    assert message["alert"]["value"] == 18.5

    await database_sync_to_async(alert_acknowledge_by_member)(
        membership=olivia, alert=alert
    )
    message = await receive_type(comm, "alert", timeout=10)
    assert message["alert"]["acknowledged_by"] == "olivia@acme.test"
    assert message["alert"]["acknowledged_at"]

    await database_sync_to_async(alert_resolve)(alert=alert, now=timezone.now())
    message = await receive_type(comm, "alert", timeout=10)
    assert message["alert"]["state"] == "resolved"
    await nothing_more(other)
    await comm.disconnect()
    await other.disconnect()


async def test_tenant_socket_hello_and_changes(olivia, carol, pool_a, pool_b):
    old = await database_sync_to_async(fire)(pool_a)
    await database_sync_to_async(fire)(pool_b)  # Globex's: never on Acme's socket
    comm = socket("/ws/tenant/", cookie=await session_cookie(olivia))
    assert (await comm.connect(timeout=10))[0]
    hello = await receive_type(comm, "hello", timeout=10)
    assert [a["code"] for a in hello["alerts"]] == [old.code.hex]
    theirs = socket("/ws/tenant/", cookie=await session_cookie(carol))
    assert (await theirs.connect(timeout=10))[0]
    await receive_type(theirs, "hello", timeout=10)

    alert = await fire_by_service(pool_a)
    message = await receive_type(comm, "alert", timeout=10)
    assert message["pool"] == pool_a.code.hex
    assert message["alert"]["code"] == alert.code.hex
    assert message["alert"]["pool_name"] == "Acme Main Pool"
    await nothing_more(theirs)
    await asyncio.gather(comm.disconnect(), theirs.disconnect())
