"""Rules: the ranges of each kind, and the admins' create, change and delete."""

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import Http404

from alerts.models import (
    AlertRule,
    Kind,
)
from alerts.services.conditions import TENANT_KINDS

RULE_LIMITS = {
    # kind: (lowest threshold, highest threshold, what the threshold is)
    Kind.WATER_ABOVE: (-10.0, 50.0, "a water temperature in °C"),
    Kind.WATER_BELOW: (-10.0, 50.0, "a water temperature in °C"),
    Kind.FREEZE_RISK: (-10.0, 50.0, "a water temperature in °C"),
    Kind.DEVICE_OFFLINE: (1.0, 10080.0, "minutes offline (at most a week)"),
    Kind.PUMP_RUNTIME: (0.5, 24.0, "hours of pump running a day"),
    Kind.RELAY_SWITCHES: (1.0, 100000.0, "relay switches a day"),
    Kind.COMMAND_FAILED: (1.0, 10080.0, "minutes to look back (at most a week)"),
    Kind.OTA_FAILED: (1.0, 10080.0, "minutes to look back (at most a week)"),
    Kind.QUOTA_WARNING: (80.0, 100.0, "80 or 100 (% of a plan limit)"),
}
MAX_HYSTERESIS = 10.0
MAX_RENOTIFY_MINUTES = 10080


def _finite(name: str, value, errors: dict) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        errors[name] = "Enter a number."
        return None
    if number != number or number in (float("inf"), float("-inf")):
        errors[name] = "Enter a finite number."
        return None
    return number


def alert_rule_validate(
    *, kind: str, threshold, hysteresis, renotify_minutes
) -> tuple[float, float, int]:
    """The rule's numbers, checked against its kind; ValidationError by field."""
    errors: dict[str, str] = {}
    if kind not in Kind.values:
        raise ValidationError({"kind": f"Choose one of {', '.join(Kind.values)}."})
    low, high, what = RULE_LIMITS[Kind(kind)]
    threshold = _finite("threshold", threshold, errors)
    if threshold is not None and not low <= threshold <= high:
        errors["threshold"] = f"Enter {what} from {low:g} to {high:g}."
    hysteresis = _finite("hysteresis", hysteresis, errors)
    if hysteresis is not None and not 0 <= hysteresis <= MAX_HYSTERESIS:
        errors["hysteresis"] = f"Enter a hysteresis from 0 to {MAX_HYSTERESIS:g}."
    renotify = _finite("renotify_minutes", renotify_minutes, errors)
    if renotify is not None and (
        renotify != int(renotify) or not 0 <= renotify <= MAX_RENOTIFY_MINUTES
    ):
        errors["renotify_minutes"] = (
            f"Enter whole minutes from 0 (never) to {MAX_RENOTIFY_MINUTES}."
        )
    if errors:
        raise ValidationError(errors)
    return threshold, hysteresis, int(renotify)


def _rule_audit(membership, rule: AlertRule, action: str, fields=None) -> None:
    from audit.services import audit_record

    data = {
        "kind": rule.kind,
        "pool": rule.pool.code.hex if rule.pool_id else None,
    }
    if fields is not None:
        data["fields"] = fields
    audit_record(
        action=action,
        tenant=membership.tenant,
        actor=membership.user,
        target=rule,
        data=data,
    )


def alert_rule_create(
    *,
    membership,
    kind: str,
    threshold,
    hysteresis=1.0,
    renotify_minutes=0,
    enabled: bool = True,
    pool=None,
) -> AlertRule:
    """A tenant default (no pool) or a pool's override of one kind (admins)."""
    from tenants.roles import Action
    from tenants.selectors import membership_require

    membership_require(membership=membership, action=Action.MANAGE)
    if pool is not None and pool.tenant_id != membership.tenant_id:
        raise Http404("No such pool.")
    if pool is not None and kind in TENANT_KINDS:
        raise ValidationError(
            {"kind": "This alert is about the whole tenant: set it in the defaults."}
        )
    threshold, hysteresis, renotify = alert_rule_validate(
        kind=kind,
        threshold=threshold,
        hysteresis=hysteresis,
        renotify_minutes=renotify_minutes,
    )
    taken = (
        "This pool already has its own rule of this kind: change that one."
        if pool is not None
        else "There is a default rule of this kind already: change that one."
    )
    try:
        with transaction.atomic():
            rule = AlertRule.objects.create(
                tenant_id=membership.tenant_id,
                pool=pool,
                kind=kind,
                threshold=threshold,
                hysteresis=hysteresis,
                renotify_minutes=renotify,
                enabled=bool(enabled),
            )
            _rule_audit(membership, rule, "alert_rule.created")
    except IntegrityError:
        raise ValidationError({"kind": taken}) from None
    return rule


def alert_rule_update(
    *, membership, rule: AlertRule, threshold, hysteresis, renotify_minutes, enabled
) -> AlertRule:
    """Change a rule's numbers (admins); its kind and pool stay."""
    from tenants.roles import Action
    from tenants.selectors import membership_require

    membership_require(membership=membership, action=Action.MANAGE)
    if rule.tenant_id != membership.tenant_id:
        raise Http404("No such rule.")
    threshold, hysteresis, renotify = alert_rule_validate(
        kind=rule.kind,
        threshold=threshold,
        hysteresis=hysteresis,
        renotify_minutes=renotify_minutes,
    )
    new = {
        "threshold": threshold,
        "hysteresis": hysteresis,
        "renotify_minutes": renotify,
        "enabled": bool(enabled),
    }
    changed = sorted(k for k, v in new.items() if getattr(rule, k) != v)
    if not changed:
        return rule
    with transaction.atomic():
        for key, value in new.items():
            setattr(rule, key, value)
        rule.save(update_fields=changed)
        _rule_audit(membership, rule, "alert_rule.changed", changed)
    return rule


def alert_rule_delete(*, membership, rule: AlertRule) -> None:
    """Remove a rule (admins): a pool's override goes back to the tenant default."""
    from tenants.roles import Action
    from tenants.selectors import membership_require

    membership_require(membership=membership, action=Action.MANAGE)
    if rule.tenant_id != membership.tenant_id:
        raise Http404("No such rule.")
    with transaction.atomic():
        _rule_audit(membership, rule, "alert_rule.deleted")
        rule.delete()


def alert_rule_set(
    *,
    membership,
    kind: str,
    threshold,
    hysteresis=1.0,
    renotify_minutes=0,
    enabled: bool = True,
    pool=None,
) -> AlertRule:
    """The rules pages' save: the tenant default (no pool) or the pool's override
    of `kind`, created or changed (admins)."""
    if kind not in Kind.values:
        raise ValidationError({"kind": f"Choose one of {', '.join(Kind.values)}."})
    numbers = {
        "threshold": threshold,
        "hysteresis": hysteresis,
        "renotify_minutes": renotify_minutes,
        "enabled": enabled,
    }
    with transaction.atomic():
        rule = (
            AlertRule.objects.select_for_update()
            .filter(
                tenant_id=membership.tenant_id,
                pool_id=pool.pk if pool is not None else None,
                kind=kind,
            )
            .first()
        )
        if rule is not None:
            return alert_rule_update(membership=membership, rule=rule, **numbers)
    return alert_rule_create(membership=membership, kind=kind, pool=pool, **numbers)
