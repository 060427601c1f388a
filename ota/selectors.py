"""Reads of OTA: counts per state, a device's history, what a tenant may use."""

from django.db.models import Count, Q

from ota.models import Campaign, DeviceUpdate, Release


def campaign_counts(campaign: Campaign) -> dict[str, int]:
    """{state: n} over every state (0 included), one query."""
    counts = dict.fromkeys(DeviceUpdate.State.values, 0)
    counts.update(
        campaign.updates.values_list("state").annotate(n=Count("pk")).order_by()
    )
    return counts


def device_history(device) -> list[DeviceUpdate]:
    """The device's updates, newest first, with campaign and release (one query)."""
    return list(
        DeviceUpdate.objects.filter(device=device, tenant_id=device.tenant_id)
        .select_related("campaign__release")
        .order_by("-pk")
    )


def releases_for_tenant(tenant, *, include_retired=False):
    """The releases a tenant may roll out: the platform's and its own."""
    rows = Release.objects.filter(Q(tenant__isnull=True) | Q(tenant=tenant))
    return rows if include_retired else rows.filter(retired=False)


def update_awaiting_consent(device) -> DeviceUpdate | None:
    """The device's update waiting for its owner's answer, if any."""
    return (
        DeviceUpdate.objects.filter(
            device=device, tenant_id=device.tenant_id, state="awaiting_consent"
        )
        .select_related("campaign__release")
        .first()
    )
