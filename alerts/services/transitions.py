"""An alert's state changes (ok -> firing -> resolved, re-notify, acknowledge),
each claimed so two workers notify once; and the members' acknowledge and resolve."""

import dataclasses
import datetime as dt

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import Http404
from django.utils import timezone

from alerts.models import (
    Alert,
)


@dataclasses.dataclass
class Transition:
    alert: Alert
    event: str  # "fired", "resolved", "renotify"


def alert_fire(*, pool, rule, value, now) -> Transition | None:
    """ok -> firing; the partial unique index lets only one worker insert it."""
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                tenant_id=rule.tenant_id,
                pool=pool,
                kind=rule.kind,
                value=value,
                threshold=rule.threshold,
                fired_at=now,
                last_notified_at=now,
            )
    except IntegrityError:
        return None
    _notify_on_commit(alert, "fired")
    return Transition(alert, "fired")


def alert_resolve(*, alert: Alert, now) -> Transition | None:
    """firing -> resolved, claimed by a conditional UPDATE."""
    claimed = Alert.objects.filter(pk=alert.pk, state=Alert.State.FIRING).update(
        state=Alert.State.RESOLVED, resolved_at=now
    )
    if not claimed:
        return None
    alert.state, alert.resolved_at = Alert.State.RESOLVED, now
    _notify_on_commit(alert, "resolved")
    return Transition(alert, "resolved")


def alert_renotify(*, alert: Alert, rule, now) -> Transition | None:
    due = alert.last_notified_at + dt.timedelta(minutes=rule.renotify_minutes)
    if now < due:
        return None
    claimed = Alert.objects.filter(
        pk=alert.pk, state=Alert.State.FIRING, last_notified_at=alert.last_notified_at
    ).update(last_notified_at=now)
    if not claimed:
        return None
    _notify_on_commit(alert, "renotify")
    return Transition(alert, "renotify")


def alert_clear_mark(*, alert: Alert, since) -> bool:
    """Start (`since` a time) or stop (None) the all-clear clock of a firing alert
    (Alert.clear_since). Conditional on the value read, so two evaluators agree;
    nobody is notified."""
    claimed = Alert.objects.filter(
        pk=alert.pk, state=Alert.State.FIRING, clear_since=alert.clear_since
    ).update(clear_since=since)
    if claimed:
        alert.clear_since = since
    return bool(claimed)


def alert_acknowledge(*, membership, alert: Alert) -> bool:
    """Record who acknowledged a firing alert first; later calls change nothing."""
    return bool(
        Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(
            acknowledged_by=membership.user, acknowledged_at=timezone.now()
        )
    )


def _notify_on_commit(alert: Alert, event: str) -> None:
    from alerts import tasks

    pk = alert.pk
    transaction.on_commit(lambda: tasks.notify.delay(pk, event))
    alert_broadcast(alert=alert)


def alert_broadcast(*, alert: Alert) -> None:
    """Send the alert as it is now to its pool's page and its tenant's overview, once
    the transaction commits (poolsaas.live.groups.broadcast)."""
    from alerts.selectors import alert_as_dict
    from poolsaas.live import groups, messages

    data = alert_as_dict(alert)
    tenant_code = alert.tenant.code
    if alert.pool_id:
        groups.broadcast(
            groups.pool_group(alert.pool.code),
            messages.pool_alert(pool=data["pool"], alert=data),
        )
    groups.broadcast(
        groups.tenant_group(tenant_code),
        messages.tenant_alert(pool=data["pool"], alert=data),
    )


def _pool_hex(alert: Alert) -> str | None:
    return alert.pool.code.hex if alert.pool_id else None


def _alert_reload(alert: Alert) -> Alert:
    return Alert.objects.select_related("pool", "tenant", "acknowledged_by").get(
        pk=alert.pk
    )


def alert_acknowledge_by_member(*, membership, alert: Alert) -> Alert:
    """A member (operator or higher) says "seen, on it": the first one is recorded
    with the time (alert_acknowledge), audited and shown live; a second click
    changes nothing. A resolved alert has nothing left to acknowledge."""
    from audit.services import audit_record
    from tenants.roles import Action
    from tenants.selectors import membership_require

    membership_require(membership=membership, action=Action.CONTROL)
    if alert.tenant_id != membership.tenant_id:
        raise Http404("No such alert.")
    if alert.state != Alert.State.FIRING:
        raise ValidationError(
            "This alert is resolved: there is nothing to acknowledge."
        )
    with transaction.atomic():
        if alert_acknowledge(membership=membership, alert=alert):
            alert = _alert_reload(alert)
            audit_record(
                action="alert.acknowledged",
                tenant=membership.tenant,
                actor=membership.user,
                target=alert,
                data={"pool": _pool_hex(alert), "kind": alert.kind},
            )
            alert_broadcast(alert=alert)
        else:
            alert = _alert_reload(alert)
    return alert


def alert_resolve_by_member(*, membership, alert: Alert) -> Alert:
    """A member (operator or higher) closes a firing alert by hand (alert_resolve:
    the same claim and notifications as the evaluator's). If the condition still
    holds, the next evaluation opens a new alert."""
    from audit.services import audit_record
    from tenants.roles import Action
    from tenants.selectors import membership_require

    membership_require(membership=membership, action=Action.CONTROL)
    if alert.tenant_id != membership.tenant_id:
        raise Http404("No such alert.")
    with transaction.atomic():
        if alert.state != Alert.State.FIRING or not alert_resolve(
            alert=alert, now=timezone.now()
        ):
            raise ValidationError("This alert is resolved already.")
        audit_record(
            action="alert.resolved",
            tenant=membership.tenant,
            actor=membership.user,
            target=alert,
            data={"pool": _pool_hex(alert), "kind": alert.kind},
        )
    return _alert_reload(alert)
