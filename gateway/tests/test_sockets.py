"""The per-user socket slots of the cap: in Redis (shared by the web processes; two
clients of it stand for two processes) and in memory (one process)."""

import os
import time
import uuid

import pytest

from gateway import sockets
from gateway.tests.test_usage import wait_for


def _redis_pair():
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("needs REDIS_URL")
    return sockets.RedisSockets(url), sockets.RedisSockets(url)


@pytest.fixture(params=["redis", "memory"])
def pair(request):
    """Two registries that see the same slots, as two web processes do (memory:
    one process, so one registry twice)."""
    if request.param == "redis":
        return _redis_pair()
    one = sockets.MemorySockets()
    return one, one


@pytest.fixture
def user():
    return uuid.uuid4().hex


def test_the_cap_counts_the_slots_of_both_processes(pair, user):
    a, b = pair
    assert a.claim(user, "tab-1", "a!1", cap=2, ttl=30)
    assert b.claim(user, "tab-2", "b!1", cap=2, ttl=30)
    assert not a.claim(user, "tab-3", "a!2", cap=2, ttl=30)
    assert not b.claim(user, "tab-3", "b!2", cap=2, ttl=30)
    assert a.count(user) == b.count(user) == 2
    # Another user is not affected.
    assert a.claim(uuid.uuid4().hex, "tab-1", "a!3", cap=2, ttl=30)
    # A freed slot is free everywhere.
    b.release(user, "tab-2", "b!1")
    assert a.claim(user, "tab-3", "a!2", cap=2, ttl=30)


def test_a_reconnect_with_the_same_client_id_takes_over_its_slot(pair, user):
    a, b = pair
    assert a.claim(user, "tab-1", "a!old", cap=1, ttl=30)
    # At the cap, the same client id (a newer socket, another process) gets in.
    assert b.claim(user, "tab-1", "b!new", cap=1, ttl=30)
    # The older socket no longer owns the slot: its refresh says so and its
    # release leaves the newer socket's slot alone.
    assert not a.refresh(user, "tab-1", "a!old", ttl=30)
    a.release(user, "tab-1", "a!old")
    assert a.count(user) == 1
    assert b.refresh(user, "tab-1", "b!new", ttl=30)
    b.release(user, "tab-1", "b!new")
    assert a.count(user) == 0


def test_a_slot_nobody_refreshes_expires_and_a_refreshed_one_stays(pair, user):
    a, b = pair
    assert a.claim(user, "live", "a!1", cap=2, ttl=0.6)
    assert b.claim(user, "crashed", "b!1", cap=2, ttl=0.6)
    claimed = time.monotonic()
    assert not a.claim(user, "third", "a!2", cap=2, ttl=30)

    def refreshed_past_the_ttl():
        assert a.refresh(user, "live", "a!1", ttl=0.6)
        return time.monotonic() - claimed > 1.2 and a.count(user) == 1

    # "crashed" is never refreshed (its process died): it stops counting.
    wait_for(refreshed_past_the_ttl, what="the unrefreshed slot to expire")
    assert b.claim(user, "third", "b!2", cap=2, ttl=30)
    assert not a.claim(user, "fourth", "a!3", cap=2, ttl=30)


@pytest.mark.redis
def test_redis_keys_expire_with_their_slots(user):
    a, _ = _redis_pair()
    a.claim(user, "tab-1", "a!1", cap=2, ttl=5)
    for key in a.keys(user):
        assert 0 < a.client.ttl(key) <= 6
    a.release(user, "tab-1", "a!1")
    assert a.client.zcard(a.keys(user)[0]) == 0


def test_redis_away_lets_the_socket_in(settings, user):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    assert sockets.socket_claim(user=user, slot="s", channel="c", cap=1)
    assert sockets.socket_refresh(user=user, slot="s", channel="c")
    sockets.socket_release(user=user, slot="s", channel="c")
