"""Billing reads: a tenant's usage, its billing period and its plan's limits."""

from __future__ import annotations

import datetime as dt

from django.db.models import Max, Sum
from django.utils import timezone

from billing import metering
from billing.limits import LIMITS
from billing.models import Plan, UsageCounter, UsageWarning
from tenants.models import Tenant

# The "period" of the warnings about a fixed resource (pools, devices, members):
# they are claimed once when the level is reached, not once a month
# (billing.services.usage_warnings_send).
FIXED_PERIOD = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def usage_totals(tenant, *, since=None, until=None) -> dict[str, int]:
    """{kind: total} of a tenant's rolled-up usage (since a datetime, and before
    another, if given); gauges (active devices) give their highest day, not a sum."""
    rows = UsageCounter.objects.filter(tenant=tenant)
    if since is not None:
        rows = rows.filter(minute__gte=since)
    if until is not None:
        rows = rows.filter(minute__lt=until)
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
    """The warnings in force, for the dashboard banner: this period's about monthly
    limits, and those about fixed resources still reached."""
    start, _ = period_bounds(now or timezone.now())
    return list(
        UsageWarning.objects.filter(
            tenant=tenant, period_start__in=[start, FIXED_PERIOD]
        )
    )


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


# --- invoices and the usage page ---


def invoices_for_member(*, membership):
    """The tenant's invoices and credit notes, newest first (owners and admins)."""
    from billing.models import Invoice
    from tenants.roles import Action
    from tenants.selectors import membership_require

    membership_require(membership=membership, action=Action.MANAGE)
    return Invoice.objects.filter(tenant_id=membership.tenant_id).select_related(
        "corrects"
    )


def invoice_get_for_member(*, membership, code, action="manage"):
    """One document of the caller's tenant. Another tenant's and a made-up code are
    "not found" alike, before the role (owners and admins) is checked."""
    from django.http import Http404

    from billing.models import Invoice
    from tenants.selectors import membership_require, parse_code

    invoice = (
        Invoice.objects.filter(tenant_id=membership.tenant_id, code=parse_code(code))
        .select_related("corrects", "tenant")
        .first()
    )
    if invoice is None:
        raise Http404("Not found.")
    membership_require(membership=membership, action=action)
    return invoice


# Counters that a plan limits per month: usage kind -> billing.limits key.
COUNTER_LIMITS = {metering.MESSAGES_IN: "messages"}
# Shown on the usage page and in the API even before anything was counted.
COUNTERS_SHOWN = (
    metering.MESSAGES_IN,
    metering.DASHBOARD_SOCKET_MINUTES,
    metering.OTA_BYTES,
)


def usage_daily(*, tenant, since, until) -> dict[str, list[tuple]]:
    """{kind: [(day, value), ...]} of rolled-up usage by UTC day: a counter's sum,
    a gauge's highest value."""
    from django.db.models.functions import TruncDate

    rows = (
        UsageCounter.objects.filter(tenant=tenant, minute__gte=since, minute__lt=until)
        .annotate(day=TruncDate("minute", tzinfo=dt.UTC))
        .values("kind", "day")
        .annotate(total=Sum("value"), top=Max("value"))
        .order_by("kind", "day")
    )
    out: dict[str, list[tuple]] = {}
    for row in rows:
        value = row["top"] if row["kind"] in metering.GAUGES else row["total"]
        out.setdefault(row["kind"], []).append((row["day"], value))
    return out


def usage_for_period(*, tenant, now=None) -> dict:
    """The tenant's current billing period: each plan limit with what is used
    (plan_usage), and each usage counter with its running total per day (a gauge:
    its value per day), against its limit where the plan sets one."""
    from billing.invoices import usage_label

    now = now or timezone.now()
    start, end = period_bounds(now)
    limits = plan_usage(tenant=tenant, now=now)
    allowed = {row["limit"]: row for row in limits}
    daily = usage_daily(tenant=tenant, since=start, until=end)
    totals = usage_totals(tenant, since=start, until=end)
    rows = []
    for kind in sorted(set(totals) | set(COUNTER_LIMITS) | set(COUNTERS_SHOWN)):
        limit = allowed.get(COUNTER_LIMITS.get(kind, ""))
        gauge = kind in metering.GAUGES
        running, series = 0, []
        for day, value in daily.get(kind, []):
            running = value if gauge else running + value
            series.append([day.isoformat(), running])
        used = totals.get(kind, 0)
        rows.append(
            {
                "kind": kind,
                "label": usage_label(kind),
                "used": used,
                "limit": limit["allowed"] if limit else None,
                "limit_words": limit["name"] if limit else "",
                "percent": round(100 * used / limit["allowed"], 1)
                if limit and limit["allowed"]
                else None,
                "series": series,
                "gauge": gauge,
            }
        )
    return {
        "period_start": start.date(),
        "period_end": end.date(),
        "plan": tenant.plan,
        "limits": limits,
        "rows": rows,
        "empty": not any(row["used"] for row in rows),
    }
