"""The bridge's live sender: merging updates must never drop another pool's."""

import os
import time
import uuid

import pytest

from devices.bridge.live import LiveChannel
from poolsaas.tests.live_listener import GroupListener

pytestmark = pytest.mark.skipif(
    not os.environ.get("REDIS_URL"), reason="the live sender runs on channels-redis"
)


def test_a_tenant_group_gets_every_pools_update_within_one_window():
    group = f"tenant.{uuid.uuid4().hex}"
    pools = [uuid.uuid4().hex for _ in range(3)]
    # A page of the test's own: the live sender's loop sends on the shared layer.
    with GroupListener(group) as page:  # as the overview's socket does
        live = LiveChannel(doorbell=None, on_doorbell=lambda message: None, window=0.5)
        live.start()
        try:
            # Three pools, then a second update of the first, all inside one window.
            live.send_many(
                [(group, {"type": "tenant.pool", "pool": p, "n": 1}) for p in pools]
            )
            live.send_many([(group, {"type": "tenant.pool", "pool": pools[0], "n": 2})])
            # Every pool arrives, the first pool's second update at the window's end.
            page.wait_until(
                lambda got: latest(got) == {pools[0]: 2, pools[1]: 1, pools[2]: 1}
            )
            got = page.received(within=0.7)  # past the window: nothing more comes
        finally:
            live.stop()
    # Each update once: the first pool's second one at the window's end.
    assert sorted((m["pool"], m["n"]) for m in got) == sorted(
        [(p, 1) for p in pools] + [(pools[0], 2)]
    )


def latest(messages: list[dict]) -> dict:
    return {m["pool"]: m["n"] for m in messages}


def test_a_group_announced_by_a_page_is_sent_to_before_the_next_scan():
    group = f"pool.{uuid.uuid4().hex}"
    # A scan once a minute: only the page's announcement can make it known in time.
    live = LiveChannel(
        doorbell=None, on_doorbell=lambda message: None, watch_interval=60
    )
    live.start()
    try:
        deadline = time.monotonic() + 5
        while live.watched is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the first scan has run
        assert live.watched is not None and group not in live.watched
        with GroupListener(group) as page:
            while group not in live.watched and time.monotonic() < deadline:
                time.sleep(0.02)
            live.send_many([(group, {"type": "pool.state", "pool": "p", "n": 1})])
            page.wait(lambda m: m["n"] == 1)
            got = page.received(within=0.5)
    finally:
        live.stop()
    assert [m["n"] for m in got] == [1]
    assert live.counters["skipped"] == 0
