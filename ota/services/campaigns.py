"""Campaigns: created (validated, within the plan), started, paused, resumed,
cancelled; owners' consent; the rows of a campaign's devices."""

import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.services import audit_record
from ota.live import broadcast_update
from ota.models import Campaign, DeviceUpdate, Release, validate_semver
from ota.services.targeting import (
    _resolve,
    campaign_preview,
    version_of,
)

LIMITS = {
    # field: (lowest, highest, in words)
    "rate_per_minute": (0, 100000, "devices per minute (0: no limit)"),
    "growth_factor": (1.0, 10.0, "a factor from 1 to 10"),
    "abort_after": (1, 100000, "a number of devices, at least 1"),
    "abort_ratio": (0.0, 1.0, "a share from 0 to 1"),
    "retries": (0, 10, "0 to 10 retries"),
    "max_attempts_per_day": (1, 50, "1 to 50 attempts a day"),
}


def _release_for(tenant, release) -> Release:
    """The release, if the tenant may use it (a platform one or its own)."""
    pk = release.pk if isinstance(release, Release) else release
    found = (
        Release.objects.filter(Q(tenant__isnull=True) | Q(tenant=tenant))
        .filter(pk=pk)
        .first()
    )
    if found is None:
        raise ValidationError({"release": "release not found"})
    if found.retired:
        raise ValidationError({"release": "This release is retired."})
    return found


def campaign_create(
    *,
    actor,
    tenant,
    release,
    target_all=True,
    pool_ids=(),
    device_ids=(),
    below_version="",
    rate_per_minute=10,
    growth_factor=1.0,
    abort_after=5,
    abort_ratio=0.2,
    retries=2,
    max_attempts_per_day=3,
    window_start: datetime.time | None = None,
    window_end: datetime.time | None = None,
    require_consent=False,
    device_timeout_s=900,
) -> Campaign:
    """A campaign in draft (campaign_set_state "start" runs it). Bad input raises
    ValidationError with a message per field and creates nothing; another tenant's
    release, pools or devices are "not found"; over the plan, PlanLimitReached."""
    from billing.services import plan_limit_check

    errors: dict[str, str] = {}
    values = {
        "rate_per_minute": rate_per_minute,
        "growth_factor": growth_factor,
        "abort_after": abort_after,
        "abort_ratio": abort_ratio,
        "retries": retries,
        "max_attempts_per_day": max_attempts_per_day,
    }
    for name, value in values.items():
        low, high, words = LIMITS[name]
        try:
            number = float(value)
        except (TypeError, ValueError):
            errors[name] = f"Give {words}."
            continue
        if not low <= number <= high or (
            isinstance(low, int) and number != int(number)
        ):
            errors[name] = f"Give {words}."
    if below_version:
        try:
            validate_semver(below_version)
        except ValidationError:
            errors["below_version"] = "A version is MAJOR.MINOR.PATCH."
    if (window_start is None) != (window_end is None):
        errors["window_end"] = "Give both ends of the window, or neither."
    elif window_start is not None and window_start == window_end:
        errors["window_end"] = "The window must not start and end at the same time."
    if not 10 <= int(device_timeout_s) <= 86400:
        errors["device_timeout_s"] = "Give 10 to 86400 seconds."
    try:
        release = _release_for(tenant, release)
    except ValidationError as e:
        errors.update({k: v[0] for k, v in e.message_dict.items()})
    if errors:
        raise ValidationError(errors)
    preview = campaign_preview(
        tenant=tenant,
        release=release,
        target_all=target_all,
        pool_ids=pool_ids,
        device_ids=device_ids,
        below_version=below_version,
    )
    if not preview.matched:
        raise ValidationError({"targets": "No device matches these targets."})
    with transaction.atomic():
        plan_limit_check(tenant=tenant, limit="ota_campaigns")
        campaign = Campaign.objects.create(
            tenant=tenant,
            release=release,
            target_all=bool(target_all),
            below_version=below_version,
            rate_per_minute=int(rate_per_minute),
            growth_factor=float(growth_factor),
            abort_after=int(abort_after),
            abort_ratio=float(abort_ratio),
            retries=int(retries),
            max_attempts_per_day=int(max_attempts_per_day),
            window_start=window_start,
            window_end=window_end,
            require_consent=bool(require_consent),
            device_timeout_s=int(device_timeout_s),
            created_by=actor if actor is not None and actor.pk else None,
        )
        if not target_all:
            from devices.models import Device, Pool

            campaign.target_pools.set(_resolve(Pool, tenant, pool_ids, "pools"))
            campaign.target_devices.set(_resolve(Device, tenant, device_ids, "devices"))
        audit_record(
            action="ota.campaign_create",
            tenant=tenant,
            actor=actor,
            target=campaign,
            data={
                "release": str(release),
                "matched": len(preview.matched),
                "skipped": len(preview.skipped),
            },
        )
    return campaign


def campaign_enrol(campaign: Campaign) -> int:
    """One row per targeted device, queued (or awaiting consent) or skipped with
    why; once per campaign (later devices are not added). Returns rows made."""
    if campaign.enrolled_at is not None:
        return 0
    preview = (
        campaign_preview(
            tenant=campaign.tenant,
            release=campaign.release,
            target_all=campaign.target_all,
            pool_ids=list(campaign.target_pools.values_list("pk", flat=True)),
            device_ids=list(campaign.target_devices.values_list("pk", flat=True)),
            below_version=campaign.below_version,
        )
        if campaign.target_all or _has_targets(campaign)
        else None
    )
    waiting = "awaiting_consent" if campaign.require_consent else "queued"
    rows = []
    for device in preview.matched if preview else ():
        rows.append((device, waiting, ""))
    for device, reason in preview.skipped if preview else ():
        rows.append((device, "skipped", reason))
    made = DeviceUpdate.objects.bulk_create(
        [
            DeviceUpdate(
                tenant_id=campaign.tenant_id,
                campaign=campaign,
                device=device,
                state=state,
                reason=reason,
                version_before=version_of(device)[:40],
                finished_at=timezone.now() if state == "skipped" else None,
            )
            for device, state, reason in rows
        ],
        ignore_conflicts=True,
    )
    Campaign.objects.filter(pk=campaign.pk, enrolled_at__isnull=True).update(
        enrolled_at=timezone.now()
    )
    return len(made)


def _has_targets(campaign: Campaign) -> bool:
    return campaign.target_pools.exists() or campaign.target_devices.exists()


ACTIONS = {
    "start": ({"draft"}, Campaign.State.RUNNING),
    "pause": ({"running"}, Campaign.State.PAUSED),
    "resume": ({"paused"}, Campaign.State.RUNNING),
    "cancel": ({"draft", "running", "paused"}, Campaign.State.CANCELLED),
}


def campaign_set_state(campaign: Campaign, action: str, *, actor=None) -> Campaign:
    """Start, pause, resume or cancel a campaign (a conditional UPDATE, so two
    clicks cannot both act); audited as `ota.campaign_<action>`. Raises
    ValueError for an action the campaign's state does not allow."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    sources, target = ACTIONS[action]
    now = timezone.now()
    fields = {"state": target}
    if action == "start":
        fields.update(started_at=now, current_rate=float(campaign.rate_per_minute))
    if action == "cancel":
        fields.update(finished_at=now, state_reason="cancelled")
    with transaction.atomic():
        n = Campaign.objects.filter(pk=campaign.pk, state__in=sources).update(**fields)
        if not n:
            campaign.refresh_from_db()
            raise ValueError(f"cannot {action} a {campaign.state} campaign")
        campaign.refresh_from_db()
        if action == "resume":
            # The time paused does not count against the devices' deadlines.
            campaign.updates.filter(state__in=DeviceUpdate.SILENT).update(heard_at=now)
        elif action == "cancel":
            updates_close(campaign, "campaign cancelled")
        audit_record(
            action=f"ota.campaign_{action}",
            tenant=campaign.tenant,
            actor=actor,
            target=campaign,
            data={"release": str(campaign.release), "state": campaign.state},
        )
    return campaign


def updates_close(campaign: Campaign, reason: str) -> int:
    """A stopped campaign: what has not started downloading is skipped (a device
    already downloading or applying goes on reporting)."""
    now = timezone.now()
    changed = list(
        campaign.updates.filter(
            state__in=("queued", "awaiting_consent", "offered")
        ).select_related("tenant", "campaign", "device")
    )
    n = DeviceUpdate.objects.filter(
        pk__in=[u.pk for u in changed],
        state__in=("queued", "awaiting_consent", "offered"),
    ).update(state="skipped", reason=reason, finished_at=now)
    for u in changed:
        u.state, u.reason = "skipped", reason
        broadcast_update(u)
    return n


def update_consent(*, actor, update: DeviceUpdate, accept: bool) -> DeviceUpdate:
    """The pool's owner accepts (queued: offered in turn, within the window and the
    rate) or declines (skipped) an update awaiting consent; audited. Raises
    ValueError when the update is not awaiting consent (answered already)."""
    now = timezone.now()
    if accept:
        fields = {"state": "queued", "reason": ""}
    else:
        who = getattr(actor, "email", "") or "the owner"
        fields = {
            "state": "skipped",
            "reason": f"declined by {who}"[:200],
            "finished_at": now,
        }
    with transaction.atomic():
        n = DeviceUpdate.objects.filter(
            pk=update.pk,
            state="awaiting_consent",
            campaign__state__in=("draft", "running", "paused"),
        ).update(
            consent_by=actor if actor is not None and actor.pk else None,
            consent_at=now,
            **fields,
        )
        update = DeviceUpdate.objects.select_related(
            "tenant", "campaign", "device"
        ).get(pk=update.pk)
        if not n:
            raise ValueError(f"this update is {update.state}, not awaiting consent")
        audit_record(
            action="ota.consent_accept" if accept else "ota.consent_decline",
            tenant=update.tenant,
            actor=actor,
            target=update,
            data={
                "campaign": update.campaign.code.hex,
                "device": update.device.device_id,
            },
        )
        broadcast_update(update)
    return update
