"""Login, throttling, logout and password reset, with their audit events."""

import re
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import SESSION_KEY as AUTH_SESSION_KEY
from django.urls import reverse

from conftest import PASSWORD
from tenants.auth import SESSION_KEY

pytestmark = pytest.mark.django_db

LOGIN = "/login/"


def post_login(client, email, password, ip="10.0.0.1"):
    return client.post(LOGIN, {"username": email, "password": password}, REMOTE_ADDR=ip)


def test_login_selects_a_tenant_and_is_audited(client, alice, events):
    response = post_login(client, "alice@acme.test", PASSWORD)
    assert response.status_code == 302
    assert response.url == reverse("pools")
    assert client.session[AUTH_SESSION_KEY] == str(alice.user.pk)
    assert client.session[SESSION_KEY] == alice.tenant.code.hex
    (event,) = events("login.succeeded")
    assert event.actor == alice.user
    assert event.tenant == alice.tenant
    assert event.ip == "10.0.0.1"


def test_login_email_is_case_insensitive(client, alice):
    assert post_login(client, "Alice@ACME.test", PASSWORD).status_code == 302


def test_failed_login_is_audited_on_the_platform_chain(client, alice, events):
    response = post_login(client, "alice@acme.test", "wrong")
    assert response.status_code == 200
    assert b"The e-mail or password is wrong." in response.content
    assert AUTH_SESSION_KEY not in client.session
    (event,) = events("login.failed")
    assert event.tenant is None
    assert event.actor_label == "alice@acme.test"
    assert event.data == {"reason": "bad credentials"}
    # The typed password never reaches the trail.
    assert "wrong" not in str(event.data)


def test_unknown_email_fails_like_a_wrong_password(client, db, events):
    response = post_login(client, "nobody@acme.test", PASSWORD)
    assert response.status_code == 200
    assert b"The e-mail or password is wrong." in response.content
    assert [e.actor_label for e in events("login.failed")] == ["nobody@acme.test"]


def test_five_failures_lock_the_pair_out(client, alice, events, settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    statuses = [
        post_login(client, "alice@acme.test", f"guess-{n}").status_code
        for n in range(5)
    ]
    # The fifth failure reaches the limit and already answers with the lockout.
    assert statuses == [200, 200, 200, 200, 429]

    response = post_login(client, "alice@acme.test", PASSWORD)
    assert response.status_code == 429
    assert response["Retry-After"] == str(15 * 60)
    assert b"Too many failed attempts" in response.content
    assert AUTH_SESSION_KEY not in client.session
    assert events("login.succeeded") == []

    failed = events("login.failed")
    assert [e.data["reason"] for e in failed] == ["bad credentials"] * 4 + [
        "locked out"
    ] * 2
    assert {e.actor_label for e in failed} == {"alice@acme.test"}


def test_lockout_is_per_address_and_user(client, alice, olivia):
    for n in range(5):
        post_login(client, "alice@acme.test", f"guess-{n}")
    # Another user from the same address, and alice from another address, still
    # get in.
    assert post_login(client, "olivia@acme.test", PASSWORD).status_code == 302
    client.logout()
    assert (
        post_login(client, "alice@acme.test", PASSWORD, ip="10.9.9.9").status_code
        == 302
    )


def test_success_resets_the_failure_count(client, alice):
    for n in range(4):
        post_login(client, "alice@acme.test", f"guess-{n}")
    assert post_login(client, "alice@acme.test", PASSWORD).status_code == 302
    client.logout()
    for n in range(4):
        assert post_login(client, "alice@acme.test", f"again-{n}").status_code == 200
    assert post_login(client, "alice@acme.test", PASSWORD).status_code == 302


def test_logout_is_audited(login, alice, events):
    client = login(alice)
    assert client.get(reverse("logout")).status_code == 405
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert response.url == reverse("login")
    assert AUTH_SESSION_KEY not in client.session
    (event,) = events("logout")
    assert event.actor == alice.user
    assert event.tenant == alice.tenant


def test_suspended_tenant_member_logs_in_but_sees_the_notice(client, alice):
    alice.tenant.status = "suspended"
    alice.tenant.save()
    assert post_login(client, "alice@acme.test", PASSWORD).status_code == 302
    for name in ("pools", "team", "brokers", "audit"):
        response = client.get(reverse(name))
        assert response.status_code == 403, name
        assert b"Acme Pools is suspended" in response.content, name
    # Logging out still works.
    assert client.post(reverse("logout")).status_code == 302


# --- password reset ----------------------------------------------------------------


def _reset_link(mailoutbox) -> str:
    link = re.search(r"https?://\S+/password/reset/\S+/", mailoutbox[-1].body).group(0)
    return urlsplit(link).path


def test_password_reset_end_to_end(client, alice, mailoutbox, events):
    page = client.get(reverse("password_reset"))
    assert page.status_code == 200
    assert b"Reset your password" in page.content

    response = client.post(reverse("password_reset"), {"email": "alice@acme.test"})
    assert response.status_code == 302
    assert response.url == reverse("password_reset_done")
    assert b"Check your e-mail" in client.get(response.url).content
    assert len(mailoutbox) == 1
    assert mailoutbox[0].subject == "Reset your poolsaas password"
    assert mailoutbox[0].to == ["alice@acme.test"]

    # Django swaps the token for a session-held one and redirects to set-password.
    confirm = client.get(_reset_link(mailoutbox), follow=True)
    assert confirm.status_code == 200
    assert b"Choose a new password" in confirm.content
    set_url = confirm.redirect_chain[-1][0]

    mismatch = client.post(
        set_url,
        {"new_password1": "kelp-forest-4471", "new_password2": "kelp-forest-0000"},
    )
    assert mismatch.status_code == 200
    assert b"didn" in mismatch.content  # "The two password fields didn't match."
    alice.user.refresh_from_db()
    assert alice.user.check_password(PASSWORD)
    assert events("password.reset") == []

    done = client.post(
        set_url,
        {"new_password1": "kelp-forest-4471", "new_password2": "kelp-forest-4471"},
    )
    assert done.status_code == 302
    assert done.url == reverse("password_reset_complete")
    assert b"Password changed" in client.get(done.url).content
    alice.user.refresh_from_db()
    assert alice.user.check_password("kelp-forest-4471")
    (event,) = events("password.reset")
    assert event.actor == alice.user

    # The link is single use.
    again = client.get(_reset_link(mailoutbox), follow=True)
    assert b"This link cannot be used" in again.content


def test_password_reset_for_unknown_email_sends_nothing(client, db, mailoutbox):
    response = client.post(reverse("password_reset"), {"email": "nobody@acme.test"})
    assert response.status_code == 302
    assert mailoutbox == []


def test_password_reset_bad_email_is_refused(client, db, mailoutbox):
    response = client.post(reverse("password_reset"), {"email": "not-an-email"})
    assert response.status_code == 200
    assert b"Enter a valid email address." in response.content
    assert mailoutbox == []


def test_lockout_counts_case_and_space_variants_of_the_email(client, alice, events):
    # Without normalisation each spelling had its own five tries: an attacker
    # cycling ALICE@, Alice@, " alice@" ... guessed without end.
    spellings = [
        "alice@acme.test",
        "ALICE@acme.test",
        "Alice@ACME.test",
        " alice@acme.test",
        "aLiCe@acme.TEST ",
    ]
    statuses = [
        post_login(client, email, f"guess-{n}").status_code
        for n, email in enumerate(spellings)
    ]
    assert statuses == [200, 200, 200, 200, 429]
    # The right password in any spelling is now refused too.
    assert post_login(client, "ALICE@ACME.TEST", PASSWORD).status_code == 429
    assert post_login(client, "alice@acme.test", PASSWORD).status_code == 429
    assert AUTH_SESSION_KEY not in client.session
    from axes.models import AccessAttempt

    assert set(AccessAttempt.objects.values_list("username", flat=True)) == {
        "alice@acme.test"
    }


def test_failed_login_audit_label_is_the_normalised_email(client, alice, events):
    post_login(client, "  ALICE@Acme.test ", "wrong")
    (event,) = events("login.failed")
    assert event.actor_label == "alice@acme.test"


def test_login_rotates_the_session_key(client, alice):
    # Session fixation: a key planted before login must not carry the login.
    client.get(LOGIN)
    session = client.session
    session["planted"] = "yes"
    session.save()
    before = session.session_key
    assert post_login(client, "alice@acme.test", PASSWORD).status_code == 302
    assert client.session.session_key != before
    assert client.session[AUTH_SESSION_KEY] == str(alice.user.pk)


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "http:evil.example",
        "javascript:alert(1)",
    ],
)
def test_login_next_never_leaves_the_site(client, alice, target):
    response = client.post(
        LOGIN + "?next=x",
        {"username": "alice@acme.test", "password": PASSWORD, "next": target},
    )
    assert response.status_code == 302
    assert response.url == reverse("pools")


def test_login_next_inside_the_site_is_followed(client, alice):
    response = client.post(
        LOGIN, {"username": "alice@acme.test", "password": PASSWORD, "next": "/team/"}
    )
    assert response.url == "/team/"


def test_password_reset_answers_the_same_for_known_and_unknown(client, alice):
    known = client.post(reverse("password_reset"), {"email": "alice@acme.test"})
    unknown = client.post(reverse("password_reset"), {"email": "nobody@acme.test"})
    assert known.status_code == unknown.status_code == 302
    assert known.url == unknown.url == reverse("password_reset_done")


def test_password_reset_link_uses_site_url_not_the_host_header(
    client, alice, mailoutbox, settings
):
    # Host header poisoning: the link in the e-mail must point at our site even
    # when the request names another allowed host.
    settings.ALLOWED_HOSTS = ["poolsaas.example", "attacker.example"]
    settings.SITE_URL = "https://poolsaas.example"
    client.post(
        reverse("password_reset"),
        {"email": "alice@acme.test"},
        HTTP_HOST="attacker.example",
    )
    (mail,) = mailoutbox
    assert "https://poolsaas.example/password/reset/" in mail.body
    assert "attacker.example" not in mail.body
