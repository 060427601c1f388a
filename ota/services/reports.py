"""What devices report about their update (ota/status, through the bridge room)."""

from django.db.models import F
from django.utils import timezone

from ota.live import broadcast_update
from ota.models import DeviceUpdate

REPORTABLE = {"downloading", "downloaded", "verified", "applying"} | {
    "succeeded",
    "failed",
    "rolled_back",
}
# A device's refusal that says it was never a target: skipped, not failed.
NOT_FOR_ME = ("wrong model ", "already on ", "needs at least ")


def device_update_report(
    *,
    device_pk: int,
    campaign_id: int,
    state: str,
    percent=0,
    reason="",
    version="",
    corrupted: int | None = None,
) -> bool:
    """A device's report: only its own update, only while active. A device that says
    "succeeded" while running another version than the release's came back on its
    old one: recorded as rolled back. A late `rolled_back` (the device's own reason)
    replaces the reason the server guessed. `corrupted` (the chunks its download
    dropped as corrupted, checked by the bridge room) is stored when given; a
    report without it (an older device, a new version's `succeeded`) keeps it."""
    if state not in REPORTABLE:
        return False
    try:
        percent = max(0, min(100, int(percent)))
    except (TypeError, ValueError, OverflowError):  # 1e400 is inf: no int
        percent = 0
    update = (
        DeviceUpdate.objects.select_related("tenant", "campaign__release", "device")
        .filter(campaign_id=campaign_id, device_id=device_pk)
        .first()
    )
    if update is None:
        return False
    now = timezone.now()
    reason = str(reason)[:200]
    sources = DeviceUpdate.ACTIVE
    if state == "rolled_back" and update.state == "rolled_back":
        sources = ("rolled_back",)
    elif update.state not in DeviceUpdate.ACTIVE:
        return False
    expected = update.campaign.release.version
    if state == "succeeded" and version and version != expected:
        state, reason = "rolled_back", f"running {version[:40]}, not {expected}"
    if state == "failed" and reason.startswith(NOT_FOR_ME):
        state = "skipped"
    fields = {"state": state, "percent": percent, "reason": reason, "heard_at": now}
    if corrupted is not None:
        fields["corrupted_chunks"] = corrupted
    if state == "succeeded":
        fields["percent"] = 100
    if state in DeviceUpdate.FINAL:
        fields["finished_at"] = now
    extra = {}
    if state in DeviceUpdate.FAILURES and update.state != state:
        extra["failures"] = F("failures") + 1
    n = DeviceUpdate.objects.filter(pk=update.pk, state__in=sources).update(
        **fields, **extra
    )
    if n:
        for name, value in fields.items():
            setattr(update, name, value)
        broadcast_update(update)
    return bool(n)
