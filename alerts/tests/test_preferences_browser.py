"""The preferences page in Chromium at phone width: nothing wider than the screen,
the time inputs and boxes usable, a save that sticks, and a bad save that says why."""

import pytest

from alerts.models import AlertPreference
from devices.tests.test_browser import (  # noqa: F401 - fixtures
    PHONE,
    _generous_expect,
    _orm_beside_playwright,
    browser,
    live_url,
    log_in,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.redis,
    pytest.mark.postgres_only,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


def test_preferences_fit_a_phone_and_save(live_url, browser, victor):  # noqa: F811
    from playwright.sync_api import expect

    page = log_in(browser, live_url, victor, viewport=PHONE)
    page.goto(f"{live_url}/alerts/preferences/")
    expect(page.locator(".empty-state")).to_contain_text("you get no e-mail")
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{overflow}px wider than a {PHONE['width']}px phone"
    # One end of the quiet hours only: refused, with the reason, nothing saved.
    page.fill("#id_quiet_start", "22:00")
    page.click(".pref-form button[type=submit]")
    expect(page.locator(".field-error")).to_contain_text("Give both ends")
    assert not AlertPreference.objects.filter(membership=victor).exists()
    page.fill("#id_quiet_start", "22:00")
    page.fill("#id_quiet_end", "07:00")
    page.check("input[name=kinds][value=freeze_risk]")
    page.click(".pref-form button[type=submit]")
    expect(page.locator("body")).to_contain_text("Your alert preferences are saved.")
    pref = AlertPreference.objects.get(membership=victor)
    assert (pref.kinds, str(pref.quiet_start), str(pref.quiet_end)) == (
        ["freeze_risk"],
        "22:00:00",
        "07:00:00",
    )
    assert page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
