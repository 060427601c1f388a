"""The team page: members, invitations, role changes and removals."""

import contextlib
import uuid

import pytest
from django.urls import reverse

from tenants.models import Invitation, Membership, Tenant

pytestmark = pytest.mark.django_db

TEAM = "/team/"


def role_url(member) -> str:
    return reverse("member_role", args=[member.code])


def remove_url(member) -> str:
    return reverse("member_remove", args=[member.code])


def invite(client, email="new@acme.test", role="operator"):
    return client.post(reverse("team_invite"), {"email": email, "role": role})


def reload(member: Membership) -> Membership | None:
    return Membership.objects.filter(pk=member.pk).first()


# --- the page --------------------------------------------------------------------


def test_team_lists_members_and_pending_invitations(
    login, alice, adam, olivia, victor, carol, django_assert_max_num_queries
):
    client = login(alice)
    invite(client, email="pending@acme.test", role="viewer")
    with django_assert_max_num_queries(12):
        response = client.get(TEAM)
    assert response.status_code == 200
    html = response.content.decode()
    for member in (alice, adam, olivia, victor):
        assert member.user.email in html
        assert str(member.code) in html  # each row has its forms
    assert carol.user.email not in html
    assert "pending@acme.test" in html
    assert "Send invitation" in html


def test_team_query_count_does_not_grow_with_members(
    login, alice, make_member, tenant_a, django_assert_max_num_queries
):
    for n in range(15):
        make_member(tenant_a, f"member{n}@acme.test", "viewer")
    for n in range(5):
        Invitation.objects.create(
            tenant=tenant_a,
            email=f"inv{n}@acme.test",
            token_hash=f"{n:064d}",
            invited_by=alice.user,
            expires_at="2999-01-01T00:00:00Z",
        )
    client = login(alice)
    with django_assert_max_num_queries(12):
        response = client.get(TEAM)
    assert response.content.decode().count("member1") >= 6


@pytest.mark.parametrize("persona", ["olivia", "victor"])
def test_team_is_read_only_below_admin(request, login, alice, persona):
    member = request.getfixturevalue(persona)
    _invitation(alice.tenant, alice.user, email="secret-invitee@acme.test")
    response = login(member).get(TEAM)
    assert response.status_code == 200
    html = response.content.decode()
    assert alice.user.email in html
    assert "Send invitation" not in html
    assert reverse("member_role", args=[alice.code]) not in html
    assert remove_url(alice) not in html
    # Their own row offers to leave the team.
    assert remove_url(member) in html
    # Pending invitations are admin business.
    assert "secret-invitee@acme.test" not in html


def test_admin_is_not_offered_owner_changes(login, alice, adam):
    html = login(adam).get(TEAM).content.decode()
    assert role_url(alice) not in html
    assert role_url(adam) in html
    assert 'value="owner"' not in html  # adam cannot hand out owner


def test_team_without_tenant_explains(client, make_user):
    user = make_user("lonely@nowhere.test")
    client.force_login(user)
    response = client.get(TEAM)
    assert response.status_code == 200
    assert b"not in any team yet" in response.content


def test_team_needs_login(client):
    response = client.get(TEAM)
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_post_only_endpoints_refuse_get(login, alice, olivia):
    client = login(alice)
    assert client.get(reverse("team_invite")).status_code == 405
    assert client.get(role_url(olivia)).status_code == 405
    assert client.get(remove_url(olivia)).status_code == 405


# --- inviting ----------------------------------------------------------------------


def test_invite_creates_invitation_mails_link_and_audits(
    login, adam, mailoutbox, django_capture_on_commit_callbacks, events
):
    with django_capture_on_commit_callbacks(execute=True):
        response = invite(login(adam), email="New.Person@Acme.test", role="operator")
    assert response.status_code == 302
    assert response.url == TEAM
    invitation = Invitation.objects.get()
    assert invitation.email == "new.person@acme.test"
    assert invitation.role == "operator"
    assert invitation.tenant == adam.tenant
    assert invitation.invited_by == adam.user
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == ["new.person@acme.test"]
    assert "/invitations/" in mailoutbox[0].body
    assert invitation.token_hash not in mailoutbox[0].body
    (event,) = events("invitation.created")
    assert event.tenant == adam.tenant
    assert event.actor == adam.user


def test_invite_role_above_own_is_refused(login, adam, events):
    response = invite(login(adam), role="owner")
    assert response.status_code == 400
    assert b"Select a valid choice" in response.content
    assert not Invitation.objects.exists()
    assert events("invitation.created") == []


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("not-an-email", b"Enter a valid email address."),
        ("", b"This field is required."),
        ("victor@acme.test", b"already a member"),
    ],
)
def test_invite_bad_input_is_refused(login, alice, victor, email, message, mailoutbox):
    response = invite(login(alice), email=email)
    assert response.status_code == 400
    assert message in response.content
    assert not Invitation.objects.exists()
    assert mailoutbox == []


@pytest.mark.parametrize("persona", ["olivia", "victor"])
def test_invite_below_admin_is_forbidden(request, login, persona):
    member = request.getfixturevalue(persona)
    response = invite(login(member), role="viewer")
    assert response.status_code == 403
    assert b"This needs the admin role or higher" in response.content
    assert not Invitation.objects.exists()


def test_invite_goes_to_the_session_tenant_only(login, alice, carol):
    invite(login(alice), email="someone@else.test")
    assert Invitation.objects.get().tenant == alice.tenant
    assert not Invitation.objects.filter(tenant=carol.tenant).exists()


def test_reinviting_replaces_the_pending_invitation(login, alice):
    client = login(alice)
    invite(client, email="twice@acme.test", role="viewer")
    invite(client, email="twice@acme.test", role="operator")
    pending = [i for i in Invitation.objects.all() if i.is_pending]
    assert [(i.email, i.role) for i in pending] == [("twice@acme.test", "operator")]


# --- revoking ----------------------------------------------------------------------


def _invitation(tenant, inviter, email="x@acme.test") -> Invitation:
    from django.utils import timezone

    return Invitation.objects.create(
        tenant=tenant,
        email=email,
        token_hash=uuid.uuid4().hex * 2,
        invited_by=inviter,
        expires_at=timezone.now() + timezone.timedelta(days=1),
    )


def test_revoke_invitation(login, alice, events):
    invitation = _invitation(alice.tenant, alice.user)
    response = login(alice).post(reverse("invitation_revoke", args=[invitation.code]))
    assert response.status_code == 302
    invitation.refresh_from_db()
    assert invitation.revoked_at is not None
    (event,) = events("invitation.revoked")
    assert event.tenant == alice.tenant


@pytest.mark.parametrize("persona", ["olivia", "victor"])
def test_revoke_below_admin_is_forbidden(request, login, alice, persona):
    invitation = _invitation(alice.tenant, alice.user)
    member = request.getfixturevalue(persona)
    response = login(member).post(reverse("invitation_revoke", args=[invitation.code]))
    assert response.status_code == 403
    invitation.refresh_from_db()
    assert invitation.revoked_at is None


def test_revoke_foreign_invitation_is_not_found(login, alice, carol):
    theirs = _invitation(carol.tenant, carol.user, email="b@globex.test")
    response = login(alice).post(reverse("invitation_revoke", args=[theirs.code]))
    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


@pytest.mark.parametrize("code", [uuid.uuid4(), "not-a-code"])
def test_revoke_made_up_invitation_is_not_found(login, alice, code):
    response = login(alice).post(reverse("invitation_revoke", args=[code]))
    assert response.status_code == 404


# --- role changes ------------------------------------------------------------------


def test_owner_changes_a_role(login, alice, olivia, events):
    response = login(alice).post(role_url(olivia), {"role": "admin"})
    assert response.status_code == 302
    assert reload(olivia).role == "admin"
    (event,) = events("membership.role_changed")
    assert event.data == {"user": olivia.user.email, "from": "operator", "to": "admin"}
    assert event.tenant == alice.tenant
    assert event.actor == alice.user


def test_admin_changes_operator_to_viewer(login, adam, olivia):
    response = login(adam).post(role_url(olivia), {"role": "viewer"})
    assert response.status_code == 302
    assert reload(olivia).role == "viewer"


def test_owner_makes_another_owner(login, alice, adam):
    assert login(alice).post(role_url(adam), {"role": "owner"}).status_code == 302
    assert reload(adam).role == "owner"


@pytest.mark.parametrize(
    ("persona", "target", "role"),
    [
        ("victor", "olivia", "viewer"),  # viewers manage nothing
        ("olivia", "victor", "operator"),  # nor do operators
        ("adam", "alice", "viewer"),  # admins do not touch owners
        ("adam", "olivia", "owner"),  # nor hand out owner
    ],
)
def test_role_change_without_the_right_is_forbidden(
    request, login, alice, adam, olivia, victor, persona, target, role
):
    actor = request.getfixturevalue(persona)
    target_member = request.getfixturevalue(target)
    before = target_member.role
    response = login(actor).post(role_url(target_member), {"role": role})
    assert response.status_code == 403
    assert reload(target_member).role == before


def test_role_change_of_another_tenants_member_is_not_found(login, alice, carol):
    response = login(alice).post(role_url(carol), {"role": "viewer"})
    assert response.status_code == 404
    assert reload(carol).role == "owner"


@pytest.mark.parametrize("code", [uuid.uuid4(), "12345", "nope"])
def test_role_change_of_made_up_member_is_not_found(login, alice, code):
    response = login(alice).post(
        reverse("member_role", args=[code]), {"role": "viewer"}
    )
    assert response.status_code == 404


@pytest.mark.parametrize("role", ["superuser", "", "OWNER"])
def test_role_change_bad_role_is_refused(login, alice, olivia, role, events):
    response = login(alice).post(role_url(olivia), {"role": role})
    assert response.status_code == 400
    assert b"Choose one of the roles" in response.content
    assert reload(olivia).role == "operator"
    assert events("membership.role_changed") == []


def test_last_owner_cannot_demote_themselves(login, alice, events):
    response = login(alice).post(role_url(alice), {"role": "admin"})
    assert response.status_code == 400
    assert b"at least one owner" in response.content
    assert reload(alice).role == "owner"
    assert events("membership.role_changed") == []


def test_an_owner_may_step_down_when_another_owner_exists(login, alice, adam):
    client = login(alice)
    client.post(role_url(adam), {"role": "owner"})
    assert client.post(role_url(alice), {"role": "admin"}).status_code == 302
    assert reload(alice).role == "admin"
    assert Membership.objects.filter(tenant=alice.tenant, role="owner").count() == 1


# --- removals ----------------------------------------------------------------------


def test_owner_removes_a_member(login, alice, victor, events):
    response = login(alice).post(remove_url(victor))
    assert response.status_code == 302
    assert reload(victor) is None
    (event,) = events("membership.removed")
    assert event.data == {"user": victor.user.email, "role": "viewer"}
    assert event.tenant == alice.tenant


def test_admin_removes_an_operator(login, adam, olivia):
    assert login(adam).post(remove_url(olivia)).status_code == 302
    assert reload(olivia) is None


@pytest.mark.parametrize(
    ("persona", "target"),
    [("victor", "olivia"), ("olivia", "victor"), ("adam", "alice")],
)
def test_removal_without_the_right_is_forbidden(
    request, login, alice, adam, olivia, victor, persona, target
):
    actor = request.getfixturevalue(persona)
    target_member = request.getfixturevalue(target)
    assert login(actor).post(remove_url(target_member)).status_code == 403
    assert reload(target_member) is not None


def test_removal_of_another_tenants_member_is_not_found(login, alice, carol):
    assert login(alice).post(remove_url(carol)).status_code == 404
    assert reload(carol) is not None


@pytest.mark.parametrize("code", [uuid.uuid4(), "drop table"])
def test_removal_of_made_up_member_is_not_found(login, alice, code):
    response = login(alice).post(reverse("member_remove", args=[code]))
    assert response.status_code == 404


def test_last_owner_cannot_be_removed(login, alice, adam, events):
    response = login(alice).post(remove_url(alice))
    assert response.status_code == 400
    assert b"last owner cannot be removed" in response.content
    assert reload(alice) is not None
    assert events("membership.removed") == []


def test_owner_removes_another_owner_when_two(login, alice, carol, make_member):
    second = make_member(alice.tenant, "second-owner@acme.test", "owner")
    assert login(alice).post(remove_url(second)).status_code == 302
    assert reload(second) is None


def test_a_member_may_leave(login, victor, alice):
    client = login(victor)
    response = client.post(remove_url(victor))
    assert response.status_code == 302
    assert response.url == reverse("pools")
    assert reload(victor) is None
    # No longer in any tenant: the team page says so.
    assert b"not in any team yet" in client.get(TEAM).content


def test_suspended_tenant_team_page_shows_the_notice(login, alice, olivia):
    Tenant.objects.filter(pk=alice.tenant_id).update(status="suspended")
    client = login(alice)
    response = client.get(TEAM)
    assert response.status_code == 403
    assert b"is suspended" in response.content
    assert client.post(remove_url(olivia)).status_code == 403
    assert reload(olivia) is not None
    assert invite(client).status_code == 403
    assert not Invitation.objects.exists()


def test_same_role_records_nothing(login, alice, olivia, events):
    response = login(alice).post(role_url(olivia), {"role": "operator"}, follow=True)
    assert b"already operator" in response.content
    assert events("membership.role_changed") == []


@pytest.fixture
def user_inbox():
    """A page listening to a user's group (contract 3: access.changed)."""
    from poolsaas.live.groups import user_group
    from poolsaas.tests.live_listener import GroupListener

    with contextlib.ExitStack() as pages:

        def subscribe(user):
            page = pages.enter_context(GroupListener(user_group(user.code)))
            return lambda: page.next(timeout=5)

        yield subscribe


# The listener runs on a loop of its own, as a socket in daphne does: across loops
# only a Redis layer carries a message (the embedded default's in-memory layer is one
# loop's, and the SQLite pass has no Redis).
@pytest.mark.redis
def test_role_change_and_removal_tell_the_users_sockets(
    login, alice, olivia, user_inbox, django_capture_on_commit_callbacks
):
    receive = user_inbox(olivia.user)
    client = login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(role_url(olivia), {"role": "viewer"})
    assert receive() == {"type": "access.changed"}
    with django_capture_on_commit_callbacks(execute=True):
        client.post(remove_url(olivia))
    assert receive() == {"type": "access.changed"}
