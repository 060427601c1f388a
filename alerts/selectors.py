"""The access layer for alerts, rules, webhooks and deliveries: the only way a page,
the API or a consumer obtains one. Missing and foreign raise Http404 alike; a role
too low raises PermissionDenied (tenants.selectors.membership_require).

Who may do what: every member reads alerts and rules; operators and up acknowledge
and resolve (Action.CONTROL); admins and owners change rules and webhooks and read
the delivery log (Action.MANAGE).
"""

import dataclasses

from django.db.models import F, Q, QuerySet
from django.http import Http404

from alerts.models import (
    THRESHOLD_UNITS,
    Alert,
    AlertRule,
    Delivery,
    Kind,
    WebhookSubscription,
)
from alerts.services.conditions import TENANT_KINDS
from devices.models import Pool
from tenants.models import Membership
from tenants.roles import Action
from tenants.selectors import membership_require, parse_code

# What the threshold (and the value) of each kind is measured in.
UNITS = THRESHOLD_UNITS


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def alert_as_dict(alert: Alert) -> dict:
    """An alert as the pages, their live updates and the snapshot show it (the
    webhook payload is alerts.services.alert_payload, a contract of its own)."""
    return {
        "code": alert.code.hex,
        "pool": alert.pool.code.hex if alert.pool_id else None,
        "pool_name": alert.where,
        "pool_timezone": alert.zone_name,
        "kind": alert.kind,
        "label": alert.get_kind_display(),
        "unit": UNITS.get(alert.kind, ""),
        "state": alert.state,
        "value": alert.value,
        "threshold": alert.threshold,
        "fired_at": _iso(alert.fired_at),
        "resolved_at": _iso(alert.resolved_at),
        "acknowledged_by": alert.acknowledged_by.email
        if alert.acknowledged_by_id and alert.acknowledged_by
        else None,
        "acknowledged_at": _iso(alert.acknowledged_at),
    }


def _alerts() -> QuerySet[Alert]:
    return Alert.objects.select_related("pool", "tenant", "acknowledged_by")


def alerts_for_member(
    *, membership: Membership, state: str = "", pool: Pool | None = None
) -> QuerySet[Alert]:
    """The tenant's alerts, newest first; optionally one state or one pool (a pool
    already obtained through pool_get_for_member)."""
    membership_require(membership=membership, action=Action.VIEW)
    alerts = _alerts().filter(tenant_id=membership.tenant_id)
    if state:
        alerts = alerts.filter(state=state)
    if pool is not None:
        alerts = alerts.filter(pool_id=pool.pk)
    return alerts.order_by("-fired_at", "-pk")


def alerts_firing_for_member(*, membership: Membership) -> QuerySet[Alert]:
    """What is wrong right now in the member's tenant (the overview's panel)."""
    return alerts_for_member(membership=membership, state=Alert.State.FIRING)


def alerts_firing_as_dicts(*, membership: Membership, limit: int = 50) -> list[dict]:
    """The firing alerts as the overview's live panel starts from."""
    return [
        alert_as_dict(a)
        for a in alerts_firing_for_member(membership=membership)[:limit]
    ]


def pool_alerts(*, pool: Pool) -> QuerySet[Alert]:
    """One pool's alerts, newest first; the caller checked access to the pool."""
    return (
        _alerts()
        .filter(tenant_id=pool.tenant_id, pool_id=pool.pk)
        .order_by("-fired_at", "-pk")
    )


def pool_alerts_firing(*, pool: Pool) -> list[dict]:
    """The pool's firing alerts as dicts: part of the pool page's snapshot."""
    return [
        alert_as_dict(a) for a in pool_alerts(pool=pool).filter(state="firing")[:20]
    ]


def alert_get_for_member(
    *, membership: Membership, code, action: str = Action.VIEW
) -> Alert:
    """One alert of the member's tenant."""
    try:
        alert = _alerts().get(tenant_id=membership.tenant_id, code=parse_code(code))
    except Alert.DoesNotExist:
        raise Http404("No such alert.") from None
    membership_require(membership=membership, action=action)
    return alert


# --- rules ---------------------------------------------------------------------------


@dataclasses.dataclass
class EffectiveRule:
    """One kind on one pool: the tenant default, the pool's override, and which of
    the two the evaluation uses (alerts.services._rules_by_pool: override first)."""

    kind: str
    label: str
    unit: str
    default: AlertRule | None
    override: AlertRule | None

    @property
    def effective(self) -> AlertRule | None:
        return self.override or self.default


def tenant_rules_for_member(*, membership: Membership) -> list[EffectiveRule]:
    """The tenant's defaults, one row per kind (None where there is none)."""
    membership_require(membership=membership, action=Action.VIEW)
    defaults = {
        r.kind: r
        for r in AlertRule.objects.filter(
            tenant_id=membership.tenant_id, pool__isnull=True
        )
    }
    return [
        EffectiveRule(kind, label, UNITS[kind], defaults.get(kind), None)
        for kind, label in Kind.choices
    ]


def pool_rules_for_member(*, membership: Membership, pool: Pool) -> list[EffectiveRule]:
    """Every kind for a pool (obtained through pool_get_for_member): the tenant's
    default next to the pool's override, in one query."""
    membership_require(membership=membership, action=Action.VIEW)
    defaults, overrides = {}, {}
    for rule in AlertRule.objects.filter(
        Q(pool_id=pool.pk) | Q(pool__isnull=True), tenant_id=membership.tenant_id
    ):
        (overrides if rule.pool_id else defaults)[rule.kind] = rule
    return [
        EffectiveRule(kind, label, UNITS[kind], defaults.get(kind), overrides.get(kind))
        for kind, label in Kind.choices
        if kind not in TENANT_KINDS  # about the tenant: no pool override
    ]


def rules_for_member(*, membership: Membership) -> QuerySet[AlertRule]:
    """Every rule of the tenant: defaults first, then pools' overrides."""
    membership_require(membership=membership, action=Action.VIEW)
    return (
        AlertRule.objects.filter(tenant_id=membership.tenant_id)
        .select_related("pool")
        .order_by(F("pool_id").asc(nulls_first=True), "kind", "pk")
    )


def rule_get_for_member(
    *, membership: Membership, code, action: str = Action.MANAGE
) -> AlertRule:
    """One rule (default or override) of the member's tenant."""
    try:
        rule = AlertRule.objects.select_related("pool").get(
            tenant_id=membership.tenant_id, code=parse_code(code)
        )
    except AlertRule.DoesNotExist:
        raise Http404("No such rule.") from None
    membership_require(membership=membership, action=action)
    return rule


# --- webhooks and the delivery log ---------------------------------------------------


def webhooks_for_member(*, membership: Membership) -> QuerySet[WebhookSubscription]:
    """The tenant's webhook subscriptions (admins: their URLs may carry tokens). The
    secret column is not even loaded."""
    membership_require(membership=membership, action=Action.MANAGE)
    return (
        WebhookSubscription.objects.filter(tenant_id=membership.tenant_id)
        .defer("secret")
        .order_by("created_at", "pk")
    )


def webhook_get_for_member(
    *, membership: Membership, code, action: str = Action.MANAGE
) -> WebhookSubscription:
    try:
        webhook = WebhookSubscription.objects.defer("secret").get(
            tenant_id=membership.tenant_id, code=parse_code(code)
        )
    except WebhookSubscription.DoesNotExist:
        raise Http404("No such webhook.") from None
    membership_require(membership=membership, action=action)
    return webhook


def alert_deliveries(*, alert: Alert) -> QuerySet[Delivery]:
    """An alert's delivery log, oldest first; the caller obtained the alert with
    alert_get_for_member(action=Action.MANAGE)."""
    return (
        Delivery.objects.filter(alert_id=alert.pk, alert__tenant_id=alert.tenant_id)
        .select_related("webhook")
        .defer("webhook__secret")
        .order_by("at", "pk")
    )
