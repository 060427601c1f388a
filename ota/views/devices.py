"""A device's update history (/devices/<code>/updates/, also a section of its pool's
page) and the consent a campaign may wait for, answered on the pool's page by the
pool's operators and up."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from devices.selectors import device_get_for_member, pool_get_for_member
from devices.views.member_page import member_page
from ota import access

HISTORY_ON_POOL_PAGE = 5


@member_page
def device_updates(request, code):
    device = device_get_for_member(membership=request.membership, code=code)
    page = Paginator(access.device_updates(device=device), 25).get_page(
        request.GET.get("page")
    )
    return render(request, "ota/device_updates.html", {"device": device, "page": page})


def pool_page_context(*, membership, pool, device) -> dict:
    """The pool page's updates section: the last few of its device and what waits
    for the pool's consent (devices.views.pool_page adds this to its context)."""
    from tenants.roles import Action, role_allows

    if device is None:
        return {"ota_history": [], "ota_consent": []}
    return {
        "ota_history": list(
            access.device_updates(device=device)[:HISTORY_ON_POOL_PAGE]
        ),
        "ota_consent": access.pool_consent_pending(pool=pool),
        "ota_may_consent": role_allows(membership.role, Action.CONTROL),
    }


@member_page
@require_POST
def pool_consent(request, code, campaign):
    from ota import services

    membership = request.membership
    pool = pool_get_for_member(membership=membership, code=code)
    update = access.pool_consent_get(
        membership=membership, pool=pool, campaign_code=campaign
    )
    answer = request.POST.get("answer", "")
    if answer not in ("accept", "decline"):
        messages.error(request, "Choose to accept or decline the update.")
        return redirect("pool_detail", pool.code)
    release = update.campaign.release
    try:
        services.update_consent(
            actor=request.user, update=update, accept=answer == "accept"
        )
    except (ValidationError, ValueError) as exc:
        # Answered already (in another tab, by another member).
        text = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        messages.error(request, text[:1].upper() + text[1:] + ".")
    else:
        messages.success(
            request,
            f"Update to {release.version} "
            + (
                "accepted: it starts in the campaign's next step."
                if answer == "accept"
                else "declined: this pool's device keeps its version."
            ),
        )
    return redirect("pool_detail", pool.code)
