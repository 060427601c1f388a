"""The access functions of devices/selectors.py, called directly as any new entry point
(the coming gateway, a task) would: each checks the role and the tenant's state
itself, and answers "not found" alike for another tenant's object and a made-up code.

The views check roles again, so without these a deleted check inside a selector
would go unnoticed.
"""

import datetime as dt
import inspect
import uuid

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.utils import timezone

from devices import selectors
from devices.models import Broker, Command
from devices.services.brokers import broker_create
from tenants.models import Tenant
from tenants.roles import MINIMUM_ROLE, Action, Role
from tenants.selectors import TenantSuspended

pytestmark = pytest.mark.django_db

# One role below the minimum of each action (VIEW has none below it).
BELOW = {
    Role.OPERATOR: Role.VIEWER,
    Role.ADMIN: Role.OPERATOR,
    Role.OWNER: Role.ADMIN,
}


def _command(device):
    return Command.objects.create(
        tenant=device.tenant,
        device=device,
        pool=device.pool,
        op=Command.Op.PUMP,
        value="ON",
        expires_at=timezone.now() + dt.timedelta(minutes=5),
    )


@pytest.fixture
def world(alice, adam, olivia, victor, carol, device_a, device_b):
    """Every role of tenant A, tenant B's owner, and one object of each kind in both
    tenants."""
    broker_b = broker_create(
        membership=carol,
        name="Globex broker",
        host="mqtt.globex.test",
        port=8883,
        use_tls=True,
        topic_prefix="globex",
    )
    broker_a = broker_create(
        membership=alice,
        name="Acme broker",
        host="mqtt.acme.test",
        port=8883,
        use_tls=True,
        topic_prefix="acme",
    )
    return {
        "members": {
            Role.OWNER: alice,
            Role.ADMIN: adam,
            Role.OPERATOR: olivia,
            Role.VIEWER: victor,
        },
        "carol": carol,
        "pool": (device_a.pool, device_b.pool),
        "device": (device_a, device_b),
        "broker": (broker_a, broker_b),
        "command": (_command(device_a), _command(device_b)),
    }


# Each getter: its function, the kind of object, and the action it defaults to.
GETTERS = {
    "pool_get_for_member": ("pool", Action.VIEW),
    "device_get_for_member": ("device", Action.VIEW),
    "broker_get_for_member": ("broker", Action.MANAGE),
    "command_get_for_member": ("command", Action.VIEW),
    # A row, not an object (the API's device state): its fields default to the pk.
    "device_row_for_member": ("device", Action.VIEW),
}


def _pk(got):
    return got["pk"] if isinstance(got, dict) else got.pk


# Each list function: the kind of object it lists, and how to call it.
LISTS = {
    "pools_for_member": ("pool", lambda fn, m, world: fn(membership=m)),
    "devices_for_member": ("device", lambda fn, m, world: fn(membership=m)),
    "brokers_for_member": ("broker", lambda fn, m, world: fn(membership=m)),
    "brokers_usable_by_member": ("broker", lambda fn, m, world: fn(membership=m)),
    "pools_live_state": (
        "pool",
        lambda fn, m, world: fn(
            membership=m, codes=[str(p.code) for p in world["pool"]]
        ),
    ),
}


def _suspend(tenant: Tenant) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(status=Tenant.Status.SUSPENDED)
    tenant.status = Tenant.Status.SUSPENDED


# Takes a membership but no code: it shapes a pool the caller already obtained
# through pool_get_for_member (and reads the role only to say what may be done).
NOT_ACCESS = {"pool_snapshot"}


def test_every_access_function_is_covered_here():
    # Every function of the module that takes a membership gets its row above.
    names = {
        name
        for name, fn in vars(selectors).items()
        if inspect.isfunction(fn)
        and fn.__module__ == selectors.__name__
        and "membership" in inspect.signature(fn).parameters
    }
    assert names - NOT_ACCESS == set(GETTERS) | set(LISTS)


@pytest.mark.parametrize("name", GETTERS)
@pytest.mark.parametrize("action", list(Action))
def test_getter_allows_the_minimum_role_and_refuses_the_one_below(world, name, action):
    kind, _ = GETTERS[name]
    fn = getattr(selectors, name)
    mine = world[kind][0]
    needed = MINIMUM_ROLE[action]
    got = fn(membership=world["members"][needed], code=mine.code, action=action)
    assert _pk(got) == mine.pk
    if needed in BELOW:
        low = world["members"][BELOW[needed]]
        with pytest.raises(PermissionDenied) as raised:
            fn(membership=low, code=mine.code, action=action)
        assert not isinstance(raised.value, TenantSuspended)
        assert "role" in str(raised.value)


@pytest.mark.parametrize("name", GETTERS)
def test_getter_default_action(world, name):
    kind, default = GETTERS[name]
    fn = getattr(selectors, name)
    mine = world[kind][0]
    needed = MINIMUM_ROLE[default]
    assert _pk(fn(membership=world["members"][needed], code=mine.code)) == mine.pk
    if needed in BELOW:
        with pytest.raises(PermissionDenied):
            fn(membership=world["members"][BELOW[needed]], code=mine.code)


@pytest.mark.parametrize("name", GETTERS)
def test_getter_refuses_a_suspended_tenant(world, name):
    kind, _ = GETTERS[name]
    fn = getattr(selectors, name)
    owner = world["members"][Role.OWNER]
    _suspend(owner.tenant)
    with pytest.raises(TenantSuspended):
        fn(membership=owner, code=world[kind][0].code, action=Action.VIEW)


@pytest.mark.parametrize("name", GETTERS)
@pytest.mark.parametrize("role", list(Role))
def test_getter_answers_not_found_for_foreign_and_made_up_codes(world, name, role):
    """Whatever the caller's role (even one too low for the action), another
    tenant's object is 'not found', with the same message as a made-up code."""
    kind, _ = GETTERS[name]
    fn = getattr(selectors, name)
    member = world["members"][role]
    messages = set()
    for code in (world[kind][1].code, uuid.uuid4(), "not-a-code", "", None):
        with pytest.raises(Http404) as raised:
            fn(membership=member, code=code, action=Action.OWN)
        messages.add(str(raised.value))
    # A well-formed code: the foreign one and the made-up one read the same.
    assert len(messages - {"Not found."}) == 1


def test_the_platform_broker_is_no_tenants_to_manage(world, platform_broker):
    with pytest.raises(Http404):
        selectors.broker_get_for_member(
            membership=world["members"][Role.OWNER], code=platform_broker.code
        )


@pytest.mark.parametrize("name", LISTS)
def test_list_gives_the_lowest_role_its_own_tenant_only(world, name):
    kind, call = LISTS[name]
    fn = getattr(selectors, name)
    rows = list(call(fn, world["members"][Role.VIEWER], world))
    mine, theirs = world[kind]
    if name == "pools_live_state":
        assert [row["pool"] for row in rows] == [mine.code.hex]
    else:
        found = {row.pk for row in rows}
        assert mine.pk in found and theirs.pk not in found


@pytest.mark.parametrize("name", LISTS)
def test_list_refuses_a_suspended_tenant(world, name):
    _, call = LISTS[name]
    fn = getattr(selectors, name)
    owner = world["members"][Role.OWNER]
    _suspend(owner.tenant)
    with pytest.raises(TenantSuspended):
        list(call(fn, owner, world))


def test_usable_brokers_are_the_platform_and_the_tenants_own(world, platform_broker):
    usable = list(
        selectors.brokers_usable_by_member(membership=world["members"][Role.VIEWER])
    )
    assert usable == [platform_broker, world["broker"][0]]
    assert not Broker.objects.filter(pk=world["broker"][1].pk, is_platform=True)
