"""Leases on brokers that only one bridge may connect to, so that several bridges
divide the tenants' own brokers between them, each held by exactly one.

Every `refresh_interval` a bridge calls `broker_leases_hold`: it renews its presence
and the leases it holds, then takes its share of the free ones (ceil(brokers /
bridges alive)) and gives back what it holds beyond that share, so a bridge that joins
gets its part and one that dies (no renewal) loses everything within `ttl`. Taking
a lease is a conditional UPDATE on its expiry, so two bridges never hold one broker.
Every time is the database's clock (`Now()`), never a bridge host's.

The same presence row carries the bridge's heartbeat (`bridge_beat`, every tick of
its control loop): which process start runs under the name, alive until when. It
says whose command claims are dead (devices.services.commands.commands_reclaim).
"""

import datetime as dt
import math
import random
from collections.abc import Iterable

from django.db.models import DateTimeField, ExpressionWrapper, Q
from django.db.models.functions import Now

from devices.models import BridgePresence, BrokerLease

# Long past: a lease or presence row that nobody holds.
FREE = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def _until(ttl: float) -> ExpressionWrapper:
    return ExpressionWrapper(
        Now() + dt.timedelta(seconds=ttl), output_field=DateTimeField()
    )


def _takeable() -> Q:
    """A lease another bridge may take: its holder let it expire."""
    return Q(expires_at__lte=Now())


def broker_leases_hold(
    *, holder: str, broker_ids: Iterable[int], ttl: float
) -> set[int]:
    """Renew `holder`'s presence and leases on these brokers, take its share of the
    expired ones, give back what it holds beyond its share; the broker ids it holds
    now (for `ttl` seconds from now, database time)."""
    ids = sorted(set(broker_ids))
    until = _until(ttl)
    BridgePresence.objects.bulk_create(
        [BridgePresence(name=holder, expires_at=FREE)], ignore_conflicts=True
    )
    BridgePresence.objects.filter(name=holder).update(expires_at=until)
    # Bridges gone for long (each start has a new name) leave no rows behind.
    long_ago = ExpressionWrapper(
        Now() - dt.timedelta(hours=1), output_field=DateTimeField()
    )
    BridgePresence.objects.filter(expires_at__lt=long_ago).exclude(
        beat_until__gte=long_ago
    ).delete()
    if not ids:
        return set()
    BrokerLease.objects.bulk_create(
        [BrokerLease(broker_id=pk, holder="", expires_at=FREE) for pk in ids],
        ignore_conflicts=True,
    )
    mine = BrokerLease.objects.filter(broker_id__in=ids, holder=holder)
    # Renewed while the holder is still us, even just past expiry: nobody took it.
    mine.update(expires_at=until)
    held = set(mine.values_list("broker_id", flat=True))
    alive = BridgePresence.objects.filter(expires_at__gt=Now()).count()
    share = math.ceil(len(ids) / max(1, alive))
    if len(held) < share:
        free = list(
            BrokerLease.objects.filter(_takeable(), broker_id__in=ids)
            .exclude(holder=holder)
            .values_list("broker_id", flat=True)
        )
        # Shuffled: bridges starting together do not all race for the same one.
        random.shuffle(free)
        for pk in free:
            if len(held) >= share:
                break
            taken = BrokerLease.objects.filter(_takeable(), broker_id=pk).update(
                holder=holder, expires_at=until
            )
            if taken:
                held.add(pk)
    elif len(held) > share:
        extra = sorted(held)[share:]
        BrokerLease.objects.filter(broker_id__in=extra, holder=holder).update(
            holder="", expires_at=FREE
        )
        held -= set(extra)
    return held


def bridge_beat(*, name: str, instance: str, ttl: float) -> None:
    """The heartbeat of a bridge process: `instance` (new at each start) runs under
    `name` and is alive for `ttl` seconds from now (database time). A restart under
    the same name replaces the instance at once: the one before is dead from then
    (devices.services.commands.commands_reclaim)."""
    until = _until(ttl)
    mine = BridgePresence.objects.filter(name=name)
    if not mine.update(instance=instance, beat_until=until):
        BridgePresence.objects.bulk_create(
            [BridgePresence(name=name, expires_at=FREE)], ignore_conflicts=True
        )
        mine.update(instance=instance, beat_until=until)


def broker_leases_release(*, holder: str) -> None:
    """A bridge stopping: its leases free at once (not after `ttl`), its presence
    gone."""
    BrokerLease.objects.filter(holder=holder).update(holder="", expires_at=FREE)
    BridgePresence.objects.filter(name=holder).delete()
