"""Helpers of the alerts pages, API and admin tests: an alert row as the evaluator
leaves it, and one of each alerts object in tenant B for the isolation tests."""

import datetime as dt

from django.utils import timezone

from alerts.models import Alert, AlertRule, Delivery, Kind, WebhookSubscription

WEBHOOK_SECRET = "whsec-Tq7vZ9pL2mX4nB8c"


def fire(
    pool, kind=Kind.FREEZE_RISK, value=2.5, threshold=4.0, minutes_ago=5, **fields
):
    """An alert row as the evaluator leaves it (firing unless `state` says)."""
    fired_at = timezone.now() - dt.timedelta(minutes=minutes_ago)
    if fields.get("state") == "resolved":
        fields.setdefault("resolved_at", fired_at + dt.timedelta(minutes=1))
    return Alert.objects.create(
        tenant=pool.tenant,
        pool=pool,
        kind=kind,
        value=value,
        threshold=threshold,
        fired_at=fired_at,
        **fields,
    )


def make_foreign(pool_b) -> dict:
    """One of each alerts object in tenant B, for tenant A to try."""
    alert = fire(pool_b)
    rule = AlertRule.objects.create(
        tenant=pool_b.tenant, pool=pool_b, kind=Kind.WATER_ABOVE, threshold=31
    )
    default = AlertRule.objects.create(
        tenant=pool_b.tenant, kind=Kind.FREEZE_RISK, threshold=4
    )
    webhook = WebhookSubscription.objects.create(
        tenant=pool_b.tenant, url="https://hooks.globex.test/in", secret=WEBHOOK_SECRET
    )
    delivery = Delivery.objects.create(
        alert=alert, webhook=webhook, event="fired", channel="webhook", status_code=200
    )
    return {
        "alert": alert,
        "rule": rule,
        "default": default,
        "webhook": webhook,
        "delivery": delivery,
        "pool": pool_b,
    }
