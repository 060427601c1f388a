"""What both live sockets share: the handshake (a session or an access token, resolved
by tenants.auth), the user group and the access re-checks, the per-socket message rate
limit and the bounded JSON parsing."""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404

from billing import metering
from billing.metering import DASHBOARD_SOCKET_MINUTES
from gateway.usage import SocketUsage
from poolsaas.api.parsers import json_loads_bounded
from poolsaas.live import groups as broadcast
from poolsaas.live import messages
from poolsaas.metrics import SocketCount
from poolsaas.middleware import _client_ip
from poolsaas.request_context import RequestContext
from tenants.auth import (
    Caller,
    NotAuthenticated,
    bearer_token,
    caller_check,
    caller_from_access_token,
    caller_from_session,
    caller_still_valid,
)
from tenants.roles import Action, role_allows, role_at_least
from tenants.selectors import membership_require

logger = logging.getLogger(__name__)

CLOSE_BAD_MESSAGE = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_AUTH_TIMEOUT = 4408

AUTH_TIMEOUT_SECONDS = 10
# The largest client message read: commands and catch-up requests are small, and
# anything bigger is refused before it is parsed.
MAX_MESSAGE_CHARS = 16 * 1024
# The audit trail's name for changes made over these sockets.
SOURCE = "websocket"
# Per socket, every message (snapshots cost queries too).
MESSAGE_RATE = 10.0
MESSAGE_BURST = 20.0
# Channel messages whose handlers touch no database: run at once on the loop, without
# channels' per-message hop to the database thread (AsyncConsumer.dispatch awaits
# close_old_connections there first, on the one thread every query of the process
# shares). Handlers that do query go through database_sync_to_async, which closes old
# connections itself.
NO_DATABASE = frozenset(
    {
        messages.POOL_STATE,
        messages.POOL_COMMAND,
        messages.POOL_EVENT,
        messages.POOL_ALERT,
        messages.TENANT_POOL,
        messages.TENANT_ALERT,
    }
)


async def dispatch_live(consumer, message, base_dispatch) -> None:
    """Dispatch a channel message: unknown types are skipped (a newer sender) rather
    than crashing the socket, database-free ones run without the thread hop."""
    handler = getattr(consumer, get_handler_name(message), None)
    if handler is None:
        logger.debug("ignored channel message %r", message.get("type"))
        return
    if message.get("type") in NO_DATABASE:
        await handler(message)
        return
    await base_dispatch(message)


def usage_heartbeat() -> float:
    """Seconds between two hand-overs of a socket's minutes to billing.metering."""
    return float(getattr(settings, "LIVE_USAGE_HEARTBEAT_SECONDS", 60))


# Metering's Redis round trip, off the event loop.
_meter = sync_to_async(metering.add_many, thread_sensitive=False)


class Bucket:
    """A token bucket: `burst` at once, refilled at `rate` per second."""

    def __init__(self, *, rate: float, burst: float):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """Authentication, the user group and access re-checks shared by both sockets.

    Subclasses say what they show: parse_target (the URL), resolve_target (the object
    and live_group, for a caller's membership), check_object (again, on re-checks) and
    snapshot (sent once joined).
    """

    # The group this socket shows; set by subclasses once authorised.
    live_group: str | None = None

    async def connect(self):
        self.socket_count = SocketCount("live")
        self.socket_count.opened()
        self.caller: Caller | None = None
        self.groups_joined: list[str] = []
        self._auth_timer = None
        self._expiry_timer = None
        # Socket minutes of the caller's tenant (billing), from authorisation on.
        self.usage: SocketUsage | None = None
        self._usage_beat = None
        self.client_ip, self.user_agent = self._client()
        self.message_bucket = Bucket(rate=MESSAGE_RATE, burst=MESSAGE_BURST)
        try:
            await self.parse_target()
        except Http404:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        token = bearer_token(self._header(b"authorization"))
        session_user = self.scope.get("user")
        if token:
            await self.authorise(self._from_token(token), accept_first=True)
        elif session_user is not None and session_user.is_authenticated:
            await self.authorise(self._from_session(session_user), accept_first=True)
        else:
            # Integrators may authenticate with their first message.
            await self.accept()
            self._auth_timer = asyncio.get_running_loop().call_later(
                AUTH_TIMEOUT_SECONDS, self._auth_timeout
            )

    @property
    def membership(self):
        return self.caller.membership if self.caller is not None else None

    def _from_token(self, token: str) -> Callable[[], Caller]:
        # Unchecked: the object's own access check comes first (a made-up pool is
        # "not found" for everybody), then caller_check.
        return lambda: caller_from_access_token(token, check=False)

    def _from_session(self, user) -> Callable[[], Caller]:
        return lambda: caller_from_session(
            user=user, session=self.scope.get("session"), check=False
        )

    def _header(self, name: bytes) -> str:
        for key, value in self.scope.get("headers", []):
            if key == name:
                return value.decode("latin1")
        return ""

    def _client(self) -> tuple[str | None, str]:
        """The client's address (behind our trusted proxies, as for web requests)
        and user agent, for the audit trail of what this socket changes."""
        peer = (self.scope.get("client") or [None])[0]
        meta = {
            "REMOTE_ADDR": peer,
            "HTTP_X_FORWARDED_FOR": self._header(b"x-forwarded-for"),
        }
        return _client_ip(meta), self._header(b"user-agent")[:400]

    def request_context(self) -> RequestContext:
        """Who and where, bound around every service call made for this socket."""
        return RequestContext(
            ip=self.client_ip, user_agent=self.user_agent, source=SOURCE
        )

    def _auth_timeout(self):
        if self.caller is None:
            asyncio.ensure_future(self._fail("Authenticate first.", CLOSE_AUTH_TIMEOUT))

    async def _fail(self, message: str, code: int):
        self._live_closed = True
        try:
            await self.send_json({"type": "error", "message": message})
        except Exception:  # noqa: BLE001 - the socket may be gone already
            logger.debug("could not send the closing reason", exc_info=True)
        await self.close(code=code)

    def _token_expired(self):
        asyncio.ensure_future(
            self._fail(
                "Your access token expired: reconnect with a fresh one.",
                CLOSE_UNAUTHENTICATED,
            )
        )

    async def authorise(self, resolve: Callable[[], Caller], *, accept_first: bool):
        """Resolve the caller and the object, then accept, join and snapshot."""
        try:
            caller = await database_sync_to_async(self._authorise)(resolve)
        except NotAuthenticated as exc:
            return await self._refuse(str(exc), CLOSE_UNAUTHENTICATED, accept_first)
        except Http404:
            return await self._refuse("Not found.", CLOSE_NOT_FOUND, accept_first)
        except PermissionDenied as exc:
            return await self._refuse(str(exc), CLOSE_FORBIDDEN, accept_first)
        self.caller = caller
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        if caller.expires_at is not None:
            # A socket lives no longer than the token that opened it.
            self._expiry_timer = asyncio.get_running_loop().call_later(
                max(0.0, caller.expires_at - time.time()), self._token_expired
            )
        # Join before the snapshot, so nothing that changes in between is lost: a
        # delta older than the snapshot is harmless, a missed one is not.
        for group in (self.live_group, broadcast.user_group(caller.user.code)):
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.append(group)
        await broadcast.watch_announce(self.channel_layer, self.live_group)
        if accept_first:
            await self.accept()
        self.usage = SocketUsage(
            caller.membership.tenant_id,
            time.monotonic(),
            minutes_kind=DASHBOARD_SOCKET_MINUTES,
        )
        self._usage_beat = asyncio.ensure_future(self._usage_heartbeat())
        await self.send_json(await self.snapshot())

    async def _usage_heartbeat(self):
        """Hand the socket's started minutes to metering every usage_heartbeat()
        seconds (the rest at the close): a web process that dies loses no more than
        one heartbeat's worth."""
        while True:
            await asyncio.sleep(usage_heartbeat())
            usage = self.usage
            if usage is None:
                return
            await _meter(usage.drain(time.monotonic()))

    async def _usage_end(self):
        beat, self._usage_beat = self._usage_beat, None
        if beat is not None:
            beat.cancel()
        usage, self.usage = self.usage, None
        if usage is not None:
            await _meter(usage.drain(time.monotonic()))

    def _authorise(self, resolve: Callable[[], Caller]) -> Caller:
        caller = resolve()
        self.resolve_target(caller.membership)
        caller_check(caller)
        return caller

    async def _refuse(self, message: str, code: int, accept_first: bool):
        if accept_first:
            # Not accepted yet: the handshake is refused (HTTP 403 to the browser).
            await self.close(code=code)
        else:
            await self._fail(message, code)

    async def dispatch(self, message):
        await dispatch_live(self, message, super().dispatch)

    async def disconnect(self, code):
        if hasattr(self, "socket_count"):
            self.socket_count.closed()
        for timer in (self._auth_timer, self._expiry_timer):
            if timer is not None:
                timer.cancel()
        await self._usage_end()
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = []

    async def receive_json(self, content: Any, **kwargs):
        if not isinstance(content, dict):
            await self.send_json({"type": "error", "message": "Send JSON objects."})
            return
        kind = content.get("type")
        if self.caller is None:
            token = content.get("token")
            if kind == "auth" and isinstance(token, str) and token:
                await self.authorise(self._from_token(token), accept_first=False)
            else:
                await self._fail(
                    'Authenticate first: {"type": "auth", "token": "<access token>"}.',
                    CLOSE_UNAUTHENTICATED,
                )
            return
        await self.handle(kind, content)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        # Refused here, before parsing: binary frames (the JSON consumer would raise
        # and drop the socket) and messages too big to be anything we expect.
        if not self.message_bucket.take():
            await self.send_json(
                {
                    "type": "error",
                    "message": f"Too many messages: at most {MESSAGE_RATE:g} per "
                    "second on one connection.",
                }
            )
            return
        if text_data is None:
            await self.send_json(
                {"type": "error", "message": "Send JSON text messages, not binary."}
            )
            return
        if len(text_data) > MAX_MESSAGE_CHARS:
            await self.send_json(
                {
                    "type": "error",
                    "message": f"Message too large: at most {MAX_MESSAGE_CHARS} "
                    "characters.",
                }
            )
            return
        await super().receive(text_data=text_data, **kwargs)

    async def decode_json(self, text_data):
        try:
            # Depth-checked before parsing: what a handler walks next cannot recurse
            # past the interpreter's limit.
            return json_loads_bounded(text_data)
        except ValueError:
            # Not JSON, or nested too deep: answered as "not an object".
            return None

    async def handle(self, kind, content: dict):
        await self.send_json(
            {"type": "error", "message": f"Unknown message type {kind!r}."}
        )

    # --- channel-layer messages -----------------------------------------------------

    async def access_changed(self, message):
        previous = self.caller.membership.role
        try:
            self.caller = await self._recheck()
        except (Http404, PermissionDenied, NotAuthenticated):
            await self._fail("Your access to this was withdrawn.", CLOSE_FORBIDDEN)
            return
        role = self.caller.membership.role
        if not role_at_least(role, previous):
            # A lower role loses the socket (issue 4): what it was sent under the old
            # role is not what it may see now; the page reloads under the new one.
            await self._fail(
                f"Your role changed to {role}: reload the page.", CLOSE_FORBIDDEN
            )
            return
        await self.send_json(
            {
                "type": "access",
                "role": role,
                "can_control": role_allows(role, Action.CONTROL),
            }
        )

    async def live_resync(self, message):
        """This socket fell behind and its backlog was dropped (poolsaas.live.layer):
        access is checked again (an access.changed may have been among what was
        dropped), then the whole current state is sent again."""
        if self.caller is None:
            return
        await self.access_changed(message)
        if self._closing():
            return
        try:
            snapshot = await self.snapshot()
        except Http404:
            await self._fail("Not found.", CLOSE_NOT_FOUND)
        except PermissionDenied:
            await self._fail("Your access to this was withdrawn.", CLOSE_FORBIDDEN)
        else:
            await self.send_json(snapshot)

    def _closing(self) -> bool:
        return bool(getattr(self, "_live_closed", False))

    # --- what subclasses show -------------------------------------------------------

    async def parse_target(self):
        """Parse the URL's object code (Http404 when malformed)."""

    def resolve_target(self, membership) -> None:
        """The object this socket shows, for this membership (sync: DB); sets
        live_group. Http404 or PermissionDenied when it may not be shown."""
        self.check_object(membership)

    def check_object(self, membership) -> None:
        membership_require(membership=membership, action=Action.VIEW)

    async def snapshot(self) -> dict:
        """The first message, sent once the socket has joined its groups."""
        raise NotImplementedError

    @database_sync_to_async
    def _recheck(self) -> Caller:
        # The login, the membership (in the same tenant) and the object, read again.
        caller = caller_still_valid(self.caller)
        caller_check(caller)
        self.check_object(caller.membership)
        return caller
