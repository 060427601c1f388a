"""The access layer for brokers, pools and devices: the only way any entry point
(page, API, consumer, bridge) obtains one. Missing and foreign raise Http404."""

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
    *, membership: Membership, code, action: str = Action.VIEW
) -> Pool:
    try:
        pool = Pool.objects.select_related("device", "tenant").get(
            tenant_id=membership.tenant_id, code=parse_code(code)
        )
    except Pool.DoesNotExist:
        raise Http404("No such pool.") from None
    membership_require(membership=membership, action=action)
    return pool


def brokers_for_member(*, membership: Membership) -> QuerySet[Broker]:
    """The tenant's own brokers (the platform broker is listed separately)."""
    membership_require(membership=membership, action=Action.VIEW)
    return Broker.objects.filter(tenant_id=membership.tenant_id).order_by("name")


def broker_get_for_member(
    *, membership: Membership, code, action: str = Action.MANAGE
) -> Broker:
    try:
        broker = Broker.objects.get(
            tenant_id=membership.tenant_id, code=parse_code(code)
        )
    except Broker.DoesNotExist:
        raise Http404("No such broker.") from None
    membership_require(membership=membership, action=action)
    return broker


def brokers_usable_by_member(*, membership: Membership) -> QuerySet[Broker]:
    """Brokers a device of this tenant may use: its own plus the platform broker."""
    return Broker.objects.filter(
        Q(tenant_id=membership.tenant_id) | Q(is_platform=True)
    ).order_by("-is_platform", "name")


def platform_broker() -> Broker | None:
    return Broker.objects.filter(is_platform=True).first()


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


def device_for_topic(
    *, broker_id: int, topic_prefix: str, device_id: str
) -> Device | None:
    """The bridge's lookup: the one device a message on this broker may speak for.

    Scoped by broker, so a message on one tenant's broker never reaches another
    tenant's device; on the shared platform broker the per-device ACLs keep devices
    to their own topics.
    """
    return (
        Device.objects.select_related("tenant", "pool")
        .filter(broker_id=broker_id, topic_prefix=topic_prefix, device_id=device_id)
        .first()
    )
