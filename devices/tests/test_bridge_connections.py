"""The bridge process keeps one database connection per thread while it works.

With the web process's `DB_CONN_MAX_AGE=0` the bridge's writer opened a PostgreSQL
connection for every flush (twice a second at the default interval; 13 % of the
writer's time at 1,000 msg/s in docs/capacity.md) and the sweeps one for each look.
The bridge now keeps them (`BRIDGE_DB_CONN_MAX_AGE`) and names them
`poolsaas-bridge` in pg_stat_activity, which is what this test watches: a real
`manage.py mqtt_bridge` storing telemetry from the machine's Mosquitto for a few
seconds, at a flush every 0.1 s, uses a handful of backends, not one per flush."""

import time
import uuid

import pytest
from django.db import connection

from devices.tests.test_bridge import Publisher, make_device, wait_for
from devices.tests.test_bridge_core import telemetry
from devices.tests.test_config_push import BridgeProcess
from telemetry.models import TelemetrySample

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.slow,
    pytest.mark.postgres_only,
    pytest.mark.django_db(transaction=True),
]


def bridge_backends() -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
            " AND datname = current_database()",
            ["poolsaas-bridge"],
        )
        return {pid for (pid,) in cursor.fetchall()}


def test_the_bridge_keeps_its_connections_across_flushes(
    tmp_path, pool_a, platform_broker
):
    prefix = f"bc-{uuid.uuid4().hex[:8]}"
    device = make_device(pool_a, prefix, "ESP-C0FFEE", broker=platform_broker)
    bridge = BridgeProcess(tmp_path / "bridge.log").start(sweep_interval=0.2)
    publisher = Publisher()
    try:
        seen: set[int] = set()
        topic = f"{prefix}/{device.device_id}/telemetry"
        for i in range(40):  # 4 s: about 40 flushes and 20 sweeps
            publisher.pub(
                topic,
                telemetry(temp=20 + i / 10, seq=i + 1, ts=int(time.time()) + i),
                qos=0,
            )
            seen |= bridge_backends()
            time.sleep(0.1)
        wait_for(
            lambda: TelemetrySample.objects.filter(device=device).count() >= 30,
            what="the telemetry stored",
        )
        seen |= bridge_backends()
        # The writer, the command sweeps, the control thread, the live and
        # probe threads: one each at most, whatever the number of flushes.
        assert 1 <= len(seen) <= 6, (seen, bridge.log()[-2000:])
    finally:
        publisher.close()
        bridge.stop()
