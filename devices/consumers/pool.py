"""/ws/pools/<pool code>/: one pool's live page (a snapshot, the pool group's deltas)
and its commands, which go through command_send like every other entry point."""

import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.utils import timezone

from devices.consumers.base import (
    CLOSE_FORBIDDEN,
    CLOSE_NOT_FOUND,
    CLOSE_UNAUTHENTICATED,
    SOURCE,
    LiveConsumer,
)
from devices.selectors import pool_get_for_member, pool_snapshot
from poolsaas.live import groups as broadcast
from poolsaas.request_context import bind_request_context
from tenants.auth import NotAuthenticated, caller_still_valid
from tenants.selectors import parse_code

logger = logging.getLogger(__name__)

# Per socket: a burst of COMMAND_BURST, refilled at COMMAND_RATE per second.
COMMAND_RATE = 5.0
COMMAND_BURST = 5.0


class PoolConsumer(LiveConsumer):
    """One pool's live page: snapshot, deltas, commands."""

    async def parse_target(self):
        self.pool_code = parse_code(self.scope["url_route"]["kwargs"]["code"])
        self.live_group = broadcast.pool_group(self.pool_code)
        self.pool = None
        self.tokens = COMMAND_BURST
        self.tokens_at = time.monotonic()
        self.refs: dict[str, Any] = {}

    def resolve_target(self, membership) -> None:
        self.pool = pool_get_for_member(membership=membership, code=self.pool_code)

    async def snapshot(self) -> dict:
        return {"type": "snapshot", **await self._pool_snapshot()}

    @database_sync_to_async
    def _pool_snapshot(self) -> dict:
        # Read the pool again: its override and names change while the socket lives.
        self.pool = pool_get_for_member(membership=self.membership, code=self.pool_code)
        return pool_snapshot(membership=self.membership, pool=self.pool)

    def check_object(self, membership) -> None:
        pool_get_for_member(membership=membership, code=self.pool_code)

    def _take_token(self) -> bool:
        now = time.monotonic()
        self.tokens = min(
            COMMAND_BURST, self.tokens + (now - self.tokens_at) * COMMAND_RATE
        )
        self.tokens_at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    async def handle(self, kind, content: dict):
        if kind == "command":
            await self.command(content)
        elif kind == "ping":
            await self.send_json({"type": "pong", "now": timezone.now().isoformat()})
        elif kind == "snapshot":
            await self._send_snapshot()
        else:
            await super().handle(kind, content)

    async def command(self, content: dict):
        ref = content.get("ref")
        if not isinstance(ref, (str, int)) or isinstance(ref, bool):
            ref = None
        op = content.get("op")
        if not isinstance(op, str):
            await self.send_json(
                {"type": "error", "ref": ref, "message": "A command needs an op."}
            )
            return
        if not self._take_token():
            await self.send_json(
                {
                    "type": "error",
                    "ref": ref,
                    "message": f"Too many commands: at most {COMMAND_RATE:g} per "
                    "second on one connection. Wait a moment and try again.",
                }
            )
            return
        try:
            command = await self._send_command(op, content.get("value"))
        except PermissionDenied as exc:
            message = str(exc) or "You may not control this pool."
            await self.send_json({"type": "error", "ref": ref, "message": message})
            return
        except ValidationError as exc:
            await self.send_json(
                {"type": "error", "ref": ref, "message": " ".join(exc.messages)}
            )
            return
        except Http404:
            await self._fail("This pool is gone.", CLOSE_NOT_FOUND)
            return
        except NotAuthenticated as exc:
            await self._fail(str(exc), CLOSE_UNAUTHENTICATED)
            return
        except Exception:
            # A value the service did not expect must not take the socket down.
            logger.exception("command over the socket failed")
            await self.send_json(
                {
                    "type": "error",
                    "ref": ref,
                    "message": "This command could not be sent: check its value.",
                }
            )
            return
        code = command.code.hex
        self.refs[code] = ref
        await self.send_json(
            {
                "type": "command",
                "ref": ref,
                "code": code,
                "op": command.op,
                "value": command.value,
                "status": command.status,
                "error": command.error,
            }
        )

    @database_sync_to_async
    def _send_command(self, op: str, value):
        from devices.services.commands import command_send

        # Fresh login, membership and pool: a password changed or a role lowered a
        # moment ago counts now, even if its access.changed is still on its way.
        membership = caller_still_valid(self.caller).membership
        pool = pool_get_for_member(membership=membership, code=self.pool_code)
        # The audit trail says "websocket", with this client's address and agent
        # (the web middleware that binds them for pages never runs here).
        with bind_request_context(self.request_context()):
            return command_send(
                membership=membership, pool=pool, op=op, value=value, source=SOURCE
            )

    # --- deltas from the pool group -------------------------------------------------

    async def pool_state(self, message):
        await self.send_json(
            {
                "type": "state",
                "state": message.get("state") or {},
                "online": message.get("online"),
                "last_seen": message.get("last_seen"),
                "now": timezone.now().isoformat(),
            }
        )

    async def pool_command(self, message):
        command = dict(message.get("command") or {})
        code = command.get("code")
        out = {"type": "command", **command}
        if code in self.refs:
            out["ref"] = self.refs[code]
            if command.get("status") in ("done", "failed", "timed_out"):
                self.refs.pop(code, None)
        await self.send_json(out)

    async def pool_event(self, message):
        await self.send_json({"type": "event", "event": message.get("event") or {}})

    async def pool_alert(self, message):
        # An alert of this pool fired, was acknowledged or resolved (alerts.services).
        await self.send_json({"type": "alert", "alert": message.get("alert") or {}})

    async def pool_settings(self, message):
        # Names or programs changed elsewhere: the page reloads its snapshot.
        await self._send_snapshot()

    async def _send_snapshot(self):
        try:
            snapshot = await self.snapshot()
        except Http404:
            await self._fail("This pool is gone.", CLOSE_NOT_FOUND)
        except PermissionDenied:
            await self._fail("Your access to this was withdrawn.", CLOSE_FORBIDDEN)
        else:
            await self.send_json(snapshot)
