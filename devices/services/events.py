"""A pool's event log (DeviceEvent): the one way services add a line to it."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from devices.broadcast import broadcast, pool_group
from devices.models import Device, DeviceEvent, Pool
from tenants.models import User


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
    broadcast(
        pool_group(pool.code),
        {
            "type": "pool.event",
            "pool": pool.code.hex,
            "event": {
                "kind": event.kind,
                "message": event.message,
                "ts": event.ts.isoformat(),
                "actor": actor.email if actor is not None else None,
            },
        },
    )
    return event
