"""What a gateway socket hands to metering (pure: the clock is given)."""

import time

from billing.metering import GATEWAY_MESSAGES, GATEWAY_SOCKET_MINUTES
from gateway.usage import SocketUsage

T0 = 1_800_000_000.0
TENANT = 7


def wait_for(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_every_started_minute_counts_once():
    usage = SocketUsage(TENANT, T0)
    assert usage.drain(T0) == {(TENANT, GATEWAY_SOCKET_MINUTES): 1}
    assert usage.drain(T0 + 20) == {}
    assert usage.drain(T0 + 59.9) == {}
    assert usage.drain(T0 + 60) == {(TENANT, GATEWAY_SOCKET_MINUTES): 1}
    # A late heartbeat catches up.
    assert usage.drain(T0 + 200) == {(TENANT, GATEWAY_SOCKET_MINUTES): 2}
    assert usage.drain(T0 + 200) == {}


def test_a_socket_of_a_few_seconds_is_one_minute_and_its_messages():
    usage = SocketUsage(TENANT, T0)
    usage.message()
    usage.message(4)
    assert usage.drain(T0 + 3) == {
        (TENANT, GATEWAY_SOCKET_MINUTES): 1,
        (TENANT, GATEWAY_MESSAGES): 5,
    }
    usage.message()
    assert usage.drain(T0 + 4) == {(TENANT, GATEWAY_MESSAGES): 1}


def test_a_clock_that_steps_back_counts_nothing_twice():
    usage = SocketUsage(TENANT, T0)
    usage.drain(T0 + 130)
    assert usage.drain(T0 + 10) == {}
