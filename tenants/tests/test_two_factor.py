"""Two-factor authentication (TOTP): enrolment with a QR code, the login step on the
page and in the API, single-use recovery codes stored hashed, throttled attempts, and
the tenant's requirement for owners and admins."""

import re
import time

import pytest
from django.test import Client
from django_otp.oath import TOTP
from rest_framework_simplejwt.tokens import AccessToken

from audit.models import AuditEvent
from conftest import PASSWORD
from poolsaas.api.testing import api_client, assert_error, tokens_for
from tenants.models import RecoveryCode, TotpDevice
from tenants.services import two_factor_confirm, two_factor_setup

pytestmark = pytest.mark.django_db


def code_for(device: TotpDevice, step: int = 0) -> str:
    """The app's code, `step` 30-second steps from now (codes are used once, so
    consecutive logins of one test take increasing steps within the tolerance)."""
    totp = TOTP(device.bin_key, TotpDevice.STEP, 0, TotpDevice.DIGITS, 0)
    totp.time = time.time() + step * TotpDevice.STEP
    return f"{totp.token():06d}"


def enrol(membership) -> tuple[TotpDevice, list[str]]:
    device = two_factor_setup(user=membership.user)
    return two_factor_confirm(user=membership.user, code=code_for(device, -1))


def password_step(email: str, **client_kwargs) -> Client:
    client = Client(**client_kwargs)
    response = client.post("/login/", {"username": email, "password": PASSWORD})
    assert response.status_code == 302
    return client


def browser_as(membership) -> Client:
    """A browser of its own, logged in as this member (force_login: no code)."""
    client = Client()
    client.force_login(membership.user)
    return client


def logged_in(client: Client) -> bool:
    return client.get("/account/").status_code == 200


def api_login(email: str, **extra):
    return api_client().post(
        "/api/login", {"email": email, "password": PASSWORD, **extra}, format="json"
    )


# --- enrolment ----------------------------------------------------------------------


def test_enrolment_shows_a_qr_code_and_needs_a_first_code(login, olivia):
    client = login(olivia)
    assert (
        client.post("/account/two-factor/setup/").url == "/account/two-factor/confirm/"
    )
    page = client.get("/account/two-factor/confirm/")
    html = page.content.decode()
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    assert "<svg" in html and "<script>" not in html  # only script files
    device = TotpDevice.objects.get(user=olivia.user, confirmed=False)
    # The secret is encrypted at rest (shown once, grouped, for manual entry).
    key = device.bin_key.hex()
    assert key not in device.key_encrypted
    from base64 import b32encode

    secret = b32encode(device.bin_key).decode().rstrip("=")
    assert secret[:4] + " " + secret[4:8] in html

    wrong = client.post("/account/two-factor/confirm/", {"code": "000000"})
    assert wrong.status_code == 400 and b"not right" in wrong.content
    assert not TotpDevice.objects.filter(user=olivia.user, confirmed=True).exists()

    done = client.post("/account/two-factor/confirm/", {"code": code_for(device, 0)})
    assert done.status_code == 200 and done["Cache-Control"] == "no-store"
    codes = re.findall(r"<code>([a-z0-9]{5}-[a-z0-9]{5})</code>", done.content.decode())
    assert len(codes) == 10 and len(set(codes)) == 10
    stored = set(RecoveryCode.objects.filter(user=olivia.user).values_list("code_hash"))
    assert len(stored) == 10
    assert not any(code in str(stored) for code in codes)
    assert AuditEvent.objects.filter(action="two_factor.enabled").count() == 1
    # This session showed the second factor: nothing asks for it again.
    assert logged_in(client)


# --- the login step -----------------------------------------------------------------


def test_login_needs_the_code_after_the_password(olivia):
    device, _ = enrol(olivia)
    client = password_step(olivia.user.email)
    assert not logged_in(client)  # the password alone logs nobody in
    page = client.get("/login/code/")
    assert page.status_code == 200 and b"Enter your code" in page.content
    wrong = client.post("/login/code/", {"code": "123456"})
    assert wrong.status_code in (400, 429) and not logged_in(client)

    device.refresh_from_db()
    device.throttle_reset()
    good = code_for(device, 0)
    response = client.post("/login/code/", {"code": good})
    assert response.status_code == 302 and logged_in(client)
    event = AuditEvent.objects.filter(action="login.succeeded").latest("seq")
    assert event.data == {"second_factor": "totp"}
    assert AuditEvent.objects.filter(
        action="login.failed", data__reason="bad second factor"
    ).exists()

    # A code works once: someone who saw it cannot log in with it.
    thief = password_step(olivia.user.email)
    assert thief.post("/login/code/", {"code": good}).status_code in (400, 429)
    assert not logged_in(thief)


def test_login_code_step_without_a_password_step_goes_back_to_login(olivia):
    enrol(olivia)
    response = Client().post("/login/code/", {"code": "123456"})
    assert response.status_code == 302 and response.url == "/login/"


def test_a_recovery_code_logs_in_once(olivia):
    _, codes = enrol(olivia)
    client = password_step(olivia.user.email)
    assert client.post("/login/code/", {"code": codes[3].upper()}).status_code == 302
    assert logged_in(client)
    used = AuditEvent.objects.get(action="two_factor.recovery_code_used")
    assert used.data == {"left": 9}
    again = password_step(olivia.user.email)
    assert again.post("/login/code/", {"code": codes[3]}).status_code in (400, 429)
    assert not logged_in(again)


def test_wrong_codes_are_throttled_whatever_kind_is_tried(olivia, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 60
    device, codes = enrol(olivia)
    client = password_step(olivia.user.email)
    assert client.post("/login/code/", {"code": "000000"}).status_code == 400
    # Right codes are refused too until the wait is over: guessing gains nothing.
    for code in (code_for(device, 1), codes[0]):
        refused = client.post("/login/code/", {"code": code})
        assert refused.status_code == 429
        assert b"Too many wrong codes" in refused.content
    assert not logged_in(client)
    assert RecoveryCode.objects.filter(user=olivia.user, used_at=None).count() == 10


# --- the API ------------------------------------------------------------------------


def test_api_login_takes_the_code_as_otp(olivia, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    device, codes = enrol(olivia)
    email = olivia.user.email
    assert_error(api_login(email), 401, "otp_required")
    assert_error(api_login(email, otp="000000"), 401, "otp_invalid")
    response = api_login(email, otp=code_for(device, 0))
    assert response.status_code == 200, response.content
    assert AccessToken(response.json()["token"])["otp"] is True
    by_recovery = api_login(email, otp=codes[0])
    assert by_recovery.status_code == 200
    assert_error(api_login(email, otp=codes[0]), 401, "otp_invalid")


def test_api_login_throttled_codes_answer_429(olivia, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 60
    device, _ = enrol(olivia)
    assert_error(api_login(olivia.user.email, otp="000000"), 401, "otp_invalid")
    throttled = api_login(olivia.user.email, otp=code_for(device, 0))
    error = assert_error(throttled, 429, "throttled")
    assert error["limit"] == "otp" and int(throttled["Retry-After"]) >= 1


# --- the tenant's requirement --------------------------------------------------------


def test_only_an_owner_with_two_factor_turns_the_requirement_on(login, alice, adam):
    client = login(alice)
    refused = client.post("/team/two-factor/", {"required": "on"}, follow=True)
    assert b"Set up two-factor authentication for yourself first" in refused.content
    alice.tenant.refresh_from_db()
    assert not alice.tenant.require_two_factor

    assert login(adam).post("/team/two-factor/", {"required": "on"}).status_code == 403

    enrol(alice)
    client = login(alice)
    client.post("/team/two-factor/", {"required": "on"})
    alice.tenant.refresh_from_db()
    assert alice.tenant.require_two_factor
    event = AuditEvent.objects.get(action="tenant.two_factor_required")
    assert event.tenant == alice.tenant and event.actor == alice.user


def test_required_two_factor_stops_admins_without_it_on_pages_and_api(
    alice, adam, olivia
):
    old_token = str(tokens_for(adam).access_token)
    alice.tenant.require_two_factor = True
    alice.tenant.save()

    # Pages: set it up first (the account pages stay open for that).
    client = browser_as(adam)
    response = client.get("/pools/")
    assert response.status_code == 302 and response.url == "/account/two-factor/"
    assert client.get("/account/two-factor/").status_code == 200
    # API: no new token without it, and tokens from before stop working.
    assert_error(api_login(adam.user.email), 403, "two_factor_setup_required")
    assert_error(
        api_client(token=old_token).get("/api/v1/pools/"), 403, "two_factor_required"
    )
    # An operator is not concerned.
    assert browser_as(olivia).get("/pools/").status_code == 200
    assert api_login(olivia.user.email).status_code == 200

    # Once set up (this session showed the code), the pages open again...
    client.post("/account/two-factor/setup/")
    device = TotpDevice.objects.get(user=adam.user, confirmed=False)
    client.post("/account/two-factor/confirm/", {"code": code_for(device, 0)})
    assert client.get("/pools/").status_code == 200
    # ...a session that did not is sent to log in again with it...
    other = browser_as(adam)
    assert other.get("/pools/").url == "/login/"
    # ...and the API wants the code.
    device.refresh_from_db()
    response = api_login(adam.user.email, otp=code_for(device, 1))
    assert response.status_code == 200
    token = response.json()["token"]
    assert api_client(token=token).get("/api/v1/pools/").status_code == 200


def test_two_factor_cannot_be_turned_off_while_required(login, alice):
    enrol(alice)
    alice.tenant.require_two_factor = True
    alice.tenant.save()
    client = login(alice)
    from django_otp import DEVICE_ID_SESSION_KEY

    session = client.session
    session[DEVICE_ID_SESSION_KEY] = TotpDevice.objects.get(
        user=alice.user
    ).persistent_id
    session.save()
    page = client.post(
        "/account/two-factor/disable/", {"password": PASSWORD}, follow=True
    )
    assert b"cannot be turned off" in page.content
    assert TotpDevice.objects.filter(user=alice.user).exists()


def test_turning_off_needs_the_password_and_is_audited(login, olivia):
    enrol(olivia)
    client = login(olivia)
    client.post("/account/two-factor/disable/", {"password": "wrong"})
    assert TotpDevice.objects.filter(user=olivia.user).exists()
    client.post("/account/two-factor/disable/", {"password": PASSWORD})
    assert not TotpDevice.objects.filter(user=olivia.user).exists()
    assert not RecoveryCode.objects.filter(user=olivia.user).exists()
    assert AuditEvent.objects.filter(action="two_factor.disabled").exists()
    # And the next login needs the password only.
    assert logged_in(password_step(olivia.user.email))


def test_new_recovery_codes_replace_the_old(login, olivia, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    device, old = enrol(olivia)
    client = login(olivia)
    page = client.post(
        "/account/two-factor/recovery-codes/", {"code": code_for(device, 0)}
    )
    new = re.findall(r"<code>([a-z0-9]{5}-[a-z0-9]{5})</code>", page.content.decode())
    assert len(new) == 10 and not set(new) & set(old)
    stale = password_step(olivia.user.email)
    assert stale.post("/login/code/", {"code": old[0]}).status_code in (400, 429)
    fresh = password_step(olivia.user.email)
    assert fresh.post("/login/code/", {"code": new[0]}).status_code == 302


@pytest.mark.django_db(transaction=True)
async def test_turning_the_requirement_on_closes_sockets_without_a_second_factor(
    alice, adam, pool_a
):
    from channels.db import database_sync_to_async

    from devices.tests.test_consumers import (
        assert_closed,
        pool_path,
        receive_type,
        session_cookie,
        socket,
    )
    from tenants.services import tenant_two_factor_set

    await database_sync_to_async(enrol)(alice)
    await database_sync_to_async(enrol)(adam)

    async def opened(headers=(), cookie=None):
        comm = socket(pool_path(pool_a), cookie=cookie, headers=headers)
        assert (await comm.connect(timeout=10))[0]
        await receive_type(comm, "snapshot")
        return comm

    def bearer(token):
        return [(b"authorization", f"Bearer {token}".encode())]

    plain = await database_sync_to_async(lambda: str(tokens_for(adam).access_token))()
    with_code = await database_sync_to_async(
        lambda: str(tokens_for(adam, second_factor=True).access_token)
    )()
    page = await opened(cookie=await session_cookie(adam))  # force_login: no code
    without = await opened(headers=bearer(plain))
    kept = await opened(headers=bearer(with_code))

    await database_sync_to_async(tenant_two_factor_set)(membership=alice, required=True)
    for comm in (page, without):
        await receive_type(comm, "error")
        await assert_closed(comm, 4403)
    access = await receive_type(kept, "access")
    assert access["role"] == "admin"
    # And a new socket from a login without the code is refused at the door.
    refused = socket(pool_path(pool_a), headers=bearer(plain))
    connected, code = await refused.connect(timeout=10)
    assert not connected and code == 4403
    await kept.disconnect()
