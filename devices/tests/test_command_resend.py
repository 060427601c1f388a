"""A command claimed by a bridge that died is sent again by a live one
(devices.services.commands: commands_orphaned, commands_reclaim), against the real
database: who counts as dead (the claimer's heartbeat, BridgePresence), which claims
are taken over and by one bridge only, and what a v3.1 device is sent again. The
same through the real processes: test_bridge_fault_recovery.py."""

# ruff: noqa: F811 - online_a, a fixture of test_commands, is each test's argument

import datetime as dt

import pytest
from django.utils import timezone

from devices.models import BridgePresence, Command, Device
from devices.selectors import commands_orphaned
from devices.services.commands import (
    MAX_CLAIMS,
    RECLAIM_GRACE,
    command_release,
    command_resendable,
    command_send,
    command_wire,
    commands_claim,
    commands_expire,
    commands_reclaim,
)
from devices.services.leases import bridge_beat, broker_leases_hold
from devices.tests.test_commands import online_a  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db

DEAD, LIVE, OTHER = "d" * 32, "a" * 32, "b" * 32


def orphans(device) -> list[Command]:
    return commands_orphaned(
        broker_ids=[device.broker_id],
        sent_before=timezone.now() - RECLAIM_GRACE,
        max_claims=MAX_CLAIMS,
    )


def claimed(command, *, by=DEAD, ago=10.0, created_ago=None) -> Command:
    """`command` as a bridge's claim leaves it, `ago` seconds back."""
    assert commands_claim(commands=[command], claimer=by) == [command]
    fields = {"sent_at": timezone.now() - dt.timedelta(seconds=ago)}
    if created_ago is not None:
        fields["created_at"] = timezone.now() - dt.timedelta(seconds=created_ago)
    Command.objects.filter(pk=command.pk).update(**fields)
    return Command.objects.get(pk=command.pk)


def send(membership, pool, op="pump", value="ON") -> Command:
    return command_send(membership=membership, pool=pool, op=op, value=value)


@pytest.fixture
def live_bridge():
    bridge_beat(name="live", instance=LIVE, ttl=30)


def test_a_claim_records_its_claimer_and_only_it_releases_it(alice, pool_a, online_a):
    command = claimed(send(alice, pool_a))
    assert (command.status, command.claimed_by, command.claims) == ("sent", DEAD, 1)
    command_release(command_id=command.code.hex, claimer=OTHER)
    assert Command.objects.get(pk=command.pk).status == "sent"
    command_release(command_id=command.code.hex, claimer=DEAD)
    command.refresh_from_db()
    assert (command.status, command.claimed_by, command.claims) == ("pending", "", 0)
    assert command.sent_at is None


def test_a_dead_claimers_command_is_orphaned_a_live_ones_is_not(
    alice, pool_a, online_a, live_bridge
):
    dead = claimed(send(alice, pool_a), created_ago=5)
    assert [c.pk for c in orphans(online_a)] == [dead.pk]  # no heartbeat at all
    # Alive while its heartbeat runs; dead once it lapsed.
    bridge_beat(name="doomed", instance=DEAD, ttl=30)
    assert orphans(online_a) == []
    BridgePresence.objects.filter(name="doomed").update(
        beat_until=timezone.now() - dt.timedelta(seconds=1)
    )
    assert [c.pk for c in orphans(online_a)] == [dead.pk]


def test_a_restart_under_the_same_name_ends_the_instance_before(
    alice, pool_a, online_a
):
    bridge_beat(name="bridge-a", instance=DEAD, ttl=30)
    command = claimed(send(alice, pool_a))
    assert orphans(online_a) == []
    bridge_beat(name="bridge-a", instance=LIVE, ttl=30)  # restarted
    assert [c.pk for c in orphans(online_a)] == [command.pk]


def test_what_is_not_taken_over(alice, pool_a, online_a, device_b, live_bridge):
    young = claimed(send(alice, pool_a), ago=0)  # its claimer is publishing it
    assert orphans(online_a) == []
    Command.objects.filter(pk=young.pk).update(
        sent_at=timezone.now() - dt.timedelta(seconds=10), claimed_by=""
    )
    assert orphans(online_a) == []  # claimed before claimers were recorded
    Command.objects.filter(pk=young.pk).update(claimed_by=DEAD, claims=MAX_CLAIMS)
    assert orphans(online_a) == []  # taken over often enough
    Command.objects.filter(pk=young.pk).update(
        claims=1, expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    assert orphans(online_a) == []  # expired: commands_expire's
    Command.objects.filter(pk=young.pk).update(
        expires_at=timezone.now() + dt.timedelta(seconds=30)
    )
    assert [c.pk for c in orphans(online_a)] == [young.pk]
    # Another broker's devices are not this bridge's to send to.
    assert (
        commands_orphaned(
            broker_ids=[-1],
            sent_before=timezone.now() - RECLAIM_GRACE,
            max_claims=MAX_CLAIMS,
        )
        == []
    )
    # A command that is final is not open any more.
    Command.objects.filter(pk=young.pk).update(status="done")
    assert orphans(online_a) == []


def test_not_sent_again_over_a_newer_command_that_went_out(
    alice, pool_a, online_a, live_bridge
):
    older = claimed(send(alice, pool_a, value="ON"), created_ago=6)
    newer = send(alice, pool_a, value="OFF")
    # Pending, the newer one goes out after the older: the older may go again.
    assert [c.pk for c in orphans(online_a)] == [older.pk]
    # Sent by a live bridge: sending the older again would undo it.
    commands_claim(commands=[newer], claimer=LIVE)
    assert orphans(online_a) == []
    # Claimed by the same dead bridge, both go again, in their order.
    Command.objects.filter(pk=newer.pk).update(
        claimed_by=DEAD, sent_at=timezone.now() - dt.timedelta(seconds=5)
    )
    assert [c.pk for c in orphans(online_a)] == [older.pk, newer.pk]
    # The newer one done (the dead bridge did deliver it): the older stays.
    Command.objects.filter(pk=newer.pk).update(status="done")
    assert orphans(online_a) == []


def test_of_two_bridges_taking_over_one_claim_one_wins(
    alice, pool_a, online_a, live_bridge
):
    command = claimed(send(alice, pool_a))
    seen_by_one, seen_by_two = orphans(online_a), orphans(online_a)
    won = commands_reclaim(commands=seen_by_one, claimer=LIVE)
    assert won == seen_by_one
    assert commands_reclaim(commands=seen_by_two, claimer=OTHER) == []
    command.refresh_from_db()
    assert (command.status, command.claimed_by, command.claims) == ("sent", LIVE, 2)
    # Its claimer alive: not orphaned again.
    assert orphans(online_a) == []
    # It still expires as before when the device never answers.
    assert commands_expire(now=timezone.now() + dt.timedelta(seconds=60)) == 1
    assert Command.objects.get(pk=command.pk).status == "timed_out"


def test_a_claim_taken_over_keeps_its_first_send_time(
    alice, pool_a, online_a, live_bridge
):
    command = claimed(send(alice, pool_a), ago=7)
    first = command.sent_at
    commands_reclaim(commands=orphans(online_a), claimer=LIVE)
    assert Command.objects.get(pk=command.pk).sent_at == first


def test_a_v31_toggle_goes_again_as_the_state_it_meant(
    alice, pool_a, online_a, live_bridge
):
    Device.objects.filter(pk=online_a.pk).update(protocol=Device.Protocol.LEGACY)
    toggle = claimed(send(alice, pool_a, value="TOGGLE"), created_ago=5)
    assert toggle.expected == {"kind": "pump", "value": True}  # it was off
    assert command_wire(toggle)[1] == b"TOGGLE"  # the first send
    (again,) = commands_reclaim(commands=orphans(online_a), claimer=LIVE)
    topic, payload = command_wire(again)
    assert (topic.rsplit("/", 2)[-2:], payload) == (["pump", "set"], b"ON")
    valve = send(alice, pool_a, op="valve", value="TOGGLE")
    valve.claims = 2
    assert command_wire(valve)[1] == b"2"  # it was in mode 1


def test_a_v31_toggle_whose_target_was_unknown_is_not_sent_again(
    alice, pool_a, online_a, live_bridge
):
    Device.objects.filter(pk=online_a.pk).update(
        protocol=Device.Protocol.LEGACY, state={}
    )
    toggle = claimed(send(alice, pool_a, value="TOGGLE"))
    assert toggle.expected == {"kind": "pump", "value": None}
    assert not command_resendable(toggle)
    assert commands_reclaim(commands=orphans(online_a), claimer=LIVE) == []
    assert Command.objects.get(pk=toggle.pk).claimed_by == DEAD
    absolute = claimed(send(alice, pool_a, value="OFF"))
    assert command_resendable(absolute)


def test_a_heartbeat_row_is_not_swept_as_a_bridge_gone_long_ago():
    bridge_beat(name="beating", instance=LIVE, ttl=30)  # no lease renewed yet
    broker_leases_hold(holder="other", broker_ids=[], ttl=30)
    assert BridgePresence.objects.get(name="beating").instance == LIVE
    BridgePresence.objects.filter(name="beating").update(
        beat_until=timezone.now() - dt.timedelta(hours=2)
    )
    broker_leases_hold(holder="other", broker_ids=[], ttl=30)
    assert not BridgePresence.objects.filter(name="beating").exists()
