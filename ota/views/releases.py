"""/ota/releases/: the releases the tenant may roll out, the upload of its own (when
its plan allows) and retiring one. Everyone reads; admins and owners change."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from devices.forms import apply_service_errors
from devices.views.member_page import member_page
from ota import access
from ota.forms import ReleaseForm
from tenants.roles import Action, role_allows
from tenants.selectors import membership_require


def _may_upload(membership) -> bool:
    return role_allows(membership.role, Action.MANAGE) and access.own_releases_allowed(
        tenant=membership.tenant
    )


@member_page
def releases(request):
    membership = request.membership
    rows = access.releases_for_member(membership=membership)
    return render(
        request,
        "ota/releases.html",
        {
            "releases": rows,
            "may_upload": _may_upload(membership),
            "tenant_id": membership.tenant_id,
        },
    )


@member_page
def release_add(request):
    from ota import services

    membership = request.membership
    membership_require(membership=membership, action=Action.MANAGE)
    if not access.own_releases_allowed(tenant=membership.tenant):
        raise PermissionDenied(
            "Your plan does not include releases of your own; the platform's "
            "releases are listed on the Releases page."
        )
    form = ReleaseForm(request.POST or None, request.FILES or None)
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            try:
                release = services.release_create(
                    upload=data["file"],
                    version=data["version"],
                    hardware_model=data["hardware_model"],
                    min_from_version=data["min_from_version"],
                    notes=data["notes"],
                    tenant=membership.tenant,
                    actor=membership.user,
                )
            except ValidationError as exc:
                apply_service_errors(form, exc, {"upload": "file"})
            else:
                messages.success(
                    request,
                    f"Release {release.hardware_model} {release.version} uploaded "
                    f"({release.size:,} bytes, {release.chunk_count} chunks).",
                )
                return redirect("ota_releases")
    return render(request, "ota/release_add.html", {"form": form}, status=status)


@member_page
@require_POST
def release_retire(request, code):
    from ota import services

    release = access.release_get_for_member(
        membership=request.membership, code=code, action=Action.MANAGE
    )
    try:
        services.release_retire(actor=request.user, release=release)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request, f"Release {release.hardware_model} {release.version} retired."
        )
    return redirect("ota_releases")
