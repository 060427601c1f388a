"""Issue 10 point 3: a password change or reset ends every other login of the user
(browser sessions, API refresh and access tokens, live sockets); "log out other
sessions" does the same on demand; a refresh token lives REFRESH_TOKEN_LIFETIME in
all and is used once, even by two requests at the same moment.

Through the real pages, the real API and the real consumers (the ASGI application with
its session middleware and the channel layer of the settings).
"""

import threading
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.tokens import default_token_generator
from django.db import connection
from django.test import Client
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from audit.models import AuditEvent
from conftest import PASSWORD
from devices.models import Command
from devices.tests.test_consumers import (
    assert_closed,
    pool_path,
    receive_type,
    socket,
)
from poolsaas.api.testing import api_client, assert_error
from tenants.models import UserSession

pytestmark = pytest.mark.django_db(transaction=True)

NEW_PASSWORD = "lagoon-pebble-4417"
POOLS = "/api/v1/pools/"


@pytest.fixture
def online_device(device_a):
    device_a.online = True
    device_a.state = {"pump": False, "valve": 1}
    device_a.save()
    return device_a


def browser(membership) -> Client:
    """A browser that logged in on the login page (its session is tracked)."""
    client = Client()
    response = client.post(
        "/login/", {"username": membership.user.email, "password": PASSWORD}
    )
    assert response.status_code == 302, response.content
    return client


def api_login(membership) -> dict:
    response = api_client().post(
        "/api/login",
        {"email": membership.user.email, "password": PASSWORD},
        format="json",
    )
    assert response.status_code == 200, response.content
    return response.json()


def change_password(client: Client) -> None:
    response = client.post(
        "/account/password/",
        {
            "old_password": PASSWORD,
            "new_password1": NEW_PASSWORD,
            "new_password2": NEW_PASSWORD,
        },
    )
    assert response.status_code == 302, response.content.decode()[-800:]


def reset_password(user) -> None:
    """The e-mailed link, as the user follows it (logged in nowhere)."""
    client = Client()
    user.refresh_from_db()  # the link is made from the user's current state
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    response = client.get(f"/password/reset/{uid}/{token}/")
    assert response.status_code == 302
    done = client.post(
        response.url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    assert done.status_code == 302 and "complete" in done.url, done.content


def logged_in(client: Client) -> bool:
    return client.get("/account/").status_code == 200


def refresh(raw: str):
    return api_client().post("/api/token/refresh", {"refresh": raw}, format="json")


async def open_socket(path, *, cookie=None, token=None):
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    comm = socket(path, cookie=cookie, headers=headers)
    connected, _ = await comm.connect(timeout=10)
    assert connected
    return comm


# --- password change ---------------------------------------------------------------


async def test_password_change_ends_other_logins_but_not_this_session(
    olivia, online_device, pool_a
):
    changer = await database_sync_to_async(browser)(olivia)
    other = await database_sync_to_async(browser)(olivia)
    tokens = await database_sync_to_async(api_login)(olivia)
    session_socket = await open_socket(
        pool_path(pool_a), cookie=other.cookies["sessionid"].value
    )
    await receive_type(session_socket, "snapshot")
    token_socket = await open_socket(pool_path(pool_a), token=tokens["token"])
    await receive_type(token_socket, "snapshot")
    overview = await open_socket("/ws/tenant/", cookie=other.cookies["sessionid"].value)
    await receive_type(overview, "hello")

    await database_sync_to_async(change_password)(changer)

    # Every socket of the other logins closes at once...
    for comm in (session_socket, token_socket, overview):
        error = await receive_type(comm, "error")
        assert "withdrawn" in error["message"]
        await assert_closed(comm, 4403)
    # ...the other browser is logged out, the tokens are dead...
    assert not await database_sync_to_async(logged_in)(other)
    assert_error(await database_sync_to_async(refresh)(tokens["refresh"]), 401)
    dead = await database_sync_to_async(
        lambda: api_client(token=tokens["token"]).get(POOLS)
    )()
    assert_error(dead, 401, "password_changed")
    # ...and the session that changed it is still logged in, sockets included.
    assert await database_sync_to_async(logged_in)(changer)
    again = await open_socket(
        pool_path(pool_a), cookie=changer.cookies["sessionid"].value
    )
    await receive_type(again, "snapshot")
    await again.disconnect()
    event = await database_sync_to_async(AuditEvent.objects.get)(
        action="password.changed"
    )
    assert event.data["how"] == "change"
    assert event.data["sessions"] == 1 and event.data["refresh_tokens"] == 1


async def test_socket_refuses_commands_once_the_password_changed_even_unannounced(
    olivia, online_device, pool_a, monkeypatch
):
    """Should the access.changed message be lost (Redis down), a command is still
    checked against the login, not against the user resolved at connect."""
    from tenants.services import accounts

    other = await database_sync_to_async(browser)(olivia)
    comm = await open_socket(pool_path(pool_a), cookie=other.cookies["sessionid"].value)
    await receive_type(comm, "snapshot")
    tokens = await database_sync_to_async(api_login)(olivia)
    token_comm = await open_socket(pool_path(pool_a), token=tokens["token"])
    await receive_type(token_comm, "snapshot")
    monkeypatch.setattr(accounts, "access_changed", lambda user: None)

    await database_sync_to_async(reset_password)(olivia.user)

    for socket_ in (comm, token_comm):
        await socket_.send_json_to({"type": "command", "op": "pump", "value": "ON"})
        await receive_type(socket_, "error")
        await assert_closed(socket_, 4401)
    assert not await database_sync_to_async(Command.objects.exists)()


async def test_password_reset_ends_every_login(olivia, online_device, pool_a):
    first = await database_sync_to_async(browser)(olivia)
    tokens = await database_sync_to_async(api_login)(olivia)
    comm = await open_socket(pool_path(pool_a), cookie=first.cookies["sessionid"].value)
    await receive_type(comm, "snapshot")

    await database_sync_to_async(reset_password)(olivia.user)

    await receive_type(comm, "error")
    await assert_closed(comm, 4403)
    assert not await database_sync_to_async(logged_in)(first)
    assert_error(await database_sync_to_async(refresh)(tokens["refresh"]), 401)
    event = await database_sync_to_async(AuditEvent.objects.get)(
        action="password.reset"
    )
    assert event.data["how"] == "reset" and event.data["sessions"] == 1


def test_admin_password_change_ends_the_users_logins(client, staff, alice):
    tokens = api_login(alice)
    other = browser(alice)
    client.force_login(staff)
    response = client.post(
        f"/admin/tenants/user/{alice.user.pk}/password/",
        {
            "password1": NEW_PASSWORD,
            "password2": NEW_PASSWORD,
            "usable_password": "true",
        },
    )
    assert response.status_code == 302
    assert not logged_in(other)
    assert_error(refresh(tokens["refresh"]), 401)
    assert_error(api_client(token=tokens["token"]).get(POOLS), 401)
    # Staff stay logged in: it was not their password.
    assert client.get("/admin/").status_code == 200


# --- log out other sessions --------------------------------------------------------


async def test_log_out_other_sessions_ends_them_their_sockets_and_tokens(
    olivia, online_device, pool_a
):
    here = await database_sync_to_async(browser)(olivia)
    there = await database_sync_to_async(browser)(olivia)
    tokens = await database_sync_to_async(api_login)(olivia)
    comm = await open_socket(pool_path(pool_a), cookie=there.cookies["sessionid"].value)
    await receive_type(comm, "snapshot")
    token_comm = await open_socket(pool_path(pool_a), token=tokens["token"])
    await receive_type(token_comm, "snapshot")

    response = await database_sync_to_async(here.post)("/account/sessions/end-others/")
    assert response.status_code == 302

    for socket_ in (comm, token_comm):
        await receive_type(socket_, "error")
        await assert_closed(socket_, 4403)
    assert not await database_sync_to_async(logged_in)(there)
    assert await database_sync_to_async(logged_in)(here)
    assert_error(await database_sync_to_async(refresh)(tokens["refresh"]), 401)
    # The access token too, not only its refresh token (the user's token epoch).
    dead = await database_sync_to_async(
        lambda: api_client(token=tokens["token"]).get(POOLS)
    )()
    assert_error(dead, 401, "session_ended")
    event = await database_sync_to_async(AuditEvent.objects.get)(
        action="sessions.ended_others"
    )
    assert event.data == {"sessions": 1, "refresh_tokens": 1}


def test_session_list_shows_where_and_ends_one(olivia, carol):
    here = browser(olivia)
    there = Client(
        HTTP_USER_AGENT="Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) "
        "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 "
        "Safari/604.1",
        REMOTE_ADDR="198.51.100.23",
    )
    there.post("/login/", {"username": olivia.user.email, "password": PASSWORD})
    page = here.get("/account/").content.decode()
    assert "Safari on iPhone" in page and "198.51.100.23" in page
    assert "this session" in page
    row = UserSession.objects.get(user=olivia.user, ip="198.51.100.23")
    # Not someone else's session, and not found alike.
    foreign = browser(carol)
    assert foreign.post(f"/account/sessions/{row.code.hex}/end/").status_code == 404
    assert logged_in(there)
    assert here.post(f"/account/sessions/{row.code.hex}/end/").status_code == 302
    assert not logged_in(there) and logged_in(here)
    row.refresh_from_db()
    assert row.ended_at is not None
    assert AuditEvent.objects.filter(action="session.ended", actor=olivia.user).exists()


def test_the_session_row_follows_the_key_when_the_tenant_switches(alice, carol):
    from tenants.models import Membership

    Membership.objects.create(tenant=carol.tenant, user=alice.user, role="viewer")
    here = browser(alice)
    before = here.cookies["sessionid"].value
    here.post("/tenant/switch/", {"tenant": carol.tenant.code.hex})
    after = here.cookies["sessionid"].value
    assert before != after
    row = UserSession.objects.get(user=alice.user)
    assert row.session_key == after
    # So "log out other sessions" from another browser still finds it.
    browser(alice).post("/account/sessions/end-others/")
    assert not logged_in(here)


# --- refresh tokens ---------------------------------------------------------------


def test_refreshing_never_extends_the_login(olivia):
    # A login with an hour left, as it would be six days in: each rotation must
    # keep that hour, not start another week.
    first = RefreshToken(api_login(olivia)["refresh"])
    first.set_exp(lifetime=timedelta(hours=1))
    raw = str(first)
    for _ in range(3):
        response = refresh(raw)
        assert response.status_code == 200, response.content
        raw = response.json()["refresh"]
        rotated = RefreshToken(raw)
        assert rotated["exp"] == first["exp"]
        assert rotated["auth_time"] == first["auth_time"]
        assert rotated["jti"] != first["jti"]
    outstanding = OutstandingToken.objects.get(jti=rotated["jti"])
    assert int(outstanding.expires_at.timestamp()) == first["exp"]


def test_a_login_past_its_absolute_lifetime_cannot_refresh(olivia):
    tokens = api_login(olivia)
    token = RefreshToken(tokens["refresh"])
    # The same token, as it would be a week later: signed by us, expired.
    token.set_exp(lifetime=-token.lifetime)
    assert_error(refresh(str(token)), 401, "token_not_valid")


def test_an_access_token_never_outlives_its_refresh_token(olivia):
    # A login with 5 minutes left: its next access token (15 minutes) is cut short.
    token = RefreshToken(api_login(olivia)["refresh"])
    token.set_exp(lifetime=timedelta(minutes=5))
    body = refresh(str(token)).json()
    access = AccessToken(body["token"])
    assert access["exp"] <= RefreshToken(body["refresh"])["exp"]
    assert body["expiresIn"] <= 300


def test_a_used_refresh_token_is_refused_and_recorded(olivia):
    tokens = api_login(olivia)
    assert refresh(tokens["refresh"]).status_code == 200
    assert_error(refresh(tokens["refresh"]), 401, "token_not_valid")
    assert AuditEvent.objects.filter(
        action="token.reuse_refused", actor=olivia.user
    ).exists()


def _refresh_at_once(raw: str, barrier: threading.Barrier, statuses: list) -> None:
    client = api_client()
    barrier.wait(timeout=10)
    try:
        statuses.append(
            client.post(
                "/api/token/refresh", {"refresh": raw}, format="json"
            ).status_code
        )
    finally:
        connection.close()


@pytest.mark.postgres_only
def test_two_simultaneous_refreshes_of_one_token_exactly_one_wins(olivia):
    for attempt in range(10):
        raw = api_login(olivia)["refresh"]
        barrier = threading.Barrier(2)
        statuses: list[int] = []
        threads = [
            threading.Thread(target=_refresh_at_once, args=(raw, barrier, statuses))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(statuses) == [200, 401], (attempt, statuses)


def test_an_api_login_makes_no_browser_session(olivia):
    api_login(olivia)
    assert not UserSession.objects.exists()
