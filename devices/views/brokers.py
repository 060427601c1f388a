"""The brokers page: the tenant's own brokers plus the shared platform broker.

Everyone in the tenant may look; changing a broker or testing it with its stored
secrets needs the admin role. Secrets are write-only on every page.
"""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from devices.forms import BrokerForm, BrokerRotationForm, apply_service_errors
from devices.selectors import (
    broker_get_for_member,
    brokers_for_member,
    platform_broker_for_display,
)
from devices.services import brokers as services
from tenants.roles import Action
from tenants.selectors import membership_require


def _no_tenant(request):
    return render(request, "devices/no_tenant.html", status=200)


@login_required
def brokers(request):
    if request.membership is None:
        return _no_tenant(request)
    # The list never loads the secrets: nothing to decrypt, nothing to leak.
    own = (
        brokers_for_member(membership=request.membership)
        .defer("username", "password", "pending_username", "pending_password")
        .annotate(device_count=Count("devices"))
    )
    platform = platform_broker_for_display()
    return render(
        request,
        "devices/brokers.html",
        {
            "brokers": own,
            "platform": platform,
            # Devices reach the platform broker at its public address; its own
            # host and credentials stay with the platform.
            "platform_address": f"{settings.MQTT_PUBLIC_HOST}:"
            f"{settings.MQTT_PUBLIC_PORT}",
            "platform_tls": settings.MQTT_PUBLIC_TLS,
        },
    )


@login_required
def broker_add(request):
    if request.membership is None:
        return _no_tenant(request)
    membership_require(membership=request.membership, action=Action.MANAGE)
    form = BrokerForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                broker = services.broker_create(
                    membership=request.membership, **form.service_kwargs()
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, f"Broker {broker.name} added.")
                return HttpResponseRedirect(reverse("brokers"))
        status = 400
    return render(
        request,
        "devices/broker_form.html",
        {"form": form, "broker": None},
        status=status,
    )


@login_required
def broker_edit(request, code):
    if request.membership is None:
        return _no_tenant(request)
    broker = broker_get_for_member(
        membership=request.membership, code=code, action=Action.MANAGE
    )
    if request.method == "POST":
        form = BrokerForm(request.POST, editing=True)
    else:
        form = BrokerForm(
            editing=True,
            initial={name: getattr(broker, name) for name in services.BROKER_FIELDS},
        )
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                broker = services.broker_update(
                    membership=request.membership,
                    broker=broker,
                    **form.service_kwargs(),
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, f"Broker {broker.name} saved.")
                return HttpResponseRedirect(reverse("brokers"))
        status = 400
    return _edit_page(request, broker, form=form, status=status)


def _edit_page(request, broker, *, form=None, rotation_form=None, status=200):
    if form is None:
        form = BrokerForm(
            editing=True,
            initial={name: getattr(broker, name) for name in services.BROKER_FIELDS},
        )
    return render(
        request,
        "devices/broker_form.html",
        {
            "form": form,
            "broker": broker,
            "secrets": services.broker_secrets_status(broker=broker),
            "rotation": services.broker_credentials_state(broker=broker),
            "rotation_form": rotation_form or BrokerRotationForm(),
        },
        status=status,
    )


@login_required
@require_POST
def broker_rotate(request, code):
    """Stage new credentials; the bridge switches to them when the broker takes
    them (devices/services/brokers/credentials.py)."""
    if request.membership is None:
        return _no_tenant(request)
    broker = broker_get_for_member(
        membership=request.membership, code=code, action=Action.MANAGE
    )
    form = BrokerRotationForm(request.POST)
    if form.is_valid():
        try:
            services.broker_credentials_stage(
                membership=request.membership,
                broker=broker,
                username=form.cleaned_data["new_username"],
                password=form.cleaned_data["new_password"],
            )
        except ValidationError as exc:
            apply_service_errors(
                form,
                exc,
                {"username": "new_username", "password": "new_password"},
            )
        else:
            messages.success(
                request,
                f"New credentials staged for {broker.name}: the bridge switches to "
                "them at its next connection. Keep the old ones valid until then.",
            )
            return HttpResponseRedirect(reverse("broker_edit", args=[broker.code]))
    return _edit_page(request, broker, rotation_form=form, status=400)


@login_required
@require_POST
def broker_rotate_cancel(request, code):
    if request.membership is None:
        return _no_tenant(request)
    broker = broker_get_for_member(
        membership=request.membership, code=code, action=Action.MANAGE
    )
    services.broker_credentials_cancel(membership=request.membership, broker=broker)
    messages.success(request, f"Staged credentials of {broker.name} discarded.")
    return HttpResponseRedirect(reverse("broker_edit", args=[broker.code]))


@login_required
@require_POST
def broker_delete(request, code):
    if request.membership is None:
        return _no_tenant(request)
    broker = broker_get_for_member(
        membership=request.membership, code=code, action=Action.MANAGE
    )
    name = broker.name
    try:
        services.broker_delete(membership=request.membership, broker=broker)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"Broker {name} deleted.")
    return HttpResponseRedirect(reverse("brokers"))


@login_required
@require_POST
def broker_test(request, code):
    if request.membership is None:
        return _no_tenant(request)
    broker = broker_get_for_member(
        membership=request.membership, code=code, action=Action.MANAGE
    )
    pending = request.POST.get("pending") == "1"
    result = services.broker_test_connection(
        broker=broker, membership=request.membership, pending=pending
    )
    level = messages.SUCCESS if result.ok else messages.ERROR
    messages.add_message(request, level, f"{broker.name}: {result.message}")
    if pending:
        return HttpResponseRedirect(reverse("broker_edit", args=[broker.code]))
    return HttpResponseRedirect(reverse("brokers"))
