"""Provisioning bundles: what a device needs to reach its broker, as a JSON file and a
QR code that the firmware's captive portal accepts (docs/protocol.md 7).

A bundle holds the device's password in clear, so it exists only in the answer to the
request that added the device: it is never stored, logged or audited. The password
itself is stored only encrypted (Device.mqtt_password).
"""

from __future__ import annotations

import json
from typing import Any

import segno
from django.conf import settings

from devices.models import Broker, Device
from ota.services import device_ota_key

BUNDLE_VERSION = 1


def bundle_build(*, device: Device, broker: Broker, password: str) -> dict[str, Any]:
    """The bundle of a device: {"v": 1, "device_id", "auth", "mqtt": {...}, "ca"?,
    "ota_key"}.

    "auth" says what the password is: "device" (its own, issued now and shown this
    once) or "none" (the broker issues no per-device credentials; the password is
    empty, not withheld). Devices ignore it; people reading the file need it.

    Devices reach the platform broker at its public address (MQTT_PUBLIC_*), which
    differs from the address the bridge uses; a tenant's broker is reached where the
    tenant configured it, with its CA when one is set.
    """
    if broker.is_platform:
        host = settings.MQTT_PUBLIC_HOST
        port = settings.MQTT_PUBLIC_PORT
        tls = settings.MQTT_PUBLIC_TLS
        ca = getattr(settings, "MQTT_PUBLIC_CA", "") or ""
    else:
        host, port, tls = broker.host, broker.port, broker.use_tls
        ca = broker.ca_certificate.strip() if broker.use_tls else ""
    bundle: dict[str, Any] = {
        "v": BUNDLE_VERSION,
        "device_id": device.device_id,
        "auth": "device" if password else "none",
        "mqtt": {
            "host": host,
            "port": port,
            "tls": tls,
            "username": device.mqtt_login,
            "password": password,
            "prefix": device.topic_prefix,
        },
    }
    if ca:
        bundle["ca"] = ca
    # The key that authenticates OTA manifests (docs/ota.md), derived, never stored.
    bundle["ota_key"] = device_ota_key(device.device_id).hex()
    return bundle


def bundle_json(bundle: dict[str, Any]) -> str:
    """The bundle as compact JSON: the downloadable file and the QR code's text."""
    return json.dumps(bundle, separators=(",", ":"), ensure_ascii=False)


def bundle_filename(bundle: dict[str, Any]) -> str:
    return f"poolsaas-{bundle['device_id']}.json"


def bundle_qr(bundle: dict[str, Any]) -> segno.QRCode:
    # Error level M: readable from a phone screen or a slightly creased print-out
    # while keeping a bundle with a CA certificate within QR capacity where possible.
    return segno.make(bundle_json(bundle), error="m", boost_error=False)


def bundle_qr_svg(bundle: dict[str, Any], *, scale: int = 4) -> str:
    """The bundle's QR code as an inline SVG element (scalable: viewBox, no size)."""
    return bundle_qr(bundle).svg_inline(scale=scale, omitsize=True, dark="#000")
