"""Commands to devices: the one way every entry point (page, WebSocket, API, scheduler)
switches a pool, and the transitions the bridge drives (sent, done, failed, timed out).

Life of a command: `command_send` validates and stores it pending (or failed at once
when the device is offline), writes the audit event and, after commit, rings the
bridges with the whole command (`doorbell_ring`: its topic and payload). The bridge
holding the device's broker claims it (pending -> sent, a conditional UPDATE so that
two bridges, or one ring heard twice, never publish the same command) and publishes
it without reading it back; a lost ring costs one sweep of the database, which stays
the record. It completes on the device's `ack` (ps1; the bridge tells the page at once
with `command_answer`, before the write) or when the v3.1 state topic shows
`Command.expected`; otherwise `commands_expire` turns it into a visible timeout.
Every transition is broadcast to the pool's group and rewrites the command's one
DeviceEvent, so the log shows one entry per command.

A claim records its claimer, the bridge process (`Command.claimed_by`, the bridge's
`instance`, new at each start) and counts (`Command.claims`). A bridge killed between
its claim and the broker taking the publish leaves the command `sent` with nobody to
send it: `commands_reclaim` lets a live bridge take it over once its claimer's heartbeat
has lapsed (`BridgePresence`, devices.services.leases.bridge_beat, 5 s) and the claim is
RECLAIM_GRACE old, by a conditional UPDATE on the claimer it read, so one bridge
re-sends each dead claim, and at most MAX_CLAIMS claims in all. As the claimer may have
died after the broker took it, a re-send may reach a device twice, which is safe: a ps1
device answers an id it has executed with its first answer and does not act again
(protocol.md 3.2, rule 3); a v3.1 device has no ids, so it is re-sent only as an
absolute state (a TOGGLE as the state it was meant to reach, `Command.expected`; a
TOGGLE whose target was unknown is not re-sent) and not at all when the device's state
already shows it (done then; a timer/set that arrives twice restarts its countdown, the
one effect a copy can have). A command is not re-sent over a newer one of its device
that went out since (it would undo it): it times out as before. Commands claimed before
the claimer was recorded (`claimed_by` empty) are never re-sent.
"""

import datetime as dt
import logging
import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.http import Http404
from django.utils import timezone

from audit.services import audit_record
from billing import metering
from devices.models import Command, Device, DeviceEvent, Pool
from devices.scheduling import next_local_midnight
from devices.services.events import pool_event_broadcast
from firmware import protocol
from poolsaas.live import messages
from poolsaas.live.groups import broadcast, doorbell_ring_bridges, pool_group
from poolsaas.metrics import command_reached
from tenants.models import Membership
from tenants.roles import Action
from tenants.selectors import membership_require

logger = logging.getLogger(__name__)

OFFLINE_REASON = "The device is offline"
MANUAL_OPS = {Command.Op.PUMP, Command.Op.VALVE, Command.Op.TIMER}
V31_UNSUPPORTED = {Command.Op.REBOOT}
OPEN = (Command.Status.PENDING, Command.Status.SENT)
# A dead bridge's claim is taken over at most this often in all (the first claim
# included), so that a command that kills every bridge that sends it stops there.
MAX_CLAIMS = 3
# A claim this young is not taken over even when its claimer looks dead: its own
# publish follows the claim at once.
RECLAIM_GRACE = dt.timedelta(seconds=2)

ACK_ERRORS = {
    "expired": "The command expired before the device received it",
    "invalid": "The device rejected the command as invalid",
    "unsupported": "The device's firmware does not support this command",
    "busy": "The device refused the command for now",
    "rate_limited": "Too many commands in a short time; try again in a few seconds",
    "failed": "The device tried and failed",
}

OP_LABELS = {
    "pump": "Pump",
    "valve": "Valve",
    "timer": "Timer",
    "wifi_clear": "Wi-Fi reset",
    "override_clear": "Resume programs",
    "reboot": "Reboot",
}


def command_timeout() -> dt.timedelta:
    """How long a device has to confirm a command (ps1 ack or v3.1 state)."""
    return dt.timedelta(seconds=getattr(settings, "COMMAND_TIMEOUT_SECONDS", 15))


def command_validate(*, op: str, value: Any) -> Any:
    """The normalised value of a command, or ValidationError with a clear message.

    Uses the device's own command parser, so the server never accepts what the
    firmware would reject.
    """
    if op not in Command.Op.values:
        raise ValidationError(
            {"op": f"Unknown command {op!r}: one of {', '.join(Command.Op.values)}."}
        )
    if op == Command.Op.VALVE and value in ("1", "2"):
        value = int(value)  # forms post strings
    if op == Command.Op.TIMER and isinstance(value, dict):
        value = {
            # ASCII digits only, and short: "²".isdigit() is true and int() of
            # thousands of digits raises; both must end as a clear 400.
            k: int(v)
            if isinstance(v, str) and v.isascii() and v.isdigit() and len(v) <= 9
            else v
            for k, v in value.items()
        }
    try:
        parsed = protocol.parse_command(
            protocol.dumps({"id": "validate", "exp": 0, "op": op, "value": value})
        )
    except (protocol.ProtocolError, TypeError, ValueError) as exc:
        raise ValidationError({"value": f"{exc}."}) from None
    return parsed["value"]


def command_expected(*, op: str, value: Any, state: dict) -> dict | None:
    """What a v3.1 device's state topics must show for the command to count as done.

    TOGGLE means the opposite of the state known at send time; when that is unknown,
    the next report of that topic completes it (value None).
    """
    if op == Command.Op.PUMP:
        if value == "TOGGLE":
            known = state.get("pump")
            return {"kind": "pump", "value": (not known) if known is not None else None}
        return {"kind": "pump", "value": value == "ON"}
    if op == Command.Op.VALVE:
        if value == "TOGGLE":
            known = state.get("valve")
            return {"kind": "valve", "value": 3 - known if known in (1, 2) else None}
        return {"kind": "valve", "value": value}
    if op == Command.Op.TIMER:
        active = value["duration"] > 0
        return {
            "kind": "timer",
            "value": {"active": active, "mode": value["mode"] if active else None},
        }
    if op == Command.Op.WIFI_CLEAR:
        return {"kind": "wifi", "value": {"status": "disconnected"}}
    return None


def expectation_met(expected: dict | None, kind: str, value: Any) -> bool:
    """Pure: does a parsed v3.1 state message (kind, value) satisfy `expected`?"""
    if not expected or expected.get("kind") != kind:
        return False
    want = expected.get("value")
    if want is None:
        return True
    if kind in ("pump", "valve"):
        return value == want
    if kind == "timer":
        if value.get("active") != want["active"]:
            return False
        return want["mode"] is None or value.get("mode") == want["mode"]
    if kind == "wifi":
        return value.get("status") == want["status"]
    return False


def command_v31_done(
    *,
    expected: dict | None,
    kind: str,
    value: Any,
    reported_at: float | None,
    sent_at: float,
) -> bool:
    """Pure: THE rule for when a v3.1 command is done (docs/protocol.md 4), used by the
    bridge on each state message, by the sweep over stored state and at publish time.

    Done when a report of the expected state topic, received at or after the command
    was sent (both epoch seconds), shows the expected value. `reported_at` None means
    the state known when the command was published: a v3.1 device does not report a
    state it already has, so a command for a definite value it already shows is done.
    """
    if reported_at is None:
        if not expected or expected.get("value") is None:
            return False
    elif reported_at < sent_at:
        return False
    return expectation_met(expected, kind, value)


def command_describe(command: Command, *, mode_names: tuple[str, str]) -> str:
    """The command in words, with the pool's own names for its valve modes."""
    label = OP_LABELS.get(command.op, command.op)
    value = command.value

    def mode(number) -> str:
        return mode_names[1] if number == 2 else mode_names[0]

    if command.op == Command.Op.PUMP:
        return f"{label} {'on' if value == 'ON' else 'off'}"
    if command.op == Command.Op.VALVE:
        return f"{label} to {mode(value)}"
    if command.op == Command.Op.TIMER and isinstance(value, dict):
        if value.get("duration"):
            return f"{label} {value['duration'] // 60} min in {mode(value.get('mode'))}"
        return f"{label} stop"
    return f"{label} {value}" if value is not None else label


def command_payload(command: Command) -> dict:
    """The command as the dashboard sees it (contract 3, pool.command)."""
    return {
        "code": command.code.hex,
        "op": command.op,
        "value": command.value,
        "status": command.status,
        "error": command.error,
        "actor": command.actor.email if command.actor_id and command.actor else None,
        "created_at": command.created_at.isoformat() if command.created_at else None,
    }


def _event(
    *, command: Command, data: dict | None = None, new: bool = False
) -> DeviceEvent:
    """The command's one line on the pool's log, written when it is created and
    rewritten in place (same row, same code) at each later status, so the log shows
    one entry per command whose status changes rather than one per transition."""
    pool = (
        Pool.objects.filter(pk=command.pool_id)
        .values("code", "mode1_name", "mode2_name")
        .first()
    )
    names = (pool["mode1_name"], pool["mode2_name"]) if pool else ("mode 1", "mode 2")
    who = ""
    if command.actor_id:
        who = f" by {command.actor.email}"
    elif command.source:
        who = f" ({command.source})"
    status = command.status
    kind = "command.sent" if status == Command.Status.PENDING else f"command.{status}"
    message = f"{command_describe(command, mode_names=names)}{who}"
    if command.error:
        message += f": {command.error}"
    event = None
    if not new and command.created_at is not None:
        event = (
            DeviceEvent.objects.select_related("actor")
            .filter(
                tenant_id=command.tenant_id,
                pool_id=command.pool_id,
                ts__gte=command.created_at - dt.timedelta(seconds=1),
                data__command=command.code.hex,
            )
            .order_by("ts")
            .first()
        )
    if event is None:
        event = DeviceEvent.objects.create(
            tenant_id=command.tenant_id,
            device_id=command.device_id,
            pool_id=command.pool_id,
            ts=timezone.now(),
            kind=kind,
            message=message[:300],
            data={"command": command.code.hex, **(data or {})},
            actor=command.actor if command.actor_id else None,
        )
    else:
        event.kind = kind
        event.message = message[:300]
        event.data = {**event.data, **(data or {}), "status": status}
        event.save(update_fields=["kind", "message", "data"])
    if pool is not None:
        group = pool_group(pool["code"])
        broadcast(
            group,
            messages.pool_command(
                pool=pool["code"].hex, command=command_payload(command)
            ),
        )
        pool_event_broadcast(pool_code=pool["code"], event=event)
    return event


def command_wire(command: Command) -> tuple[str, bytes]:
    """The topic and payload that carry a command to its device (ProtocolError when
    it cannot be encoded for that device). A v3.1 TOGGLE claimed again (a re-send:
    the claim before may have reached the device) goes as the state it was meant to
    reach, so that it cannot toggle twice."""
    device = command.device
    if device.protocol == Device.Protocol.LEGACY:
        value = command.value
        if command.claims > 1 and value == "TOGGLE":
            value = _toggle_target(command)
        suffix, payload = protocol.encode_v31_set(command.op, value)
    else:
        suffix = protocol.CMD
        payload = protocol.encode_command(
            command.code.hex,
            int(command.expires_at.timestamp()),
            command.op,
            command.value,
        )
    return f"{device.topic_root}/{suffix}", payload


def _toggle_target(command: Command) -> Any:
    """The absolute value a v3.1 TOGGLE meant, from `expected` (ProtocolError when it
    was unknown at send time)."""
    target = (command.expected or {}).get("value")
    if target is None:
        raise protocol.ProtocolError("the state a toggle meant is unknown", "invalid")
    if command.op == Command.Op.PUMP:
        return "ON" if target else "OFF"
    return target


def command_resendable(command: Command) -> bool:
    """Pure: may a command whose claimer died be sent again without the device acting
    twice? ps1 always (the device answers an id it has seen without acting again); a
    v3.1 command when it is an absolute state or a TOGGLE whose target is known."""
    if command.device.protocol != Device.Protocol.LEGACY or command.value != "TOGGLE":
        return True
    return (command.expected or {}).get("value") is not None


def doorbell_ring(command: Command) -> None:
    """Hand a pending command to every bridge now, whole, so that the one holding its
    device's broker publishes it at once (command_claim). Best effort: bridges also
    sweep the database, the queue of record. A v3.1 command rings without its payload
    (the bridge's sweep publishes it: it completes on the state known at send time)."""
    topic = payload = None
    if command.device.protocol != Device.Protocol.LEGACY:
        try:
            topic, payload = command_wire(command)
        except protocol.ProtocolError:
            pass  # the sweep fails it with the reason
    doorbell_ring_bridges(
        messages.command_new(
            command=command.code.hex,
            device=command.device_id,
            broker=command.device.broker_id,
            topic=topic,
            payload=payload,
        )
    )


def _command_create(
    *, pool: Pool, op: str, value: Any, actor, source: str, manual: bool
) -> Command:
    value = command_validate(op=op, value=value)
    now = timezone.now()
    with transaction.atomic():
        pool = Pool.objects.select_for_update().get(pk=pool.pk)
        device = Device.objects.filter(pool=pool).first()
        if device is None:
            raise ValidationError("This pool has no device to send commands to.")
        command = Command(
            tenant_id=pool.tenant_id,
            device=device,
            pool=pool,
            actor=actor,
            source=source[:12],
            op=op,
            value=value,
            expires_at=now + command_timeout(),
        )
        legacy = device.protocol == Device.Protocol.LEGACY
        if op == Command.Op.OVERRIDE_CLEAR and pool.override_until is not None:
            # The server's own pause (v3.1 programs run here) ends at once.
            pool.override_until = None
            pool.save(update_fields=["override_until"])
        if legacy and op in V31_UNSUPPORTED:
            command.status = Command.Status.FAILED
            command.error = "v3.1 devices cannot do this"
        elif legacy and op == Command.Op.OVERRIDE_CLEAR:
            command.status = Command.Status.DONE
        elif not device.online:
            command.status = Command.Status.FAILED
            command.error = OFFLINE_REASON
        else:
            if legacy:
                command.expected = command_expected(
                    op=op, value=value, state=device.state or {}
                )
            if manual and op in MANUAL_OPS:
                pool.override_until = next_local_midnight(now, pool.timezone)
                pool.save(update_fields=["override_until"])
        if command.is_final:
            command.completed_at = now
        command.save()
        reached = (command.status, now) if command.is_final else ("created", None)
        transaction.on_commit(lambda: command_reached(*reached))
        if command.status == Command.Status.PENDING:
            # Registered first, so that it is the first thing sent after commit
            # (before the page's and the log's broadcasts).
            transaction.on_commit(lambda: doorbell_ring(command))
        audit_record(
            action="command.sent",
            tenant=pool.tenant,
            actor=actor,
            actor_label="" if actor is not None else source,
            target=command,
            data={
                "pool": pool.code.hex,
                "device": device.device_id,
                "op": op,
                "value": value,
                "source": source,
                "status": command.status,
                "error": command.error,
            },
        )
        _event(command=command, new=True)
        if command.status == Command.Status.PENDING:
            # Metered by source once stored to go out (billing.metering).
            transaction.on_commit(
                lambda: metering.command_sent(command.tenant_id, source)
            )
    return command


def command_send(
    *,
    membership: Membership,
    pool: Pool,
    op: str,
    value: Any = None,
    source: str = "web",
) -> Command:
    """Send a command on behalf of a member (operator or above).

    Raises PermissionDenied / TenantSuspended for a role too low or a suspended
    tenant, Http404 for another tenant's pool, ValidationError for bad input. A
    command to an offline device is stored failed ("The device is offline") rather
    than left hanging. A manual pump, valve or timer command pauses programs until
    the next local midnight.
    """
    membership_require(membership=membership, action=Action.CONTROL)
    if pool.tenant_id != membership.tenant_id:
        raise Http404("No such pool.")
    return _command_create(
        pool=pool, op=op, value=value, actor=membership.user, source=source, manual=True
    )


def command_send_system(
    *, pool: Pool, op: str, value: Any = None, source: str = "scheduler"
) -> Command:
    """Send a command on behalf of the platform (the v3.1 program scheduler)."""
    return _command_create(
        pool=pool, op=op, value=value, actor=None, source=source, manual=False
    )


def commands_claim(*, commands: list[Command], claimer: str) -> list[Command]:
    """Bridge: pending -> sent for each command this bridge won (conditional UPDATE,
    so two bridges never publish the same command). `claimer`: the bridge's
    instance, recorded so that another can take the claim over if it dies."""
    now = timezone.now()
    won = []
    for command in commands:
        claimed = Command.objects.filter(
            pk=command.pk, status=Command.Status.PENDING, expires_at__gt=now
        ).update(
            status=Command.Status.SENT,
            sent_at=now,
            claimed_by=claimer,
            claims=F("claims") + 1,
        )
        if claimed:
            command.status = Command.Status.SENT
            command.sent_at = now
            command.claimed_by = claimer
            command.claims += 1
            won.append(command)
    return won


def command_claim(*, command_id: str, device_pk: int, claimer: str) -> bool:
    """Bridge, doorbell path: pending -> sent for the command a ring carried, when this
    bridge wins it. The same conditional UPDATE as commands_claim (on the code and
    the device, so a ring cannot name another device's command): a ring heard twice,
    by two bridges, or after a sweep took the command, publishes it once."""
    try:
        code = protocol_code(command_id)
    except ValueError:
        return False
    now = timezone.now()
    return bool(
        Command.objects.filter(
            code=code,
            device_id=device_pk,
            status=Command.Status.PENDING,
            expires_at__gt=now,
        ).update(
            status=Command.Status.SENT,
            sent_at=now,
            claimed_by=claimer,
            claims=F("claims") + 1,
        )
    )


def commands_reclaim(*, commands: list[Command], claimer: str) -> list[Command]:
    """Bridge: take over the claims of dead bridges (commands_orphaned read them):
    each stays sent, now claimed by `claimer`, for this bridge to send again. A
    conditional UPDATE on the claimer that was read, so that of two bridges taking
    over one claim only one wins, and so sends it; the first time it went out
    (`sent_at`) is kept. v3.1 commands that cannot be re-sent safely are left to
    their timeout (command_resendable)."""
    now = timezone.now()
    won = []
    for command in commands:
        if not command_resendable(command):
            continue
        taken = Command.objects.filter(
            pk=command.pk,
            status=Command.Status.SENT,
            claimed_by=command.claimed_by,
            claims=command.claims,
            expires_at__gt=now,
        ).update(claimed_by=claimer, claims=F("claims") + 1)
        if taken:
            logger.info(
                "command %s: its claimer %s is gone; sent again by %s",
                command.code.hex,
                command.claimed_by,
                claimer,
            )
            command.claimed_by = claimer
            command.claims += 1
            won.append(command)
    return won


def command_release(*, command_id: str, claimer: str) -> None:
    """Bridge: a command it claimed did not get on the wire (the broker went down):
    back to pending, for the next sweep or its timeout."""
    Command.objects.filter(
        code=protocol_code(command_id),
        status=Command.Status.SENT,
        claimed_by=claimer,
    ).update(
        status=Command.Status.PENDING,
        sent_at=None,
        claimed_by="",
        claims=F("claims") - 1,
    )


def _finish(
    *,
    command: Command,
    status: str,
    error: str = "",
    data: dict | None = None,
    from_statuses=OPEN,
) -> bool:
    now = timezone.now()
    with transaction.atomic():
        done = Command.objects.filter(pk=command.pk, status__in=from_statuses).update(
            status=status, error=error[:300], completed_at=now
        )
        if not done:
            return False
        command.status, command.error, command.completed_at = status, error[:300], now
        created_at = command.__dict__.get("created_at")
        transaction.on_commit(lambda: command_reached(status, created_at))
        _event(command=command, data=data)
    return True


def command_complete(*, command: Command, data: dict | None = None) -> bool:
    """The device confirmed the command; False when it was already final."""
    return _finish(command=command, status=Command.Status.DONE, data=data)


def command_fail(
    *,
    command: Command,
    error: str,
    status: str = Command.Status.FAILED,
    data: dict | None = None,
) -> bool:
    """The command failed (or, with status timed_out, timed out) with a reason."""
    return _finish(command=command, status=status, error=error, data=data)


def command_ack(
    *,
    device_pk: int,
    command_id: str,
    ok: bool,
    error: str | None = None,
    reason: str | None = None,
) -> Command | None:
    """A ps1 device acknowledged `cmd` id. Scoped to that device, so one device can
    never complete another's command. A late success still counts: the device did
    execute it."""
    try:
        code = protocol_code(command_id)
        command = Command.objects.select_related("actor").get(
            device_id=device_pk, code=code
        )
    except (Command.DoesNotExist, ValueError):
        return None
    if ok:
        finished = _finish(
            command=command,
            status=Command.Status.DONE,
            from_statuses=(*OPEN, Command.Status.TIMED_OUT),
        )
    else:
        finished = _finish(
            command=command,
            status=Command.Status.FAILED,
            error=command_ack_error(error=error, reason=reason),
            data={"ack_error": error},
        )
    return command if finished else None


def command_ack_error(*, error: str | None, reason: str | None) -> str:
    """Pure: the words for a ps1 device's refusal."""
    text = ACK_ERRORS.get(error or "failed", "The device refused the command")
    return f"{text}: {reason}" if reason else text


def command_answer(
    *,
    command_id: str,
    ok: bool,
    error: str | None = None,
    reason: str | None = None,
) -> dict | None:
    """Pure: what the pool's page is told the moment the bridge hears a ps1 ack, before
    the write (command_ack then writes it and tells the page again, whole): the code
    and final status of contract 3's pool.command. None for an id that is not a
    command's (a credentials rotation's ack)."""
    try:
        code = protocol_code(command_id)
    except ValueError:
        return None
    if ok:
        return {"code": code.hex, "status": Command.Status.DONE, "error": ""}
    text = command_ack_error(error=error, reason=reason)[:300]
    return {"code": code.hex, "status": Command.Status.FAILED, "error": text}


def protocol_code(command_id: str) -> uuid.UUID:
    """The Command.code of a cmd id (the bridge sends code.hex)."""
    return uuid.UUID(hex=command_id)


def commands_expire(*, now: dt.datetime | None = None, limit: int = 500) -> int:
    """Turn every open command past its expiry into a visible timeout."""
    now = now or timezone.now()
    expired = list(
        Command.objects.select_related("actor")
        .filter(status__in=OPEN, expires_at__lte=now)
        .order_by("expires_at")[:limit]
    )
    count = 0
    for command in expired:
        if command.status == Command.Status.SENT:
            error = "The device did not confirm the command in time"
        else:
            error = "The command could not be delivered: no connection to the device"
        count += command_fail(
            command=command, error=error, status=Command.Status.TIMED_OUT
        )
    return count


def commands_match_device_state(*, awaiting: list[dict]) -> list[Command]:
    """Complete sent v3.1 commands whose expected value the stored device state
    already shows, reported after the command was sent. This catches reports that
    another bridge (sharing the broker) received."""
    if not awaiting:
        return []
    states = dict(
        Device.objects.filter(
            pk__in={row["device_id"] for row in awaiting}
        ).values_list("pk", "state")
    )
    done = []
    for row in awaiting:
        state = states.get(row["device_id"]) or {}
        kind = (row["expected"] or {}).get("kind")
        updated = state.get("updated_at")
        if kind not in state or not updated:
            continue
        try:
            reported_at = dt.datetime.fromisoformat(updated)
        except (TypeError, ValueError):
            continue
        if command_v31_done(
            expected=row["expected"],
            kind=kind,
            value=state[kind],
            reported_at=reported_at.timestamp(),
            sent_at=row["sent_at"].timestamp(),
        ):
            command = Command.objects.select_related("actor").get(pk=row["pk"])
            if command_complete(command=command):
                done.append(command)
    return done
