"""Rotating a device's platform credentials (docs/protocol.md §7.3) against the real
dynamic-security Mosquitto (started by the fixture in test_dynsec.py): both pairs
work until the device confirms, only one after, and no other device's credentials
can ever take the device's client id."""

import json
import time

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.utils import timezone

from audit.models import AuditEvent
from devices.models import Device
from devices.services.device_credentials import (
    ROTATION_TTL,
    device_credentials_ack,
    device_credentials_cancel,
    device_credentials_message,
    device_credentials_rotate,
    device_credentials_state,
    is_rotation_id,
)
from devices.services.dynsec import dynsec_device_exists
from devices.services.onboarding import device_remove
from devices.tests import test_dynsec, test_onboarding

dynsec_broker = test_dynsec.dynsec_broker
dynsec_settings = test_dynsec.dynsec_settings
cleanup = test_onboarding.cleanup
MqttProbe = test_dynsec.MqttProbe
random_device_id = test_dynsec.random_device_id

pytestmark = [pytest.mark.mqtt, pytest.mark.django_db]


def connects(device_id: str, username: str, password: str) -> bool:
    """Whether the pair logs in under the device's client id."""
    probe = MqttProbe(device_id)
    try:
        return probe.connect(username, password, background=False)
    finally:
        probe.close()


@pytest.fixture
def platform_device(adam, pool_a, platform_broker, dynsec_settings, cleanup):
    """A ps1 device of pool A on the platform broker, with its first password."""
    device_id = random_device_id()
    cleanup.append(device_id)
    device, bundle = test_onboarding.device_add(
        membership=adam, pool=pool_a, device_id=device_id
    )
    device.first_password = bundle["mqtt"]["password"]
    return device


def _rotate(adam, device):
    device = device_credentials_rotate(membership=adam, device=device)
    return Device.objects.get(pk=device.pk)


def test_after_rotate_both_passwords_connect_as_the_device(adam, platform_device):
    device = _rotate(adam, platform_device)
    old = platform_device.first_password
    new = device.pending_mqtt_password
    username = f"{device.device_id}~1"
    assert device.pending_mqtt_username == username
    assert device.credentials_generation == 1
    assert is_rotation_id(device.credentials_rotation_id)
    assert device.credentials_rotation_id.startswith("k1-")
    assert new and new != old

    assert connects(device.device_id, device.device_id, old)
    assert connects(device.device_id, username, new)
    # The new pair is bound to the device's client id too.
    assert not connects(f"{device.device_id}-x", username, new)
    event = AuditEvent.objects.get(action="device.credentials_rotation_started")
    assert new not in json.dumps(event.data) and old not in json.dumps(event.data)
    state = device_credentials_state(device=device)
    assert state["pending"] and state["started_at"] is not None


def test_the_message_is_the_credentials_command_with_a_fixed_id(adam, platform_device):
    device = _rotate(adam, platform_device)
    assert device_credentials_message(device) is None  # offline: nothing to send
    device.online = True
    topic, payload = device_credentials_message(device)
    assert topic == f"{device.topic_prefix}/{device.device_id}/cmd"
    body = json.loads(payload)
    assert body == {
        "id": device.credentials_rotation_id,
        "exp": int((device.credentials_rotation_started_at + ROTATION_TTL).timestamp()),
        "op": "credentials",
        "value": {
            "username": f"{device.device_id}~1",
            "password": device.pending_mqtt_password,
        },
    }
    assert abs(body["exp"] - (time.time() + 24 * 3600)) < 60
    # Sent again (same id, same exp) while pending.
    assert device_credentials_message(device) == (topic, payload)
    device.credentials_rotation_started_at = timezone.now() - ROTATION_TTL
    assert device_credentials_message(device) is None  # past its exp


def test_after_confirm_only_the_new_password_connects(adam, platform_device):
    device = _rotate(adam, platform_device)
    rotation_id = device.credentials_rotation_id
    new, username = device.pending_mqtt_password, device.pending_mqtt_username

    assert device_credentials_ack(
        device_id=device.pk, rotation_id=rotation_id, ok=True, reason=""
    )
    device = Device.objects.get(pk=device.pk)
    assert (device.mqtt_username, device.mqtt_password) == (username, new)
    assert device.mqtt_login == username
    assert device.credentials_rotation_id == ""
    assert device.pending_mqtt_password == ""
    assert device.credentials_rotated_at is not None
    assert connects(device.device_id, username, new)
    assert not connects(
        device.device_id, device.device_id, platform_device.first_password
    )
    assert AuditEvent.objects.filter(action="device.credentials_rotated").count() == 1
    # A redelivered ack (the device re-acks a redelivered id) changes nothing.
    assert not device_credentials_ack(
        device_id=device.pk, rotation_id=rotation_id, ok=True, reason=""
    )
    assert connects(device.device_id, username, new)
    assert device_credentials_message(device) is None

    # A second rotation starts from the new pair and retires it in turn.
    device = _rotate(adam, device)
    assert device.pending_mqtt_username == f"{device.device_id}~2"
    newer = device.pending_mqtt_password
    assert device_credentials_ack(
        device_id=device.pk,
        rotation_id=device.credentials_rotation_id,
        ok=True,
        reason="",
    )
    assert connects(device.device_id, f"{device.device_id}~2", newer)
    assert not connects(device.device_id, username, new)


def test_after_a_failure_ack_only_the_old_password_connects(adam, platform_device):
    device = _rotate(adam, platform_device)
    new, username = device.pending_mqtt_password, device.pending_mqtt_username
    assert device_credentials_ack(
        device_id=device.pk,
        rotation_id=device.credentials_rotation_id,
        ok=False,
        reason="new credentials refused",
    )
    device = Device.objects.get(pk=device.pk)
    assert device.credentials_rotation_id == ""
    assert device.mqtt_login == device.device_id
    assert device.credentials_rotation_failure == "new credentials refused"
    assert device.credentials_rotation_failed_at is not None
    assert not connects(device.device_id, username, new)
    assert connects(device.device_id, device.device_id, platform_device.first_password)
    event = AuditEvent.objects.get(action="device.credentials_rotation_failed")
    assert event.data["reason"] == "new credentials refused"
    assert device_credentials_state(device=device)["failure"]


def test_an_ack_for_another_rotation_changes_nothing(adam, platform_device):
    device = _rotate(adam, platform_device)
    for rotation_id in ("k1-00000000", "", "c-1234"):
        assert not device_credentials_ack(
            device_id=device.pk, rotation_id=rotation_id, ok=True, reason=""
        )
    assert not device_credentials_ack(
        device_id=987654321, rotation_id=device.credentials_rotation_id, ok=True
    )
    device = Device.objects.get(pk=device.pk)
    assert device.credentials_rotation_id
    assert connects(device.device_id, device.device_id, platform_device.first_password)


def test_cancel_deletes_the_pending_client(adam, platform_device):
    device = _rotate(adam, platform_device)
    new, username = device.pending_mqtt_password, device.pending_mqtt_username
    rotation_id = device.credentials_rotation_id
    device_credentials_cancel(membership=adam, device=device)
    device = Device.objects.get(pk=device.pk)
    assert device.credentials_rotation_id == ""
    assert not connects(device.device_id, username, new)
    assert connects(device.device_id, device.device_id, platform_device.first_password)
    # The device's late ack finds nothing to promote.
    assert not device_credentials_ack(
        device_id=device.pk, rotation_id=rotation_id, ok=True
    )
    assert AuditEvent.objects.filter(
        action="device.credentials_rotation_cancelled"
    ).exists()


def test_removing_a_device_revokes_both_clients(adam, platform_device):
    device = _rotate(adam, platform_device)
    username = device.pending_mqtt_username
    device_remove(membership=adam, device=device)
    assert not dynsec_device_exists(device_id=device.device_id)
    assert not dynsec_device_exists(device_id=username)


def test_removing_a_rotated_device_revokes_its_current_client(adam, platform_device):
    device = _rotate(adam, platform_device)
    device_credentials_ack(
        device_id=device.pk, rotation_id=device.credentials_rotation_id, ok=True
    )
    device = Device.objects.get(pk=device.pk)
    device_remove(membership=adam, device=device)
    assert not dynsec_device_exists(device_id=f"{device.device_id}~1")


def test_another_devices_credentials_still_cannot_take_over(
    adam, carol, pool_b, platform_device, cleanup
):
    other_id = random_device_id()
    cleanup.append(other_id)
    other, bundle = test_onboarding.device_add(
        membership=carol, pool=pool_b, device_id=other_id
    )
    other = _rotate(carol, other)
    device = _rotate(adam, platform_device)
    target = device.device_id
    for username, password in (
        (other_id, bundle["mqtt"]["password"]),
        (other.pending_mqtt_username, other.pending_mqtt_password),
    ):
        assert not connects(target, username, password), "takeover accepted"
    # Nor can the other device log in as the target's rotated username.
    assert not connects(
        target, device.pending_mqtt_username, other.pending_mqtt_password
    )


def test_roles_too_low_and_foreign_devices(victor, olivia, carol, platform_device):
    for member in (victor, olivia):
        with pytest.raises(PermissionDenied):
            device_credentials_rotate(membership=member, device=platform_device)
    with pytest.raises(Http404):
        device_credentials_rotate(membership=carol, device=platform_device)
    with pytest.raises(Http404):
        device_credentials_cancel(membership=carol, device=platform_device)
    assert not Device.objects.get(pk=platform_device.pk).credentials_rotation_id


def test_a_second_rotation_waits_for_the_first(adam, platform_device):
    device = _rotate(adam, platform_device)
    with pytest.raises(ValidationError, match="already pending"):
        device_credentials_rotate(membership=adam, device=device)


def test_only_platform_ps1_devices_rotate(adam, pool_b, carol, settings, broker_a):
    from devices.models import Pool

    pool = Pool.objects.create(tenant=broker_a.tenant, name="Own broker pool")
    device = Device.objects.create(
        tenant=broker_a.tenant, pool=pool, broker=broker_a, device_id="ESP-0A0B0C"
    )
    with pytest.raises(ValidationError, match="platform broker"):
        device_credentials_rotate(membership=adam, device=device)


# --- page and API ---------------------------------------------------------------


def test_the_devices_page_rotates_and_shows_the_state(login, adam, platform_device):
    client = login(adam)
    page = client.get("/devices/").content.decode()
    assert "Rotate credentials" in page
    response = client.post(
        f"/devices/{platform_device.code}/rotate-credentials/", follow=True
    )
    assert response.status_code == 200
    text = response.content.decode()
    device = Device.objects.get(pk=platform_device.pk)
    assert device.credentials_rotation_id
    assert "new credentials pending since" in text
    assert "Cancel rotation" in text
    assert device.pending_mqtt_password not in text
    assert platform_device.first_password not in text

    device_credentials_ack(
        device_id=device.pk,
        rotation_id=device.credentials_rotation_id,
        ok=False,
        reason="new credentials refused",
    )
    text = client.get("/devices/").content.decode()
    assert "credentials rotation failed at" in text
    assert "new credentials refused" in text


@pytest.mark.parametrize("who", ["victor", "olivia"])
def test_the_page_and_the_api_are_for_admins(login, who, request, platform_device):
    from poolsaas.api.testing import api_client, assert_error

    member = request.getfixturevalue(who)
    response = login(member).post(
        f"/devices/{platform_device.code}/rotate-credentials/"
    )
    assert response.status_code == 403
    url = f"/api/v1/devices/{platform_device.code}/rotate-credentials/"
    assert_error(api_client(member).post(url), 403)
    assert "Rotate credentials" not in login(member).get("/devices/").content.decode()
    assert not Device.objects.get(pk=platform_device.pk).credentials_rotation_id


def test_foreign_and_made_up_devices_are_not_found(login, carol, platform_device):
    import uuid

    from poolsaas.api.testing import api_client, assert_error

    for code in (platform_device.code, uuid.uuid4()):
        page = login(carol).post(f"/devices/{code}/rotate-credentials/")
        assert page.status_code == 404
        url = f"/api/v1/devices/{code}/rotate-credentials/"
        assert_error(api_client(carol).post(url), 404)
        assert_error(api_client(carol).delete(url), 404)
    assert not Device.objects.get(pk=platform_device.pk).credentials_rotation_id


def test_the_api_rotates_and_shows_the_state_never_the_secret(adam, platform_device):
    from poolsaas.api.testing import api_client, assert_error

    url = f"/api/v1/devices/{platform_device.code}/rotate-credentials/"
    response = api_client(adam).post(url)
    assert response.status_code == 200, response.content
    rotation = response.json()["credentials_rotation"]
    assert rotation["pending"] is True and rotation["started_at"]
    device = Device.objects.get(pk=platform_device.pk)
    assert device.pending_mqtt_password not in response.content.decode()
    assert device.pending_mqtt_username not in response.content.decode()
    detail = api_client(adam).get(f"/api/v1/devices/{device.code}/")
    assert detail.json()["credentials_rotation"]["pending"] is True
    assert device.pending_mqtt_password not in detail.content.decode()
    # A second one waits for the first: 400, nothing changed.
    assert_error(api_client(adam).post(url), 400)
    assert (
        Device.objects.get(pk=device.pk).credentials_rotation_id
        == device.credentials_rotation_id
    )
    response = api_client(adam).delete(url)
    assert response.status_code == 200
    assert response.json()["credentials_rotation"]["pending"] is False


def test_the_bridge_finds_the_online_devices_with_a_pending_rotation(
    adam, platform_device, device_b
):
    from devices.selectors import devices_rotating_credentials

    brokers = [platform_device.broker_id]
    device = _rotate(adam, platform_device)
    assert list(devices_rotating_credentials(broker_ids=brokers)) == []
    Device.objects.filter(pk__in=[device.pk, device_b.pk]).update(online=True)
    found = list(devices_rotating_credentials(broker_ids=brokers))
    assert found == [device]
    assert device_credentials_message(found[0])[0].endswith(f"/{device.device_id}/cmd")


def test_cancel_is_refused_while_the_device_is_online(adam, platform_device):
    """An online device is being sent the new pair and may be logged in with it:
    cancelling would delete the client it uses and lock it out."""
    device = _rotate(adam, platform_device)
    new, username = device.pending_mqtt_password, device.pending_mqtt_username
    Device.objects.filter(pk=device.pk).update(online=True)
    device = Device.objects.get(pk=device.pk)
    with pytest.raises(ValidationError, match="online"):
        device_credentials_cancel(membership=adam, device=device)
    device = Device.objects.get(pk=device.pk)
    assert device.credentials_rotation_id
    assert connects(device.device_id, username, new)
    # The device that switched acks, and the new pair becomes the current one.
    assert device_credentials_ack(
        device_id=device.pk, rotation_id=device.credentials_rotation_id, ok=True
    )
    assert connects(device.device_id, username, new)


def test_a_rotation_past_its_exp_is_expired_by_the_sweep(adam, platform_device):
    from devices.services.device_credentials import device_credentials_expire_stale

    device = _rotate(adam, platform_device)
    new, username = device.pending_mqtt_password, device.pending_mqtt_username
    rotation_id = device.credentials_rotation_id
    started = device.credentials_rotation_started_at
    # Not yet due: nothing happens.
    assert device_credentials_expire_stale(now=started + ROTATION_TTL / 2) == 0
    assert connects(device.device_id, username, new)
    assert device_credentials_expire_stale(now=started + ROTATION_TTL) == 1
    device = Device.objects.get(pk=device.pk)
    assert device.credentials_rotation_id == ""
    assert device.pending_mqtt_username == ""
    assert "expired" in device_credentials_state(device=device)["failure"]
    assert not connects(device.device_id, username, new)
    assert connects(device.device_id, device.device_id, platform_device.first_password)
    event = AuditEvent.objects.get(action="device.credentials_rotation_expired")
    assert event.data["rotation"] == rotation_id
    assert "password" not in json.dumps(event.data).lower()
    # Idempotent, and the late ack finds nothing to promote.
    assert device_credentials_expire_stale(now=started + ROTATION_TTL * 2) == 0
    assert not device_credentials_ack(
        device_id=device.pk, rotation_id=rotation_id, ok=True
    )


def test_the_sweep_is_on_the_beat_schedule(settings):
    from devices import tasks
    from poolsaas.celery import app

    entry = app.conf.beat_schedule["devices.expire_credential_rotations"]
    assert entry["task"] == tasks.expire_credential_rotations.name
