"""Issue 10 point 4 and the invitations of a removed admin; issue 9's "Leave" of a sole
owner.

Staff edits of memberships in /admin/ go through the team's services: they close the
member's sockets (session and token), are audited as the team page's are, and keep
the last-owner rule. An admin removed or demoted loses the invitations they made.
"""

import pytest
from channels.db import database_sync_to_async
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from devices.tests.test_consumers import (
    access_token,
    assert_closed,
    pool_path,
    receive_type,
    session_cookie,
    socket,
)
from tenants.models import Invitation, Membership
from tenants.services import (
    invitation_create,
    membership_remove,
    membership_role_change,
)


def staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def change_url(membership) -> str:
    return reverse("admin:tenants_membership_change", args=[membership.pk])


async def open_both(membership, pool):
    """The member's pool page socket (session) and an integrator socket (token)."""
    page = socket(pool_path(pool), cookie=await session_cookie(membership))
    assert (await page.connect(timeout=10))[0]
    await receive_type(page, "snapshot")
    token = await access_token(membership)
    api = socket(
        pool_path(pool), headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    assert (await api.connect(timeout=10))[0]
    await receive_type(api, "snapshot")
    return page, api


@pytest.mark.django_db(transaction=True)
async def test_member_removed_by_staff_loses_both_sockets(staff, olivia, pool_a):
    page, api = await open_both(olivia, pool_a)
    client = await database_sync_to_async(staff_client)(staff)
    response = await database_sync_to_async(client.post)(
        reverse("admin:tenants_membership_delete", args=[olivia.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    for comm in (page, api):
        await receive_type(comm, "error")
        await assert_closed(comm, 4403)
    event = await database_sync_to_async(AuditEvent.objects.get)(
        action="membership.removed"
    )
    assert event.actor_id == staff.pk and event.source == "admin"


@pytest.mark.django_db(transaction=True)
async def test_role_lowered_by_staff_closes_both_sockets(staff, olivia, pool_a):
    page, api = await open_both(olivia, pool_a)
    client = await database_sync_to_async(staff_client)(staff)
    response = await database_sync_to_async(client.post)(
        change_url(olivia), {"role": "viewer"}
    )
    assert response.status_code == 302
    for comm in (page, api):
        error = await receive_type(comm, "error")
        assert "viewer" in error["message"]
        await assert_closed(comm, 4403)


@pytest.mark.django_db
def test_staff_cannot_leave_a_tenant_without_an_owner(staff, alice, olivia):
    client = staff_client(staff)
    demote = client.post(change_url(alice), {"role": "admin"})
    assert demote.status_code == 200 and b"at least one owner" in demote.content
    delete = client.post(
        reverse("admin:tenants_membership_delete", args=[alice.pk]),
        {"post": "yes"},
        follow=True,
    )
    assert b"last owner cannot be removed" in delete.content
    bulk = client.post(
        reverse("admin:tenants_membership_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [alice.pk, olivia.pk],
            "post": "yes",
        },
        follow=True,
    )
    assert b"last owner cannot be removed" in bulk.content
    alice.refresh_from_db()
    assert alice.role == "owner"
    assert not Membership.objects.filter(pk=olivia.pk).exists()


@pytest.mark.django_db
def test_staff_cannot_move_a_membership_to_another_tenant(staff, olivia, carol):
    client = staff_client(staff)
    client.post(change_url(olivia), {"role": "operator", "tenant": carol.tenant_id})
    olivia.refresh_from_db()
    assert olivia.tenant_id != carol.tenant_id


# --- invitations of a removed or demoted admin ------------------------------------


def pending(inviter) -> set[str]:
    return set(
        Invitation.objects.filter(
            invited_by=inviter.user, revoked_at=None, accepted_at=None
        ).values_list("email", flat=True)
    )


@pytest.mark.django_db
def test_removed_admins_pending_invitations_are_withdrawn(alice, adam):
    invitation, token = invitation_create(
        membership=adam, email="friend@acme.test", role="admin"
    )
    invitation_create(membership=alice, email="kept@acme.test", role="viewer")
    membership_remove(membership=alice, target=adam)
    assert pending(adam) == set()
    assert pending(alice) == {"kept@acme.test"}
    event = AuditEvent.objects.get(action="invitation.revoked")
    assert event.data["reason"] == "inviter removed" and event.actor == alice.user
    # The link no longer lets anyone in.
    response = Client().get(reverse("invitation_accept", args=[token]))
    assert response.status_code == 410


@pytest.mark.django_db
def test_demoted_admins_invitations_are_withdrawn(alice, adam):
    invitation_create(membership=adam, email="friend@acme.test", role="operator")
    membership_role_change(membership=alice, target=adam, role="operator")
    assert pending(adam) == set()


@pytest.mark.django_db
def test_owner_demoted_to_admin_keeps_only_what_an_admin_may_grant(alice, make_member):
    second = make_member(alice.tenant, "owen@acme.test", "owner")
    invitation_create(membership=second, email="boss@acme.test", role="owner")
    invitation_create(membership=second, email="helper@acme.test", role="admin")
    membership_role_change(membership=alice, target=second, role="admin")
    assert pending(second) == {"helper@acme.test"}


@pytest.mark.django_db
def test_staff_removal_withdraws_invitations_too(staff, alice, adam):
    invitation_create(membership=adam, email="friend@acme.test", role="viewer")
    staff_client(staff).post(
        reverse("admin:tenants_membership_delete", args=[adam.pk]), {"post": "yes"}
    )
    assert pending(adam) == set()


# --- "Leave" on the team page (issue 9) ---------------------------------------------


@pytest.mark.django_db
def test_sole_owner_is_not_offered_leave_but_told_why(login, alice, olivia):
    page = login(alice).get("/team/").content.decode()
    leave = reverse("member_remove", args=[alice.code])
    assert leave not in page
    assert "Only owner: make someone else owner to leave" in page
    # Others are still offered their Leave and can be removed.
    assert reverse("member_remove", args=[olivia.code]) in page


@pytest.mark.django_db
def test_one_of_two_owners_is_offered_leave(login, alice, make_member):
    make_member(alice.tenant, "owen@acme.test", "owner")
    page = login(alice).get("/team/").content.decode()
    assert reverse("member_remove", args=[alice.code]) in page
    assert "Only owner" not in page


@pytest.mark.django_db(transaction=True)
async def test_account_disabled_by_staff_loses_its_sockets(staff, olivia, pool_a):
    page, api = await open_both(olivia, pool_a)
    client = await database_sync_to_async(staff_client)(staff)
    user = olivia.user
    response = await database_sync_to_async(client.post)(
        reverse("admin:tenants_user_change", args=[user.pk]),
        {
            "email": user.email,
            "full_name": user.full_name,
            # is_active unticked; the (read-only) memberships inline as the page has it
            "memberships-TOTAL_FORMS": "1",
            "memberships-INITIAL_FORMS": "1",
            "memberships-0-id": olivia.pk,
            "memberships-0-user": user.pk,
        },
    )
    assert response.status_code == 302, response.content.decode()[-1500:]
    for comm in (page, api):
        await receive_type(comm, "error")
        await assert_closed(comm, 4403)
    event = await database_sync_to_async(AuditEvent.objects.get)(
        action="user.logins_ended"
    )
    assert event.data["reason"] == "deactivated" and event.source == "admin"
