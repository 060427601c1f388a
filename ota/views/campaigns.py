"""/ota/campaigns/: the tenant's campaigns; a new one, previewed (how many devices
match, why the others are skipped) before it is created; its progress page (counts
per state, rate, abort status, the devices page by page), live through the tenant's
socket (static/js/ota-campaign.js); start, pause, resume and cancel.

Everyone reads; admins and owners create and steer (Action.MANAGE)."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from devices.forms import apply_service_errors
from devices.selectors import devices_for_member, pools_for_member
from devices.views.member_page import member_page
from ota import access
from ota.forms import CampaignForm
from ota.views.shapes import (
    ACTIONS,
    abort_status,
    actions_for,
    count_rows,
    counts_for,
    update_as_dict,
)
from tenants.roles import Action, role_allows
from tenants.selectors import membership_require

PAGE_SIZE = 50
# The skipped devices the preview lists (their count is always whole).
PREVIEW_ROWS = 100


@member_page
def campaigns(request):
    membership = request.membership
    page = Paginator(access.campaigns_for_member(membership=membership), 25).get_page(
        request.GET.get("page")
    )
    counts = access.campaigns_state_counts(page)
    rows = [(c, counts_for(c, counts[c.pk])) for c in page]
    return render(
        request,
        "ota/campaigns.html",
        {
            "page": page,
            "rows": rows,
            "may_manage": role_allows(membership.role, Action.MANAGE),
        },
    )


def _campaign_form(request, membership):
    return CampaignForm(
        request.POST or None,
        releases=access.releases_usable_for_member(membership=membership),
        pools=pools_for_member(membership=membership),
        devices=devices_for_member(membership=membership),
    )


@member_page
def campaign_add(request):
    from ota import services

    membership = request.membership
    membership_require(membership=membership, action=Action.MANAGE)
    form = _campaign_form(request, membership)
    context = {"form": form, "preview": None}
    if request.method != "POST":
        return render(request, "ota/campaign_add.html", context)
    if not form.is_valid():
        return render(request, "ota/campaign_add.html", context, status=400)
    release = form.cleaned_data["release"]
    targets = form.targets()
    if request.POST.get("step") != "create":
        preview = services.campaign_preview(
            tenant=membership.tenant, release=release, **targets
        )
        context["preview"] = {
            "matched": len(preview.matched),
            "skipped": len(preview.skipped),
            "skipped_rows": preview.skipped[:PREVIEW_ROWS],
            "release": release,
        }
        return render(request, "ota/campaign_add.html", context)
    try:
        campaign = services.campaign_create(
            actor=membership.user,
            tenant=membership.tenant,
            release=release,
            **targets,
            **form.settings(),
        )
    except ValidationError as exc:
        apply_service_errors(form, exc, {"abort_ratio": "abort_percent"})
        return render(request, "ota/campaign_add.html", context, status=400)
    messages.success(
        request,
        f"Campaign for {release.hardware_model} {release.version} created. "
        "Start it when you are ready.",
    )
    return redirect("ota_campaign_detail", campaign.code)


def _rows(request, campaign):
    page = Paginator(access.campaign_updates(campaign=campaign), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return page, [update_as_dict(u) for u in page]


@member_page
def campaign_detail(request, code):
    membership = request.membership
    campaign = access.campaign_get_for_member(membership=membership, code=code)
    page, rows = _rows(request, campaign)
    counts = counts_for(campaign)
    return render(
        request,
        "ota/campaign_detail.html",
        {
            "campaign": campaign,
            "page": page,
            "rows": rows,
            "counts": counts,
            "count_rows": count_rows(counts),
            "abort": abort_status(campaign, counts),
            "actions": actions_for(campaign)
            if role_allows(membership.role, Action.MANAGE)
            else [],
        },
    )


@never_cache
@member_page
def campaign_live(request, code):
    """What the progress page refreshes after a live message or a reconnect: the
    state, the counts and the rows of the page it shows."""
    campaign = access.campaign_get_for_member(membership=request.membership, code=code)
    _, rows = _rows(request, campaign)
    counts = counts_for(campaign)
    return JsonResponse(
        {
            "campaign": campaign.code.hex,
            "state": campaign.state,
            "counts": counts,
            "abort": abort_status(campaign, counts),
            "updates": rows,
        }
    )


@member_page
@require_POST
def campaign_state(request, code):
    from ota import services

    action = request.POST.get("action", "")
    campaign = access.campaign_get_for_member(
        membership=request.membership, code=code, action=Action.MANAGE
    )
    if action not in ACTIONS:
        messages.error(request, "Choose start, pause, resume or cancel.")
        return redirect("ota_campaign_detail", campaign.code)
    try:
        campaign = services.campaign_set_state(campaign, action, actor=request.user)
    except (ValidationError, ValueError) as exc:
        text = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        messages.error(request, text[:1].upper() + text[1:] + ".")
    else:
        messages.success(request, f"Campaign {ACTIONS[action]}.")
    return redirect("ota_campaign_detail", campaign.code)
