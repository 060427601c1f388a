"""WebSocket consumers of the live dashboard.

PoolConsumer (/ws/pools/<pool code>/) feeds one pool's page: a snapshot on connect, then
the pool group's deltas; commands sent on it go through command_send like every other
entry point. TenantConsumer (/ws/tenant/) feeds the pools overview.

Authentication: the browser's session cookie, or (integrators) a simplejwt access token
in an `Authorization: Bearer` header or in the first message {"type": "auth", "token"}.
Never from the URL, which ends up in logs. Authorisation: the access layer, on connect
and again whenever the user's access changes (user group "access.changed").

Close codes: 4400 bad message, 4401 not authenticated (or token expired), 4403 not
allowed (or no longer: removed, role lowered, tenant suspended), 4404 no such pool
(missing and foreign alike), 4408 no auth message in time.

Client messages are JSON text of at most MAX_MESSAGE_CHARS, rate-limited per socket;
anything else is answered with an error and never ends the socket. Commands are audited
with source "websocket" and the client's address and user agent.
"""

import asyncio
import logging
import time
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.utils import timezone

from devices.selectors import pool_get_for_member, pool_snapshot, pools_live_state
from poolsaas.api.authentication import TENANT_CLAIM
from poolsaas.api.parsers import json_loads_bounded
from poolsaas.live import groups as broadcast
from poolsaas.middleware import _client_ip
from poolsaas.request_context import RequestContext, bind_request_context
from tenants.middleware import SESSION_KEY
from tenants.roles import Action, role_allows, role_at_least, two_factor_required_for
from tenants.selectors import (
    membership_for_user,
    membership_require,
    parse_code,
)

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
# Per socket: a burst of COMMAND_BURST, refilled at COMMAND_RATE per second.
COMMAND_RATE = 5.0
COMMAND_BURST = 5.0
# Per socket, every message (snapshots cost queries too): a looser bucket.
MESSAGE_RATE = 10.0
MESSAGE_BURST = 20.0


class NotAuthenticated(Exception):
    pass


def _user_from_jwt(token: str):
    """The user, tenant claim, expiry and validated token of a valid access token
    (sync: DB). The same user checks as the API (TenantJWTAuthentication)."""
    from rest_framework.exceptions import AuthenticationFailed as ApiAuthFailed
    from rest_framework_simplejwt.exceptions import (
        AuthenticationFailed,
        InvalidToken,
        TokenError,
    )

    from poolsaas.api.authentication import TenantJWTAuthentication

    auth = TenantJWTAuthentication()
    try:
        validated = auth.get_validated_token(token)
        user = auth.get_user(validated)
    except (InvalidToken, TokenError, AuthenticationFailed, ApiAuthFailed) as exc:
        raise NotAuthenticated("Invalid or expired token.") from exc
    if not user.is_active:
        raise NotAuthenticated("This account is disabled.")
    return user, validated.get(TENANT_CLAIM), validated.get("exp"), validated


def _login_still_valid(consumer) -> None:
    """NotAuthenticated once the login behind a socket has ended: its session was
    logged out or made with an old password, or its token's password or epoch is
    no longer the user's (sync: DB). Refreshes consumer.user."""
    from rest_framework.exceptions import AuthenticationFailed

    from poolsaas.api.authentication import token_user_check
    from tenants.models import User
    from tenants.selectors import session_is_current

    user = User.objects.filter(pk=consumer.user.pk, is_active=True).first()
    if user is None:
        raise NotAuthenticated("This account is disabled.")
    if consumer.from_jwt:
        try:
            token_user_check(user=user, token=consumer.jwt)
        except AuthenticationFailed as exc:
            raise NotAuthenticated(str(exc.detail)) from None
    else:
        session = consumer.scope.get("session")
        key = session.session_key if session is not None else None
        if not session_is_current(session_key=key, user=user):
            # Logged out, or the password changed: its sockets end with it.
            raise NotAuthenticated("You are logged out.")
    consumer.user = user


def _second_factor_check(consumer, membership) -> None:
    """PermissionDenied when the tenant requires a second factor of this member's
    role and the socket's login did not pass one (the pages and the API refuse the
    same logins)."""
    from django_otp import DEVICE_ID_SESSION_KEY

    if not two_factor_required_for(membership=membership):
        return
    if consumer.from_jwt:
        passed = bool(consumer.jwt.get("otp"))
    else:
        session = consumer.scope.get("session")
        passed = session is not None and bool(session.get(DEVICE_ID_SESSION_KEY))
    if not passed:
        raise PermissionDenied(
            f"{membership.tenant.name} requires two-factor authentication: log in "
            "again with your code."
        )


def _membership_for(user, tenant_code, *, from_jwt: bool):
    """The membership a socket acts as.

    Session: the tenant chosen in the session (as on the pages), else the first.
    JWT: the token's "tenant" claim; without one, the only membership the user has.
    """
    if from_jwt and tenant_code is None:
        from tenants.selectors import memberships_for_user

        memberships = list(memberships_for_user(user=user)[:2])
        if len(memberships) != 1:
            raise NotAuthenticated(
                "This token names no tenant and you are in several (or none)."
            )
        return memberships[0]
    if tenant_code is not None:
        try:
            return membership_for_user(user=user, tenant_code=tenant_code)
        except Http404:
            if from_jwt:
                raise
    return membership_for_user(user=user)


class _Bucket:
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


class _LiveConsumer(AsyncJsonWebsocketConsumer):
    """Authentication, the user group and access re-checks shared by both sockets."""

    # The group this socket shows; set by subclasses once authorised.
    live_group: str | None = None

    async def connect(self):
        self.user = None
        self.membership = None
        self.tenant_code = None
        self.from_jwt = False
        self.jwt = None
        self.groups_joined: list[str] = []
        self._auth_timer = None
        self._expiry_timer = None
        self.client_ip, self.user_agent = self._client()
        self.message_bucket = _Bucket(rate=MESSAGE_RATE, burst=MESSAGE_BURST)
        try:
            await self.parse_target()
        except Http404:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        token = self._bearer_token()
        session_user = self.scope.get("user")
        if token:
            await self.authenticate_token(token, accept_first=True)
        elif session_user is not None and session_user.is_authenticated:
            self.user = session_user
            self.tenant_code = await self._session_tenant()
            await self.authorise(accept_first=True)
        else:
            # Integrators may authenticate with their first message.
            await self.accept()
            self._auth_timer = asyncio.get_running_loop().call_later(
                AUTH_TIMEOUT_SECONDS, self._auth_timeout
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

    def _bearer_token(self) -> str | None:
        for name, value in self.scope.get("headers", []):
            if name == b"authorization":
                kind, _, token = value.decode("latin1").partition(" ")
                if kind.lower() == "bearer" and token.strip():
                    return token.strip()
        return None

    @database_sync_to_async
    def _session_tenant(self):
        session = self.scope.get("session")
        return session.get(SESSION_KEY) if session is not None else None

    def _auth_timeout(self):
        if self.membership is None:
            asyncio.ensure_future(self._fail("Authenticate first.", CLOSE_AUTH_TIMEOUT))

    async def _fail(self, message: str, code: int):
        try:
            await self.send_json({"type": "error", "message": message})
        except Exception:  # noqa: BLE001 - the socket may be gone already
            logger.debug("could not send the closing reason", exc_info=True)
        await self.close(code=code)

    async def authenticate_token(self, token: str, *, accept_first: bool):
        try:
            (
                self.user,
                self.tenant_code,
                exp,
                self.jwt,
            ) = await database_sync_to_async(_user_from_jwt)(token)
        except NotAuthenticated as exc:
            if accept_first:
                await self.close(code=CLOSE_UNAUTHENTICATED)
            else:
                await self._fail(str(exc), CLOSE_UNAUTHENTICATED)
            return
        self.from_jwt = True
        if isinstance(exp, (int, float)):
            # A socket lives no longer than the token that opened it.
            self._expiry_timer = asyncio.get_running_loop().call_later(
                max(0.0, exp - time.time()), self._token_expired
            )
        await self.authorise(accept_first=accept_first)

    def _token_expired(self):
        asyncio.ensure_future(
            self._fail(
                "Your access token expired: reconnect with a fresh one.",
                CLOSE_UNAUTHENTICATED,
            )
        )

    async def authorise(self, *, accept_first: bool):
        """Resolve the membership and the object, then accept, join and snapshot."""
        try:
            self.membership, snapshot = await self._resolve()
            if two_factor_required_for(membership=self.membership):
                # Only then a hop to a worker thread (the session may be read).
                await database_sync_to_async(_second_factor_check)(
                    self, self.membership
                )
        except NotAuthenticated as exc:
            return await self._refuse(str(exc), CLOSE_UNAUTHENTICATED, accept_first)
        except Http404:
            return await self._refuse("Not found.", CLOSE_NOT_FOUND, accept_first)
        except PermissionDenied as exc:
            return await self._refuse(str(exc), CLOSE_FORBIDDEN, accept_first)
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        # Join before the snapshot, so nothing that changes in between is lost: a
        # delta older than the snapshot is harmless, a missed one is not.
        for group in (self.live_group, broadcast.user_group(self.user.code)):
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.append(group)
        await broadcast.watch_announce(self.channel_layer, self.live_group)
        if accept_first:
            await self.accept()
        snapshot = await self._snapshot_after_join(snapshot)
        await self.send_json(snapshot)

    async def _refuse(self, message: str, code: int, accept_first: bool):
        if accept_first:
            # Not accepted yet: the handshake is refused (HTTP 403 to the browser).
            await self.close(code=code)
        else:
            await self._fail(message, code)

    async def dispatch(self, message):
        # A message type this consumer does not know (a newer sender) is skipped,
        # rather than crashing the socket.
        if getattr(self, get_handler_name(message), None) is None:
            logger.debug("ignored channel message %r", message.get("type"))
            return
        await super().dispatch(message)

    async def disconnect(self, code):
        for timer in (self._auth_timer, self._expiry_timer):
            if timer is not None:
                timer.cancel()
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = []

    async def receive_json(self, content: Any, **kwargs):
        if not isinstance(content, dict):
            await self.send_json({"type": "error", "message": "Send JSON objects."})
            return
        kind = content.get("type")
        if self.membership is None:
            token = content.get("token")
            if kind == "auth" and isinstance(token, str) and token:
                await self.authenticate_token(token, accept_first=False)
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
        previous = self.membership.role
        try:
            self.membership = await self._recheck()
        except (Http404, PermissionDenied, NotAuthenticated):
            await self._fail("Your access to this was withdrawn.", CLOSE_FORBIDDEN)
            return
        if not role_at_least(self.membership.role, previous):
            # A lower role loses the socket (issue 4): what it was sent under the old
            # role is not what it may see now; the page reloads under the new one.
            await self._fail(
                f"Your role changed to {self.membership.role}: reload the page.",
                CLOSE_FORBIDDEN,
            )
            return
        await self.send_json(
            {
                "type": "access",
                "role": self.membership.role,
                "can_control": role_allows(self.membership.role, Action.CONTROL),
            }
        )

    # --- sync parts, run in a worker thread -------------------------------------------

    async def parse_target(self):
        """Parse the URL's object code (Http404 when malformed)."""

    @database_sync_to_async
    def _recheck(self):
        _login_still_valid(self)
        membership = _membership_for(
            self.user, self.tenant_code, from_jwt=self.from_jwt
        )
        if membership.tenant_id != self.membership.tenant_id:
            # The session now points at another tenant: this socket's tenant is gone.
            raise Http404
        _second_factor_check(self, membership)
        self.check_object(membership)
        return membership

    def check_object(self, membership):
        membership_require(membership=membership, action=Action.VIEW)

    async def _snapshot_after_join(self, snapshot):
        return snapshot


class PoolConsumer(_LiveConsumer):
    """One pool's live page: snapshot, deltas, commands."""

    async def parse_target(self):
        self.pool_code = parse_code(self.scope["url_route"]["kwargs"]["code"])
        self.live_group = broadcast.pool_group(self.pool_code)
        self.pool = None
        self.tokens = COMMAND_BURST
        self.tokens_at = time.monotonic()
        self.refs: dict[str, Any] = {}

    @database_sync_to_async
    def _resolve(self):
        membership = _membership_for(
            self.user, self.tenant_code, from_jwt=self.from_jwt
        )
        self.pool = pool_get_for_member(membership=membership, code=self.pool_code)
        return membership, None

    async def _snapshot_after_join(self, snapshot):
        return {"type": "snapshot", **await self._pool_snapshot()}

    @database_sync_to_async
    def _pool_snapshot(self) -> dict:
        # Read the pool again: its override and names change while the socket lives.
        self.pool = pool_get_for_member(membership=self.membership, code=self.pool_code)
        return pool_snapshot(membership=self.membership, pool=self.pool)

    def check_object(self, membership):
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
        _login_still_valid(self)
        membership = _membership_for(
            self.user, self.tenant_code, from_jwt=self.from_jwt
        )
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

    async def pool_settings(self, message):
        # Names or programs changed elsewhere: the page reloads its snapshot.
        await self._send_snapshot()

    async def _send_snapshot(self):
        try:
            snapshot = await self._snapshot_after_join(None)
        except Http404:
            await self._fail("This pool is gone.", CLOSE_NOT_FOUND)
        except PermissionDenied:
            await self._fail("Your access to this was withdrawn.", CLOSE_FORBIDDEN)
        else:
            await self.send_json(snapshot)


class TenantConsumer(_LiveConsumer):
    """The pools overview of the socket's tenant: one message per pool change."""

    @database_sync_to_async
    def _resolve(self):
        membership = _membership_for(
            self.user, self.tenant_code, from_jwt=self.from_jwt
        )
        membership_require(membership=membership, action=Action.VIEW)
        self.live_group = broadcast.tenant_group(membership.tenant.code)
        return membership, None

    async def _snapshot_after_join(self, snapshot):
        return {
            "type": "hello",
            "tenant": self.membership.tenant.code.hex,
            "now": timezone.now().isoformat(),
        }

    async def handle(self, kind, content: dict):
        if kind == "snapshot":
            # The page's pools, as they are now: what a (re)connecting page missed.
            codes = content.get("pools")
            if not isinstance(codes, list):
                await self.send_json(
                    {"type": "error", "message": "Send the pool codes as a list."}
                )
                return
            rows = await database_sync_to_async(pools_live_state)(
                membership=self.membership, codes=[str(c) for c in codes]
            )
            await self.send_json({"type": "pools", "pools": rows})
        else:
            await super().handle(kind, content)

    async def tenant_pool(self, message):
        await self.send_json(
            {
                "type": "pool",
                "pool": message.get("pool"),
                "online": message.get("online"),
                "state": message.get("state") or {},
                "last_seen": message.get("last_seen"),
            }
        )
