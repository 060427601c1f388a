"""/mqtt: MQTT 3.1.1 over WebSocket for dashboards and integrators (docs/gateway.md).

A thin shell around gateway.session.Session: each binary frame is fed to it and the
actions it returns are carried out here, in order. The database is reached only in a
thread, through gateway.access (tenants.auth, the devices' access layer and
command_send). The gateway never opens a broker connection: live changes arrive as
the bridge's pool.state messages on the channel layer.

Each accepted socket holds a slot of its user's in gateway.sockets (the cap, shared
by the web processes through Redis) and a gateway.usage.SocketUsage; a heartbeat task
refreshes the one and hands the other to billing.metering, and the close frees and
hands on both.

Groups: `user.<hex>` (access.changed closes the socket when the login or the
membership changed), `pool.<hex>` of the pools a subscription needs, and
`gateway.client.<hash>` of the user's client id (a newer socket with the same client
id closes the older one, as an MQTT broker does).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import defaultdict

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DatabaseError
from django.http import Http404

from billing import metering
from billing.services import plan_rate_take
from devices.consumers.base import Bucket, dispatch_live
from firmware import protocol
from gateway import access, codec, session, sockets, topics
from gateway.usage import SocketUsage
from poolsaas.live import groups as broadcast
from poolsaas.metrics import SocketCount
from poolsaas.middleware import _client_ip
from poolsaas.request_context import RequestContext
from tenants.auth import (
    Caller,
    NotAuthenticated,
    TwoFactorRequired,
    caller_from_mqtt_password,
)
from tenants.selectors import TenantSuspended

logger = logging.getLogger(__name__)

SUBPROTOCOL = "mqtt"
# Per socket, publishes that become commands: as on the JSON socket.
COMMAND_RATE = 5.0
COMMAND_BURST = 5.0

# What the gateway refused or dropped, by reason (logged, and read by tests/metrics).
counters: dict[str, int] = defaultdict(int)


def client_digest(user_hex: str, client_id: str) -> str:
    """One user's client id as hex (never the client's own text in a key)."""
    return hashlib.sha256(f"{user_hex}\0{client_id}".encode()).hexdigest()[:32]


def client_group(user_hex: str, client_id: str) -> str:
    """The group of one user's client id."""
    return f"gateway.client.{client_digest(user_hex, client_id)}"


def _blocking(fn):
    """Redis round trips of the cap and metering, off the event loop."""
    return sync_to_async(fn, thread_sensitive=False)


def _max_sockets() -> int:
    return int(getattr(settings, "GATEWAY_MAX_SOCKETS_PER_USER", 10))


def _max_subscriptions() -> int:
    return int(
        getattr(settings, "GATEWAY_MAX_SUBSCRIPTIONS", session.MAX_SUBSCRIPTIONS)
    )


class GatewayConsumer(AsyncWebsocketConsumer):
    """One MQTT client connection."""

    async def connect(self):
        self.socket_count = SocketCount("gateway")
        self.socket_count.opened()
        self.caller: Caller | None = None
        self.groups: set[str] = set()
        self.devices: list[access.DeviceView] = []
        # pool hex -> its devices, so a live state looks at its own pool's only.
        self.by_pool: dict[str, list[access.DeviceView]] = {}
        # topic -> payload last sent (or built) for it: live changes are the diff.
        self.last: dict[str, bytes] = {}
        self.commands = Bucket(rate=COMMAND_RATE, burst=COMMAND_BURST)
        self.session = session.Session(
            now=time.monotonic(), max_subscriptions=_max_subscriptions()
        )
        self._timer: asyncio.TimerHandle | None = None
        self._slot: str | None = None
        self.usage: SocketUsage | None = None
        self._beat: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        if SUBPROTOCOL not in (self.scope.get("subprotocols") or []):
            await self.close()
            return
        await self.accept(subprotocol=SUBPROTOCOL)
        self._schedule()

    # --- the socket ------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None):
        if bytes_data is None:
            await self._run_guarded(lambda: [session.Close("text frame")])
            return
        await self._run_guarded(lambda: self.session.feed(bytes_data, time.monotonic()))

    async def disconnect(self, code):
        if hasattr(self, "socket_count"):
            self.socket_count.closed()
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.session.closed:
            # The client went away without DISCONNECT: the will fires.
            try:
                for action in self.session.terminate("socket closed"):
                    if isinstance(action, session.Publish):
                        await self._publish(action)
            except Exception:
                logger.exception("gateway: the will failed")
        await self._leave_all()
        await self._end()

    async def dispatch(self, message):
        # Unknown types are skipped; pool.state runs without the database thread hop.
        await dispatch_live(self, message, super().dispatch)

    async def _run_guarded(self, produce):
        """Carry out the session's actions; anything unexpected closes this socket
        only."""
        async with self._lock:
            if self._closed:
                return
            try:
                await self._run(produce())
            except Exception:
                logger.exception("gateway socket failed")
                await self._shut("internal error")
            self._schedule()

    async def _run(self, actions):
        for action in actions:
            if self._closed:
                return
            if isinstance(action, session.Send):
                await self.send(bytes_data=action.data)
            elif isinstance(action, session.Close):
                await self._shut(action.reason)
                return
            elif isinstance(action, session.Authenticate):
                code = await self._authenticate(action)
                await self._run(self.session.authenticated(code, time.monotonic()))
            elif isinstance(action, session.Subscribe):
                await self._subscribe(action)
            elif isinstance(action, session.Unsubscribe):
                await self._sync_groups()
            elif isinstance(action, session.Publish):
                await self._publish(action)

    async def _shut(self, reason: str):
        if self._closed:
            return
        self._closed = True
        logger.info("gateway socket closed: %s", reason)
        await self._leave_all()
        await self._end()
        await self.close()

    def _schedule(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.session.deadline
        if deadline is None or self._closed:
            return
        delay = max(0.0, deadline - time.monotonic()) + 0.01
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self):
        self._timer = None
        asyncio.ensure_future(
            self._run_guarded(lambda: self.session.tick(time.monotonic()))
        )

    async def _join(self, group: str):
        if group not in self.groups:
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups.add(group)

    async def _leave_all(self):
        for group in list(self.groups):
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception:
                logger.warning("gateway: cannot leave %s", group, exc_info=True)
        self.groups.clear()

    # --- the slot and the usage ------------------------------------------------

    async def _end(self):
        """Free the slot and hand on the last usage, once."""
        if self._beat is not None:
            # Not when the heartbeat itself ends the socket: it would cancel this.
            if self._beat is not asyncio.current_task():
                self._beat.cancel()
            self._beat = None
        slot, self._slot = self._slot, None
        usage, self.usage = self.usage, None
        if slot is None or self.caller is None:
            return
        user_hex = self.caller.user.code.hex
        channel = self.channel_name
        used = usage.drain(time.monotonic()) if usage is not None else {}

        def end():
            sockets.socket_release(user=user_hex, slot=slot, channel=channel)
            metering.add_many(used)

        await _blocking(end)()

    async def _heartbeat(self):
        """Every GATEWAY_HEARTBEAT_SECONDS while the socket is accepted: keep the
        slot counted and hand the usage so far to metering."""
        user_hex = self.caller.user.code.hex
        channel, slot = self.channel_name, self._slot

        def beat(used: dict[tuple[int, str], int]) -> bool:
            metering.add_many(used)
            return sockets.socket_refresh(user=user_hex, slot=slot, channel=channel)

        while not self._closed:
            await asyncio.sleep(sockets.heartbeat())
            usage = self.usage
            if usage is None or self._closed:
                return
            # Drained here, in the loop that counts: no count slips between threads.
            if not await _blocking(beat)(usage.drain(time.monotonic())):
                # Another socket (another process's, maybe) owns the client id now.
                async with self._lock:
                    if not self._closed:
                        await self._terminate("a newer connection took the client id")
                return

    # --- CONNECT ---------------------------------------------------------------

    async def _authenticate(self, action: session.Authenticate) -> int:
        if not action.password:
            counters["connect_refused"] += 1
            return codec.BAD_CREDENTIALS
        try:
            caller = await database_sync_to_async(caller_from_mqtt_password)(
                action.password, client_id=action.client_id
            )
        except NotAuthenticated:
            counters["connect_refused"] += 1
            return codec.BAD_CREDENTIALS
        except (Http404, TenantSuspended, TwoFactorRequired, PermissionDenied):
            counters["connect_refused"] += 1
            return codec.NOT_AUTHORISED
        except DatabaseError:
            logger.warning("gateway: database unavailable at CONNECT", exc_info=True)
            return codec.SERVER_UNAVAILABLE
        user_hex = caller.user.code.hex
        slot = client_digest(user_hex, action.client_id)
        claimed = await _blocking(sockets.socket_claim)(
            user=user_hex, slot=slot, channel=self.channel_name, cap=_max_sockets()
        )
        if not claimed:
            counters["connect_over_cap"] += 1
            logger.info("gateway: socket cap reached for user %s", user_hex)
            return codec.NOT_AUTHORISED
        self.caller, self._slot = caller, slot
        self.usage = SocketUsage(caller.membership.tenant_id, time.monotonic())
        self._beat = asyncio.ensure_future(self._heartbeat())
        await self._join(broadcast.user_group(user_hex))
        group = client_group(user_hex, action.client_id)
        # Tell the older socket of this client id to go first, then join: the newer
        # wins, and never hears its own announcement.
        await self.channel_layer.group_send(
            group, {"type": "gateway.takeover", "channel": self.channel_name}
        )
        await self._join(group)
        self._set_devices(await database_sync_to_async(access.tenant_devices)(caller))
        return codec.ACCEPTED

    # --- SUBSCRIBE / UNSUBSCRIBE -----------------------------------------------

    def _topic_index(self) -> dict[str, access.DeviceView]:
        index = {}
        for device in self.devices:
            for topic in topics.device_topics(
                device.prefix, device.device_id, device.protocol
            ):
                index[topic] = device
        return index

    def _set_devices(self, devices: list[access.DeviceView]) -> None:
        self.devices = devices
        by_pool: dict[str, list[access.DeviceView]] = {}
        for device in devices:
            by_pool.setdefault(device.pool_hex, []).append(device)
        self.by_pool = by_pool

    async def _subscribe(self, action: session.Subscribe):
        self._set_devices(
            await database_sync_to_async(access.tenant_devices)(self.caller)
        )
        index = self._topic_index()
        codes = []
        wanted: list[str] = []
        for i, (topic_filter, qos) in enumerate(action.filters):
            matched = topics.expand(topic_filter, index)
            if i in action.refused or not matched:
                codes.append(codec.SUBACK_FAILURE)
                counters["subscribe_refused"] += 1
                continue
            codes.append(min(qos, session.MAX_QOS))
            wanted += matched
        # Join before the retained state is built, so no change falls in between.
        await self._sync_groups()
        await self._run(self.session.subscribed(action.packet_id, codes))
        now = time.time()
        retained: dict[str, bytes] = {}
        for device in {index[t].root: index[t] for t in wanted}.values():
            retained |= self._state_of(device, device.state, device.online, now)
        for topic in dict.fromkeys(wanted):
            payload = retained.get(topic)
            if payload is not None:
                await self._deliver(topic, payload, retain=True)

    async def _deliver(self, topic: str, payload: bytes, *, retain: bool = False):
        actions = self.session.deliver(topic, payload, retain=retain)
        if self.usage is not None:
            self.usage.message(sum(isinstance(a, session.Send) for a in actions))
        await self._run(actions)

    def _state_of(self, device, state, online, now) -> dict[str, bytes]:
        messages = topics.state_messages(
            prefix=device.prefix,
            device_id=device.device_id,
            device_protocol=device.protocol,
            state=state,
            online=online,
            now=now,
        )
        self.last |= messages
        return messages

    async def _sync_groups(self):
        """Be in the groups of the pools the subscriptions need, and only those."""
        index = self._topic_index()
        filters = list(self.session.subscriptions)
        if self.session._pending_subscribe:
            for request in self.session._pending_subscribe.values():
                filters += [f for f, _ in request.filters]
        needed = {
            broadcast.pool_group(device.pool_hex)
            for topic, device in index.items()
            if any(topics.matches(f, topic) for f in filters)
        }
        pool_groups = {g for g in self.groups if g.startswith("pool.")}
        for group in needed - pool_groups:
            await self._join(group)
            await broadcast.watch_announce(self.channel_layer, group)
        for group in pool_groups - needed:
            await self.channel_layer.group_discard(group, self.channel_name)
            self.groups.discard(group)

    # --- PUBLISH ---------------------------------------------------------------

    def _refuse(self, reason: str, topic: str):
        counters["publish_refused"] += 1
        counters[f"publish_refused:{reason}"] += 1
        logger.info("gateway publish refused (%s): %.120s", reason, topic)

    async def _publish(self, action: session.Publish):
        if self.caller is None:
            return
        if self.usage is not None:
            self.usage.message()
        roots = {device.root: device for device in self.devices}
        found = topics.split(action.topic, roots)
        if found is None:
            self._refuse("unknown topic", action.topic)
            return
        root, suffix = found
        try:
            op, value = topics.command_of(suffix, action.payload)
        except protocol.ProtocolError:
            self._refuse("not a command", action.topic)
            return
        if not self.commands.take():
            self._refuse("rate limited", action.topic)
            return
        # The plan's API rate, shared with the REST API (billing).
        refusal = await database_sync_to_async(plan_rate_take)(
            tenant=self.caller.membership.tenant
        )
        if refusal is not None:
            self._refuse("plan limit", action.topic)
            logger.info("gateway: %s", refusal)
            return
        try:
            await database_sync_to_async(access.gateway_command_send)(
                caller=self.caller,
                pool_hex=roots[root].pool_hex,
                op=op,
                value=value,
                context=self._context(),
            )
        except (NotAuthenticated, Http404, TenantSuspended, TwoFactorRequired):
            self._refuse("access withdrawn", action.topic)
            await self._terminate("access withdrawn")
        except PermissionDenied:
            self._refuse("role", action.topic)
        except ValidationError:
            self._refuse("invalid", action.topic)
        else:
            counters["publish_commands"] += 1

    def _context(self) -> RequestContext:
        headers = dict(self.scope.get("headers") or [])
        peer = (self.scope.get("client") or [None])[0]
        ip = _client_ip(
            {
                "REMOTE_ADDR": peer,
                "HTTP_X_FORWARDED_FOR": headers.get(b"x-forwarded-for", b"").decode(
                    "latin1"
                ),
            }
        )
        agent = headers.get(b"user-agent", b"").decode("latin1")[:400]
        return RequestContext(ip=ip, user_agent=agent, source=access.SOURCE)

    async def _terminate(self, reason: str):
        await self._run(self.session.terminate(reason))

    # --- channel-layer messages ------------------------------------------------

    async def pool_state(self, message):
        async with self._lock:
            if self._closed or self.caller is None:
                return
            try:
                await self._pool_state(message)
            except Exception:
                logger.exception("gateway: a live state failed")
                await self._shut("internal error")

    async def _pool_state(self, message):
        now = time.time()
        for device in self.by_pool.get(message.get("pool"), ()):
            await self._show(
                device, message.get("state") or {}, bool(message.get("online")), now
            )

    async def _show(self, device, state, online, now):
        """Deliver what changed of one device's topics against what was sent."""
        before = {t: v for t, v in self.last.items() if t.startswith(device.root + "/")}
        after = self._state_of(device, state, online, now)
        for topic, payload in topics.changed(before, after):
            await self._deliver(topic, payload)

    async def live_resync(self, message):
        """This socket fell behind and its backlog was dropped (poolsaas.live.layer):
        access is checked again, then every device's current state is read and what
        differs from what the client last got is delivered."""
        await self.access_changed(message)
        async with self._lock:
            if self._closed or self.caller is None:
                return
            try:
                self._set_devices(
                    await database_sync_to_async(access.tenant_devices)(self.caller)
                )
                await self._sync_groups()
                now = time.time()
                for device in self.devices:
                    await self._show(device, device.state, device.online, now)
            except Exception:
                logger.exception("gateway: a resync failed")
                await self._shut("internal error")

    async def access_changed(self, message):
        async with self._lock:
            if self._closed or self.caller is None:
                return
            previous = self.caller.membership.role
            try:
                caller = await database_sync_to_async(access.caller_recheck)(
                    self.caller
                )
            except (NotAuthenticated, Http404, PermissionDenied):
                await self._terminate("access withdrawn")
                return
            if caller.membership.role != previous:
                # What was granted under the old role is not what the new one gets.
                await self._terminate("role changed")
                return
            self.caller = caller

    async def gateway_takeover(self, message):
        if message.get("channel") == self.channel_name:
            return
        async with self._lock:
            if not self._closed:
                await self._terminate("a newer connection took the client id")
