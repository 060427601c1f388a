"""Billing reads: a tenant's usage, its billing period and its plan's limits."""

from __future__ import annotations

import datetime as dt

from django.db.models import Max, Sum
from django.utils import timezone

from billing import metering
from billing.limits import LIMITS
from billing.models import Plan, UsageCounter, UsageWarning
from tenants.models import Tenant


def usage_totals(tenant, *, since=None) -> dict[str, int]:
    """{kind: total} of a tenant's rolled-up usage (since a datetime, if given);
    gauges (active devices) give their highest day, not a sum."""
    rows = UsageCounter.objects.filter(tenant=tenant)
    if since is not None:
        rows = rows.filter(minute__gte=since)
    counters = rows.exclude(kind__in=metering.GAUGES)
    gauges = rows.filter(kind__in=metering.GAUGES)
    out = {
        r["kind"]: r["total"]
        for r in counters.values("kind").annotate(total=Sum("value")).order_by("kind")
    }
    out.update(
        {
            r["kind"]: r["top"]
            for r in gauges.values("kind").annotate(top=Max("value")).order_by()
        }
    )
    return dict(sorted(out.items()))


def period_bounds(at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The calendar month (UTC) holding `at`: [start, end)."""
    at = at.astimezone(dt.UTC)
    start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + dt.timedelta(days=32)).replace(day=1)
    return start, end


def limit_used(*, tenant_id: int, limit: str, now: dt.datetime) -> int:
    """How much of `limit` the tenant uses now."""
    if limit == "pools":
        from devices.models import Pool

        return Pool.objects.filter(tenant_id=tenant_id).count()
    if limit == "devices":
        from devices.models import Device

        return Device.objects.filter(tenant_id=tenant_id).count()
    if limit == "members":
        from tenants.models import Invitation, Membership

        pending = Invitation.objects.filter(
            tenant_id=tenant_id,
            accepted_at__isnull=True,
            revoked_at__isnull=True,
            expires_at__gt=now,
        ).count()
        return Membership.objects.filter(tenant_id=tenant_id).count() + pending
    start, _ = period_bounds(now)
    if limit == "messages":
        return (
            UsageCounter.objects.filter(
                tenant_id=tenant_id, kind=metering.MESSAGES_IN, minute__gte=start
            ).aggregate(n=Sum("value"))["n"]
            or 0
        )
    if limit == "ota_campaigns":
        from ota.models import Campaign

        return Campaign.objects.filter(
            tenant_id=tenant_id, created_at__gte=start
        ).count()
    raise KeyError(limit)


def plan_usage(*, tenant: Tenant, now: dt.datetime | None = None) -> list[dict]:
    """Each limit of the tenant's plan with what is used ([] without a plan)."""
    if tenant.plan_id is None:
        return []
    now = now or timezone.now()
    plan = Plan.objects.get(pk=tenant.plan_id)
    out = []
    for key, spec in LIMITS.items():
        if not spec.counted:
            continue
        allowed = getattr(plan, spec.field)
        used = limit_used(tenant_id=tenant.pk, limit=key, now=now)
        percent = 100 if allowed == 0 else used * 100 // allowed
        out.append(
            {
                "limit": key,
                "name": spec.name,
                "used": used,
                "allowed": allowed,
                "percent": percent,
            }
        )
    return out


def usage_warnings_current(*, tenant: Tenant, now: dt.datetime | None = None):
    """The warnings of the tenant's current period, for the dashboard banner."""
    start, _ = period_bounds(now or timezone.now())
    return list(UsageWarning.objects.filter(tenant=tenant, period_start=start))


def usage_banner(*, tenant: Tenant, now: dt.datetime | None = None) -> list[str]:
    """The dashboard's banner lines: each limit warned about this period, in words,
    with the upgrade path (the highest level per limit). One query."""
    from billing.limits import upgrade_path

    plan = tenant.plan
    if plan is None:
        return []
    top: dict[str, UsageWarning] = {}
    for warning in usage_warnings_current(tenant=tenant, now=now):
        if warning.limit in LIMITS and (
            warning.limit not in top or warning.level > top[warning.limit].level
        ):
            top[warning.limit] = warning
    lines = []
    for key, w in top.items():
        name = LIMITS[key].name
        if w.level >= 100:
            text = f"You have reached your plan's {name} ({w.allowed:,})."
        else:
            text = (
                f"You have used {w.level} % of your plan's {name} "
                f"({w.used:,} of {w.allowed:,})."
            )
        lines.append(f"{text} {upgrade_path(plan, key)}")
    return lines
