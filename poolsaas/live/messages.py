"""Every message sent over the channel layer, each built by exactly one function.

Services, the bridge and the consumers call these builders; nothing else writes a
channel-layer message dict (poolsaas/tests/test_live_messages.py greps for it). The
`type` of each message names the consumer method that receives it (Channels turns
"pool.state" into `pool_state`), so the shapes below are a contract with
devices.consumers and with the bridge's doorbell handler.

Group messages (to browsers' sockets):
  pool.state, pool.command, pool.event, pool.settings,
  pool.alert                                           -> PoolConsumer (pool.<hex>)
  tenant.pool, tenant.alert                            -> TenantConsumer (tenant.<hex>)
  ota.update                                           -> TenantConsumer (tenant.<hex>)
  access.changed                                       -> both consumers (user.<hex>)
  live.resync        (from the layer itself, poolsaas.live.layer, to one socket that
                      fell behind)                    -> every live consumer
Doorbell rings (to the bridges, on groups.DOORBELL, DOORBELL_GROUP or BRIDGES_GROUP):
  command.new, config.publish, device.retained_clear,
  device.credentials                                   -> the bridge's rooms
  watch                                                -> every bridge's live sender
"""

from typing import Any

POOL_STATE = "pool.state"
POOL_COMMAND = "pool.command"
POOL_EVENT = "pool.event"
POOL_SETTINGS = "pool.settings"
TENANT_POOL = "tenant.pool"
POOL_ALERT = "pool.alert"
TENANT_ALERT = "tenant.alert"
ACCESS_CHANGED = "access.changed"
OTA_UPDATE = "ota.update"
COMMAND_NEW = "command.new"
CONFIG_PUBLISH = "config.publish"
RETAINED_CLEAR = "device.retained_clear"
DEVICE_CREDENTIALS = "device.credentials"
WATCH = "watch"
LIVE_RESYNC = "live.resync"


def pool_state(
    *, pool: str, state: dict, online: bool, last_seen: str | None
) -> dict[str, Any]:
    """A pool's device state (bridge -> PoolConsumer.pool_state)."""
    return {
        "type": POOL_STATE,
        "pool": pool,
        "state": state,
        "online": online,
        "last_seen": last_seen,
    }


def tenant_pool(*, pool: str, online: bool, state: dict) -> dict[str, Any]:
    """One row of the tenant's overview (bridge -> TenantConsumer.tenant_pool)."""
    return {"type": TENANT_POOL, "pool": pool, "online": online, "state": state}


def pool_event(*, pool: str, event: dict) -> dict[str, Any]:
    """A new or changed line of the pool's log (services and bridge ->
    PoolConsumer.pool_event). `event` comes from devices.services.events.event_payload,
    the one shape of an event everywhere."""
    return {"type": POOL_EVENT, "pool": pool, "event": event}


def pool_command(*, pool: str, command: dict) -> dict[str, Any]:
    """A command's status (devices.services.commands -> PoolConsumer.pool_command);
    `command` is devices.services.commands.command_payload."""
    return {"type": POOL_COMMAND, "pool": pool, "command": command}


def pool_settings(*, pool: str) -> dict[str, Any]:
    """The pool's configuration changed: pages reload it (devices.services.programs ->
    PoolConsumer.pool_settings)."""
    return {"type": POOL_SETTINGS, "pool": pool}


def pool_alert(*, pool: str, alert: dict) -> dict[str, Any]:
    """An alert of the pool fired, was acknowledged or resolved (alerts.services ->
    PoolConsumer.pool_alert); `alert` is alerts.selectors.alert_as_dict."""
    return {"type": POOL_ALERT, "pool": pool, "alert": alert}


def tenant_alert(*, pool: str, alert: dict) -> dict[str, Any]:
    """The same alert change for the tenant's overview (alerts.services ->
    TenantConsumer.tenant_alert)."""
    return {"type": TENANT_ALERT, "pool": pool, "alert": alert}


def ota_update(
    *,
    campaign: str,
    device: str,
    state: str,
    percent: int,
    reason: str,
    corrupted_chunks: int = 0,
) -> dict[str, Any]:
    """A device's update in a campaign changed state, progress or its count of
    corrupted chunks (ota.live -> TenantConsumer.ota_update); `campaign` is the
    campaign's code (hex), `device` the device's code (hex)."""
    return {
        "type": OTA_UPDATE,
        "campaign": campaign,
        "device": device,
        "state": state,
        "percent": percent,
        "reason": reason,
        "corrupted_chunks": corrupted_chunks,
    }


def access_changed() -> dict[str, Any]:
    """The user's access changed: sockets re-check it (tenants services -> both
    consumers' access_changed)."""
    return {"type": ACCESS_CHANGED}


def command_new(
    *,
    command: str,
    device: int | None = None,
    broker: int | None = None,
    topic: str | None = None,
    payload: bytes | None = None,
) -> dict[str, Any]:
    """Doorbell: a command is pending (devices.services.commands.doorbell_ring ->
    every bridge, on groups.DOORBELL_GROUP). With its topic and payload, the bridge
    holding `broker` publishes it at once; without, it sweeps the database now."""
    return {
        "type": COMMAND_NEW,
        "command": command,
        "device": device,
        "broker": broker,
        "topic": topic,
        "payload": payload,
    }


def config_publish(*, pool: str) -> dict[str, Any]:
    """Doorbell: publish this pool's configuration now (devices.services.programs ->
    the devices room's config sweep)."""
    return {"type": CONFIG_PUBLISH, "pool": pool}


def retained_clear(*, broker: int, root: str) -> dict[str, Any]:
    """Doorbell: clear a removed device's retained topics (devices.services.onboarding
    -> the devices room)."""
    return {"type": RETAINED_CLEAR, "broker": broker, "root": root}


def device_credentials(*, device: int) -> dict[str, Any]:
    """Doorbell: send this device's pending credentials rotation now
    (devices.services.device_credentials -> the devices room)."""
    return {"type": DEVICE_CREDENTIALS, "device": device}


def watch(*, group: str) -> dict[str, Any]:
    """A page started watching `group` (groups.watch_announce -> every bridge's live
    sender, on groups.BRIDGES_GROUP)."""
    return {"type": WATCH, "group": group}


def live_resync() -> dict[str, Any]:
    """This socket fell behind and lost its backlog (poolsaas.live.layer): re-check
    access and send the whole current state (-> every live consumer's live_resync)."""
    return {"type": LIVE_RESYNC}
