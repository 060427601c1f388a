"""The tenant's devices: the list, and adding, replacing and removing one (with the
provisioning bundle shown once)."""

import json
import urllib.parse

from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from devices.models import Device
from devices.selectors import (
    brokers_usable_by_member,
    device_get_for_member,
    devices_for_member,
    pool_device,
    pool_get_for_member,
    pools_for_member,
)
from devices.views.member_page import form_errors, member_page
from firmware.protocol import wifi_quality
from tenants.roles import Action, role_allows


def _bundle_context(device, bundle: dict) -> dict:
    from devices.services.provisioning import (
        bundle_filename,
        bundle_json,
        bundle_qr_svg,
    )

    text = bundle_json(bundle)
    return {
        "device": device,
        "bundle_pretty": json.dumps(bundle, indent=2),
        "bundle_href": "data:application/json;charset=utf-8,"
        + urllib.parse.quote(text),
        "bundle_filename": bundle_filename(bundle),
        "qr_svg": bundle_qr_svg(bundle),
        "has_password": bool(bundle["mqtt"]["password"]),
    }


def _bundle_response(request, device, bundle):
    response = render(
        request, "devices/devices_bundle.html", _bundle_context(device, bundle)
    )
    # The password is in this page: never cached, never shown again.
    response["Cache-Control"] = "no-store"
    return response


def uptime_text(seconds) -> str:
    if not isinstance(seconds, int) or seconds < 0:
        return "—"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {rest // 60} min"
    return f"{rest // 60} min"


@member_page
def devices(request):
    membership = request.membership
    # The page shows no secret: do not even load (and decrypt) them, per row.
    rows = list(
        devices_for_member(membership=membership).defer(
            "mqtt_password", "broker__username", "broker__password"
        )
    )
    for device in rows:
        device.uptime_text = uptime_text((device.state or {}).get("uptime"))
        rssi = ((device.state or {}).get("wifi") or {}).get("rssi")
        number = isinstance(rssi, int | float) and not isinstance(rssi, bool)
        device.rssi = rssi if number else None
        # The v3.1 words for the signal, as the device sends them; none unread.
        device.signal = "" if device.rssi is None else wifi_quality(device.rssi)
    return render(
        request,
        "devices/devices_list.html",
        {
            "devices": rows,
            "can_manage": role_allows(membership.role, Action.MANAGE),
        },
    )


@member_page
@never_cache
@require_http_methods(["GET", "POST"])
def device_add(request):
    membership = request.membership
    from tenants.selectors import membership_require

    membership_require(membership=membership, action=Action.MANAGE)
    pools = pools_for_member(membership=membership).filter(device__isnull=True)
    brokers = brokers_usable_by_member(membership=membership)
    values = {
        "device_id": "",
        "pool": request.GET.get("pool", ""),
        "broker": "",
        "protocol": "ps1",
        "claim_code": "",
    }
    errors: dict[str, list[str]] = {}
    status = 200
    if request.method == "POST":
        from devices.services.onboarding import device_add as device_add_service
        from devices.services.onboarding import device_broker_choose

        values = {key: request.POST.get(key, "").strip() for key in values}
        pool = broker = None
        try:
            pool = pool_get_for_member(membership=membership, code=values["pool"])
        except Http404:
            errors["pool"] = ["Pick one of your pools."]
        try:
            broker = device_broker_choose(membership=membership, code=values["broker"])
        except ValidationError as exc:
            errors.update(form_errors(exc))
        if values["protocol"] not in Device.Protocol.values:
            errors["protocol"] = ["Pick poolsaas firmware or v3.1."]
        if not errors:
            try:
                device, bundle = device_add_service(
                    membership=membership,
                    pool=pool,
                    device_id=values["device_id"],
                    broker=broker,
                    protocol=values["protocol"],
                    claim_code=values["claim_code"],
                )
            except ValidationError as exc:
                errors = form_errors(exc)
            else:
                if bundle:
                    return _bundle_response(request, device, bundle)
                from django.contrib import messages

                messages.success(
                    request,
                    f"{device.device_id} added. It uses the credentials of its "
                    "broker; no bundle is needed.",
                )
                return redirect("devices")
        status = 400
    return render(
        request,
        "devices/devices_add.html",
        {
            "pools": pools,
            "brokers": brokers,
            "values": values,
            "errors": errors,
            "general_errors": errors.get("__all__", []),
            "protocols": Device.Protocol.choices,
        },
        status=status,
    )


@member_page
@require_http_methods(["GET", "POST"])
def device_remove(request, code):
    device = device_get_for_member(
        membership=request.membership, code=code, action=Action.MANAGE
    )
    if request.method == "POST":
        from django.contrib import messages

        from devices.services.onboarding import device_remove as device_remove_service

        device_remove_service(membership=request.membership, device=device)
        messages.success(
            request, f"{device.device_id} removed; its broker credentials are revoked."
        )
        return redirect("devices")
    return render(request, "devices/devices_remove.html", {"device": device})


@member_page
@never_cache
@require_http_methods(["GET", "POST"])
def device_replace(request, code):
    pool = pool_get_for_member(
        membership=request.membership, code=code, action=Action.MANAGE
    )
    old = pool_device(pool)
    errors: dict[str, list[str]] = {}
    device_id = ""
    status = 200
    if request.method == "POST":
        from devices.services.onboarding import device_replace as replace_service

        device_id = request.POST.get("device_id", "").strip()
        try:
            result = replace_service(
                membership=request.membership,
                pool=pool,
                device_id=device_id,
                claim_code=request.POST.get("claim_code", ""),
            )
        except ValidationError as exc:
            errors = form_errors(exc)
            status = 400
        else:
            device, bundle = result if isinstance(result, tuple) else (result, None)
            if bundle:
                return _bundle_response(request, device, bundle)
            from django.contrib import messages

            messages.success(request, f"{device.device_id} now controls {pool.name}.")
            return redirect(reverse("pool_detail", args=[pool.code]))
    return render(
        request,
        "devices/devices_replace.html",
        {
            "pool": pool,
            "old": old,
            "device_id": device_id,
            "errors": errors,
            "general_errors": errors.get("__all__", []),
        },
        status=status,
    )
