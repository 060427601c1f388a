"""Broker leases (devices.services.leases): each broker served by one bridge, its
lease taken over only once expired, the brokers divided between the bridges alive.
Expiry is made by moving `expires_at` into the past, never by waiting."""

import datetime as dt

import pytest
from django.utils import timezone

from devices.models import BridgePresence, Broker, BrokerLease
from devices.services.leases import broker_leases_hold, broker_leases_release

pytestmark = pytest.mark.django_db

TTL = 30.0


@pytest.fixture
def brokers(tenant_a, tenant_b):
    return [
        Broker.objects.create(tenant=t, name=f"own {i}", host="mqtt.example.test")
        for i, t in enumerate([tenant_a, tenant_b, tenant_a])
    ]


def expire(**filters):
    past = timezone.now() - dt.timedelta(seconds=1)
    BrokerLease.objects.filter(**filters).update(expires_at=past)
    BridgePresence.objects.filter(
        name__in=[filters["holder"]] if "holder" in filters else []
    ).update(expires_at=past)


def test_a_held_lease_is_taken_over_only_once_it_expired(brokers):
    one = [brokers[0].pk]
    assert broker_leases_hold(holder="a", broker_ids=one, ttl=TTL) == set(one)
    # b alive too, its share is one broker, but a's lease is current.
    assert broker_leases_hold(holder="b", broker_ids=one, ttl=TTL) == set()
    assert broker_leases_hold(holder="a", broker_ids=one, ttl=TTL) == set(one)
    expire(holder="a")  # a died: no renewal
    assert broker_leases_hold(holder="b", broker_ids=one, ttl=TTL) == set(one)
    # a comes back (a pause, not a death): the lease is b's now.
    assert broker_leases_hold(holder="a", broker_ids=one, ttl=TTL) == set()
    assert BrokerLease.objects.get(pk=one[0]).holder == "b"


def test_the_brokers_are_divided_between_the_bridges_alive(brokers):
    ids = [b.pk for b in brokers]
    assert broker_leases_hold(holder="a", broker_ids=ids, ttl=TTL) == set(ids)
    # b joins: nothing is free yet; a gives back what is beyond its share...
    assert broker_leases_hold(holder="b", broker_ids=ids, ttl=TTL) == set()
    a = broker_leases_hold(holder="a", broker_ids=ids, ttl=TTL)
    assert len(a) == 2
    # ...and b takes it at its next renewal.
    b = broker_leases_hold(holder="b", broker_ids=ids, ttl=TTL)
    assert len(b) == 1 and not a & b
    holders = dict(BrokerLease.objects.values_list("broker_id", "holder"))
    assert sorted(holders.values()) == ["a", "a", "b"]
    # Stable: renewing changes nothing.
    assert broker_leases_hold(holder="a", broker_ids=ids, ttl=TTL) == a
    assert broker_leases_hold(holder="b", broker_ids=ids, ttl=TTL) == b


def test_a_bridge_stopping_frees_its_leases_at_once(brokers):
    ids = [b.pk for b in brokers]
    broker_leases_hold(holder="a", broker_ids=ids, ttl=TTL)
    broker_leases_hold(holder="b", broker_ids=ids, ttl=TTL)
    broker_leases_release(holder="a")
    assert not BridgePresence.objects.filter(name="a").exists()
    assert broker_leases_hold(holder="b", broker_ids=ids, ttl=TTL) == set(ids)


def test_two_bridges_never_hold_one_broker(brokers):
    ids = [b.pk for b in brokers]
    for _ in range(3):
        for name in ("a", "b", "c"):
            broker_leases_hold(holder=name, broker_ids=ids, ttl=TTL)
    holders = dict(BrokerLease.objects.values_list("broker_id", "holder"))
    assert sorted(holders) == sorted(ids)
    assert sorted(holders.values()) == ["a", "b", "c"]
