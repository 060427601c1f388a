"""Channel-layer groups and the one way services and the bridge send on them.

Group names (contract 3 of the design), built from UUID hex only, never user text:
  pool.<hex>    one pool's page: pool.state / pool.command / pool.event / pool.settings
                / pool.alert
  tenant.<hex>  a tenant's overview: tenant.pool / tenant.alert
  user.<hex>    one user's sockets: access.changed after a role change or removal
The bridges listen on DOORBELL (one of them takes each ring), DOORBELL_GROUP and
BRIDGES_GROUP (all of them hear those). The messages themselves come from
poolsaas.live.messages.

`broadcast` sends only after the surrounding transaction commits, so a browser never
sees a change that was rolled back, and a broken channel layer (Redis down) is logged
instead of failing the service that made the change: the database stays the truth and
the page catches up on its next load.
"""

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from poolsaas.live import messages, watch

logger = logging.getLogger(__name__)
# Per thread: where broadcast_now hands its messages (broadcast_through).
_through = threading.local()

# The bridges' doorbell: rung after a command, a configuration change or a device
# removal, so that the bridge acts at once instead of at its next database sweep.
DOORBELL = "mqtt-bridge.commands"
# Every bridge's doorbell is in this group too: a command goes to all of them, and the
# one holding its device's broker publishes it (a tenant's broker has one bridge).
DOORBELL_GROUP = "bridges.doorbell"
# Every bridge's live sender is in this group, so it learns at once that a page started
# watching a pool or tenant; its own read of the watch registry runs only every second,
# and an update in between would otherwise be skipped as unwatched.
BRIDGES_GROUP = "bridges.watch"


def _hex(code: uuid.UUID | str) -> str:
    if isinstance(code, uuid.UUID):
        return code.hex
    return uuid.UUID(str(code)).hex


def pool_group(pool_code: uuid.UUID | str) -> str:
    """The group of one pool's live page."""
    return f"pool.{_hex(pool_code)}"


def tenant_group(tenant_code: uuid.UUID | str) -> str:
    """The group of a tenant's pool overview."""
    return f"tenant.{_hex(tenant_code)}"


def user_group(user_code: uuid.UUID | str) -> str:
    """The group of all of one user's sockets (access changes)."""
    return f"user.{_hex(user_code)}"


async def watch_announce(layer, group: str) -> None:
    """`group` now has a member (consumers call it after joining, before they send
    their snapshot): registered as watched for as long as the calling task (the
    socket's application) runs, and told to the bridges at once."""
    try:
        task = asyncio.current_task()
        await asyncio.to_thread(watch.registry().touch, [group])
        if task is not None:
            watch.hold(group, task)
    except Exception:
        logger.warning("cannot register a watch of %s", group, exc_info=True)
    try:
        await layer.group_send(BRIDGES_GROUP, messages.watch(group=group))
    except Exception:
        logger.warning("cannot announce a watch of %s", group, exc_info=True)


def broadcast_through(send: Callable[[list[tuple[str, dict]]], None] | None) -> None:
    """From now on this thread's `broadcast_now` hands (group, message) to `send`
    (None: back to a round trip of its own; a `send` that raises, one whose loop is
    not running, gets the round trip too). A process with a channel-layer loop of
    its own installs it in the threads that call services (the bridge: OTA reports,
    command outcomes, events): `async_to_sync` there ran a new event loop, and opened
    a new Redis connection, for every message."""
    _through.send = send


def broadcast_now(group: str, message: dict[str, Any]) -> bool:
    """Send at once (no transaction involved); False when the layer failed."""
    send = getattr(_through, "send", None)
    if send is not None:
        try:
            send([(group, message)])
            return True
        except Exception:  # noqa: BLE001 - the sink is not running: send it here
            logger.debug("broadcast to %s not handed over", group, exc_info=True)
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:
        # Live updates are best effort; never let them break the caller.
        logger.warning("broadcast to %s failed", group, exc_info=True)
        return False
    return True


def broadcast(group: str, message: dict[str, Any]) -> None:
    """Send `message` to `group` once the current transaction commits (at once when
    there is none). Must be called from synchronous code (services)."""
    transaction.on_commit(lambda: broadcast_now(group, message))


def doorbell_ring_now(message: dict[str, Any]) -> bool:
    """Ring the bridges' doorbell at once; best effort (False when not rung), since
    bridges also sweep the database."""
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        async_to_sync(layer.send)(DOORBELL, message)
    except Exception:  # noqa: BLE001 - a full or absent layer must not fail the caller
        logger.info("bridge doorbell not rung for %s", message, exc_info=True)
        return False
    return True


def doorbell_ring_bridges(message: dict[str, Any]) -> bool:
    """Ring every bridge's doorbell at once (DOORBELL_GROUP); best effort (False when
    not rung), since bridges also sweep the database."""
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        async_to_sync(layer.group_send)(DOORBELL_GROUP, message)
    except Exception:  # noqa: BLE001 - a full or absent layer must not fail the caller
        logger.info("bridge doorbell not rung for %s", message, exc_info=True)
        return False
    return True
