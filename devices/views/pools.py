from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from alerts.selectors import alerts_firing_as_dicts
from billing.selectors import usage_banner
from devices.forms import PoolForm, apply_service_errors
from devices.selectors import pool_get_for_member, pools_for_member
from devices.services.pools import pool_create, pool_update, timezone_names
from tenants.roles import Action, role_allows
from tenants.selectors import membership_require


def _pools_page(request, *, add_form=None, status=200):
    search = request.GET.get("q", "").strip()[:100]
    page = Paginator(pools_for_member(membership=request.membership, search=search), 50)
    if add_form is None and role_allows(request.membership.role, Action.MANAGE):
        add_form = PoolForm()
    return render(
        request,
        "devices/pools.html",
        {
            "page": page.get_page(request.GET.get("page")),
            "search": search,
            "add_form": add_form,
            # What is firing across the tenant (the alerts app's live panel).
            "firing_alerts": alerts_firing_as_dicts(membership=request.membership),
            "usage_banner": usage_banner(tenant=request.membership.tenant),
        },
        status=status,
    )


@login_required
def pools(request):
    if request.membership is None:
        return render(request, "devices/no_tenant.html", status=200)
    return _pools_page(request)


@login_required
@require_POST
def pool_add(request):
    if request.membership is None:
        return render(request, "devices/no_tenant.html", status=200)
    membership_require(membership=request.membership, action=Action.MANAGE)
    form = PoolForm(request.POST)
    if form.is_valid():
        try:
            pool = pool_create(membership=request.membership, **form.cleaned_data)
        except ValidationError as exc:
            apply_service_errors(form, exc, PoolForm.SERVICE_FIELDS)
        else:
            messages.success(request, f"Pool {pool.name} added.")
            return HttpResponseRedirect(reverse("pools"))
    return _pools_page(request, add_form=form, status=400)


@login_required
def pool_settings(request, code):
    if request.membership is None:
        return render(request, "devices/no_tenant.html", status=200)
    pool = pool_get_for_member(
        membership=request.membership, code=code, action=Action.MANAGE
    )
    if request.method == "POST":
        form = PoolForm(request.POST)
        if form.is_valid():
            try:
                pool = pool_update(
                    membership=request.membership, pool=pool, **form.cleaned_data
                )
            except ValidationError as exc:
                apply_service_errors(form, exc, PoolForm.SERVICE_FIELDS)
            else:
                messages.success(request, f"Pool {pool.name} saved.")
                return HttpResponseRedirect(reverse("pools"))
        status = 400
    else:
        form = PoolForm(
            initial={
                "name": pool.name,
                "timezone_name": pool.timezone,
                "mode1_name": pool.mode1_name,
                "mode2_name": pool.mode2_name,
            }
        )
        status = 200
    if pool.timezone not in timezone_names():
        # A zone no longer offered (an alias such as US/Eastern): shown as it is, so
        # that saving the page never changes it silently; the service asks for
        # a listed one.
        field = form.fields["timezone_name"]
        field.choices = [
            (pool.timezone, f"{pool.timezone} (no longer offered: pick another)")
        ] + list(field.choices)
    return render(
        request,
        "devices/pool_settings.html",
        {"form": form, "pool": pool},
        status=status,
    )
