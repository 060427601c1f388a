"""programs_save, the ps1 configuration and the server-side scheduler for v3.1 pools,
against the real database and the real command service."""

import asyncio
import datetime as dt
import json

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404

from audit.models import AuditEvent
from devices.models import Command, Device, DeviceEvent, Pool, Program
from devices.services.programs import (
    ProgramsConflict,
    config_publish_request,
    device_config_message,
    devices_config_messages,
    pool_config_message,
    pool_config_payload,
    programs_as_list,
    programs_run_due,
    programs_save,
)
from firmware import protocol
from poolsaas.live.groups import DOORBELL
from poolsaas.live.messages import CONFIG_PUBLISH
from tenants.selectors import TenantSuspended

IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
UTC = dt.UTC


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def week(start, stop, mode, *, slot=1, enabled=True):
    return {
        "slot": slot,
        "enabled": enabled,
        "days": [{"mode": mode, "start": start, "stop": stop} for _ in range(7)],
    }


@pytest.fixture
def layer(settings):
    settings.CHANNEL_LAYERS = IN_MEMORY
    return get_channel_layer()


def doorbell_messages(layer) -> list[dict]:
    async def collect():
        out = []
        while True:
            try:
                out.append(await asyncio.wait_for(layer.receive(DOORBELL), 0.1))
            except TimeoutError:
                return out

    return async_to_sync(collect)()


def saved_state(pool):
    pool.refresh_from_db()
    return (
        pool.config_version,
        programs_as_list(pool=pool),
        AuditEvent.objects.filter(action="programs.updated").count(),
    )


# --- programs_save --------------------------------------------------------------------


def test_operator_saves_programs(
    olivia, pool_a, device_a, layer, django_capture_on_commit_callbacks
):
    programs = [
        week("10:00", "12:30", 2, slot=2),
        {
            **week("08:00", "09:00", 1),
            "days": [None] * 6 + [week("08:00", "09:00", 1)["days"][0]],
        },
    ]
    with django_capture_on_commit_callbacks(execute=True):
        pool = programs_save(membership=olivia, pool=pool_a, programs=programs)

    assert pool.config_version == pool_a.config_version == 1
    stored = programs_as_list(pool=pool)
    assert [p["slot"] for p in stored] == [1, 2]
    assert stored[0]["days"][6] == {"mode": 1, "start": "08:00", "stop": "09:00"}
    assert stored[0]["days"][:6] == [None] * 6
    assert Program.objects.get(pool=pool, slot=2).tenant_id == pool.tenant_id

    event = AuditEvent.objects.get(action="programs.updated")
    assert event.actor == olivia.user
    assert event.tenant == pool.tenant
    assert event.target_code == str(pool.code)
    assert event.data["version"] == 1
    assert event.data["before"] == []
    assert [p["slot"] for p in event.data["after"]] == [1, 2]
    log = DeviceEvent.objects.get(pool=pool, kind="programs.updated")
    assert log.message == "Programs saved by olivia@acme.test (enabled: 1, 2)"

    # device_a speaks ps1: the bridge is asked to publish the new configuration.
    assert doorbell_messages(layer) == [{"type": CONFIG_PUBLISH, "pool": pool.code.hex}]


def test_saving_removes_left_out_slots_and_bumps_again(alice, pool_a):
    programs_save(
        membership=alice,
        pool=pool_a,
        programs=[week("10:00", "11:00", 1), week("12:00", "13:00", 2, slot=3)],
    )
    pool = programs_save(
        membership=alice, pool=pool_a, programs=[week("07:00", "08:00", 2, slot=3)]
    )
    assert pool.config_version == 2
    assert [p["slot"] for p in programs_as_list(pool=pool)] == [3]
    assert programs_as_list(pool=pool)[0]["days"][0]["start"] == "07:00"
    pool = programs_save(membership=alice, pool=pool_a, programs=[])
    assert programs_as_list(pool=pool) == []
    assert pool.config_version == 3


def test_viewer_cannot_save_programs(victor, pool_a):
    before = saved_state(pool_a)
    with pytest.raises(PermissionDenied, match="operator role or higher"):
        programs_save(
            membership=victor, pool=pool_a, programs=[week("10:00", "11:00", 1)]
        )
    assert saved_state(pool_a) == before


def test_other_tenant_cannot_save_programs(carol, pool_a):
    before = saved_state(pool_a)
    with pytest.raises(Http404):
        programs_save(
            membership=carol, pool=pool_a, programs=[week("10:00", "11:00", 1)]
        )
    assert saved_state(pool_a) == before


def test_suspended_tenant_cannot_save_programs(alice, pool_a):
    alice.tenant.status = "suspended"
    alice.tenant.save()
    with pytest.raises(TenantSuspended):
        programs_save(membership=alice, pool=pool_a, programs=[])
    assert Pool.objects.get(pk=pool_a.pk).config_version == 0


def test_bad_programs_change_nothing_and_say_where(olivia, pool_a, layer):
    programs_save(membership=olivia, pool=pool_a, programs=[week("10:00", "11:00", 1)])
    before = saved_state(pool_a)
    bad = [week("10:00", "11:00", 1), week("12:00", "11:00", 3, slot=1)]
    with pytest.raises(ValidationError) as info:
        programs_save(membership=olivia, pool=pool_a, programs=bad)
    errors = info.value.message_dict
    assert "more than once" in errors["programs[1].slot"][0]
    assert "1 or 2" in errors["programs[1].days[0].mode"][0]
    assert "after the start" in errors["programs[1].days[6].stop"][0]
    assert saved_state(pool_a) == before
    with pytest.raises(ValidationError) as info:
        programs_save(membership=olivia, pool=pool_a, programs="every day")
    assert "list" in info.value.message_dict["programs"][0]
    assert saved_state(pool_a) == before


def test_stale_version_is_a_conflict(alice, olivia, pool_a):
    programs_save(membership=alice, pool=pool_a, programs=[week("10:00", "11:00", 1)])
    # Olivia loaded the editor at version 1; Alice saves first.
    programs_save(
        membership=alice,
        pool=pool_a,
        programs=[week("10:00", "11:00", 2)],
        expected_version=1,
    )
    before = saved_state(pool_a)
    with pytest.raises(ProgramsConflict) as info:
        programs_save(
            membership=olivia,
            pool=pool_a,
            programs=[week("18:00", "19:00", 1)],
            expected_version=1,
        )
    assert isinstance(info.value, ValidationError)
    assert info.value.code == "conflict"
    assert "Reload" in info.value.messages[0]
    assert saved_state(pool_a) == before
    pool = programs_save(
        membership=olivia,
        pool=pool_a,
        programs=[week("18:00", "19:00", 1)],
        expected_version=2,
    )
    assert pool.config_version == 3
    with pytest.raises(ValidationError, match="version number"):
        programs_save(membership=olivia, pool=pool_a, programs=[], expected_version="3")


def test_v31_pools_are_not_sent_configuration(alice, pool_a, platform_broker, layer):
    Device.objects.create(
        tenant=pool_a.tenant,
        pool=pool_a,
        broker=platform_broker,
        device_id="esp32-pool-01",
        protocol="v3.1",
    )
    assert config_publish_request(pool=pool_a) is False
    assert pool_config_message(pool=pool_a) is None
    programs_save(membership=alice, pool=pool_a, programs=[week("10:00", "11:00", 1)])
    assert doorbell_messages(layer) == []


# --- ps1 configuration ----------------------------------------------------------------


def test_config_payload_is_what_the_firmware_accepts(alice, pool_a, device_a):
    pool_a.settings = {
        "telemetry_interval": 120,
        "thresholds": {"freeze_on_c": 3.5, "unknown": 1},
    }
    pool_a.save()
    programs_save(membership=alice, pool=pool_a, programs=[week("10:00", "12:30", 2)])
    pool_a.refresh_from_db()

    config = pool_config_payload(pool_a)
    assert config == {
        "version": 1,
        "tz": "Europe/Madrid",
        "tz_posix": "CET-1CEST,M3.5.0,M10.5.0/3",
        "telemetry_interval": 120,
        "thresholds": {
            "freeze_on_c": 3.5,
            "freeze_hysteresis_c": 1.0,
            "pump_max_run_s_day": 0,
            "min_switch_interval_s": 3,
        },
        "programs": [week("10:00", "12:30", 2)],
    }
    topic, payload = pool_config_message(pool=pool_a)
    assert topic == "devices/ESP-A1A1A1/config/set"
    assert protocol.parse_config(payload) == config
    assert json.loads(payload)["version"] == 1


def test_config_payload_follows_the_pool_time_zone(pool_a, device_a):
    pool_a.timezone = "Australia/Sydney"
    assert pool_config_payload(pool_a)["tz_posix"] == "AEST-10AEDT,M10.1.0,M4.1.0/3"
    pool_a.settings = {"telemetry_interval": 5}
    with pytest.raises(protocol.ProtocolError, match="telemetry_interval"):
        pool_config_payload(pool_a)


def test_config_messages_of_a_page_match_each_device_in_a_fixed_number_of_queries(
    alice, pool_a, device_a, device_b, platform_broker, django_assert_num_queries
):
    """The bridge's sweep builds a page at once; each answer is what
    device_config_message gives that device, a pool the device cannot be sent gets its
    own error, and the queries do not grow with the page."""
    programs_save(membership=alice, pool=pool_a, programs=[week("10:00", "12:30", 2)])
    broken = Pool.objects.create(tenant=pool_a.tenant, name="Broken")
    broken.settings = {"telemetry_interval": 5}  # refused by the device's validator
    broken.save()
    more = [
        Device.objects.create(
            tenant=pool_a.tenant,
            pool=Pool.objects.create(tenant=pool_a.tenant, name=f"Pool {n}"),
            broker=platform_broker,
            device_id=f"ESP-C{n}C{n}C{n}",
        )
        for n in range(3)
    ]
    bad = Device.objects.create(
        tenant=pool_a.tenant,
        pool=broken,
        broker=platform_broker,
        device_id="ESP-DDDDDD",
    )
    page = [device_a, device_b, *more, bad]
    expected = {d.pk: device_config_message(device=d) for d in page if d is not bad}
    with django_assert_num_queries(4):  # savepoint/begin, pools, programs, commit
        built = devices_config_messages(devices=page)
    assert {pk: built[pk] for pk in expected} == expected
    assert json.loads(built[device_a.pk][2])["programs"] == [week("10:00", "12:30", 2)]
    assert json.loads(built[device_b.pk][2])["programs"] == []
    assert isinstance(built[bad.pk], protocol.ProtocolError)
    with pytest.raises(protocol.ProtocolError):
        device_config_message(device=bad)
    broken.delete()
    bad.pool_id = broken.pk
    assert isinstance(devices_config_messages(devices=[bad])[bad.pk], Pool.DoesNotExist)


# --- the scheduler for v3.1 pools -----------------------------------------------------
# Europe/Madrid in June is UTC+2: local 10:00 is 08:00 UTC. 2026-06-01 is a Monday.


@pytest.fixture
def legacy(pool_a, platform_broker):
    return Device.objects.create(
        tenant=pool_a.tenant,
        pool=pool_a,
        broker=platform_broker,
        device_id="esp32-pool-01",
        protocol="v3.1",
        online=True,
        state={"pump": False, "valve": 1},
    )


def set_programs(pool, *programs):
    Program.objects.filter(pool=pool).delete()
    for program in programs:
        Program.objects.create(tenant=pool.tenant, pool=pool, **program)


def set_state(device, **state):
    Device.objects.filter(pk=device.pk).update(state=state)


def sent(device):
    """(op, value) of the scheduler's commands, oldest first."""
    return [
        (c.op, c.value)
        for c in Command.objects.filter(device=device, source="scheduler").order_by(
            "created_at", "pk"
        )
    ]


def settle(device):
    """The bridge's part: the device confirmed every open command."""
    Command.objects.filter(device=device).update(status=Command.Status.DONE)


def program_events(pool):
    return [
        (e.kind, e.data.get("slot"), e.data.get("reason"))
        for e in DeviceEvent.objects.filter(
            pool=pool, kind__in=("program_start", "program_stop")
        ).order_by("ts", "pk")
    ]


def test_a_program_runs_from_start_to_stop(pool_a, legacy):
    set_programs(pool_a, week("10:00", "12:00", 2))

    report = programs_run_due(now=utc(2026, 6, 1, 7, 59))
    assert (report.pools, report.started, report.commands) == (1, 0, 0)

    report = programs_run_due(now=utc(2026, 6, 1, 8, 0))
    assert (report.started, report.commands) == (1, 2)
    assert sent(legacy) == [("valve", 2), ("pump", "ON")]
    assert program_events(pool_a) == [("program_start", 1, None)]
    start = DeviceEvent.objects.get(kind="program_start")
    assert start.message == "Program 1 started (Eyectores, until 12:00)"
    assert start.device == legacy
    command = Command.objects.filter(device=legacy).first()
    assert command.actor is None and command.status == Command.Status.PENDING
    assert (
        AuditEvent.objects.filter(
            action="command.sent", actor_label="scheduler"
        ).count()
        == 2
    )
    # The scheduler's own commands do not pause the programs.
    pool_a.refresh_from_db()
    assert pool_a.override_until is None

    # A minute later the commands are still open: nothing is sent twice.
    assert programs_run_due(now=utc(2026, 6, 1, 8, 1)).commands == 0
    settle(legacy)
    set_state(legacy, pump=True, valve=2)
    assert programs_run_due(now=utc(2026, 6, 1, 9)).commands == 0

    report = programs_run_due(now=utc(2026, 6, 1, 10, 0))
    assert report.stopped == 1
    assert sent(legacy)[2:] == [("pump", "OFF")]
    assert program_events(pool_a)[-1] == ("program_stop", 1, "end")

    # Idle: a pump someone switched on later is left alone.
    settle(legacy)
    set_state(legacy, pump=True, valve=2)
    assert programs_run_due(now=utc(2026, 6, 1, 11)).commands == 0
    # The next day the program runs again.
    set_state(legacy, pump=False, valve=2)
    programs_run_due(now=utc(2026, 6, 2, 8, 0))
    assert sent(legacy)[3:] == [("pump", "ON")]


def test_a_device_that_drifts_during_a_run_is_corrected(pool_a, legacy):
    set_programs(pool_a, week("10:00", "12:00", 1))
    programs_run_due(now=utc(2026, 6, 1, 8, 0))
    assert sent(legacy) == [("pump", "ON")]
    settle(legacy)
    set_state(legacy, pump=False, valve=1)  # e.g. the device rebooted
    programs_run_due(now=utc(2026, 6, 1, 8, 30))
    assert sent(legacy) == [("pump", "ON"), ("pump", "ON")]
    assert program_events(pool_a) == [("program_start", 1, None)]


def test_higher_slot_takes_over_and_hands_back(pool_a, legacy):
    set_programs(
        pool_a, week("09:00", "12:00", 1, slot=2), week("10:00", "11:00", 2, slot=1)
    )
    programs_run_due(now=utc(2026, 6, 1, 7, 0))
    settle(legacy)
    set_state(legacy, pump=True, valve=1)
    programs_run_due(now=utc(2026, 6, 1, 8, 0))
    assert sent(legacy) == [("pump", "ON"), ("valve", 2)]
    settle(legacy)
    set_state(legacy, pump=True, valve=2)
    programs_run_due(now=utc(2026, 6, 1, 9, 0))
    assert sent(legacy)[2:] == [("valve", 1)]
    assert program_events(pool_a) == [
        ("program_start", 2, None),
        ("program_stop", 2, "switched"),
        ("program_start", 1, None),
        ("program_stop", 1, "switched"),
        ("program_start", 2, None),
    ]


def test_manual_override_pauses_until_midnight_and_resumes(pool_a, legacy, olivia):
    from devices.services.commands import command_send

    set_programs(pool_a, week("10:00", "12:00", 2))
    programs_run_due(now=utc(2026, 6, 1, 8, 0))
    settle(legacy)
    set_state(legacy, pump=True, valve=2)
    command_send(membership=olivia, pool=pool_a, op="pump", value="OFF")
    pool_a.refresh_from_db()
    assert pool_a.override_until is not None
    settle(legacy)
    set_state(legacy, pump=False, valve=2)
    # The real override runs to tonight's midnight; pin it to the test's day.
    Pool.objects.filter(pk=pool_a.pk).update(override_until=utc(2026, 6, 1, 22))

    report = programs_run_due(now=utc(2026, 6, 1, 8, 30))
    assert report.commands == 0
    assert report.skipped == {"paused by override": 1}
    assert program_events(pool_a)[-1] == ("program_stop", 1, "override")
    # Resuming programs (override cleared) restarts the same window at once.
    Pool.objects.filter(pk=pool_a.pk).update(override_until=None)
    programs_run_due(now=utc(2026, 6, 1, 9, 0))
    assert sent(legacy)[-1] == ("pump", "ON")
    assert program_events(pool_a)[-1] == ("program_start", 1, None)


def test_a_timer_cancels_the_running_program(pool_a, legacy):
    set_programs(pool_a, week("10:00", "12:00", 2))
    programs_run_due(now=utc(2026, 6, 1, 8, 0))
    settle(legacy)
    at = utc(2026, 6, 1, 8, 10)
    timer = {"active": True, "remaining": 600, "mode": 1, "duration": 600}
    set_state(legacy, pump=True, valve=1, timer={**timer, "at": at.isoformat()})
    report = programs_run_due(now=utc(2026, 6, 1, 8, 15))
    assert report.commands == 0
    assert program_events(pool_a)[-1] == ("program_stop", 1, "timer")
    # The timer ended (pump off); the cancelled window does not start again.
    set_state(legacy, pump=False, valve=1, timer={**timer, "active": False})
    report = programs_run_due(now=utc(2026, 6, 1, 8, 30))
    assert report.commands == 0 and report.skipped == {"cancelled by timer": 1}
    # ...but the next day's window does.
    programs_run_due(now=utc(2026, 6, 2, 8, 0))
    assert sent(legacy)[-2:] == [("valve", 2), ("pump", "ON")]


def test_disabling_a_running_program_stops_the_pump(alice, pool_a, legacy):
    programs_save(membership=alice, pool=pool_a, programs=[week("10:00", "12:00", 1)])
    programs_run_due(now=utc(2026, 6, 1, 8, 0))
    settle(legacy)
    set_state(legacy, pump=True, valve=1)
    programs_save(membership=alice, pool=pool_a, programs=[])
    programs_run_due(now=utc(2026, 6, 1, 8, 30))
    assert sent(legacy)[-1] == ("pump", "OFF")
    assert program_events(pool_a)[-1] == ("program_stop", 1, "end")
    # Still visited (it ran a program before) but nothing more is sent.
    report = programs_run_due(now=utc(2026, 6, 1, 8, 31))
    assert (report.pools, report.commands, report.stopped) == (1, 0, 0)


def test_offline_devices_and_ps1_pools_are_skipped(pool_a, pool_b, legacy, device_b):
    set_programs(pool_a, week("10:00", "12:00", 1))
    set_programs(pool_b, week("10:00", "12:00", 1))
    Device.objects.filter(pk=legacy.pk).update(online=False)
    report = programs_run_due(now=utc(2026, 6, 1, 8, 0))
    # pool_b's device speaks ps1: it runs its own programs and is not even visited.
    assert report.pools == 1
    assert report.skipped == {"offline": 1}
    assert Command.objects.count() == 0
    assert program_events(pool_a) == []
    # Back online mid-window: the program starts then.
    Device.objects.filter(pk=legacy.pk).update(online=True)
    assert programs_run_due(now=utc(2026, 6, 1, 9, 0)).started == 1


def test_spring_forward_window_starts_at_the_jump(pool_a, legacy):
    # Sunday 2026-03-29, Madrid jumps from 02:00 to 03:00 (01:00 UTC).
    days = [None] * 6 + [{"mode": 1, "start": "02:30", "stop": "04:00"}]
    set_programs(pool_a, {"slot": 1, "enabled": True, "days": days})
    assert programs_run_due(now=utc(2026, 3, 29, 0, 59)).started == 0
    assert programs_run_due(now=utc(2026, 3, 29, 1, 0)).started == 1
    settle(legacy)
    set_state(legacy, pump=True, valve=1)
    assert programs_run_due(now=utc(2026, 3, 29, 1, 59)).stopped == 0
    assert programs_run_due(now=utc(2026, 3, 29, 2, 0)).stopped == 1


def test_the_celery_task_and_its_schedule(pool_a, legacy):
    from devices.tasks import run_programs
    from poolsaas.celery import app

    entry = app.conf.beat_schedule["devices.run_programs"]
    assert entry["task"] == run_programs.name == "devices.run_programs"
    assert entry["schedule"] == 60.0
    set_programs(pool_a, week("00:00", "23:59", 1))
    # Offline, so that the outcome does not depend on the time the test runs.
    Device.objects.filter(pk=legacy.pk).update(online=False)
    result = run_programs.apply().get()
    assert result == {
        "pools": 1,
        "started": 0,
        "stopped": 0,
        "commands": 0,
        "skipped": {"offline": 1},
    }


def test_outdated_devices_are_listed_for_the_bridge_sweep(
    alice, pool_a, device_a, device_b
):
    from devices.selectors import devices_config_outdated

    # Never applied anything yet: both ps1 devices need their configuration.
    assert list(devices_config_outdated()) == [device_a, device_b]
    Device.objects.filter(pk__in=[device_a.pk, device_b.pk]).update(
        config_version_applied=0
    )
    assert list(devices_config_outdated()) == []
    programs_save(membership=alice, pool=pool_a, programs=[week("10:00", "11:00", 1)])
    assert list(devices_config_outdated()) == [device_a]
    Device.objects.filter(pk=device_a.pk).update(config_version_applied=1)
    assert list(devices_config_outdated()) == []
    Device.objects.filter(pk=device_b.pk).update(
        protocol="v3.1", config_version_applied=None
    )
    assert list(devices_config_outdated()) == []


def test_scheduler_queries_grow_by_a_few_per_pool(tenant_a, platform_broker):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def add_pools(count, start):
        for n in range(start, start + count):
            pool = Pool.objects.create(tenant=tenant_a, name=f"Pool {n}")
            Device.objects.create(
                tenant=tenant_a,
                pool=pool,
                broker=platform_broker,
                device_id=f"legacy-{n}",
                protocol="v3.1",
                online=True,
                state={"pump": False, "valve": 1},
            )
            set_programs(pool, week("10:00", "11:00", 1))

    def queries_for_an_idle_pass():
        with CaptureQueriesContext(connection) as captured:
            report = programs_run_due(now=utc(2026, 6, 1, 12))
        assert report.commands == 0
        return len(captured), report.pools

    add_pools(3, 0)
    three, pools = queries_for_an_idle_pass()
    assert pools == 3
    add_pools(3, 3)
    six, pools = queries_for_an_idle_pass()
    assert pools == 6
    per_pool = (six - three) / 3
    assert per_pool == int(per_pool) and per_pool <= 8, (three, six)
