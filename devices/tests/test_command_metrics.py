"""Commands are counted by the status they reach, and timed to their final one
(poolsaas.metrics), once each, after the transaction commits."""

import datetime as dt

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY

from devices.services.commands import (
    command_ack,
    command_send,
    commands_claim,
    commands_expire,
)
from devices.tests.test_commands import online_a  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db


def value(name: str, status: str) -> float:
    return REGISTRY.get_sample_value(name, {"status": status}) or 0.0


def test_statuses_and_latency_are_counted_once(
    alice,
    pool_a,
    online_a,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    before = {
        s: value("poolsaas_commands_total", s)
        for s in ("created", "done", "failed", "timed_out")
    }
    timed = value("poolsaas_command_seconds_count", "done")
    with django_capture_on_commit_callbacks(execute=True):
        first = command_send(membership=alice, pool=pool_a, op="pump", value="ON")
        commands_claim(commands=[first], claimer="b1")
        command_ack(device_pk=online_a.pk, command_id=first.code.hex, ok=True)
        # Said twice (a redelivered ack): counted once.
        command_ack(device_pk=online_a.pk, command_id=first.code.hex, ok=True)
        late = command_send(membership=alice, pool=pool_a, op="valve", value=2)
        commands_expire(now=timezone.now() + dt.timedelta(seconds=16))
    assert late.pk
    assert value("poolsaas_commands_total", "created") == before["created"] + 2
    assert value("poolsaas_commands_total", "done") == before["done"] + 1
    assert value("poolsaas_commands_total", "timed_out") == before["timed_out"] + 1
    assert value("poolsaas_commands_total", "failed") == before["failed"]
    assert value("poolsaas_command_seconds_count", "done") == timed + 1


def test_a_command_refused_at_once_is_counted_failed(
    alice, pool_a, device_a, django_capture_on_commit_callbacks
):
    before = value("poolsaas_commands_total", "failed")
    with django_capture_on_commit_callbacks(execute=True):
        command_send(membership=alice, pool=pool_a, op="pump", value="ON")  # offline
    assert value("poolsaas_commands_total", "failed") == before + 1
