"""The access layer for brokers, pools and devices: the only way any entry point
(page, API, consumer, bridge) obtains one. Missing and foreign raise Http404."""

from collections.abc import Iterator

from django.db.models import Q, QuerySet
from django.http import Http404

from devices.models import Broker, Device, Pool
from tenants.models import Membership
from tenants.roles import Action
from tenants.selectors import membership_require, parse_code


def pools_for_member(*, membership: Membership, search: str = "") -> QuerySet[Pool]:
    membership_require(membership=membership, action=Action.VIEW)
    pools = Pool.objects.filter(tenant_id=membership.tenant_id).select_related("device")
    if search:
        pools = pools.filter(
            Q(name__icontains=search) | Q(device__device_id__icontains=search)
        )
    return pools.order_by("name")


def pool_get_for_member(
    *, membership: Membership, code, action: str = Action.VIEW, lock: bool = False
) -> Pool:
    """One pool of the member's tenant. `lock` (inside a transaction) holds its row
    until commit, so a writer can compare a version under the lock."""
    pools = Pool.objects.select_related("device", "tenant")
    if lock:
        pools = pools.select_for_update(of=("self",))
    try:
        pool = pools.get(tenant_id=membership.tenant_id, code=parse_code(code))
    except Pool.DoesNotExist:
        raise Http404("No such pool.") from None
    membership_require(membership=membership, action=action)
    return pool


def brokers_for_member(*, membership: Membership) -> QuerySet[Broker]:
    """The tenant's own brokers (the platform broker is listed separately)."""
    membership_require(membership=membership, action=Action.VIEW)
    return Broker.objects.filter(tenant_id=membership.tenant_id).order_by("name")


def broker_get_for_member(
    *, membership: Membership, code, action: str = Action.MANAGE, lock: bool = False
) -> Broker:
    """One of the member's tenant's own brokers (never the platform's). `lock` as
    in pool_get_for_member."""
    brokers = Broker.objects.select_for_update() if lock else Broker.objects.all()
    try:
        broker = brokers.get(tenant_id=membership.tenant_id, code=parse_code(code))
    except Broker.DoesNotExist:
        raise Http404("No such broker.") from None
    membership_require(membership=membership, action=action)
    return broker


def brokers_usable_by_member(*, membership: Membership) -> QuerySet[Broker]:
    """Brokers a device of this tenant may use: its own plus the platform broker."""
    membership_require(membership=membership, action=Action.VIEW)
    return Broker.objects.filter(
        Q(tenant_id=membership.tenant_id) | Q(is_platform=True)
    ).order_by("-is_platform", "name")


def devices_for_member(*, membership: Membership) -> QuerySet[Device]:
    membership_require(membership=membership, action=Action.VIEW)
    return (
        Device.objects.filter(tenant_id=membership.tenant_id)
        .select_related("pool", "broker")
        .order_by("device_id")
    )


def device_get_for_member(
    *, membership: Membership, code, action: str = Action.VIEW
) -> Device:
    try:
        device = Device.objects.select_related("pool", "broker", "tenant").get(
            tenant_id=membership.tenant_id, code=parse_code(code)
        )
    except Device.DoesNotExist:
        raise Http404("No such device.") from None
    membership_require(membership=membership, action=action)
    return device


def device_row_for_member(
    *,
    membership: Membership,
    code,
    fields: list[str] | tuple[str, ...] = ("pk",),
    action: str = Action.VIEW,
) -> dict:
    """One device of the member's tenant as a row of `fields` (values()), for a
    read that needs no model instance (the API's device state)."""
    row = (
        Device.objects.filter(tenant_id=membership.tenant_id, code=parse_code(code))
        .values(*fields)
        .first()
    )
    if row is None:
        raise Http404("No such device.")
    membership_require(membership=membership, action=action)
    return row


# --- Live dashboard reads (pool page, WebSocket snapshot) --------------------------
# These take a pool already obtained through pool_get_for_member: the access check is
# done once by the caller, and these only shape what the page and the socket show.
# The history (samples, buckets, export) is in telemetry.selectors.

from django.db import models  # noqa: E402


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def command_as_dict(command) -> dict:
    """A command as the pool page and the pool.command broadcast show it."""
    return {
        "code": command.code.hex,
        "op": command.op,
        "value": command.value,
        "status": command.status,
        "error": command.error,
        "actor": command.actor.email if command.actor_id else None,
        "source": command.source,
        "created_at": _iso(command.created_at),
    }


def device_as_dict(device: Device | None) -> dict | None:
    if device is None:
        return None
    return {
        "code": str(device.code),
        "device_id": device.device_id,
        "protocol": device.protocol,
        "online": device.online,
        "last_seen": _iso(device.last_seen_at),
        "state": device.state or {},
        "firmware_version": device.firmware_version,
        "hardware_model": device.hardware_model,
    }


def pool_device(pool: Pool) -> Device | None:
    """The pool's device, or None (the reverse one-to-one raises when absent)."""
    try:
        return pool.device
    except Device.DoesNotExist:
        return None


def pool_snapshot(*, membership: Membership, pool: Pool, limit: int = 30) -> dict:
    """Everything the pool page shows, in one dict: the page renders it on load and
    the WebSocket sends it on connect, so both start from the same picture."""
    from django.utils import timezone

    from devices.models import Command, DeviceEvent, Program
    from devices.services.events import event_as_dict
    from tenants.roles import role_allows

    commands = (
        Command.objects.filter(pool_id=pool.pk)
        .select_related("actor")
        .order_by("-created_at")[:limit]
    )
    events = (
        DeviceEvent.objects.filter(pool_id=pool.pk)
        .select_related("actor")
        .order_by("-ts")[:limit]
    )
    from alerts.selectors import pool_alerts_firing
    from devices.services.programs import pool_config_status

    programs = Program.objects.filter(pool_id=pool.pk).order_by("slot")
    device = pool_device(pool)
    return {
        "pool": {
            "code": pool.code.hex,
            "name": pool.name,
            "mode1_name": pool.mode1_name,
            "mode2_name": pool.mode2_name,
            "timezone": pool.timezone,
            "override_until": _iso(pool.override_until),
        },
        "device": device_as_dict(device),
        "config": pool_config_status(pool=pool, device=device),
        "commands": [command_as_dict(c) for c in commands],
        "events": [event_as_dict(e) for e in events],
        "programs": [
            {"slot": p.slot, "enabled": p.enabled, "days": p.days} for p in programs
        ],
        # The pool's firing alerts (the alerts app's; its changes arrive as
        # pool.alert deltas).
        "alerts": pool_alerts_firing(pool=pool),
        "role": membership.role,
        "can_control": role_allows(membership.role, Action.CONTROL),
        "now": timezone.now().isoformat(),
    }


# --- the bridge's bulk reads: a message on a broker may only speak for a device of
# that broker (and prefix), for all devices at once, so that the hot path needs no
# query per message ---------------------------------------------------------------


def brokers_for_bridge() -> QuerySet[Broker]:
    """Brokers a bridge must connect to: the platform broker and every broker that
    has at least one device."""
    return Broker.objects.filter(
        Q(is_platform=True) | Q(devices__isnull=False)
    ).distinct()


def devices_rotating_credentials(*, broker_ids) -> QuerySet[Device]:
    """Online devices of these brokers with a pending credentials rotation: what the
    bridge passes to device_credentials_message at every refresh."""
    return (
        Device.objects.filter(broker_id__in=list(broker_ids), online=True)
        .exclude(credentials_rotation_id="")
        .select_related("broker")
    )


# Rows of devices_for_bridge read per query: the bridge's directory rebuild never
# holds more of them at once (docs/capacity.md, "Bridge memory").
BRIDGE_PAGE = 2000


def devices_for_bridge(*, broker_ids, page: int = BRIDGE_PAGE) -> Iterator[dict]:
    """Every device on these brokers with what the bridge needs to route a message:
    each (broker, topic prefix, device id) names exactly one device and one tenant.

    Read in pages of `page` rows by pk, each page one query, so that a large fleet is
    never in memory at once. Without the device's state: the bridge keeps its own
    for the devices it knows and reads the others' with `device_states`."""
    rows = (
        Device.objects.filter(broker_id__in=list(broker_ids))
        .order_by("pk")
        .values(
            "pk",
            "broker_id",
            "topic_prefix",
            "device_id",
            "protocol",
            "tenant_id",
            "tenant__code",
            "pool_id",
            "pool__code",
            "pool__settings",
            "online",
        )
    )
    last = 0
    while True:
        found = list(rows.filter(pk__gt=last)[:page])
        yield from found
        if len(found) < page:
            return
        last = found[-1]["pk"]


def device_states(*, pks) -> dict[int, dict]:
    """pk -> the stored state of these devices (the bridge, for devices new to it)."""
    return dict(Device.objects.filter(pk__in=list(pks)).values_list("pk", "state"))


def commands_to_publish(*, broker_ids, limit: int = 200):
    """Pending, unexpired commands for devices on these brokers, oldest first."""
    from django.utils import timezone

    from devices.models import Command

    return list(
        Command.objects.select_related("device", "actor")
        .filter(
            status=Command.Status.PENDING,
            device__broker_id__in=list(broker_ids),
            expires_at__gt=timezone.now(),
        )
        .order_by("created_at")[:limit]
    )


def commands_orphaned(
    *, broker_ids, sent_before, max_claims: int, limit: int = 200
) -> list:
    """Sent, unexpired commands for devices on these brokers whose claimer (a bridge
    process) is no longer alive (no heartbeat: BridgePresence), claimed before
    `sent_before` and fewer than `max_claims` times, oldest first. Left out: those
    claimed before claimers were recorded, and those over which a newer command of
    their device went out (sending the older one again would undo it), other than
    the same dead bridge's claims, which go again in their order."""
    from django.db.models import Exists, OuterRef
    from django.db.models.functions import Now
    from django.utils import timezone

    from devices.models import BridgePresence, Command

    alive = BridgePresence.objects.filter(
        instance=OuterRef("claimed_by"), beat_until__gt=Now()
    )
    newer = Command.objects.filter(
        device_id=OuterRef("device_id"),
        created_at__gt=OuterRef("created_at"),
        sent_at__isnull=False,
    ).exclude(status=Command.Status.SENT, claimed_by=OuterRef("claimed_by"))
    return list(
        Command.objects.select_related("device", "actor")
        .filter(
            status=Command.Status.SENT,
            device__broker_id__in=list(broker_ids),
            expires_at__gt=timezone.now(),
            sent_at__lt=sent_before,
            claims__lt=max_claims,
        )
        .exclude(claimed_by="")
        .exclude(Exists(alive))
        .exclude(Exists(newer))
        .order_by("created_at")[:limit]
    )


def commands_awaiting_state(*, broker_ids) -> list[dict]:
    """Sent v3.1 commands waiting for a state report: (command pk, device pk,
    expected, sent_at)."""
    from devices.models import Command

    return list(
        Command.objects.filter(
            status=Command.Status.SENT,
            expected__isnull=False,
            device__broker_id__in=list(broker_ids),
        ).values("pk", "device_id", "expected", "sent_at")
    )


# --- API reads (lists under a pool already obtained through pool_get_for_member) ----

from devices.models import Command, DeviceEvent, Program  # noqa: E402


def pool_commands(*, pool: Pool) -> QuerySet[Command]:
    """The pool's commands, newest first."""
    return (
        Command.objects.filter(tenant_id=pool.tenant_id, pool_id=pool.pk)
        .select_related("actor", "pool")
        .order_by("-created_at")
    )


def command_get_for_member(
    *, membership: Membership, code, action: str = Action.VIEW
) -> Command:
    """One command of the member's tenant; missing and foreign raise Http404."""
    try:
        command = Command.objects.select_related("actor", "pool").get(
            tenant_id=membership.tenant_id, code=parse_code(code)
        )
    except Command.DoesNotExist:
        raise Http404("No such command.") from None
    membership_require(membership=membership, action=action)
    return command


def pool_events(*, pool: Pool) -> QuerySet[DeviceEvent]:
    """The pool's event log, newest first."""
    return (
        DeviceEvent.objects.filter(tenant_id=pool.tenant_id, pool_id=pool.pk)
        .select_related("actor")
        .order_by("-ts")
    )


def pool_programs(*, pool: Pool) -> QuerySet[Program]:
    """The pool's programs by slot."""
    return Program.objects.filter(pool_id=pool.pk).order_by("slot")


def devices_config_outdated(
    *, broker_ids=None, pool_codes=None, pks=None, after: int = 0, limit: int = 500
) -> QuerySet[Device]:
    """ps1 devices whose pool's configuration is newer than what they last applied,
    by pk from `after` (pages of `limit`), optionally only on these brokers, of
    these pools (hex codes) or among these device pks.

    The bridge's config sweep republishes their retained config/set
    (devices.services.programs.device_config_message): the database is the queue of
    record, the "config.publish" doorbell only makes it prompt. A device that rejected
    a version stays listed until a newer one is saved, so the bridge publishes each
    (device, version) once per connection (devices.mqtt.outgoing.Outgoing.sweep_config).
    """
    rows = Device.objects.filter(
        protocol=Device.Protocol.POOLSAAS, pool__isnull=False, pk__gt=after
    ).filter(
        Q(config_version_applied__isnull=True)
        | Q(config_version_applied__lt=models.F("pool__config_version"))
    )
    if broker_ids is not None:
        rows = rows.filter(broker_id__in=list(broker_ids))
    if pks is not None:
        rows = rows.filter(pk__in=list(pks))
    if pool_codes is not None:
        codes = []
        for code in pool_codes:
            try:
                codes.append(parse_code(code))
            except Http404:
                continue
        rows = rows.filter(pool__code__in=codes)
    return rows.select_related("pool", "broker").order_by("pk")[:limit]


def platform_broker_for_display() -> Broker | None:
    """The platform broker row for pages: its secrets are not even loaded."""
    return Broker.objects.filter(is_platform=True).defer("username", "password").first()


def pools_live_state(*, membership: Membership, codes: list[str]) -> list[dict]:
    """The live columns of the overview for the given pool codes of the member's
    tenant (others' and unknown codes are simply absent), in one query: what a
    reconnecting overview socket missed."""
    import uuid

    membership_require(membership=membership, action=Action.VIEW)
    wanted = []
    for code in codes[:200]:
        try:
            wanted.append(uuid.UUID(str(code)))
        except ValueError:
            continue
    pools = Pool.objects.filter(
        tenant_id=membership.tenant_id, code__in=wanted
    ).select_related("device")
    out = []
    for pool in pools:
        device = pool_device(pool)
        out.append(
            {
                "pool": pool.code.hex,
                "online": device.online if device else None,
                "state": (device.state or {}) if device else {},
                "last_seen": _iso(device.last_seen_at) if device else None,
            }
        )
    return out
