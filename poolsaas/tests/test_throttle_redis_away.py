"""Rate limits while Redis is away (a restart): each process's own buckets, still
limiting, instead of a 500 on every API request (docs/faults.md)."""

import socket
import uuid

import pytest
import redis

from poolsaas.api import throttling
from poolsaas.api.throttling import Want, buckets_take


@pytest.fixture
def redis_away(monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens there once closed
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    monkeypatch.setattr(throttling, "_redis_client", lambda: client)
    monkeypatch.setattr(throttling, "_fallback", {})


def test_with_redis_away_the_buckets_of_this_process_still_limit(redis_away):
    name = f"test-away-{uuid.uuid4().hex}"
    wants = [Want(name, 2, "user")]
    taken = [buckets_take(wants)[0].allowed for _ in range(3)]
    assert taken == [True, True, False]
