"""The access layer of the OTA pages and API: the only way a page or an API view
obtains a release, a campaign or a device's updates. Missing and foreign raise
Http404 alike (the same text); a role too low raises PermissionDenied
(tenants.selectors.membership_require).

Who may do what: every member reads releases, campaigns and histories; admins and
owners upload and retire their tenant's own releases (when the plan allows them)
and create and steer campaigns (Action.MANAGE); operators and up answer a
consent request on their pool's page (Action.CONTROL). Platform releases (no
tenant) are visible to every tenant and are managed by staff in the admin only.
"""

from django.db.models import Count, Q, QuerySet
from django.http import Http404

from devices.models import Device, Pool
from ota.models import Campaign, DeviceUpdate, Release
from tenants.models import Membership
from tenants.roles import Action
from tenants.selectors import membership_require, parse_code

NOT_FOUND_RELEASE = "No such release."
NOT_FOUND_CAMPAIGN = "No such campaign."
NOT_FOUND_CONSENT = "No such update waits for your consent."


def _code(code, message: str):
    """The code, or the object's own 404 (not-a-code answers as a made-up one)."""
    try:
        return parse_code(code)
    except Http404:
        raise Http404(message) from None


def own_releases_allowed(*, tenant) -> bool:
    """Whether the tenant's plan lets its admins upload their own releases (a
    tenant without a plan has no limits, as everywhere in billing)."""
    plan = getattr(tenant, "plan", None)
    if plan is None:
        return True
    return bool(getattr(plan, "ota_own_releases", False))


def releases_for_member(*, membership: Membership) -> QuerySet[Release]:
    """The platform's releases and, if its plan allows them, the tenant's own;
    newest first."""
    membership_require(membership=membership, action=Action.VIEW)
    visible = Q(tenant__isnull=True)
    if own_releases_allowed(tenant=membership.tenant):
        visible |= Q(tenant_id=membership.tenant_id)
    return Release.objects.filter(visible).order_by("-created_at", "-pk")


def release_get_for_member(
    *, membership: Membership, code, action: str = Action.VIEW
) -> Release:
    """One release the member sees. To change one (MANAGE) it must be the
    tenant's own: a platform release answers 403 (it is visible, so not 404)."""
    from django.core.exceptions import PermissionDenied

    try:
        release = releases_for_member(membership=membership).get(
            code=_code(code, NOT_FOUND_RELEASE)
        )
    except Release.DoesNotExist:
        raise Http404(NOT_FOUND_RELEASE) from None
    membership_require(membership=membership, action=action)
    if action != Action.VIEW and release.tenant_id != membership.tenant_id:
        raise PermissionDenied("Platform releases are managed by the platform.")
    return release


def releases_usable_for_member(*, membership: Membership) -> QuerySet[Release]:
    """What a new campaign may roll out: visible and not retired."""
    return releases_for_member(membership=membership).filter(retired=False)


def campaigns_for_member(*, membership: Membership) -> QuerySet[Campaign]:
    membership_require(membership=membership, action=Action.VIEW)
    return (
        Campaign.objects.filter(tenant_id=membership.tenant_id)
        .select_related("release")
        .order_by("-created_at", "-pk")
    )


def campaign_get_for_member(
    *, membership: Membership, code, action: str = Action.VIEW
) -> Campaign:
    try:
        campaign = (
            Campaign.objects.select_related("release", "tenant")
            .filter(tenant_id=membership.tenant_id)
            .get(code=_code(code, NOT_FOUND_CAMPAIGN))
        )
    except Campaign.DoesNotExist:
        raise Http404(NOT_FOUND_CAMPAIGN) from None
    membership_require(membership=membership, action=action)
    return campaign


def campaigns_state_counts(campaigns) -> dict[int, dict[str, int]]:
    """{campaign id: {state: n}} for a page of campaigns, in one query (the list
    page shows each one's progress)."""
    out: dict[int, dict[str, int]] = {c.pk: {} for c in campaigns}
    rows = (
        DeviceUpdate.objects.filter(campaign_id__in=list(out))
        .values_list("campaign_id", "state")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for campaign_id, state, n in rows:
        out[campaign_id][state] = n
    return out


def campaign_updates(*, campaign: Campaign) -> QuerySet[DeviceUpdate]:
    """A campaign's per-device rows (the caller checked access), in a stable order."""
    return (
        DeviceUpdate.objects.filter(campaign_id=campaign.pk)
        .select_related("device", "device__pool")
        .order_by("device__device_id", "pk")
    )


def device_updates(*, device: Device) -> QuerySet[DeviceUpdate]:
    """A device's history (the caller obtained it through
    devices.selectors.device_get_for_member), newest first."""
    return (
        DeviceUpdate.objects.filter(
            device_id=device.pk, campaign__tenant_id=device.tenant_id
        )
        .select_related("campaign", "campaign__release")
        .order_by("-pk")
    )


def pool_consent_pending(*, pool: Pool) -> list[DeviceUpdate]:
    """The pool's device's updates waiting for the pool's consent."""
    return list(
        DeviceUpdate.objects.filter(
            device__pool_id=pool.pk,
            campaign__tenant_id=pool.tenant_id,
            state="awaiting_consent",
            campaign__state__in=("running", "paused", "draft"),
        ).select_related("campaign", "campaign__release")
    )


def pool_consent_get(*, membership: Membership, pool: Pool, campaign_code):
    """The update of the pool's device in one campaign that waits for consent;
    Http404 when there is none (foreign, made-up, answered already)."""
    try:
        update = DeviceUpdate.objects.select_related(
            "campaign", "campaign__release", "device"
        ).get(
            device__pool_id=pool.pk,
            campaign__tenant_id=membership.tenant_id,
            campaign__code=_code(campaign_code, NOT_FOUND_CONSENT),
            state="awaiting_consent",
        )
    except DeviceUpdate.DoesNotExist:
        raise Http404(NOT_FOUND_CONSENT) from None
    membership_require(membership=membership, action=Action.CONTROL)
    return update
