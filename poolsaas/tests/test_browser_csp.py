"""The pages still work under the Content Security Policy, in a real browser: Debian's
chromium with Playwright, daphne in its own process, the real bridge, Mosquitto, Redis
and a simulated device (the fixtures of devices/tests/test_browser.py).

Every page below is watched for `securitypolicyviolation` events and console errors:
a script, style or connection the policy blocks fails the test. Screenshots of the
audit page at phone and desktop sizes go to test-artifacts/.
"""

import datetime as dt
import re

import pytest
from django.utils import timezone

from audit.services import audit_record
from devices.services.brokers import broker_create
from devices.tests import test_browser as shared
from devices.tests.test_browser import DESKTOP, PHONE, log_in, shot
from telemetry.models import TelemetrySample

# The browser, the live server and the live pool of the dashboard's browser tests.
browser = shared.browser
live_url = shared.live_url
live_pool = shared.live_pool
prefix = shared.prefix
_orm_beside_playwright = shared._orm_beside_playwright
_generous_expect = shared._generous_expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.mqtt,
    pytest.mark.redis,
    pytest.mark.postgres_only,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""


def watched(page):
    """Start recording policy violations and errors on this page and the next."""
    page.context.add_init_script(WATCH)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"error: {error}"))
    page.on(
        "console",
        lambda msg: (
            msg.type == "error"
            and "Failed to load resource" not in msg.text
            and problems.append(f"console: {msg.text}")
        ),
    )
    # Failed loads are reported with their address (the console line has none).
    page.on(
        "response",
        lambda response: (
            response.status >= 400
            and problems.append(f"HTTP {response.status}: {response.url}")
        ),
    )
    return problems


def violations(page) -> list[str]:
    return page.evaluate("() => window.__violations || []")


def _history(device, hours: int = 6):
    now = timezone.now()
    TelemetrySample.objects.bulk_create(
        TelemetrySample(
            tenant=device.tenant,
            device=device,
            ts=now - dt.timedelta(minutes=10 * n),
            temperature=24 + (n % 7) / 3,
            pump=n % 4 == 0,
            valve=1 + n % 2,
            rssi=-60,
        )
        for n in range(hours * 6)
    )


def test_pools_pool_page_and_history_work_under_the_policy(
    live_url, browser, live_pool, alice
):
    from playwright.sync_api import expect

    pool, device, sim = live_pool
    _history(device)
    page = log_in(browser, live_url, alice, viewport=DESKTOP)
    problems = watched(page)
    page.goto(f"{live_url}/pools/")
    expect(page.locator("#overview-conn")).to_contain_text("Live")
    assert violations(page) == []

    page.goto(f"{live_url}/pools/{pool.code.hex}/")
    expect(page.locator("#page-conn")).to_have_text("live")
    expect(page.locator("#device-conn")).to_have_text("device online")
    page.locator("#pump").click()
    expect(page.locator("#pump-feedback")).to_have_text("Pump on: done.")
    assert violations(page) == []

    page.goto(f"{live_url}/pools/{pool.code.hex}/history/")
    page.wait_for_function("() => Chart.getChart('temperature-chart') !== undefined")
    points = page.evaluate(
        "() => Chart.getChart('temperature-chart').data.datasets[0].data.length"
    )
    assert points > 1
    assert violations(page) == []
    assert problems == []


def test_audit_team_and_switcher_work_under_the_policy(
    live_url, browser, alice, olivia, carol, make_member
):
    from playwright.sync_api import expect

    for _ in range(40):
        audit_record(
            action="membership.role_changed",
            tenant=alice.tenant,
            actor=alice.user,
            target=olivia,
            data={"user": olivia.user.email, "from": "viewer", "to": "operator"},
        )
    make_member(carol.tenant, alice.user.email, "viewer")
    page = log_in(browser, live_url, alice, viewport=DESKTOP)
    problems = watched(page)

    page.goto(f"{live_url}/audit/")
    rows = page.locator("table.audit tbody tr")
    expect(rows).to_have_count(25)
    # Newest first: the browser's own login, then the role changes.
    expect(rows.first.locator("td.what")).to_contain_text("Logged in")
    expect(rows.nth(1).locator("td.details")).to_have_text(
        "olivia@acme.test: Viewer → Operator"
    )
    height = page.evaluate("() => document.documentElement.scrollHeight")
    shot(page, "audit-desktop.png")
    page.click("text=Older →")
    expect(page.locator(".pagination")).to_contain_text("Page 2 of 2")
    page.set_viewport_size(PHONE)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    shot(page, "audit-phone.png")
    assert width <= PHONE["width"], width
    # 25 events of two lines each, where 50 sprawling ones measured 6,700 px.
    assert height < 2600, height
    assert violations(page) == []

    # The confirm question now comes from static/js/app.js, not an onclick.
    page.set_viewport_size(DESKTOP)
    page.goto(f"{live_url}/team/")
    asked = []
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    page.click("tr:has-text('olivia@acme.test') button:has-text('Remove')")
    assert asked == ["Remove olivia@acme.test from the team?"]
    expect(page.locator("table")).to_contain_text("olivia@acme.test")

    # A form-level question (the brokers page) is asked once, by the same script.
    broker_create(
        membership=alice,
        name="Acme own",
        host="mqtt.acme.test",
        port=8883,
        use_tls=True,
        topic_prefix="acme",
    )
    page.goto(f"{live_url}/brokers/")
    asked.clear()
    page.on("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    page.click("tr:has-text('Acme own') button:has-text('Delete')")
    expect(page.locator("table")).to_contain_text("Acme own")
    assert asked == ["Delete broker Acme own?"]

    # The tenant switcher submits on change, without an inline handler.
    page.select_option("#tenant-switch", str(carol.tenant.code))
    expect(page.locator(".messages")).to_contain_text(
        "You are now working in Globex Residence."
    )
    assert violations(page) == []
    assert problems == []


def test_api_docs_render_under_the_policy(live_url, browser, alice):
    from playwright.sync_api import expect

    page = log_in(browser, live_url, alice, viewport=DESKTOP)
    problems = watched(page)
    page.goto(f"{live_url}/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("poolsaas API")
    expect(page.locator(".opblock").first).to_be_visible()
    assert violations(page) == []
    favicon = page.request.get(f"{live_url}/static/img/favicon.svg")
    assert favicon.status == 200
    assert re.match(r"image/svg\+xml", favicon.headers["content-type"])
    assert violations(page) == []
    assert problems == []
