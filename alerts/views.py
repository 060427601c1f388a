"""The alerts pages: the tenant's alerts (/alerts/), a pool's history
(/pools/<code>/alerts/), the rules (tenant defaults at /alerts/rules/, a pool's
overrides at /pools/<code>/alerts/rules/), and the acknowledge and resolve buttons.

Everyone in the tenant reads; operators and up acknowledge and resolve; admins and
owners change rules. Objects come only from alerts.selectors and
devices.selectors.pool_get_for_member: foreign and made-up codes are the same 404.
"""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from alerts import selectors, services
from alerts.forms import PreferenceForm, RuleForm
from alerts.models import SAFETY_KINDS, Alert, AlertPreference, Kind
from devices.forms import apply_service_errors
from devices.selectors import pool_get_for_member
from devices.views.member_page import member_page
from tenants.roles import Action

PAGE_SIZE = 25
# An alert's delivery log on its page (the API pages through all of it).
DELIVERY_ROWS = 200
STATES = {"firing": Alert.State.FIRING, "resolved": Alert.State.RESOLVED}


def _state_filter(request) -> str:
    state = request.GET.get("state", "")
    return state if state in STATES else ""


def _page(request, queryset):
    return Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))


@member_page
def alerts(request):
    state = _state_filter(request)
    membership = request.membership
    return render(
        request,
        "alerts/alerts.html",
        {
            "page": _page(
                request, selectors.alerts_for_member(membership=membership, state=state)
            ),
            "state": state,
        },
    )


@member_page
def pool_alerts(request, code):
    pool = pool_get_for_member(membership=request.membership, code=code)
    state = _state_filter(request)
    return render(
        request,
        "alerts/pool_alerts.html",
        {
            "pool": pool,
            "page": _page(
                request,
                selectors.alerts_for_member(
                    membership=request.membership, state=state, pool=pool
                ),
            ),
            "state": state,
        },
    )


@member_page
def alert_detail(request, code):
    """One alert: what, when, who acknowledged it; the delivery log for admins."""
    from tenants.roles import role_allows

    alert = selectors.alert_get_for_member(membership=request.membership, code=code)
    deliveries = None
    if role_allows(request.membership.role, Action.MANAGE):
        deliveries = list(selectors.alert_deliveries(alert=alert)[:DELIVERY_ROWS])
    return render(
        request,
        "alerts/alert_detail.html",
        {
            "alert": alert,
            "pool": alert.pool,
            "unit": selectors.UNITS.get(alert.kind, ""),
            "deliveries": deliveries,
            "delivery_rows": DELIVERY_ROWS,
        },
    )


def _rules_page(request, *, pool, rows, forms, status=200):
    return render(
        request,
        "alerts/rules.html",
        {"pool": pool, "rows": [(row, forms[row.kind]) for row in rows]},
        status=status,
    )


def _rules(request, pool):
    membership = request.membership
    if pool is None:
        rows = selectors.tenant_rules_for_member(membership=membership)
        mine = {row.kind: row.default for row in rows}
    else:
        rows = selectors.pool_rules_for_member(membership=membership, pool=pool)
        mine = {row.kind: row.override for row in rows}
    forms = {
        row.kind: RuleForm(prefix=row.kind, rule=mine[row.kind] or row.effective)
        for row in rows
    }
    if request.method != "POST":
        return _rules_page(request, pool=pool, rows=rows, forms=forms)
    kind = request.POST.get("kind", "")
    if kind not in Kind.values:
        messages.error(request, "Choose a rule to change.")
        return _rules_page(request, pool=pool, rows=rows, forms=forms, status=400)
    here = request.path
    if request.POST.get("action") == "delete":
        rule = mine[kind]
        if rule is None:
            messages.error(request, "There is no such rule to remove.")
            return _rules_page(request, pool=pool, rows=rows, forms=forms, status=400)
        services.alert_rule_delete(membership=membership, rule=rule)
        messages.success(
            request,
            f"{Kind(kind).label}: "
            + ("back to the tenant default." if pool else "default removed."),
        )
        return HttpResponseRedirect(here)
    form = RuleForm(request.POST, prefix=kind)
    forms[kind] = form
    if form.is_valid():
        try:
            services.alert_rule_set(
                membership=membership, kind=kind, pool=pool, **form.cleaned_data
            )
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"{Kind(kind).label} rule saved.")
            return HttpResponseRedirect(here)
    return _rules_page(request, pool=pool, rows=rows, forms=forms, status=400)


def _require_manage_for_post(request):
    if request.method == "POST":
        from tenants.selectors import membership_require

        membership_require(membership=request.membership, action=Action.MANAGE)


@member_page
def tenant_rules(request):
    _require_manage_for_post(request)
    return _rules(request, None)


@member_page
def pool_rules(request, code):
    pool = pool_get_for_member(membership=request.membership, code=code)
    _require_manage_for_post(request)
    return _rules(request, pool)


def _back(request, alert):
    target = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return HttpResponseRedirect(target)
    if alert.pool_id is None:
        return HttpResponseRedirect(reverse("alerts"))
    return HttpResponseRedirect(reverse("pool_alerts", args=[alert.pool.code]))


@member_page
@require_POST
def alert_acknowledge(request, code):
    alert = selectors.alert_get_for_member(
        membership=request.membership, code=code, action=Action.CONTROL
    )
    try:
        alert = services.alert_acknowledge_by_member(
            membership=request.membership, alert=alert
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request,
            f"{alert.get_kind_display()} on {alert.where}: acknowledged by "
            f"{alert.acknowledged_by.email if alert.acknowledged_by else 'someone'}.",
        )
    return _back(request, alert)


@member_page
@require_POST
def alert_resolve(request, code):
    alert = selectors.alert_get_for_member(
        membership=request.membership, code=code, action=Action.CONTROL
    )
    try:
        alert = services.alert_resolve_by_member(
            membership=request.membership, alert=alert
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request, f"{alert.get_kind_display()} on {alert.where}: resolved."
        )
    return _back(request, alert)


@member_page
def alert_preferences(request):
    """The member's own preferences: which kinds, e-mail or the dashboard only,
    quiet hours (in each pool's zone), and whether safety alerts break them."""
    membership = request.membership
    preference = AlertPreference.objects.filter(membership=membership).first()
    form = PreferenceForm(preference=preference)
    status = 200
    if request.method == "POST":
        form = PreferenceForm(request.POST)
        if form.is_valid():
            try:
                services.alert_preference_set(
                    membership=membership, **form.cleaned_data
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, "Your alert preferences are saved.")
                return HttpResponseRedirect(request.path)
        status = 400
    return render(
        request,
        "alerts/preferences.html",
        {
            "form": form,
            "preference": preference,
            "gets_defaults": membership.role in ("owner", "admin"),
            "safety_labels": [Kind(k).label for k in sorted(SAFETY_KINDS)],
        },
        status=status,
    )
