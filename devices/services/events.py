"""A pool's event log (DeviceEvent): the one way services add a line to it, and the
words the log shows for each kind of event."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from devices.models import Device, DeviceEvent, Pool
from poolsaas.live import messages
from poolsaas.live.groups import broadcast, pool_group
from tenants.models import User

# The badge the pool page shows before each event's message (the message says the
# rest: "Program 1 started (Cascada, until 13:00)"). A kind missing here still reads
# as words (see event_label), never as a dotted identifier.
EVENT_LABELS = {
    "command.pending": "Waiting",
    "command.sent": "Sent",
    "command.done": "Done",
    "command.failed": "Failed",
    "command.timed_out": "No answer",
    "online": "Online",
    "offline": "Offline",
    "programs.updated": "Programs",
    "program_start": "Program",
    "program_stop": "Program",
    "config.applied": "Settings",
    "config.rejected": "Settings",
    "config.published": "Settings",
    "device.added": "Device",
    "device.removed": "Device",
    "device.replaced": "Device",
    "device.boot": "Device",
    "device.program_start": "Program",
    "device.program_stop": "Program",
    "device.timer_start": "Timer",
    "device.timer_end": "Timer",
    "device.override": "Paused",
    "device.freeze_protect": "Frost",
    "device.max_runtime": "Limit",
    "device.error": "Error",
}
# The tone of the label's badge on the page.
EVENT_TONES = {
    "command.done": "ok",
    "command.failed": "bad",
    "command.timed_out": "bad",
    "command.sent": "pending",
    "command.pending": "pending",
    "online": "ok",
    "offline": "bad",
    "config.applied": "ok",
    "config.rejected": "bad",
    "device.error": "bad",
}


def event_label(kind: str) -> str:
    """The words for an event kind: "programs.updated" -> "Programs saved"."""
    if kind in EVENT_LABELS:
        return EVENT_LABELS[kind]
    words = kind.split(".", 1)[-1].replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words else "Event"


def event_as_dict(event: DeviceEvent) -> dict:
    """An event as the pool page, its snapshot and its live updates show it. `code`
    is stable: a command's one entry is sent again, same code, when its status
    changes, and the page updates it in place."""
    return event_payload(
        code=event.code.hex,
        kind=event.kind,
        message=event.message,
        ts=event.ts.isoformat() if event.ts else None,
        actor=event.actor.email if event.actor_id and event.actor else None,
    )


def event_payload(
    *, code: str | None, kind: str, message: str, ts: str | None, actor: str | None
) -> dict:
    """The one shape of an event on the page, stored (event_as_dict) or just reported
    by the bridge (no code yet: the page keys it by time, kind and message)."""
    return {
        "code": code,
        "kind": kind,
        "label": event_label(kind),
        "tone": EVENT_TONES.get(kind, ""),
        "message": message,
        "ts": ts,
        "actor": actor,
    }


def device_presence_event(
    *, online: bool, silent_for: float | None = None
) -> tuple[str, str, dict]:
    """(kind, message, data) of a device coming online or going offline, as the
    bridge and the silence sweep record and show it; `silent_for` is the silence
    window when it went offline for saying nothing (not for its last will)."""
    if online:
        return "online", "Device online", {}
    if silent_for is None:
        return "offline", "Device offline", {}
    return (
        "offline",
        f"Device offline (no message for {int(silent_for)} s)",
        {"reason": "silence"},
    )


def pool_event_broadcast(*, pool_code, event: DeviceEvent) -> None:
    """Show a new or changed event live on the pool's page (after commit)."""
    broadcast(
        pool_group(pool_code),
        messages.pool_event(pool=pool_code.hex, event=event_as_dict(event)),
    )


def pool_event_record(
    *,
    pool: Pool,
    kind: str,
    message: str,
    data: dict,
    ts: dt.datetime | None = None,
    device: Device | None = None,
    actor: User | None = None,
) -> DeviceEvent:
    """Store an event on the pool's log and show it live on the pool's page (after
    commit). The message is cut to the column's 300 characters."""
    event = DeviceEvent.objects.create(
        tenant_id=pool.tenant_id,
        pool=pool,
        device=device,
        ts=ts or timezone.now(),
        kind=kind,
        message=message[:300],
        data=data,
        actor=actor,
    )
    pool_event_broadcast(pool_code=pool.code, event=event)
    return event
