"""Channel-layer groups and the one way services send live updates to browsers.

Group names (contract 3 of the design):
  pool.<hex>    one pool's page: pool.state / pool.command / pool.event messages
  tenant.<hex>  a tenant's overview: tenant.pool messages
  user.<hex>    one user's sockets: access.changed after a role change or removal

`broadcast` sends only after the surrounding transaction commits, so a browser never
sees a change that was rolled back, and a broken channel layer (Redis down) is logged
instead of failing the service that made the change: the database stays the truth and
the page catches up on its next load.
"""

import logging
import uuid
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)


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


# Every bridge's live sender is in this group, so it learns at once that a page started
# watching a pool or tenant; its own scan of the channel layer runs only every second,
# and an update in between would otherwise be skipped as unwatched.
BRIDGES_GROUP = "bridges.watch"


async def watch_announce(layer, group: str) -> None:
    """Tell the bridges that `group` now has a member (consumers call it after
    joining, before they send their snapshot)."""
    try:
        await layer.group_send(BRIDGES_GROUP, {"type": "watch", "group": group})
    except Exception:
        logger.warning("cannot announce a watch of %s", group, exc_info=True)


def broadcast_now(group: str, message: dict[str, Any]) -> bool:
    """Send at once (no transaction involved); False when the layer failed."""
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
