"""command_send and the command life cycle, against the real database (no broker)."""

import asyncio
import datetime as dt
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.utils import timezone

from audit.models import AuditEvent
from devices.models import Command, Device, DeviceEvent
from devices.scheduling import next_local_midnight
from devices.services.commands import (
    OFFLINE_REASON,
    command_ack,
    command_expected,
    command_send,
    command_send_system,
    command_validate,
    commands_claim,
    commands_expire,
    commands_match_device_state,
    expectation_met,
)
from poolsaas.live.groups import pool_group

IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def online_a(device_a):
    Device.objects.filter(pk=device_a.pk).update(
        online=True, state={"pump": False, "valve": 1}
    )
    device_a.refresh_from_db()
    return device_a


@pytest.fixture
def layer(settings):
    settings.CHANNEL_LAYERS = IN_MEMORY
    return get_channel_layer()


def _listen(layer, group):
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(group, channel)
    return channel


def _received(layer, channel, limit=20):
    async def collect():
        out = []
        for _ in range(limit):
            try:
                out.append(await asyncio.wait_for(layer.receive(channel), 0.2))
            except TimeoutError:
                break
        return out

    return async_to_sync(collect)()


@pytest.mark.django_db(transaction=True)
def test_operator_sends_pump_on(olivia, pool_a, online_a, layer):
    channel = _listen(layer, pool_group(pool_a.code))
    before = timezone.now()
    command = command_send(membership=olivia, pool=pool_a, op="pump", value="on")
    command.refresh_from_db()
    assert command.status == Command.Status.PENDING
    assert command.value == "ON"
    assert command.actor == olivia.user
    assert command.tenant_id == pool_a.tenant_id
    assert command.expires_at - before <= dt.timedelta(seconds=16)
    audit = AuditEvent.objects.get(action="command.sent", target_code=str(command.code))
    assert audit.actor == olivia.user
    assert audit.data["op"] == "pump" and audit.data["status"] == "pending"
    assert DeviceEvent.objects.filter(kind="command.sent", pool=pool_a).count() == 1
    pool_a.refresh_from_db()
    assert pool_a.override_until == next_local_midnight(before, pool_a.timezone)
    messages = _received(layer, channel)
    kinds = [m["type"] for m in messages]
    assert "pool.command" in kinds and "pool.event" in kinds
    sent = next(m for m in messages if m["type"] == "pool.command")
    assert sent["command"]["code"] == command.code.hex
    assert sent["command"]["actor"] == "olivia@acme.test"
    assert sent["command"]["status"] == "pending"


@pytest.mark.django_db
def test_viewer_cannot_send(victor, pool_a, online_a):
    with pytest.raises(PermissionDenied):
        command_send(membership=victor, pool=pool_a, op="pump", value="ON")
    assert not Command.objects.exists()
    assert not AuditEvent.objects.filter(action="command.sent").exists()


@pytest.mark.django_db
def test_other_tenant_gets_404(carol, pool_a, online_a):
    with pytest.raises(Http404):
        command_send(membership=carol, pool=pool_a, op="pump", value="ON")
    assert not Command.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "op,value",
    [
        ("pump", "MAYBE"),
        ("pump", True),
        ("valve", 3),
        ("valve", "x"),
        ("timer", {"mode": 3, "duration": 60}),
        ("timer", {"mode": 1, "duration": 86401}),
        ("timer", {"mode": 1}),
        ("timer", "60"),
        ("reboot", "now"),
        ("selfdestruct", None),
    ],
)
def test_bad_input_changes_nothing(alice, pool_a, online_a, op, value):
    with pytest.raises(ValidationError):
        command_send(membership=alice, pool=pool_a, op=op, value=value)
    assert not Command.objects.exists()
    pool_a.refresh_from_db()
    assert pool_a.override_until is None


@pytest.mark.django_db
def test_offline_device_fails_fast(alice, pool_a, device_a):
    command = command_send(membership=alice, pool=pool_a, op="valve", value=2)
    assert command.status == Command.Status.FAILED
    assert command.error == OFFLINE_REASON
    assert command.completed_at is not None
    assert AuditEvent.objects.filter(
        action="command.sent", target_code=str(command.code)
    ).exists()
    assert DeviceEvent.objects.filter(kind="command.failed").exists()
    pool_a.refresh_from_db()
    assert pool_a.override_until is None


@pytest.mark.django_db
def test_pool_without_device(alice, pool_a):
    with pytest.raises(ValidationError):
        command_send(membership=alice, pool=pool_a, op="pump", value="ON")


@pytest.mark.django_db
def test_system_command_has_no_actor_and_no_override(pool_a, online_a):
    command = command_send_system(pool=pool_a, op="valve", value=2)
    assert command.actor is None and command.source == "scheduler"
    audit = AuditEvent.objects.get(action="command.sent")
    assert audit.actor is None and audit.actor_label == "scheduler"
    pool_a.refresh_from_db()
    assert pool_a.override_until is None


@pytest.mark.django_db
def test_v31_expected_and_unsupported(alice, pool_a, online_a):
    Device.objects.filter(pk=online_a.pk).update(protocol="v3.1")
    toggle = command_send(membership=alice, pool=pool_a, op="pump", value="TOGGLE")
    assert toggle.expected == {"kind": "pump", "value": True}  # it was OFF
    reboot = command_send(membership=alice, pool=pool_a, op="reboot")
    assert reboot.status == Command.Status.FAILED
    resume = command_send(membership=alice, pool=pool_a, op="override_clear")
    assert resume.status == Command.Status.DONE
    pool_a.refresh_from_db()
    assert pool_a.override_until is None  # cleared by the resume


def test_expectations():
    assert command_expected(op="valve", value="TOGGLE", state={"valve": 2}) == {
        "kind": "valve",
        "value": 1,
    }
    unknown = command_expected(op="pump", value="TOGGLE", state={})
    assert expectation_met(unknown, "pump", False)
    timer = command_expected(op="timer", value={"mode": 2, "duration": 60}, state={})
    assert expectation_met(timer, "timer", {"active": True, "mode": 2})
    assert not expectation_met(timer, "timer", {"active": True, "mode": 1})
    assert not expectation_met(timer, "pump", True)
    stop = command_expected(op="timer", value={"mode": 1, "duration": 0}, state={})
    assert expectation_met(stop, "timer", {"active": False, "mode": 2})


@pytest.mark.django_db
def test_claim_once_ack_and_expire(alice, pool_a, online_a, device_b):
    first = command_send(membership=alice, pool=pool_a, op="pump", value="ON")
    assert commands_claim(commands=[first], claimer="b1") == [first]
    assert (
        commands_claim(commands=[Command.objects.get(pk=first.pk)], claimer="b2") == []
    )
    # Another device cannot complete it.
    assert (
        command_ack(device_pk=device_b.pk, command_id=first.code.hex, ok=True) is None
    )
    assert command_ack(device_pk=online_a.pk, command_id="not-a-code", ok=True) is None
    assert Command.objects.get(pk=first.pk).status == Command.Status.SENT
    assert command_ack(device_pk=online_a.pk, command_id=first.code.hex, ok=True)
    assert Command.objects.get(pk=first.pk).status == Command.Status.DONE
    assert DeviceEvent.objects.filter(kind="command.done").count() == 1

    busy = command_send(membership=alice, pool=pool_a, op="pump", value="OFF")
    command_ack(
        device_pk=online_a.pk,
        command_id=busy.code.hex,
        ok=False,
        error="busy",
        reason="freeze protection",
    )
    busy.refresh_from_db()
    assert busy.status == Command.Status.FAILED
    assert "freeze protection" in busy.error

    late = command_send(membership=alice, pool=pool_a, op="valve", value=2)
    assert commands_expire(now=timezone.now() + dt.timedelta(seconds=16)) == 1
    late.refresh_from_db()
    assert late.status == Command.Status.TIMED_OUT
    assert "could not be delivered" in late.error
    assert DeviceEvent.objects.filter(kind="command.timed_out").count() == 1
    assert commands_expire(now=timezone.now() + dt.timedelta(seconds=16)) == 0


@pytest.mark.django_db
def test_v31_completes_from_stored_state(alice, pool_a, online_a):
    Device.objects.filter(pk=online_a.pk).update(protocol="v3.1")
    command = command_send(membership=alice, pool=pool_a, op="pump", value="ON")
    commands_claim(commands=[command], claimer="b1")
    row = {
        "pk": command.pk,
        "device_id": online_a.pk,
        "expected": command.expected,
        "sent_at": Command.objects.get(pk=command.pk).sent_at,
    }
    assert commands_match_device_state(awaiting=[row]) == []  # still OFF
    later = (timezone.now() + dt.timedelta(seconds=1)).isoformat()
    Device.objects.filter(pk=online_a.pk).update(
        state={"pump": True, "updated_at": later}
    )
    assert commands_match_device_state(awaiting=[row]) == [command]
    assert Command.objects.get(pk=command.pk).status == Command.Status.DONE


def test_unknown_code_is_ignored(db):
    assert command_ack(device_pk=1, command_id=uuid.uuid4().hex, ok=True) is None


@pytest.mark.parametrize("odd", ["²", "9" * 5000, "-1", "1e3"])
def test_odd_timer_numbers_from_forms_are_a_clear_validation_error(odd):
    with pytest.raises(ValidationError):
        command_validate(op="timer", value={"mode": "1", "duration": odd})
