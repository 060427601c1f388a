"""The access functions of tenants/selectors.py, called directly as any new entry point
would: each checks the role and the tenant's state itself, and answers "not found"
alike for another tenant's object and a made-up code."""

import inspect
import uuid

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404

from tenants import auth, selectors
from tenants.models import Tenant
from tenants.roles import Action, Role
from tenants.selectors import TenantSuspended
from tenants.services import invitation_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(alice, adam, olivia, victor, carol, make_member, mailoutbox):
    invitation_a, _ = invitation_create(
        membership=alice, email="new@acme.test", role="viewer"
    )
    invitation_b, _ = invitation_create(
        membership=carol, email="new@globex.test", role="viewer"
    )
    return {
        "members": {
            Role.OWNER: alice,
            Role.ADMIN: adam,
            Role.OPERATOR: olivia,
            Role.VIEWER: victor,
        },
        "carol": carol,
        "invitation": (invitation_a, invitation_b),
        "member": (victor, carol),
    }


def _suspend(tenant: Tenant) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(status=Tenant.Status.SUSPENDED)
    tenant.status = Tenant.Status.SUSPENDED


# name -> (call with a membership and a code, the lowest role it allows)
ACCESS = {
    "tenant_members": (lambda m, code: list(selectors.tenant_members(membership=m))),
    "member_get_for_user": (
        lambda m, code: selectors.member_get_for_user(
            membership=m, code=code, action=Action.MANAGE
        )
    ),
    "invitations_pending": (
        lambda m, code: list(selectors.invitations_pending(membership=m))
    ),
    "invitation_get_for_user": (
        lambda m, code: selectors.invitation_get_for_user(membership=m, code=code)
    ),
    "membership_require": (
        lambda m, code: selectors.membership_require(membership=m, action=Action.MANAGE)
    ),
}
LOWEST = {
    "tenant_members": Role.VIEWER,
    "member_get_for_user": Role.ADMIN,
    "invitations_pending": Role.ADMIN,
    "invitation_get_for_user": Role.ADMIN,
    "membership_require": Role.ADMIN,
}
BELOW = {Role.ADMIN: Role.OPERATOR, Role.OPERATOR: Role.VIEWER}
# The object each getter returns, per tenant.
KIND = {"member_get_for_user": "member", "invitation_get_for_user": "invitation"}


def test_every_access_function_is_covered_here():
    names = {
        name
        for name, fn in vars(selectors).items()
        if inspect.isfunction(fn)
        and fn.__module__ == selectors.__name__
        and "membership" in inspect.signature(fn).parameters
    }
    assert names == set(ACCESS)


def _code(world, name, which=0):
    kind = KIND.get(name)
    return world[kind][which].code if kind else None


@pytest.mark.parametrize("name", ACCESS)
def test_the_lowest_role_passes_and_the_one_below_is_refused(world, name):
    call, lowest = ACCESS[name], LOWEST[name]
    got = call(world["members"][lowest], _code(world, name))
    if name in KIND:
        assert got.pk == world[KIND[name]][0].pk
    if lowest in BELOW:
        with pytest.raises(PermissionDenied) as raised:
            call(world["members"][BELOW[lowest]], _code(world, name))
        assert not isinstance(raised.value, TenantSuspended)
        assert "role" in str(raised.value)


@pytest.mark.parametrize("name", ACCESS)
def test_a_suspended_tenant_is_refused(world, name):
    owner = world["members"][Role.OWNER]
    _suspend(owner.tenant)
    with pytest.raises(TenantSuspended):
        ACCESS[name](owner, _code(world, name))


@pytest.mark.parametrize("name", KIND)
@pytest.mark.parametrize("role", list(Role))
def test_foreign_and_made_up_codes_are_not_found(world, name, role):
    member = world["members"][role]
    for code in (_code(world, name, 1), uuid.uuid4(), "not-a-code", None):
        with pytest.raises(Http404):
            ACCESS[name](member, code)


def test_member_get_checks_the_action_it_is_given(world):
    target = world["member"][0].code
    admin = world["members"][Role.ADMIN]
    with pytest.raises(PermissionDenied):
        selectors.member_get_for_user(membership=admin, code=target, action=Action.OWN)
    owner = world["members"][Role.OWNER]
    got = selectors.member_get_for_user(membership=owner, code=target, action="own")
    assert got.pk == world["member"][0].pk


def test_lists_never_show_another_tenant(world):
    admin = world["members"][Role.ADMIN]
    members = selectors.tenant_members(membership=admin)
    assert {m.tenant_id for m in members} == {admin.tenant_id}
    assert world["carol"].pk not in {m.pk for m in members}
    pending = selectors.invitations_pending(membership=admin)
    assert [i.pk for i in pending] == [world["invitation"][0].pk]


def test_membership_for_user(world):
    alice, carol = world["members"][Role.OWNER], world["carol"]
    assert auth.membership_for_user(user=alice.user).pk == alice.pk
    assert (
        auth.membership_for_user(user=alice.user, tenant_code=alice.tenant.code).pk
        == alice.pk
    )
    for code in (carol.tenant.code, uuid.uuid4(), "not-a-code"):
        with pytest.raises(Http404):
            auth.membership_for_user(user=alice.user, tenant_code=code)
    # A suspended tenant's member still has the membership (to be told why).
    _suspend(alice.tenant)
    assert auth.membership_for_user(user=alice.user).pk == alice.pk
