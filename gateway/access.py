"""What the gateway consumer asks of the database, synchronous (the consumer runs these
in a thread). Only through the access layer and the services: tenants.auth for the
caller, devices.selectors for the tenant's devices and pools, command_send for a
publish."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from devices.selectors import devices_for_member, pool_get_for_member
from poolsaas.request_context import RequestContext, bind_request_context
from tenants.auth import Caller, caller_check, caller_still_valid

logger = logging.getLogger(__name__)

# The audit trail's name for commands published through the gateway.
SOURCE = "gateway"


@dataclass(frozen=True, slots=True)
class DeviceView:
    """One device of the caller's tenant as the gateway shows it."""

    pool_hex: str
    prefix: str
    device_id: str
    protocol: str
    state: dict[str, Any]
    online: bool

    @property
    def root(self) -> str:
        return f"{self.prefix}/{self.device_id}"


def tenant_devices(caller: Caller) -> list[DeviceView]:
    """The devices of the caller's tenant that belong to a pool (the only topics a
    gateway client can see)."""
    return [
        DeviceView(
            pool_hex=device.pool.code.hex,
            prefix=device.topic_prefix,
            device_id=device.device_id,
            protocol=device.protocol,
            state=dict(device.state or {}),
            online=bool(device.online),
        )
        for device in devices_for_member(membership=caller.membership)
        if device.pool_id is not None
    ]


def caller_recheck(caller: Caller) -> Caller:
    """The caller read again with every check (NotAuthenticated, NotAMember,
    TenantSuspended, TwoFactorRequired when it may no longer act)."""
    caller = caller_still_valid(caller)
    caller_check(caller)
    return caller


def gateway_command_send(
    *, caller: Caller, pool_hex: str, op: str, value: Any, context: RequestContext
):
    """command_send for a publish, with a fresh login and membership: a password
    changed or a role lowered a moment ago counts now, even if its access.changed is
    still on its way. Raises what command_send and the re-check raise."""
    from devices.services.commands import command_send

    membership = caller_recheck(caller).membership
    pool = pool_get_for_member(membership=membership, code=pool_hex)
    with bind_request_context(context):
        return command_send(
            membership=membership, pool=pool, op=op, value=value, source=SOURCE
        )
