"""Rotating a device's platform credentials from the devices page (admins).

The device learns the new pair over its own `cmd` topic and confirms it; the page
shows the state (devices/services/device_credentials.py)."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from devices.models import Device
from devices.selectors import device_get_for_member
from devices.services.device_credentials import (
    device_credentials_cancel,
    device_credentials_rotate,
    device_credentials_state,
)
from devices.services.dynsec import dynsec_enabled
from devices.views.member_page import member_page
from tenants.roles import Action


def rotation_annotate(devices) -> None:
    """For the devices page: each device's rotation state and whether it can
    rotate (platform broker with dynamic security, poolsaas firmware)."""
    enabled = dynsec_enabled()
    for device in devices:
        device.rotation = device_credentials_state(device=device)
        device.rotatable = (
            enabled
            and device.broker.is_platform
            and device.protocol == Device.Protocol.POOLSAAS
        )


@member_page
@require_POST
def device_rotate_credentials(request, code):
    device = device_get_for_member(
        membership=request.membership, code=code, action=Action.MANAGE
    )
    try:
        device_credentials_rotate(membership=request.membership, device=device)
    except ValidationError as exc:
        messages.error(request, f"{device.device_id}: {' '.join(exc.messages)}")
    else:
        messages.success(
            request,
            f"New credentials issued to {device.device_id}: it switches to them "
            "when it is online and confirms; its current ones work until then.",
        )
    return redirect("devices")


@member_page
@require_POST
def device_rotate_cancel(request, code):
    device = device_get_for_member(
        membership=request.membership, code=code, action=Action.MANAGE
    )
    try:
        device_credentials_cancel(membership=request.membership, device=device)
    except ValidationError as exc:
        messages.error(request, f"{device.device_id}: {' '.join(exc.messages)}")
    else:
        messages.success(
            request, f"Rotation of {device.device_id}'s credentials cancelled."
        )
    return redirect("devices")
