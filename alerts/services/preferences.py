"""A member's alert preferences: which kinds, which channel, quiet hours."""

import datetime as dt

from django.core.exceptions import ValidationError
from django.db import transaction

from alerts.models import (
    SAFETY_KINDS,
    AlertPreference,
    Kind,
)


def alert_preference_set(
    *,
    membership,
    kinds: list[str] | None = None,
    channel: str = AlertPreference.Channel.EMAIL,
    quiet_start: dt.time | None = None,
    quiet_end: dt.time | None = None,
    safety_ignores_quiet: bool = True,
) -> AlertPreference:
    """Save a member's own alert preferences (any role may; a viewer opts in to
    e-mail this way). Bad input raises ValidationError and changes nothing."""
    kinds = sorted(set(kinds or []))
    errors = {}
    unknown = [k for k in kinds if k not in Kind.values]
    if unknown:
        errors["kinds"] = f"Unknown alert kinds: {', '.join(map(str, unknown))}."
    if channel not in AlertPreference.Channel.values:
        errors["channel"] = "Choose e-mail or dashboard only."
    if (quiet_start is None) != (quiet_end is None):
        errors["quiet_end"] = "Give both ends of the quiet hours, or neither."
    elif quiet_start is not None and quiet_start == quiet_end:
        errors["quiet_end"] = "Quiet hours cannot start and end at the same time."
    if errors:
        raise ValidationError(errors)
    from audit.services import audit_record

    new = {
        "kinds": kinds,
        "channel": channel,
        "quiet_start": quiet_start,
        "quiet_end": quiet_end,
        "safety_ignores_quiet": bool(safety_ignores_quiet),
    }
    with transaction.atomic():
        old = AlertPreference.objects.filter(membership=membership).first()
        preference, created = AlertPreference.objects.update_or_create(
            membership=membership,
            defaults={"tenant_id": membership.tenant_id, **new},
        )
        changed = sorted(
            k for k, v in new.items() if old is None or getattr(old, k) != v
        )
        if changed:
            audit_record(
                action="alert_preference.changed",
                tenant=membership.tenant,
                actor=membership.user,
                target=preference,
                data={"fields": changed},
            )
    return preference


def preference_wants(*, preference: AlertPreference | None, role: str, kind: str):
    """Whether a member with these preferences (None: none saved) wants e-mail
    about alerts of this kind."""
    if preference is None:
        return role in ("owner", "admin")
    if preference.channel != AlertPreference.Channel.EMAIL:
        return False
    return not preference.kinds or kind in preference.kinds


def quiet_until(
    *, preference: AlertPreference | None, kind: str, now: dt.datetime, zone
) -> dt.datetime | None:
    """When the quiet hours that `now` falls in end (None: not quiet now, or a
    safety alert let through). Hours are local times in the pool's zone `zone`."""
    if preference is None or preference.quiet_start is None:
        return None
    start, end = preference.quiet_start, preference.quiet_end
    if end is None or start == end:
        return None
    if kind in SAFETY_KINDS and preference.safety_ignores_quiet:
        return None
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if start < end:
        quiet, end_day = start <= clock < end, local.date()
    else:  # across midnight, e.g. 22:00-07:00
        quiet = clock >= start or clock < end
        end_day = local.date() + dt.timedelta(days=1 if clock >= start else 0)
    if not quiet:
        return None
    return dt.datetime.combine(end_day, end, tzinfo=zone).astimezone(dt.UTC)
