"""Invitation links: e-mailed, expiring, single use; new and existing users."""

import re
from datetime import timedelta
from urllib.parse import quote, urlsplit

import pytest
from django.contrib.auth import SESSION_KEY as AUTH_SESSION_KEY
from django.urls import reverse
from django.utils import timezone

from conftest import PASSWORD
from tenants.auth import SESSION_KEY
from tenants.models import Invitation, Membership, User
from tenants.services import invitation_create

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "tide-lantern-92-copper"


@pytest.fixture
def send(mailoutbox, django_capture_on_commit_callbacks):
    """Invite through the service and return the link path from the e-mail."""

    def do(membership, email="newbie@acme.test", role="operator") -> str:
        with django_capture_on_commit_callbacks(execute=True):
            invitation_create(membership=membership, email=email, role=role)
        body = mailoutbox[-1].body
        link = re.search(r"https?://\S+/invitations/\S+/", body).group(0)
        return urlsplit(link).path

    return do


def signup(client, path, **overrides):
    data = {
        "full_name": "Nina Newbie",
        "password1": NEW_PASSWORD,
        "password2": NEW_PASSWORD,
    }
    data.update(overrides)
    return client.post(path, data)


def test_new_user_accepts_from_the_mailed_link(client, alice, send, events):
    path = send(alice, role="operator")
    page = client.get(path)
    assert page.status_code == 200
    assert b"Join Acme Pools" in page.content
    assert page["Referrer-Policy"] == "same-origin"

    response = signup(client, path)
    assert response.status_code == 302
    assert response.url == reverse("pools")
    user = User.objects.get(email="newbie@acme.test")
    assert user.full_name == "Nina Newbie"
    assert user.check_password(NEW_PASSWORD)
    membership = Membership.objects.get(user=user)
    assert (membership.tenant, membership.role) == (alice.tenant, "operator")
    # Logged in, working in the inviting tenant.
    assert client.session[AUTH_SESSION_KEY] == str(user.pk)
    assert client.session[SESSION_KEY] == alice.tenant.code.hex
    assert client.get(reverse("team")).status_code == 200
    invitation = Invitation.objects.get()
    assert invitation.accepted_by == user
    (event,) = events("invitation.accepted")
    assert event.tenant == alice.tenant
    assert event.data == {"role": "operator", "new_member": True}


def test_link_is_single_use(client, alice, send):
    path = send(alice)
    assert signup(client, path).status_code == 302
    client.logout()
    again = client.get(path)
    assert again.status_code == 410
    assert b"already been used" in again.content
    second = signup(client, path, full_name="Mallory")
    assert second.status_code == 410
    assert User.objects.filter(email="newbie@acme.test").count() == 1
    assert not User.objects.filter(full_name="Mallory").exists()


def test_expired_link_is_refused(client, alice, send):
    path = send(alice)
    Invitation.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    page = client.get(path)
    assert page.status_code == 410
    assert b"has expired" in page.content
    assert signup(client, path).status_code == 410
    assert not User.objects.filter(email="newbie@acme.test").exists()


def test_link_expires_after_the_configured_time(alice, send, settings):
    before = timezone.now()
    send(alice)
    invitation = Invitation.objects.get()
    assert invitation.expires_at - before >= settings.INVITATION_TTL
    assert invitation.expires_at - before < settings.INVITATION_TTL + timedelta(
        minutes=1
    )


def test_revoked_link_is_refused(client, login, alice, send):
    path = send(alice)
    invitation = Invitation.objects.get()
    login(alice).post(reverse("invitation_revoke", args=[invitation.code]))
    client.logout()
    page = client.get(path)
    assert page.status_code == 410
    assert b"withdrawn" in page.content
    assert signup(client, path).status_code == 410
    assert not User.objects.filter(email="newbie@acme.test").exists()


def test_unknown_token_is_not_found(client, db):
    response = client.get(reverse("invitation_accept", args=["made-up-token"]))
    assert response.status_code == 404
    assert b"not valid" in response.content


def test_only_a_hash_of_the_token_is_stored(alice, send):
    path = send(alice)
    token = path.rstrip("/").rsplit("/", 1)[1]
    invitation = Invitation.objects.get()
    assert token not in invitation.token_hash
    assert not Invitation.objects.filter(token_hash=token).exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"password1": "short", "password2": "short"}, b"too short"),
        ({"password1": "12345678901", "password2": "12345678901"}, b"entirely numeric"),
        ({"password1": "password123", "password2": "password123"}, b"too common"),
        ({"password2": "something-else-entirely"}, b"The two passwords differ."),
        ({"full_name": ""}, b"This field is required."),
    ],
)
def test_signup_bad_input_changes_nothing(client, alice, send, overrides, message):
    path = send(alice)
    response = signup(client, path, **overrides)
    assert response.status_code == 400
    assert message in response.content
    assert not User.objects.filter(email="newbie@acme.test").exists()
    assert Invitation.objects.get().is_pending
    # The link still works afterwards.
    assert signup(client, path).status_code == 302


def test_password_similar_to_email_is_refused(client, alice, send):
    path = send(alice, email="seashell.harbour@acme.test")
    response = signup(
        client, path, password1="seashell.harbour", password2="seashell.harbour"
    )
    assert response.status_code == 400
    assert b"too similar" in response.content


def test_existing_user_must_log_in_first(client, login, alice, carol, send):
    path = send(carol, email="alice@acme.test", role="viewer")
    client.logout()
    page = client.get(path)
    # Sent through login, and back to the invitation (issue 9).
    assert page.status_code == 302
    assert page.url == reverse("login") + "?next=" + quote(path)
    assert page["Referrer-Policy"] == "same-origin"
    # Posting a sign-up for an existing e-mail creates nothing.
    assert signup(client, path).status_code == 302
    assert not Membership.objects.filter(user=alice.user, tenant=carol.tenant).exists()
    assert User.objects.get(email="alice@acme.test").check_password(PASSWORD)
    login_page = client.get(page.url)
    assert b"already has a poolsaas account" in login_page.content
    logged_in = client.post(
        page.url, {"username": "alice@acme.test", "password": PASSWORD, "next": path}
    )
    assert logged_in.status_code == 302 and logged_in.url == path
    joined = client.post(path)
    assert joined.status_code == 302
    assert Membership.objects.filter(user=alice.user, tenant=carol.tenant).exists()


def test_existing_user_accepts_and_the_session_switches(login, alice, carol, send):
    path = send(carol, email="alice@acme.test", role="admin")
    client = login(alice)
    assert client.session[SESSION_KEY] == alice.tenant.code.hex
    page = client.get(path)
    assert page.status_code == 200
    assert b"Join Globex Residence" in page.content
    assert b"password1" not in page.content
    response = client.post(path)
    assert response.status_code == 302
    membership = Membership.objects.get(user=alice.user, tenant=carol.tenant)
    assert membership.role == "admin"
    assert client.session[SESSION_KEY] == carol.tenant.code.hex
    team = client.get(reverse("team")).content.decode()
    assert "carol@globex.test" in team


def test_logged_in_as_someone_else_is_refused(login, alice, olivia, send):
    path = send(alice, email="newbie@acme.test")
    client = login(olivia)
    page = client.get(path)
    assert page.status_code == 403
    assert b"This invitation is for newbie@acme.test" in page.content
    assert client.post(path).status_code == 403
    assert Invitation.objects.get().is_pending
    assert not User.objects.filter(email="newbie@acme.test").exists()


def test_accept_page_works_for_a_suspended_tenant_member(login, alice, carol, send):
    # The invitation page stays reachable when the current tenant is suspended.
    path = send(carol, email="alice@acme.test", role="viewer")
    alice.tenant.status = "suspended"
    alice.tenant.save()
    client = login(alice)
    assert client.get(path).status_code == 200
    assert client.post(path).status_code == 302
    assert client.get(reverse("team")).status_code == 200


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_accepts_only_one_wins(alice):
    import threading

    from django.db import connection

    from tenants.services import InvitationInvalid, invitation_accept

    _invitation, token = invitation_create(
        membership=alice, email="race@acme.test", role="viewer"
    )
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def accept(name: str) -> None:
        try:
            barrier.wait(timeout=5)
            invitation_accept(token=token, full_name=name, password=NEW_PASSWORD)
            outcomes.append("joined")
        except InvitationInvalid as error:
            outcomes.append(error.kind)
        except Exception as error:  # noqa: BLE001 - the test reports any other outcome
            outcomes.append(type(error).__name__)
        finally:
            connection.close()

    threads = [threading.Thread(target=accept, args=(n,)) for n in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(outcomes) == ["joined", "used"]
    assert User.objects.filter(email="race@acme.test").count() == 1
    assert Membership.objects.filter(user__email="race@acme.test").count() == 1
