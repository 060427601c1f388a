"""The account pages in a real browser at phone size: two-factor enrolment by the QR
code's key, the login's code step, and "log out other sessions" ending another
browser. Chromium via Playwright against daphne on the test database (the fixtures
of devices/tests/test_browser.py). Screenshots go to test-artifacts/."""

import time
from base64 import b32decode

import pytest
from django_otp.oath import TOTP

from conftest import PASSWORD
from devices.tests.test_browser import (  # noqa: F401 - fixtures
    ARTIFACTS,
    PHONE,
    _generous_expect,
    _orm_beside_playwright,
    browser,
    live_url,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.redis,
    pytest.mark.postgres_only,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


def code_from(secret: str, step: int) -> str:
    compact = secret.replace(" ", "")
    key = b32decode(compact + "=" * (-len(compact) % 8))
    totp = TOTP(key, 30, 0, 6, 0)
    totp.time = time.time() + step * 30
    return f"{totp.token():06d}"


def log_in(page, base, email):
    page.goto(f"{base}/login/")
    page.fill("#id_username", email)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")


def fits(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_enrol_log_in_with_the_code_and_log_out_the_other_browser(
    live_url,  # noqa: F811 - the fixture imported above
    browser,  # noqa: F811
    olivia,
):
    from django.contrib.auth.hashers import PBKDF2PasswordHasher
    from playwright.sync_api import expect

    # The live server knows only the production hashers (the tests use MD5).
    olivia.user.password = PBKDF2PasswordHasher().encode(PASSWORD, "browsertest", 1000)
    olivia.user.save(update_fields=["password"])
    ARTIFACTS.mkdir(exist_ok=True)
    phone = browser.new_context(viewport=PHONE)
    page = phone.new_page()
    log_in(page, live_url, olivia.user.email)
    expect(page).to_have_url(f"{live_url}/pools/")

    page.goto(f"{live_url}/account/")
    page.get_by_role("link", name="Set up").click()
    page.get_by_role("button", name="Set up two-factor").click()
    expect(page.locator(".qr svg")).to_be_visible()
    assert fits(page)
    page.screenshot(path=str(ARTIFACTS / "two-factor-setup-phone.png"), full_page=True)
    secret = page.locator("code.secret").inner_text()
    page.fill("#id_code", code_from(secret, 0))
    page.get_by_role("button", name="Turn on two-factor").click()
    expect(
        page.get_by_role("heading", name="Two-factor authentication is on")
    ).to_be_visible()
    assert page.locator(".recovery-codes li").count() == 10
    assert fits(page)
    page.screenshot(path=str(ARTIFACTS / "recovery-codes-phone.png"), full_page=True)

    laptop = browser.new_context()
    other = laptop.new_page()
    log_in(other, live_url, olivia.user.email)
    expect(other).to_have_url(f"{live_url}/login/code/")
    other.fill("#id_code", code_from(secret, 1))
    other.get_by_role("button", name="Log in").click()
    expect(other).to_have_url(f"{live_url}/pools/")

    page.goto(f"{live_url}/account/")
    expect(page.locator("table.responsive tbody tr")).to_have_count(2)
    assert fits(page)
    page.screenshot(path=str(ARTIFACTS / "sessions-phone.png"), full_page=True)
    page.get_by_role("button", name="Log out other sessions").click()
    expect(page.locator(".messages")).to_contain_text("Logged out 1 other session")
    other.goto(f"{live_url}/pools/")
    expect(other).to_have_url(f"{live_url}/login/?next=/pools/")
    page.goto(f"{live_url}/pools/")
    expect(page).to_have_url(f"{live_url}/pools/")
    phone.close()
    laptop.close()
