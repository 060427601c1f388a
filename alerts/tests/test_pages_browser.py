"""The pool page in Chromium (Playwright) on daphne, Redis carrying the channel
layer: an alert fired by the service (alerts.services.alert_fire, as the evaluator
calls it) appears on the open page without a reload; the operator's acknowledge
click records who and when, and another member's open page shows it live."""

import datetime as dt
import threading
import uuid

import pytest
from django.db import connections
from django.utils import timezone

from alerts.models import Alert, AlertRule, Kind
from alerts.services import alert_fire
from devices.tests.test_browser import (  # noqa: F401 - fixtures
    DESKTOP,
    PHONE,
    _generous_expect,
    _orm_beside_playwright,
    browser,
    live_url,
    log_in,
    shot,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.redis,
    pytest.mark.postgres_only,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


def _open_pool_page(chromium, base, membership, pool, viewport):
    from playwright.sync_api import expect

    page = log_in(chromium, base, membership, viewport=viewport)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{base}/pools/{pool.code}/")
    # Live: the socket is open and its snapshot applied.
    expect(page.locator("#page-conn")).to_have_text("live")
    # Set on this document only: still there afterwards means no reload happened.
    page.evaluate("window.__sameDocument = true")
    return page, errors


def _in_a_thread(call):
    """Run a service as the evaluator does: in a thread of its own. Here, Playwright's
    event loop owns the test's thread, and the channel layer's async_to_sync refuses
    to run beside it (the broadcast would be logged as failed and dropped)."""
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


def test_a_fired_alert_appears_live_and_the_acknowledge_records_who_and_when(
    live_url,  # noqa: F811
    browser,  # noqa: F811
    pool_a,
    olivia,
    victor,
):
    from playwright.sync_api import expect

    pool_a.name = f"Alert pool {uuid.uuid4().hex[:6]}"
    pool_a.save()
    rule = AlertRule.objects.create(
        tenant=pool_a.tenant, kind=Kind.FREEZE_RISK, threshold=4.0
    )
    operator, operator_errors = _open_pool_page(
        browser, live_url, olivia, pool_a, PHONE
    )
    viewer, viewer_errors = _open_pool_page(browser, live_url, victor, pool_a, DESKTOP)
    panel = operator.locator("#alerts-panel")
    expect(panel.locator("[data-alert-empty]")).to_be_visible()
    expect(operator.locator("#alerts-count")).to_have_text("0")

    transition = _in_a_thread(
        lambda: alert_fire(pool=pool_a, rule=rule, value=2.0, now=timezone.now())
    )
    assert transition is not None
    alert = transition.alert
    item = panel.locator(f'[data-alert="{alert.code.hex}"]')
    expect(item).to_be_visible()
    expect(item).to_contain_text("Freeze risk")
    expect(item).to_contain_text("2.0 °C · threshold 4 °C")
    expect(item.locator(".alert-ack")).to_have_text("Not acknowledged")
    expect(operator.locator("#alerts-count")).to_have_text("1")
    expect(panel.locator("[data-alert-empty]")).to_be_hidden()
    # The viewer sees it too, without the buttons.
    viewer_item = viewer.locator(f'#alerts-panel [data-alert="{alert.code.hex}"]')
    expect(viewer_item).to_be_visible()
    expect(viewer_item.locator("button")).to_have_count(0)
    assert operator.evaluate("window.__sameDocument") is True
    assert viewer.evaluate("window.__sameDocument") is True
    shot(operator, "alerts-pool-firing-phone.png")

    before = timezone.now()
    item.locator('[data-action="acknowledge"]').click()
    # The form posts and comes back to the pool page, which names who and when.
    acknowledged = operator.locator(f'#alerts-panel [data-alert="{alert.code.hex}"]')
    expect(acknowledged.locator(".alert-ack")).to_contain_text(
        f"Acknowledged by {olivia.user.email}"
    )
    expect(operator.locator(".messages")).to_contain_text("acknowledged by")
    expect(acknowledged.locator('[data-action="acknowledge"]')).to_have_count(0)
    alert = Alert.objects.select_related("acknowledged_by").get(pk=alert.pk)
    assert alert.acknowledged_by == olivia.user
    assert before - dt.timedelta(seconds=1) <= alert.acknowledged_at <= timezone.now()
    # The other member's page learns of it live (pool.alert after the commit).
    expect(viewer_item.locator(".alert-ack")).to_contain_text(
        f"Acknowledged by {olivia.user.email}"
    )
    assert viewer.evaluate("window.__sameDocument") is True
    shot(viewer, "alerts-pool-acknowledged-desktop.png")
    # The other alerts pages at phone width: nothing wider than the screen.
    for path, name in (
        ("/pools/", "alerts-overview-phone.png"),
        (f"/pools/{pool_a.code}/alerts/", "alerts-history-phone.png"),
        (f"/pools/{pool_a.code}/alerts/rules/", "alerts-rules-phone.png"),
    ):
        operator.goto(f"{live_url}{path}")
        expect(operator.locator("main h1")).to_be_visible()
        if path == "/pools/":
            expect(
                operator.locator(f'#alerts-panel [data-alert="{alert.code.hex}"]')
            ).to_be_visible()
            expect(operator.locator("#alerts-panel")).to_contain_text(pool_a.name)
        width = operator.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (path, width)
        shot(operator, name)
    assert operator_errors == [] and viewer_errors == []
