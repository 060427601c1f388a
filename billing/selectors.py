"""Billing reads: a tenant's usage."""

from __future__ import annotations

from django.db.models import Sum

from billing.models import UsageCounter


def usage_totals(tenant, *, since=None) -> dict[str, int]:
    """{kind: total} of a tenant's rolled-up usage (since a datetime, if given)."""
    rows = UsageCounter.objects.filter(tenant=tenant)
    if since is not None:
        rows = rows.filter(minute__gte=since)
    return {
        r["kind"]: r["total"]
        for r in rows.values("kind").annotate(total=Sum("value")).order_by("kind")
    }
