"""Adding, replacing and removing devices, with real dynamic-security clients on the
test Mosquitto (started by the fixture in test_dynsec.py)."""

import json
import socket
import xml.etree.ElementTree as ET

import pytest
import segno
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.http import Http404

from audit.models import AuditEvent
from devices.models import Broker, Device, DeviceEvent
from devices.services import onboarding
from devices.services.claims import claim_code_for
from devices.services.dynsec import dynsec_device_exists
from devices.services.onboarding import device_remove
from devices.services.provisioning import (
    bundle_filename,
    bundle_json,
    bundle_qr_svg,
)
from devices.tests import test_dynsec
from firmware import protocol
from ota.services import device_ota_key

# The broker fixtures of test_dynsec (a shared conftest would be the other way).
dynsec_broker = test_dynsec.dynsec_broker
dynsec_settings = test_dynsec.dynsec_settings
MqttProbe = test_dynsec.MqttProbe
random_device_id = test_dynsec.random_device_id


def claim_for(device_id):
    """The claim code the device's label shows (ids as device_id_clean stores them)."""
    if isinstance(device_id, str) and device_id.upper().startswith("ESP-"):
        device_id = device_id.strip().upper()
    return claim_code_for(device_id) if isinstance(device_id, str) else ""


def device_add(**kwargs):
    # With the label's claim code unless a test gives one (tests of claims do).
    kwargs.setdefault("claim_code", claim_for(kwargs.get("device_id")))
    return onboarding.device_add(**kwargs)


def device_replace(**kwargs):
    kwargs.setdefault("claim_code", claim_for(kwargs.get("device_id")))
    return onboarding.device_replace(**kwargs)


CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"


def can_connect(username: str, password: str) -> bool:
    # Device credentials connect only under client id = device id.
    probe = MqttProbe(username)
    try:
        return probe.connect(username, password)
    finally:
        probe.close()


def raw_password_column(device: Device) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT mqtt_password FROM devices_device WHERE id = %s", [device.pk]
        )
        return cursor.fetchone()[0]


def nothing_added(pool) -> bool:
    return (
        not Device.objects.filter(pool=pool).exists()
        and not AuditEvent.objects.filter(action__startswith="device.").exists()
    )


@pytest.fixture
def cleanup(dynsec_broker):
    """Delete the dynamic-security clients a test created, whatever happens."""
    from devices.services.dynsec import dynsec_device_delete

    ids: list[str] = []
    yield ids
    for device_id in ids:
        dynsec_device_delete(device_id=device_id, config=dynsec_broker)


@pytest.fixture
def tenant_broker(tenant_a):
    return Broker.objects.create(
        tenant=tenant_a,
        name="Acme own broker",
        host="mqtt.acme.test",
        port=8883,
        use_tls=True,
        ca_certificate=CA,
        topic_prefix="acme/pools",
        username="bridge",
        password="bridge-secret",
    )


# --- adding ---------------------------------------------------------------------------


@pytest.mark.mqtt
def test_admin_adds_a_device_with_its_own_credentials(
    adam, pool_a, platform_broker, dynsec_settings, cleanup
):
    device_id = random_device_id()
    cleanup.append(device_id)
    device, bundle = device_add(
        membership=adam, pool=pool_a, device_id=device_id.lower()
    )

    assert device.device_id == device_id  # typed in lower case, stored as printed
    assert (device.pool, device.tenant, device.broker) == (
        pool_a,
        pool_a.tenant,
        platform_broker,
    )
    assert device.protocol == "ps1"
    assert device.topic_prefix == platform_broker.topic_prefix
    password = bundle["mqtt"]["password"]
    assert len(password) >= 32
    assert bundle["auth"] == "device"
    # "auth" is for people; the device ignores it.
    expected = {key: value for key, value in bundle.items() if key != "auth"}
    assert protocol.parse_bundle(bundle_json(bundle).encode()) == {
        **expected,
        "ca": None,
    }
    assert bundle["mqtt"] == {
        "host": dynsec_settings.MQTT_PUBLIC_HOST,
        "port": dynsec_settings.MQTT_PUBLIC_PORT,
        "tls": dynsec_settings.MQTT_PUBLIC_TLS,
        "username": device_id,
        "password": password,
        "prefix": "devices",
    }

    # Stored only encrypted; never in the audit trail or the pool's log.
    raw = raw_password_column(device)
    assert password not in raw and raw.startswith("gAAAA")
    device.refresh_from_db()
    assert device.mqtt_password == password
    audit = AuditEvent.objects.get(action="device.added")
    assert audit.actor == adam.user and audit.tenant == pool_a.tenant
    assert audit.data["credentials"] == "issued"
    everything = json.dumps(
        [list(AuditEvent.objects.values()), list(DeviceEvent.objects.values())],
        default=str,
    )
    assert password not in everything
    assert DeviceEvent.objects.filter(pool=pool_a, kind="device.added").exists()

    # The credentials work on the broker, and only those.
    assert can_connect(device_id, password)
    assert not can_connect(device_id, password[:-1])


def test_operator_and_viewer_cannot_add_devices(
    olivia, victor, pool_a, platform_broker
):
    for member in (olivia, victor):
        with pytest.raises(PermissionDenied, match="admin role or higher"):
            device_add(membership=member, pool=pool_a, device_id="ESP-A1B2C3")
    assert nothing_added(pool_a)


def test_another_tenant_cannot_add_to_a_pool_or_use_its_broker(
    carol, alice, pool_a, pool_b, platform_broker, tenant_broker
):
    with pytest.raises(Http404):
        device_add(membership=carol, pool=pool_a, device_id="ESP-A1B2C3")
    with pytest.raises(Http404):
        device_add(
            membership=carol, pool=pool_b, device_id="ESP-A1B2C3", broker=tenant_broker
        )
    assert nothing_added(pool_a) and nothing_added(pool_b)


@pytest.mark.parametrize(
    ("device_id", "proto", "field", "words"),
    [
        ("ESP-12345", "ps1", "device_id", "ESP- followed by the 6 hex digits"),
        ("ESP-GGGGGG", "ps1", "device_id", "ESP- followed by the 6 hex digits"),
        ("ESP-A1B2C3D", "ps1", "device_id", "ESP- followed by the 6 hex digits"),
        ("esp32-pool-01", "ps1", "device_id", "ESP- followed by the 6 hex digits"),
        ("  ", "ps1", "device_id", "Enter the device id"),
        (None, "ps1", "device_id", "Enter the device id"),
        ("pool 01", "v3.1", "device_id", "1 to 64 letters"),
        ("devices/#", "v3.1", "device_id", "1 to 64 letters"),
        ("x" * 65, "v3.1", "device_id", "1 to 64 letters"),
        ("ESP-A1B2C3", "mqtt", "protocol", "ps1 (poolsaas firmware) or v3.1"),
    ],
)
def test_bad_ids_change_nothing(
    alice, pool_a, platform_broker, device_id, proto, field, words
):
    with pytest.raises(ValidationError) as info:
        device_add(membership=alice, pool=pool_a, device_id=device_id, protocol=proto)
    assert words in info.value.message_dict[field][0]
    assert nothing_added(pool_a)


def test_an_id_registered_elsewhere_is_refused_without_saying_where(
    alice, pool_a, device_b
):
    """Even with the device's claim code: device_b was claimed by its tenant."""
    device_b.claimed_at = device_b.created_at
    device_b.save(update_fields=["claimed_at"])
    with pytest.raises(ValidationError) as info:
        device_add(membership=alice, pool=pool_a, device_id="ESP-B2B2B2")
    message = info.value.message_dict["device_id"][0]
    assert "registered to another account" in message
    assert "Globex" not in message and device_b.pool.name not in message
    assert nothing_added(pool_a)


def test_a_pool_has_one_device(alice, pool_a, device_a):
    with pytest.raises(ValidationError) as info:
        device_add(membership=alice, pool=pool_a, device_id="ESP-C3C3C3")
    assert "replace it instead" in info.value.message_dict["pool"][0]
    assert list(Device.objects.filter(pool=pool_a)) == [device_a]


def test_v31_device_on_the_tenants_own_broker(alice, pool_a, tenant_broker, layer):
    device, bundle = device_add(
        membership=alice,
        pool=pool_a,
        device_id="esp32-pool-01",
        broker=tenant_broker,
        protocol="v3.1",
    )
    assert bundle is None  # a v3.1 device cannot read one, and got no credentials
    assert (device.broker, device.topic_prefix) == (tenant_broker, "acme/pools")
    assert device.mqtt_password == ""
    assert AuditEvent.objects.get(action="device.added").data["credentials"] == "none"
    # v3.1 pools get no configuration push.
    assert layer_messages(layer) == []


def test_ps1_device_on_the_tenants_own_broker_gets_a_bundle_with_its_ca(
    alice, pool_a, tenant_broker, layer, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        device, bundle = device_add(
            membership=alice, pool=pool_a, device_id="ESP-0A0B0C", broker=tenant_broker
        )
    assert bundle == {
        "v": 1,
        "device_id": "ESP-0A0B0C",
        "auth": "none",
        "mqtt": {
            "host": "mqtt.acme.test",
            "port": 8883,
            "tls": True,
            "username": "ESP-0A0B0C",
            "password": "",
            "prefix": "acme/pools",
        },
        "ca": CA,
        # The device's own key for OTA manifests (docs/ota.md).
        "ota_key": device_ota_key("ESP-0A0B0C").hex(),
    }
    assert protocol.parse_bundle(bundle_json(bundle).encode())["ca"] == CA
    # The new device is sent the pool's configuration.
    assert layer_messages(layer) == [
        {"type": "config.publish", "pool": pool_a.code.hex}
    ]


def test_without_dynamic_security_no_password_is_issued(alice, pool_a, platform_broker):
    device, bundle = device_add(membership=alice, pool=pool_a, device_id="ESP-ABCDEF")
    assert bundle["mqtt"]["password"] == ""
    assert device.mqtt_password == ""


@pytest.mark.mqtt
def test_broker_failure_adds_nothing(alice, pool_a, platform_broker, dynsec_settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dynsec_settings.MQTT_DYNSEC_URL = f"mqtt://127.0.0.1:{port}"
    with pytest.raises(ValidationError, match="could not update the device's"):
        device_add(membership=alice, pool=pool_a, device_id=random_device_id())
    assert nothing_added(pool_a)


@pytest.mark.mqtt
def test_the_admin_username_is_reserved(
    alice, pool_a, platform_broker, dynsec_settings
):
    with pytest.raises(ValidationError, match="reserved"):
        device_add(
            membership=alice,
            pool=pool_a,
            device_id=dynsec_settings.MQTT_USERNAME,
            protocol="v3.1",
        )
    assert nothing_added(pool_a)


# --- removing -------------------------------------------------------------------------


@pytest.mark.mqtt
def test_removing_a_device_revokes_its_credentials(
    alice,
    olivia,
    carol,
    pool_a,
    platform_broker,
    dynsec_settings,
    dynsec_broker,
    cleanup,
):
    device_id = random_device_id()
    cleanup.append(device_id)
    device, bundle = device_add(membership=alice, pool=pool_a, device_id=device_id)
    password = bundle["mqtt"]["password"]

    with pytest.raises(PermissionDenied):
        device_remove(membership=olivia, device=device)
    with pytest.raises(Http404):
        device_remove(membership=carol, device=device)
    assert can_connect(device_id, password)

    device_remove(membership=alice, device=device)

    assert not Device.objects.filter(device_id=device_id).exists()
    assert not dynsec_device_exists(device_id=device_id, config=dynsec_broker)
    assert not can_connect(device_id, password)
    audit = AuditEvent.objects.get(action="device.removed")
    assert audit.data == {
        "pool": pool_a.code.hex,
        "device_id": device_id,
        "protocol": "ps1",
    }
    # The pool's log keeps the removal (it is not tied to the deleted device).
    assert DeviceEvent.objects.filter(pool=pool_a, kind="device.removed").exists()


@pytest.mark.mqtt
def test_remove_keeps_the_device_when_the_broker_cannot_revoke(
    alice, device_a, dynsec_settings
):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dynsec_settings.MQTT_DYNSEC_URL = f"mqtt://127.0.0.1:{port}"
    with pytest.raises(ValidationError, match="Nothing was changed"):
        device_remove(membership=alice, device=device_a)
    assert Device.objects.filter(pk=device_a.pk).exists()
    assert not AuditEvent.objects.filter(action="device.removed").exists()


# --- replacing ------------------------------------------------------------------------


@pytest.mark.mqtt
def test_replacing_a_device(
    alice, victor, carol, pool_a, platform_broker, dynsec_settings, cleanup
):
    old_id, new_id = random_device_id(), random_device_id()
    cleanup.extend([old_id, new_id])
    old, old_bundle = device_add(membership=alice, pool=pool_a, device_id=old_id)

    with pytest.raises(PermissionDenied):
        device_replace(membership=victor, pool=pool_a, device_id=new_id)
    with pytest.raises(Http404):
        device_replace(membership=carol, pool=pool_a, device_id=new_id)
    with pytest.raises(ValidationError, match="already this pool's device"):
        device_replace(membership=alice, pool=pool_a, device_id=old_id)
    with pytest.raises(ValidationError, match="ESP- followed"):
        device_replace(membership=alice, pool=pool_a, device_id="ESP-XYZ")
    assert list(Device.objects.filter(pool=pool_a)) == [old]

    new, bundle = device_replace(membership=alice, pool=pool_a, device_id=new_id)

    assert Device.objects.get(pool=pool_a) == new
    assert new.device_id == new_id and new.broker == platform_broker
    assert not Device.objects.filter(device_id=old_id).exists()
    assert not can_connect(old_id, old_bundle["mqtt"]["password"])
    assert can_connect(new_id, bundle["mqtt"]["password"])
    audit = AuditEvent.objects.get(action="device.replaced")
    assert (audit.data["old_device_id"], audit.data["device_id"]) == (old_id, new_id)


def test_upgrading_a_v31_device_to_our_firmware(alice, pool_a, platform_broker):
    device_add(
        membership=alice, pool=pool_a, device_id="esp32-pool-01", protocol="v3.1"
    )
    new, bundle = device_replace(
        membership=alice, pool=pool_a, device_id="ESP-1A2B3C", protocol="ps1"
    )
    assert new.protocol == "ps1"
    assert bundle["device_id"] == "ESP-1A2B3C"
    assert not Device.objects.filter(device_id="esp32-pool-01").exists()


def test_replacing_on_an_empty_pool_adds(alice, pool_a, platform_broker):
    device, bundle = device_replace(
        membership=alice, pool=pool_a, device_id="ESP-0F0F0F"
    )
    assert device.pool == pool_a and bundle["device_id"] == "ESP-0F0F0F"
    assert AuditEvent.objects.filter(action="device.added").count() == 1


# --- bundles --------------------------------------------------------------------------


def test_bundle_file_and_qr_code():
    bundle = {
        "v": 1,
        "device_id": "ESP-A1B2C3",
        "mqtt": {
            "host": "mqtt.example.com",
            "port": 8883,
            "tls": True,
            "username": "ESP-A1B2C3",
            "password": "s3cret-ÿ",
            "prefix": "devices",
        },
    }
    text = bundle_json(bundle)
    assert " " not in text and json.loads(text) == bundle
    assert bundle_filename(bundle) == "poolsaas-ESP-A1B2C3.json"

    svg = bundle_qr_svg(bundle)
    root = ET.fromstring(svg)  # noqa: S314 - our own SVG
    assert root.tag.endswith("svg")
    assert root.get("viewBox") and root.get("width") is None
    # The symbol in the SVG is exactly the QR code of the compact JSON text.
    expected = segno.make(text, error="m", boost_error=False)
    assert svg == expected.svg_inline(scale=4, omitsize=True, dark="#000")
    assert (
        segno.make(text + " ", error="m", boost_error=False).svg_inline(
            scale=4, omitsize=True, dark="#000"
        )
        != svg
    )
    assert protocol.parse_bundle(text.encode())["mqtt"]["password"] == "s3cret-ÿ"


# --- helpers --------------------------------------------------------------------------


@pytest.fixture
def layer(settings):
    from channels.layers import get_channel_layer

    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    }
    return get_channel_layer()


def layer_messages(layer) -> list[dict]:
    import asyncio

    from asgiref.sync import async_to_sync

    async def collect():
        out = []
        while True:
            try:
                out.append(
                    await asyncio.wait_for(layer.receive("mqtt-bridge.commands"), 0.1)
                )
            except TimeoutError:
                return out

    return async_to_sync(collect)()
