"""State changes of OTA: releases, manifests, campaigns and device reports."""

import datetime
import hashlib
import hmac
import json

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import salted_hmac

from audit.services import audit_record
from ota.models import MAX_CHUNK, Campaign, DeviceUpdate, Release


def release_create(*, upload, version, hardware_model, min_from_version="", notes=""):
    """Hash and size the upload in chunks (never wholly in memory), then store it."""
    digest = hashlib.sha256()
    size = 0
    for piece in upload.chunks(64 * 1024):
        digest.update(piece)
        size += len(piece)
    upload.seek(0)
    release = Release(
        version=version,
        hardware_model=hardware_model,
        min_from_version=min_from_version,
        notes=notes,
        sha256=digest.hexdigest(),
        size=size,
        chunk_size=MAX_CHUNK,
        chunk_count=-(-size // MAX_CHUNK),
    )
    release.full_clean(exclude=["file", "sha256"])
    release.file.save(f"{hardware_model}-{version}.bin", upload, save=False)
    release.save()
    return release


def device_ota_key(device_id: str) -> bytes:
    """The device's manifest key: derived from the OTA secret (settings.OTA_SECRET)
    and the device id, so it is never stored; handed to the device in its
    provisioning bundle ("ota_key", hex)."""
    secret = settings.OTA_SECRET or None  # None: SECRET_KEY (development)
    return salted_hmac(
        "poolsaas.ota.device", device_id, secret=secret, algorithm="sha256"
    ).digest()


def manifest(update: DeviceUpdate) -> dict:
    release = update.campaign.release
    body = {
        "c": update.campaign_id,
        "version": release.version,
        "from": release.min_from_version,
        "model": release.hardware_model,
        "size": release.size,
        "sha256": release.sha256,
        "chunk": release.chunk_size,
        "chunks": release.chunk_count,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    body["hmac"] = hmac.new(
        device_ota_key(update.device.device_id), canonical, hashlib.sha256
    ).hexdigest()
    return body


def campaign_set_state(campaign: Campaign, action: str, *, actor=None) -> Campaign:
    """Start, pause, resume or cancel a campaign (a conditional UPDATE, so two
    clicks cannot both act); audited as `ota.campaign_<action>`."""
    allowed = {
        "start": ({"draft"}, Campaign.State.RUNNING),
        "pause": ({"running"}, Campaign.State.PAUSED),
        "resume": ({"paused"}, Campaign.State.RUNNING),
        "cancel": ({"draft", "running", "paused"}, Campaign.State.CANCELLED),
    }
    sources, target = allowed[action]
    n = Campaign.objects.filter(pk=campaign.pk, state__in=sources).update(
        state=target,
        started_at=campaign.started_at or timezone.now(),
    )
    if not n:
        raise ValueError(f"cannot {action} a {campaign.state} campaign")
    campaign.refresh_from_db()
    audit_record(
        action=f"ota.campaign_{action}",
        tenant=campaign.tenant,
        actor=actor,
        target=campaign,
        data={"release": str(campaign.release), "state": campaign.state},
    )
    return campaign


def _claim(campaign_id: int, seconds: int = 55) -> bool:
    """One worker at a time: a conditional UPDATE on the row (a dead worker's claim
    lapses after `seconds`, and another continues)."""
    now = timezone.now()
    return bool(
        Campaign.objects.filter(pk=campaign_id, state=Campaign.State.RUNNING)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claimed_until=now + datetime.timedelta(seconds=seconds))
    )


def campaign_step(campaign_id: int) -> int:
    """Advance one running campaign: enrol targets, check the abort threshold, offer
    up to the rate. Returns how many devices were offered now."""
    if not _claim(campaign_id):
        return 0
    try:
        campaign = Campaign.objects.select_related("release").get(pk=campaign_id)
        release = campaign.release
        devices = campaign.tenant.devices.all()
        if not campaign.target_all:
            devices = campaign.target_devices.all().filter(tenant=campaign.tenant)
        for device in devices.exclude(ota_updates__campaign=campaign):
            skip = device.firmware_version == release.version
            DeviceUpdate.objects.get_or_create(
                campaign=campaign,
                device=device,
                defaults={
                    "state": "skipped" if skip else "queued",
                    "reason": "already current" if skip else "",
                },
            )
        updates = campaign.updates
        done = updates.filter(state__in=DeviceUpdate.FINAL).exclude(state="skipped")
        failed = done.exclude(state="succeeded").count()
        if done.count() >= campaign.abort_after and (
            failed / max(done.count(), 1) >= campaign.abort_ratio
        ):
            Campaign.objects.filter(pk=campaign.pk).update(state="aborted")
            return 0
        if not updates.exclude(state__in=DeviceUpdate.FINAL).exists():
            Campaign.objects.filter(pk=campaign.pk).update(state="completed")
            return 0
        minutes = (timezone.now() - campaign.started_at).total_seconds() / 60
        allowance = int(campaign.rate_per_minute * (minutes + 1))
        budget = max(0, allowance - campaign.offered_total)
        offered = 0
        with transaction.atomic():
            queued = (
                updates.filter(state="queued")
                .select_for_update(skip_locked=True)
                .order_by("pk")[:budget]
            )
            ids = [u.pk for u in queued]
            offered = DeviceUpdate.objects.filter(pk__in=ids, state="queued").update(
                state="offered", offered_at=timezone.now(), attempts=1
            )
            Campaign.objects.filter(pk=campaign.pk).update(
                offered_total=campaign.offered_total + offered
            )
        return offered
    finally:
        Campaign.objects.filter(pk=campaign_id).update(claimed_until=None)


REPORTABLE = {"downloading", "downloaded", "verified", "applying"} | {
    "succeeded",
    "failed",
    "rolled_back",
}


def device_update_report(
    *,
    device_pk: int,
    campaign_id: int,
    state: str,
    percent=0,
    reason="",
    version="",
) -> bool:
    """A device's report: only its own update, only if not final already. A device
    that says "succeeded" while running another version than the release's came back
    on its old one: recorded as rolled back."""
    if state not in REPORTABLE:
        return False
    try:
        percent = max(0, min(100, int(percent)))
    except (TypeError, ValueError):
        percent = 0
    updates = DeviceUpdate.objects.filter(
        campaign_id=campaign_id, device_id=device_pk, state__in=DeviceUpdate.ACTIVE
    )
    if state == "succeeded" and version:
        expected = (
            Campaign.objects.filter(pk=campaign_id)
            .values_list("release__version", flat=True)
            .first()
        )
        if expected is not None and version != expected:
            state, reason = "rolled_back", f"running {version[:40]}, not {expected}"
    return bool(updates.update(state=state, percent=percent, reason=reason[:200]))
