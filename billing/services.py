"""Billing state changes: the usage roll-up."""

from __future__ import annotations

import datetime as dt

from billing import metering
from billing.models import UsageCounter
from tenants.models import Tenant

# Closed minutes younger than this are left for the next roll-up.
GRACE_MINUTES = 1


def rollup(*, now: float | None = None) -> int:
    """Copy every closed minute bucket from Redis into UsageCounter rows and delete
    it. Idempotent: rows are upserted with the bucket's value (set, not added), so
    running twice or on two workers at once counts once. Returns rows written."""
    r = metering.client()
    if r is None:
        return 0
    current = metering.minute_of(now)
    written = 0
    for raw in r.scan_iter(match=f"{metering.PREFIX}*", count=500):
        key = raw.decode()
        try:
            minute = int(key[len(metering.PREFIX) :])
        except ValueError:
            continue
        if minute >= current - GRACE_MINUTES:
            # Still open, or closed so recently that a writer whose clock runs a
            # little behind ours may still add to it (a late add after the delete
            # would start a new bucket whose value replaces the row's).
            continue
        fields = r.hgetall(key)
        at = dt.datetime.fromtimestamp(minute * 60, tz=dt.UTC)
        rows, tenants = [], set()
        for field, value in fields.items():
            tenant_id, _, kind = field.decode().partition(":")
            rows.append((int(tenant_id), kind, int(value)))
            tenants.add(int(tenant_id))
        known = set(Tenant.objects.filter(pk__in=tenants).values_list("pk", flat=True))
        objs = [
            UsageCounter(tenant_id=t, kind=k, minute=at, value=v)
            for t, k, v in rows
            if t in known
        ]
        UsageCounter.objects.bulk_create(
            objs,
            update_conflicts=True,
            unique_fields=["tenant", "kind", "minute"],
            update_fields=["value"],
        )
        written += len(objs)
        r.delete(key)
    return written
