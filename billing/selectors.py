"""Billing reads: a tenant's usage."""

from __future__ import annotations

from django.db.models import Sum

from billing.models import UsageCounter


def usage_totals(tenant, *, since=None, until=None) -> dict[str, int]:
    """{kind: total} of a tenant's rolled-up usage (since a datetime, and before
    another, if given)."""
    rows = UsageCounter.objects.filter(tenant=tenant)
    if since is not None:
        rows = rows.filter(minute__gte=since)
    if until is not None:
        rows = rows.filter(minute__lt=until)
    return {
        r["kind"]: r["total"]
        for r in rows.values("kind").annotate(total=Sum("value")).order_by("kind")
    }


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


# Usage kinds the plan limits per month: kind -> (Plan field, words).
MONTHLY_LIMITS = {"messages_in": ("messages_per_month", "device messages per month")}


def usage_daily(*, tenant, since, until) -> dict[str, list[tuple]]:
    """{kind: [(day, total), ...]} of rolled-up usage, by UTC day."""
    import datetime as dt

    from django.db.models.functions import TruncDate

    rows = (
        UsageCounter.objects.filter(tenant=tenant, minute__gte=since, minute__lt=until)
        .annotate(day=TruncDate("minute", tzinfo=dt.UTC))
        .values("kind", "day")
        .annotate(total=Sum("value"))
        .order_by("kind", "day")
    )
    out: dict[str, list[tuple]] = {}
    for row in rows:
        out.setdefault(row["kind"], []).append((row["day"], row["total"]))
    return out


def usage_for_period(*, tenant, now=None) -> dict:
    """This billing period's usage of the tenant, each kind against its plan limit
    (None: not limited), with a running total per day for the charts."""
    import datetime as dt

    from django.utils import timezone

    from billing.invoices import month_of, usage_label

    now = now or timezone.now()
    period = month_of(now.astimezone(dt.UTC).date())
    plan = tenant.plan
    daily = usage_daily(tenant=tenant, since=period.start_at(), until=period.end_at())
    kinds = sorted(set(daily) | set(MONTHLY_LIMITS))
    rows = []
    for kind in kinds:
        field, words = MONTHLY_LIMITS.get(kind, (None, ""))
        limit = getattr(plan, field) if plan is not None and field else None
        running, series = 0, []
        for day, total in daily.get(kind, []):
            running += total
            series.append([day.isoformat(), running])
        rows.append(
            {
                "kind": kind,
                "label": usage_label(kind),
                "used": running,
                "limit": limit,
                "limit_words": words,
                "percent": round(100 * running / limit, 1) if limit else None,
                "series": series,
            }
        )
    return {
        "period_start": period.start,
        "period_end": period.end,
        "plan": plan,
        "rows": rows,
        "empty": not any(row["used"] for row in rows),
    }
