"""Several rate-limit buckets taken at once: one Redis round trip, and the first
empty bucket stops the take (the buckets after it keep their tokens)."""

import uuid

import pytest

from poolsaas.api import throttling
from poolsaas.api.throttling import Want, buckets_take


@pytest.fixture(params=["redis", "local"])
def store(request, settings, monkeypatch):
    if request.param == "redis":
        if not settings.REDIS_URL:
            pytest.skip("needs REDIS_URL")
    else:
        monkeypatch.setattr(throttling, "_redis_client", lambda: None)
    return request.param


@pytest.fixture
def key():
    """Bucket names of this test alone."""
    run = uuid.uuid4().hex
    return lambda name: f"test-{run}-{name}"


def test_every_bucket_gives_a_token_while_it_has_one(store, key):
    wants = [Want(key("a"), 2, "user"), Want(key("b"), 5, "tenant")]
    first = buckets_take(wants)
    assert [(b.name, b.allowed, b.limit) for b in first] == [
        ("user", True, 2),
        ("tenant", True, 5),
    ]
    assert first[0].tokens == pytest.approx(1, abs=0.01)
    assert first[1].tokens == pytest.approx(4, abs=0.01)


def test_the_first_empty_bucket_stops_the_take(store, key):
    wants = [Want(key("a"), 1, "user"), Want(key("b"), 5, "tenant")]
    assert [b.allowed for b in buckets_take(wants)] == [True, True]
    refused = buckets_take(wants)
    assert [(b.name, b.allowed) for b in refused] == [("user", False)]
    # The tenant bucket was not touched by the refused request.
    tenant = buckets_take([Want(key("b"), 5, "tenant")])[0]
    assert tenant.tokens == pytest.approx(3, abs=0.01)


def test_all_buckets_cost_one_redis_round_trip(store, key, monkeypatch):
    if store != "redis":
        pytest.skip("round trips are Redis's")
    calls = []
    client = throttling._redis_client()
    real = client.evalsha
    monkeypatch.setattr(
        client, "evalsha", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    throttling._scripts.clear()
    buckets_take(
        [Want(key("a"), 9, "anon"), Want(key("b"), 9, "user"), Want(key("c"), 9, "x")]
    )
    assert len(calls) == 1
