"""Weekly programs: saving them, pushing them to ps1 devices, running them for v3.1.

The server keeps the source of truth (Program rows). A ps1 device gets them as its
retained `config/set` (docs/protocol.md 3.2) and runs them from its own clock; a v3.1
device cannot hold programs, so `programs_run_due` (Celery beat, every minute) runs
them here with the same rules (devices/scheduling.py).

Pushing configuration: `programs_save` (and a time-zone change, and adding a device)
bumps `pool.config_version` (that bump is the record: a device whose
`config_version_applied` lags is out of date) and calls `config_publish_request`,
which after commit rings the bridge's doorbell with messages.config_publish (the
pool's hex) and tells open pool pages to reload. The bridge publishes
`device_config_message(device=...)`, retained, QoS 1, and its sweep catches up with
every outdated device (devices.mqtt.outgoing.Outgoing.sweep_config). The device's
config/applied answer is kept in its state ("config"); `pool_config_status` turns
it into what the pages say: applied, pending or rejected with the device's reason.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.http import Http404
from django.utils import timezone

from audit.services import audit_record
from devices import scheduling
from devices.models import Command, Device, DeviceEvent, Pool, Program
from devices.selectors import pool_programs
from devices.services.events import pool_event_record
from firmware import protocol
from poolsaas.live import messages
from poolsaas.live.groups import broadcast, doorbell_ring_now, pool_group
from tenants.models import Membership
from tenants.roles import Action
from tenants.selectors import membership_require

logger = logging.getLogger(__name__)


# What the firmware runs with when the pool sets nothing (firmware/controller.py).
DEFAULT_TELEMETRY_INTERVAL = 60
DEFAULT_THRESHOLDS = {
    "freeze_on_c": 2.0,
    "freeze_hysteresis_c": 1.0,
    "pump_max_run_s_day": 0,
    "min_switch_interval_s": 3,
}

PROGRAM_START = "program_start"
PROGRAM_STOP = "program_stop"
# Why the scheduler ended a run (DeviceEvent data "reason").
STOP_END = "end"
STOP_SWITCHED = "switched"


class ProgramsConflict(ValidationError):
    """The programs changed since the caller loaded them (stale expected_version)."""


# --- reading --------------------------------------------------------------------------


def programs_as_list(*, pool: Pool) -> list[dict[str, Any]]:
    """The pool's stored programs, sorted by slot, in the shape of validate_programs
    (and of the editor's form and the config/set payload)."""
    return [_program_item(p) for p in pool_programs(pool=pool)]


def _program_item(program: Program) -> dict[str, Any]:
    return {"slot": program.slot, "enabled": program.enabled, "days": program.days}


# --- saving ---------------------------------------------------------------------------


def _errors_as_dict(errors: list[scheduling.FieldError]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for error in errors:
        out.setdefault(error.field, []).append(error.message)
    return out


def programs_save(
    *,
    membership: Membership,
    pool: Pool,
    programs: list[dict],
    expected_version: int | None = None,
) -> Pool:
    """Replace the pool's weekly programs (operators and above).

    `programs` is the complete list (a slot left out is deleted). Bad input raises
    ValidationError whose message_dict maps paths such as `programs[0].days[2].stop` to
    messages, and changes nothing. With `expected_version` (the pool's config_version
    when the editor was loaded) a concurrent change raises ProgramsConflict (a
    ValidationError, code "conflict") instead of silently overwriting it.
    On success the config version is bumped, the change is audited and logged on the
    pool, and a ps1 device is sent its new configuration after commit.
    """
    membership_require(membership=membership, action=Action.CONTROL)
    if pool.tenant_id != membership.tenant_id:
        raise Http404("No such pool.")
    if expected_version is not None and (
        not isinstance(expected_version, int) or isinstance(expected_version, bool)
    ):
        raise ValidationError({"expected_version": ["Expected a version number."]})
    errors = scheduling.validate_programs(programs)
    if errors:
        raise ValidationError(_errors_as_dict(errors))
    clean = scheduling.normalize_programs(programs)

    with transaction.atomic():
        locked = Pool.objects.select_for_update().get(pk=pool.pk)
        if expected_version is not None and locked.config_version != expected_version:
            raise ProgramsConflict(
                "Someone changed this pool's programs or settings while you were "
                "editing (version "
                f"{expected_version}, now {locked.config_version}). Reload to see "
                "their changes, then save again.",
                code="conflict",
            )
        before = programs_as_list(pool=locked)
        slots = [p["slot"] for p in clean]
        Program.objects.filter(pool=locked).exclude(slot__in=slots).delete()
        for program in clean:
            Program.objects.update_or_create(
                pool=locked,
                slot=program["slot"],
                defaults={
                    "tenant_id": locked.tenant_id,
                    "enabled": program["enabled"],
                    "days": program["days"],
                },
            )
        locked.config_version += 1
        locked.save(update_fields=["config_version"])
        audit_record(
            action="programs.updated",
            tenant=locked.tenant,
            actor=membership.user,
            target=locked,
            data={
                "version": locked.config_version,
                "before": before,
                "after": clean,
            },
        )
        enabled = [str(p["slot"]) for p in clean if p["enabled"]]
        pool_event_record(
            pool=locked,
            kind="programs.updated",
            message=f"Programs saved by {membership.user.email} ("
            + (f"enabled: {', '.join(enabled)}" if enabled else "none enabled")
            + ")",
            data={"version": locked.config_version},
            actor=membership.user,
        )
        config_publish_request(pool=locked)
    pool.config_version = locked.config_version
    return locked


# --- configuration for ps1 devices ----------------------------------------------------


def pool_config_payload(
    pool: Pool, programs: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The complete `config/set` object of docs/protocol.md 3.2 for the pool.

    Thresholds and the telemetry interval come from pool.settings over the firmware's
    defaults; the result is checked with the firmware's own validator. `programs`
    (programs_as_list's shape) saves the query when the caller read them already.
    """
    settings = pool.settings if isinstance(pool.settings, dict) else {}
    thresholds = dict(DEFAULT_THRESHOLDS)
    if isinstance(settings.get("thresholds"), dict):
        thresholds.update(
            {k: v for k, v in settings["thresholds"].items() if k in DEFAULT_THRESHOLDS}
        )
    config = {
        "version": pool.config_version,
        "tz": pool.timezone,
        "tz_posix": scheduling.tz_posix(pool.timezone),
        "telemetry_interval": settings.get(
            "telemetry_interval", DEFAULT_TELEMETRY_INTERVAL
        ),
        "thresholds": thresholds,
        "programs": programs_as_list(pool=pool) if programs is None else programs,
    }
    # Raises ProtocolError for anything the device would refuse.
    return protocol.validate_config(config)


def device_config_message(*, device: Device) -> tuple[int, str, bytes]:
    """(version, topic, payload) of the retained config/set (QoS 1) for a ps1 device:
    its pool's configuration, read under the pool's row lock so that the version and
    the programs belong together. Raises ProtocolError for what the device would
    refuse, Pool.DoesNotExist when its pool is gone."""
    message = devices_config_messages(devices=[device])[device.pk]
    if isinstance(message, Exception):
        raise message
    return message


def devices_config_messages(
    *, devices: list[Device]
) -> dict[int, tuple[int, str, bytes] | Exception]:
    """device_config_message for a page of devices at once (the bridge's config
    sweep): their pools locked and their programs read in one query each, so a
    bridge (re)start with many outdated devices costs a few queries per page, not
    a transaction per device. Per device pk: (version, topic, payload), or the
    ProtocolError / Pool.DoesNotExist that device_config_message would raise."""
    pool_ids = sorted({device.pool_id for device in devices if device.pool_id})
    out: dict[int, tuple[int, str, bytes] | Exception] = {}
    with transaction.atomic():
        # Locked in pk order, so that two sweeps never deadlock on each other.
        locked = Pool.objects.select_for_update().filter(pk__in=pool_ids).order_by("pk")
        pools = {pool.pk: pool for pool in locked}
        programs: dict[int, list[dict[str, Any]]] = {pk: [] for pk in pools}
        rows = Program.objects.filter(pool_id__in=list(pools)).order_by("pool", "slot")
        for program in rows:
            programs[program.pool_id].append(_program_item(program))
        payloads: dict[int, tuple[int, bytes] | Exception] = {}
        for pk, pool in pools.items():
            try:
                config = pool_config_payload(pool, programs[pk])
                payloads[pk] = (pool.config_version, protocol.encode_config(config))
            except protocol.ProtocolError as exc:
                payloads[pk] = exc
    for device in devices:
        payload = payloads.get(device.pool_id)
        if payload is None:
            out[device.pk] = Pool.DoesNotExist(f"pool {device.pool_id} is gone")
        elif isinstance(payload, Exception):
            out[device.pk] = payload
        else:
            topic = protocol.topic(
                device.topic_prefix, device.device_id, protocol.CONFIG_SET
            )
            out[device.pk] = (payload[0], topic, payload[1])
    return out


def pool_config_message(*, pool: Pool) -> tuple[str, bytes] | None:
    """(topic, payload) of the config/set for the pool's ps1 device; None when the
    pool has no ps1 device."""
    device = Device.objects.filter(pool=pool, protocol=Device.Protocol.POOLSAAS).first()
    if device is None:
        return None
    _, topic, payload = device_config_message(device=device)
    return topic, payload


def pool_config_status(*, pool: Pool, device: Device | None) -> dict | None:
    """What the pool's ps1 device did with the pool's configuration, for the pages:
    {"status": "applied" | "pending" | "rejected", "text", "target", "applied",
    "error"}; None without a ps1 device (v3.1 programs run on the server).
    static/js/pool.js applies the same rule to the live config/applied answers."""
    if device is None or device.protocol != Device.Protocol.POOLSAAS:
        return None
    target = pool.config_version
    applied = device.config_version_applied
    state = device.state if isinstance(device.state, dict) else {}
    answer = state.get("config") if isinstance(state.get("config"), dict) else {}
    error = None
    if applied is not None and applied >= target:
        status, text = "applied", f"applied (version {applied})"
    elif answer.get("ok") is False and answer.get("version") == target:
        error = str(answer.get("error") or "rejected")
        status, text = "rejected", f"rejected by the device: {error}"
    else:
        status, text = "pending", f"pending (version {target} not confirmed yet)"
    return {
        "status": status,
        "text": text,
        "target": target,
        "applied": applied,
        "error": error,
    }


def _ring_config(pool_hex: str) -> None:
    # Best effort: the bridge's sweep catches up.
    doorbell_ring_now(messages.config_publish(pool=pool_hex))


def config_publish_request(*, pool: Pool) -> bool:
    """Ask the bridge to publish the pool's configuration to its ps1 device.

    The record of the need is the pool's config_version (bumped by the caller) being
    ahead of the device's config_version_applied; the doorbell, rung after commit, only
    makes it prompt, and open pool pages reload to show the new version as pending.
    False when the pool has no ps1 device (v3.1 pools are run by the server's
    scheduler instead).
    """
    if not Device.objects.filter(pool=pool, protocol=Device.Protocol.POOLSAAS).exists():
        return False
    pool_hex = pool.code.hex
    transaction.on_commit(lambda: _ring_config(pool_hex))
    broadcast(pool_group(pool_hex), messages.pool_settings(pool=pool_hex))
    return True


# --- running programs for v3.1 devices ------------------------------------------------


@dataclass
class RunReport:
    """What one pass of the scheduler did, for logs and tests."""

    pools: int = 0
    started: int = 0
    stopped: int = 0
    commands: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _mode_name(pool: Pool, mode: int) -> str:
    return pool.mode1_name if mode == 1 else pool.mode2_name


def _pools_to_run():
    """v3.1 pools with an enabled program, or with a program the scheduler started and
    has not stopped yet (all programs deleted or disabled mid-run)."""
    enabled = Program.objects.filter(pool=OuterRef("pk"), enabled=True)
    started = DeviceEvent.objects.filter(pool=OuterRef("pk"), kind=PROGRAM_START)
    return (
        Pool.objects.filter(device__protocol=Device.Protocol.LEGACY)
        .filter(Exists(enabled) | Exists(started))
        .order_by("pk")
    )


def programs_run_due(*, now: dt.datetime | None = None) -> RunReport:
    """One pass of the server-side scheduler over every v3.1 pool with programs.

    For each pool: work out what its programs want now (scheduling.desired_state,
    with the pool's override pause and the device's timer), and when a program starts,
    runs or ends, bring the device's known state (Device.state pump/valve) in line
    through command_send_system. Program runs are logged as DeviceEvents
    `program_start` / `program_stop`, which are also the scheduler's memory of what it
    started. Rules (the firmware's, docs/protocol.md 3.3):
    - a window starts: valve to its mode, then pump ON;
    - while it runs, a device that drifted (e.g. rebooted) is corrected, unless a
      command to it is still open;
    - it ends (or a higher slot takes over): pump OFF (or only the valve changes);
    - the pool idle: nothing is sent, so a pump someone switched on is left alone;
    - a manual override pauses everything until local midnight; a timer cancels the
      running window until its stop time. Offline devices are skipped (a command would
      fail at once); they are brought in line when they are back.
    Pools are locked one at a time (skip_locked), so two workers never act twice.
    """
    # Imported here: the commands module pulls in the bridge's doorbell machinery.
    from devices.services.commands import command_send_system as send

    now = now or timezone.now()
    report = RunReport()
    for pool_pk in _pools_to_run().values_list("pk", flat=True):
        try:
            with transaction.atomic():
                pool = (
                    Pool.objects.select_for_update(skip_locked=True)
                    .filter(pk=pool_pk)
                    .first()
                )
                if pool is None:
                    report.skip("locked")
                    continue
                report.pools += 1
                _run_pool(pool=pool, now=now, send=send, report=report)
        except Exception:
            # One broken pool must not stop the others' programs.
            logger.exception("programs for pool %s failed", pool_pk)
            report.skip("error")
    return report


def _run_pool(*, pool: Pool, now: dt.datetime, send, report: RunReport) -> None:
    device = Device.objects.filter(pool=pool).first()
    if device is None or device.protocol != Device.Protocol.LEGACY:
        report.skip("no v3.1 device")
        return
    if not device.online:
        report.skip("offline")
        return
    state = device.state if isinstance(device.state, dict) else {}
    programs = programs_as_list(pool=pool)
    desired = scheduling.desired_state(
        programs,
        pool.timezone,
        now,
        override_until=pool.override_until,
        timer_active=scheduling.timer_running(state.get("timer"), now),
    )
    last = (
        DeviceEvent.objects.filter(pool=pool, kind__in=(PROGRAM_START, PROGRAM_STOP))
        .order_by("-ts", "-pk")
        .first()
    )
    running = last if last is not None and last.kind == PROGRAM_START else None

    def stop(reason: str, text: str) -> None:
        data = dict(running.data)
        pool_event_record(
            pool=pool,
            device=device,
            ts=now,
            kind=PROGRAM_STOP,
            message=f"Program {data.get('slot')} {text}",
            data={**data, "reason": reason},
        )
        report.stopped += 1

    if desired.paused:
        if running is not None:
            reason = desired.paused_by
            stop(
                reason,
                "cancelled by the timer"
                if reason == scheduling.PAUSED_BY_TIMER
                else "paused by a manual action until midnight",
            )
        report.skip(f"paused by {desired.paused_by}")
        return

    window = desired.window
    if window is None:
        if running is not None:
            if state.get("pump") is not False:
                _send(send, pool, "pump", "OFF", report)
            stop(STOP_END, "ended")
        return

    if running is not None and running.data.get("window") == window.key:
        # Running: correct a device that drifted, one command at a time.
        if not Command.objects.filter(
            device=device, status__in=(Command.Status.PENDING, Command.Status.SENT)
        ).exists():
            _bring_in_line(send, pool, state, window.mode, report)
        return

    if _cancelled_by_timer(pool=pool, key=window.key):
        report.skip("cancelled by timer")
        return
    if running is not None:
        stop(STOP_SWITCHED, f"stopped; program {window.slot} takes over")
    _bring_in_line(send, pool, state, window.mode, report)
    pool_event_record(
        pool=pool,
        device=device,
        ts=now,
        kind=PROGRAM_START,
        message=f"Program {window.slot} started ({_mode_name(pool, window.mode)}, "
        f"until {window.stop})",
        data={"slot": window.slot, "mode": window.mode, "window": window.key},
    )
    report.started += 1


def _cancelled_by_timer(*, pool: Pool, key: str) -> bool:
    return DeviceEvent.objects.filter(
        pool=pool,
        kind=PROGRAM_STOP,
        data__window=key,
        data__reason=scheduling.PAUSED_BY_TIMER,
    ).exists()


def _bring_in_line(send, pool: Pool, state: dict, mode: int, report: RunReport) -> None:
    # Valve first, like the device's own timer: the pump starts in the right mode.
    if state.get("valve") != mode:
        _send(send, pool, "valve", mode, report)
    if state.get("pump") is not True:
        _send(send, pool, "pump", "ON", report)


def _send(send, pool: Pool, op: str, value: Any, report: RunReport) -> None:
    send(pool=pool, op=op, value=value, source="scheduler")
    report.commands += 1
