"""Billing state changes: the usage roll-up, billing periods, plan limits and the
warnings at 80 % and 100 % of them, and the over-quota snapshot the bridges read."""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Max, Sum
from django.db.models.functions import TruncDay
from django.template.loader import render_to_string
from django.utils import timezone

from billing import metering
from billing.limits import LIMITS, upgrade_path
from billing.models import BillingPeriod, Plan, UsageCounter, UsageWarning
from billing.selectors import FIXED_PERIOD, limit_used, period_bounds, plan_usage
from tenants.models import Tenant

logger = logging.getLogger(__name__)

# Closed minutes younger than this are left for the next roll-up.
GRACE_MINUTES = 1
WARN_AT = 80  # percent of a limit: an e-mail to the owners and a dashboard banner


# --- the roll-up ----------------------------------------------------------------------


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
        written += usage_bucket_store(minute=minute, fields=r.hgetall(key))
        # Deleted only once stored: a roll-up that dies in between leaves the
        # bucket for the next one, which stores the same values again.
        r.delete(key)
    return written


def usage_bucket_store(*, minute: int, fields: dict) -> int:
    """Upsert one closed bucket ({b"<tenant>:<kind>": value}) as UsageCounter rows
    of its minute, setting (never adding) each value. Returns rows written."""
    at = dt.datetime.fromtimestamp(minute * 60, tz=dt.UTC)
    rows, tenants = [], set()
    for field, value in fields.items():
        field = field.decode() if isinstance(field, bytes) else field
        tenant_id, _, kind = field.partition(":")
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
    return len(objs)


def active_devices_record(*, now: dt.datetime | None = None) -> int:
    """Today's active-devices gauge per tenant: devices heard from since midnight UTC
    (their last_seen_at, which the bridge already writes). Set, not added, and only
    ever growing within the day, so it is idempotent too. Returns rows written."""
    from devices.models import Device

    now = now or timezone.now()
    day = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    counts = (
        Device.objects.filter(last_seen_at__gte=day)
        .values("tenant_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    objs = [
        UsageCounter(
            tenant_id=row["tenant_id"],
            kind=metering.ACTIVE_DEVICES,
            minute=day,
            value=row["n"],
        )
        for row in counts
    ]
    UsageCounter.objects.bulk_create(
        objs,
        update_conflicts=True,
        unique_fields=["tenant", "kind", "minute"],
        update_fields=["value"],
    )
    return len(objs)


def usage_rollup(*, now: float | None = None) -> int:
    """The beat step: Redis buckets into rows, the active-devices gauge, then the
    over-quota snapshot the bridges read."""
    written = rollup(now=now)
    at = dt.datetime.fromtimestamp(now, dt.UTC) if now is not None else None
    active_devices_record(now=at)
    quota_snapshot_publish(now=at)
    return written


# --- compaction ----------------------------------------------------------------------


def compact_after_days() -> int:
    """Minute rows older than this many days are folded into one row per UTC day.
    More than a bucket's TTL in Redis (7 days), so that no bucket left behind by a
    roll-up that died can be stored again into a day already compacted."""
    days = int(getattr(settings, "USAGE_COMPACT_AFTER_DAYS", 8))
    return max(days, metering.BUCKET_TTL // 86400 + 1)


def usage_day_compact(*, tenant_id: int, day: dt.datetime) -> int:
    """Fold one tenant's counter rows of one UTC day into a row at its midnight, in
    one short transaction: the midnight row is *set* to the day's sum (itself
    included), then the other rows of the day are deleted. Run twice, or on two
    workers at once, the sum is the same and the day counts once (each statement
    sees the day either before or after the other's commit). Gauges already have one
    row per day and are left alone. Returns the rows folded away."""
    end = day + dt.timedelta(days=1)
    rows = UsageCounter.objects.filter(
        tenant_id=tenant_id, minute__gte=day, minute__lt=end
    ).exclude(kind__in=metering.GAUGES)
    with transaction.atomic():
        sums = list(rows.values("kind").annotate(n=Sum("value")).order_by("kind"))
        UsageCounter.objects.bulk_create(
            [
                UsageCounter(
                    tenant_id=tenant_id, kind=r["kind"], minute=day, value=r["n"]
                )
                for r in sums
            ],
            update_conflicts=True,
            unique_fields=["tenant", "kind", "minute"],
            update_fields=["value"],
        )
        folded, _ = rows.exclude(minute=day).delete()
    return folded


def usage_compact(*, now: dt.datetime | None = None, max_days: int = 500) -> int:
    """The daily beat step: every (tenant, UTC day) older than compact_after_days()
    that still has rows other than its midnight row, folded by usage_day_compact, at
    most `max_days` of them per run (the next run continues). Each is its own short
    transaction over rows no writer touches any more (the roll-up writes recent
    minutes only), so the metering paths never wait. Returns the rows folded away."""
    now = now or timezone.now()
    cutoff = (now - dt.timedelta(days=compact_after_days())).astimezone(dt.UTC)
    cutoff = cutoff.replace(hour=0, minute=0, second=0, microsecond=0)
    pending = (
        UsageCounter.objects.filter(minute__lt=cutoff)
        .exclude(kind__in=metering.GAUGES)
        .annotate(day=TruncDay("minute", tzinfo=dt.UTC))
        .exclude(minute=F("day"))
        .values_list("tenant_id", "day")
        .distinct()
        .order_by("day", "tenant_id")[:max_days]
    )
    folded = 0
    for tenant_id, day in list(pending):
        folded += usage_day_compact(tenant_id=tenant_id, day=day)
    if folded:
        logger.info("usage compacted: %s rows folded into daily rows", folded)
    return folded


# --- billing periods ------------------------------------------------------------------


def billing_period_current(
    *, tenant: Tenant, now: dt.datetime | None = None
) -> BillingPeriod:
    """The tenant's billing period holding `now`, opened (with the tenant's plan) by
    whoever asks first."""
    start, end = period_bounds(now or timezone.now())
    period, _ = BillingPeriod.objects.get_or_create(
        tenant=tenant, start=start, defaults={"end": end, "plan_id": tenant.plan_id}
    )
    return period


# --- plan limits ----------------------------------------------------------------------


class PlanLimitReached(ValidationError):
    """A new pool, device, member or campaign over the tenant's plan. A
    ValidationError, so pages show it on their form and the API answers 400 (with
    code "plan_limit" and the limit's key)."""

    def __init__(self, *, limit: str, plan: Plan, allowed: int):
        self.limit, self.plan, self.allowed = limit, plan, allowed
        super().__init__(limit_message(limit=limit, plan=plan, allowed=allowed))


def limit_message(*, limit: str, plan: Plan, allowed: int) -> str:
    spec = LIMITS[limit]
    return (
        f"Plan limit reached: the {plan.name} plan allows {allowed:,} {spec.name}. "
        + upgrade_path(plan, limit)
    )


def plan_limit_check(*, tenant: Tenant, limit: str, adding: int = 1) -> None:
    """THE rule for creating what a plan limits: raises PlanLimitReached when
    `adding` more would exceed it. A tenant without a plan has no limits.

    Inside a transaction the tenant row is locked first, so that two concurrent
    adds cannot both take the last place."""
    if tenant.plan_id is None:
        return
    if transaction.get_connection().in_atomic_block:
        Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
    plan = Plan.objects.get(pk=tenant.plan_id)
    allowed = getattr(plan, LIMITS[limit].field)
    if (
        limit_used(tenant_id=tenant.pk, limit=limit, now=timezone.now()) + adding
        > allowed
    ):
        raise PlanLimitReached(limit=limit, plan=plan, allowed=allowed)


def plan_limit_form_check(form, *, tenant: Tenant, limit: str) -> None:
    """plan_limit_check for an admin add form: the refusal as the form's error (the
    admin saves the row itself, outside the services)."""
    try:
        plan_limit_check(tenant=tenant, limit=limit)
    except PlanLimitReached as exc:
        form.add_error(None, exc.messages[0])


def plan_rate_take(*, tenant: Tenant) -> str | None:
    """One request of the tenant's plan rate (`api_requests_per_minute`) for a path
    outside the REST API that integrators call like it (the MQTT gateway's
    commands): the same token bucket as the API's TenantThrottle, so both share the
    plan's rate. None when allowed (or without a plan), else the refusal in words."""
    if tenant.plan_id is None:
        return None
    from poolsaas.api.throttling import bucket_take

    plan = Plan.objects.get(pk=tenant.plan_id)
    bucket = bucket_take(
        key=f"tenant:{tenant.code.hex}",
        per_minute=plan.api_requests_per_minute,
        name="tenant",
    )
    if bucket.allowed:
        return None
    return (
        limit_message(limit="api_rate", plan=plan, allowed=plan.api_requests_per_minute)
        + f" Retry in {max(1, round(bucket.retry_after))} s."
    )


# --- over quota and warnings ----------------------------------------------------------


def quota_snapshot_publish(*, now: dt.datetime | None = None) -> frozenset[int]:
    """Publish the tenants at or over their monthly message quota, for the bridges
    (billing.metering.over_quota): one query for all tenants, once a roll-up."""
    start, _ = period_bounds(now or timezone.now())
    rows = (
        UsageCounter.objects.filter(
            kind=metering.MESSAGES_IN, minute__gte=start, tenant__plan__isnull=False
        )
        .values("tenant_id")
        .annotate(n=Sum("value"), allowed=Max("tenant__plan__messages_per_month"))
        .order_by()
    )
    over = frozenset(r["tenant_id"] for r in rows if r["n"] >= r["allowed"])
    metering.over_quota_publish(over)
    return over


def _owners_emails(tenant_id: int) -> list[str]:
    from tenants.models import Membership
    from tenants.roles import Role

    return list(
        Membership.objects.filter(
            tenant_id=tenant_id, role=Role.OWNER, user__is_active=True
        ).values_list("user__email", flat=True)
    )


def usage_warning_record(
    *,
    tenant: Tenant,
    limit: str,
    level: int,
    used: int,
    allowed: int,
    start,
    mail: bool = True,
) -> bool:
    """Claim the warning of (tenant, period, limit, level) and mail the owners after
    commit. False, and nothing sent, when it was claimed before: one e-mail per
    period and limit, however often (and wherever) the check runs."""
    try:
        with transaction.atomic():
            UsageWarning.objects.create(
                tenant=tenant,
                period_start=start,
                limit=limit,
                level=level,
                used=used,
                allowed=allowed,
            )
    except IntegrityError:
        return False
    if not mail:
        return True
    spec = LIMITS[limit]
    plan = tenant.plan
    body = render_to_string(
        "billing/email/usage_warning.txt",
        {
            "tenant": tenant,
            "limit": spec,
            "level": level,
            "used": used,
            "allowed": allowed,
            "plan": plan,
            "upgrade": upgrade_path(plan, limit),
            "site": settings.SITE_URL,
        },
    )
    emails = _owners_emails(tenant.pk)
    if emails:
        subject = (
            f"{tenant.name}: {level} % of your {spec.name} used"
            if level < 100
            else f"{tenant.name}: {spec.name} limit reached"
        )
        transaction.on_commit(lambda: send_mail(subject, body, None, emails))
    return True


def usage_warnings_send(*, now: dt.datetime | None = None) -> int:
    """Check every tenant with a plan against its limits; warn at 80 % and at 100 %.

    A monthly limit (device messages, OTA campaigns) warns once per period and
    level. A fixed resource (pools, devices, members) warns once when the level is
    reached, whatever the period (its claim is kept under FIXED_PERIOD, not the
    month: the Free plan's one pool is 100 % every month, and that is its normal
    use, not news); the claim is dropped when the use falls below the level again, so
    reaching it again warns again. Returns the warnings sent."""
    now = now or timezone.now()
    start, _ = period_bounds(now)
    sent = 0
    tenants = Tenant.objects.filter(plan__isnull=False, status=Tenant.Status.ACTIVE)
    for tenant in tenants.select_related("plan").order_by("pk").iterator(500):
        for row in plan_usage(tenant=tenant, now=now):
            monthly = LIMITS[row["limit"]].monthly
            reached = [
                level
                for level in (100, WARN_AT)
                if row["allowed"] and row["percent"] >= level
            ]
            if not monthly:
                # Re-armed below the level: the next time it is reached is news.
                UsageWarning.objects.filter(
                    tenant=tenant, period_start=FIXED_PERIOD, limit=row["limit"]
                ).exclude(level__in=reached).delete()
            # The highest level reached is mailed; a fixed resource also claims the
            # lower ones, silently, so that coming down from 100 % to 80 % (a pool
            # deleted) says nothing.
            for level in reached if not monthly else reached[:1]:
                claimed = usage_warning_record(
                    tenant=tenant,
                    limit=row["limit"],
                    level=level,
                    used=row["used"],
                    allowed=row["allowed"],
                    start=start if monthly else FIXED_PERIOD,
                    mail=level == reached[0],
                )
                sent += claimed and level == reached[0]
    return sent
