"""campaign_step: what Celery beat does to a running campaign, every 15 s.

One worker at a time: the step claims the campaign's row with a conditional UPDATE
on `claimed_until` (healthchecks' sendalerts does the same); a worker that dies
mid-step leaves the claim to lapse (settings.OTA_CLAIM_S) and the next worker's
step goes on from the rows as they are: each change below is a conditional UPDATE
(a row moves only from the state it was read in), and the offers of one step and
the campaign's rate credit are one transaction, so a step cut anywhere leaves
nothing half-done that the next one would repeat or lose.
"""

import datetime
import logging
import math
import time

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from audit.services import audit_record
from ota.live import broadcast_update
from ota.models import Campaign, DeviceUpdate
from ota.services.campaigns import campaign_enrol, updates_close
from ota.services.targeting import in_window, local_now, skip_reason, version_of

logger = logging.getLogger(__name__)
SCAN = 2000  # queued rows looked at per step (held back by window or daily cap)


def _claim(campaign_id: int, seconds: int | None = None) -> bool:
    """One worker at a time: a conditional UPDATE on the row (a dead worker's claim
    lapses after `seconds`, settings.OTA_CLAIM_S, and another continues)."""
    now = timezone.now()
    seconds = settings.OTA_CLAIM_S if seconds is None else seconds
    return bool(
        Campaign.objects.filter(pk=campaign_id, state=Campaign.State.RUNNING)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claimed_until=now + datetime.timedelta(seconds=seconds))
    )


def _set(update: DeviceUpdate, sources, **fields) -> bool:
    """Move one row if it is still in one of `sources`; broadcast the change."""
    extra = {}
    if fields.get("state") in DeviceUpdate.FAILURES:
        extra["failures"] = F("failures") + 1
    n = DeviceUpdate.objects.filter(pk=update.pk, state__in=sources).update(
        **fields, **extra
    )
    if n:
        for name, value in fields.items():
            setattr(update, name, value)
        broadcast_update(update)
    return bool(n)


def _rows(campaign: Campaign, states):
    return campaign.updates.filter(state__in=states).select_related(
        "tenant", "campaign", "device__pool"
    )


def _sweep_silent(campaign: Campaign, now) -> None:
    """Offered or downloading and silent past the deadline: timed out. Applying and
    silent that long: the device's own version tells (back on the old one: rolled
    back; on the new one: it succeeded and the report was lost)."""
    deadline = now - datetime.timedelta(seconds=campaign.device_timeout_s)
    for u in _rows(campaign, DeviceUpdate.SILENT).filter(heard_at__lt=deadline):
        _set(
            u,
            DeviceUpdate.SILENT,
            state="timed_out",
            reason=f"no word from the device for {campaign.device_timeout_s} s",
            finished_at=now,
        )
    release = campaign.release.version
    for u in _rows(campaign, ("applying",)).filter(
        heard_at__lt=deadline, device__last_seen_at__gt=F("heard_at")
    ):
        running = version_of(u.device)
        if running == release:
            _set(u, ("applying",), state="succeeded", percent=100, finished_at=now)
        elif running and running == u.version_before:
            _set(
                u,
                ("applying",),
                state="rolled_back",
                reason=f"came back on {running}",
                finished_at=now,
            )


def _abort_if_over(campaign: Campaign, now) -> bool:
    # A device that failed counts as failed until it succeeds (also while it waits
    # for a retry), so that retries cannot hide a bad release from the threshold.
    agg = campaign.updates.aggregate(
        ok=Count("pk", filter=Q(state="succeeded")),
        failed=Count(
            "pk",
            filter=Q(state__in=DeviceUpdate.FAILURES)
            | (Q(failures__gt=0) & ~Q(state__in=("succeeded", "skipped"))),
        ),
    )
    failed = agg["failed"]
    done = agg["ok"] + failed
    if done == 0 or done < campaign.abort_after or failed / done < campaign.abort_ratio:
        return False
    reason = (
        f"{failed} of {done} devices failed "
        f"({failed * 100 // done} % >= {campaign.abort_ratio * 100:g} %)"
    )
    with transaction.atomic():
        n = Campaign.objects.filter(pk=campaign.pk, state="running").update(
            state="aborted", state_reason=reason, finished_at=now
        )
        if n:
            updates_close(campaign, "campaign aborted")
            audit_record(
                action="ota.campaign_abort",
                tenant=campaign.tenant,
                target=campaign,
                actor_label="ota.advance_campaigns",
                data={"release": str(campaign.release), "reason": reason},
            )
    return True


def _retry(campaign: Campaign) -> None:
    """Failed or timed-out devices with retries left are queued again."""
    for u in _rows(campaign, ("failed", "timed_out")).filter(
        attempts__lt=1 + campaign.retries, attempts__gt=0
    ):
        _set(u, ("failed", "timed_out"), state="queued", percent=0, finished_at=None)


def _grow(campaign: Campaign) -> None:
    """After each batch (one step's offers) that finished with every device
    succeeded, the rate is multiplied by growth_factor."""
    if campaign.growth_factor <= 1.0:
        return
    rate, checked = campaign.current_rate, campaign.batch_checked
    while checked < campaign.batch:
        states = set(
            campaign.updates.filter(batch=checked + 1).values_list("state", flat=True)
        )
        if states - set(DeviceUpdate.FINAL):
            break  # this batch is still under way
        checked += 1
        if states and states <= {"succeeded", "skipped"}:
            rate *= campaign.growth_factor
    if checked != campaign.batch_checked:
        Campaign.objects.filter(pk=campaign.pk).update(
            current_rate=rate, batch_checked=checked
        )
        campaign.current_rate, campaign.batch_checked = rate, checked


def _offer(campaign: Campaign, now) -> int:
    """Offer queued devices up to the rate's credit, each within its pool's window
    and its daily attempt cap; devices current by now are skipped instead."""
    rate = campaign.current_rate or float(campaign.rate_per_minute)
    if campaign.rate_per_minute == 0:
        credit = float(SCAN)  # no limit
    elif campaign.stepped_at is None:
        credit = max(rate, 1.0)  # the first minute's worth at once
    else:
        elapsed = (now - campaign.stepped_at).total_seconds() / 60
        credit = min(campaign.credit + rate * elapsed, max(rate, 1.0))
    budget = math.floor(credit)
    batch = campaign.batch + 1
    offered = 0
    delay = settings.OTA_STEP_OFFER_DELAY_MS / 1000
    with transaction.atomic():
        queued = (
            _rows(campaign, ("queued",))
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("pk")[:SCAN]
        )
        for u in queued:
            if offered >= budget:
                break
            reason = skip_reason(u.device, campaign.release)
            if reason == "already current":
                _set(u, ("queued",), state="skipped", reason=reason, finished_at=now)
                continue
            local = local_now(u.device, now)
            if not in_window(campaign.window_start, campaign.window_end, local):
                continue
            today = local.date()
            day_attempts = u.day_attempts if u.attempt_day == today else 0
            if day_attempts >= campaign.max_attempts_per_day:
                continue
            if _set(
                u,
                ("queued",),
                state="offered",
                percent=0,
                reason="",
                corrupted_chunks=0,
                offered_at=now,
                heard_at=now,
                attempts=u.attempts + 1,
                day_attempts=day_attempts + 1,
                attempt_day=today,
                batch=batch,
            ):
                offered += 1
                logger.info("ota: offering %s in campaign %s", u.device, campaign.pk)
                if delay:
                    time.sleep(delay)
        Campaign.objects.filter(pk=campaign.pk).update(
            credit=max(0.0, credit - offered) if campaign.rate_per_minute else 0.0,
            stepped_at=now,
            offered_total=F("offered_total") + offered,
            batch=batch if offered else campaign.batch,
        )
    return offered


def campaign_step(campaign_id: int) -> int:
    """Advance one running campaign: enrol its devices (once), time out the silent,
    abort on the threshold, queue retries, grow the rate, offer up to the rate,
    complete when nothing is left. Returns how many devices were offered now."""
    if not _claim(campaign_id):
        return 0
    try:
        campaign = Campaign.objects.select_related("release", "tenant").get(
            pk=campaign_id
        )
        now = timezone.now()
        if campaign.enrolled_at is None:
            campaign_enrol(campaign)
        _sweep_silent(campaign, now)
        if _abort_if_over(campaign, now):
            return 0
        _retry(campaign)
        _grow(campaign)
        offered = _offer(campaign, now)
        left = campaign.updates.exclude(state__in=DeviceUpdate.FINAL).exists()
        if not left:
            Campaign.objects.filter(pk=campaign.pk, state="running").update(
                state="completed", finished_at=now
            )
        return offered
    finally:
        Campaign.objects.filter(pk=campaign_id).update(claimed_until=None)
