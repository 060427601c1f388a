"""The plan's API rate on the MQTT gateway's path: commands published through it
take from the same per-tenant bucket as the REST API, and over it are refused (MQTT
3.1.1 has no words for a refused PUBLISH: the refusal is logged naming the limit,
and counted). Through the real ASGI stack."""

import logging

import pytest
from channels.db import database_sync_to_async

from devices.models import Command
from gateway import consumer as gateway_consumer
from gateway.tests.test_consumer import (  # noqa: F401 - the fixture
    connected_as,
    online_device,  # noqa: F811
    packets,
    publish,
)
from poolsaas.api.testing import api_client, assert_error

pytestmark = pytest.mark.django_db(transaction=True)


async def test_gateway_commands_over_the_plans_rate_are_refused_naming_it(
    olivia,
    online_device,  # noqa: F811
    make_plan,
    caplog,
):
    def set_plan():
        tenant = olivia.tenant
        tenant.plan = make_plan(api_requests_per_minute=2)
        tenant.save()

    await database_sync_to_async(set_plan)()
    before = gateway_consumer.counters["publish_refused:plan limit"]
    comm = await connected_as(olivia)
    with caplog.at_level(logging.INFO, logger="gateway.consumer"):
        for i in range(3):
            await comm.send_to(
                bytes_data=publish(
                    "devices/ESP-A1A1A1/pump/set", b"ON", qos=1, packet_id=10 + i
                )
            )
            assert (await packets(comm, 1))[0][0] == 0x40  # PUBACK, as for any refusal
    await comm.disconnect()
    count = await database_sync_to_async(
        lambda: Command.objects.filter(pool=online_device.pool).count()
    )()
    assert count == 2
    assert gateway_consumer.counters["publish_refused:plan limit"] == before + 1
    assert (
        "Plan limit reached: the Free plan allows 2 API requests per minute. "
        "Upgrade to Business (3,000 requests per minute)" in caplog.text
    )

    # The REST API shares the bucket: it is empty for the API too.
    response = await database_sync_to_async(
        lambda: api_client(olivia).get("/api/v1/pools/")
    )()
    error = assert_error(response, 429, "throttled")
    assert error["limit"] == "tenant"
    assert "2 API requests per minute" in error["message"]
