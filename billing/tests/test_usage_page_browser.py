"""The usage page in Debian's chromium against a live daphne (fixtures of
devices/tests/test_browser): at phone width the table and the chart fit, the chart
is drawn by Chart.js with this period's points and the plan limit, and no script
error is raised. Screenshot: test-artifacts/usage-phone.png."""

import datetime as dt

import pytest

from billing.models import UsageCounter
from billing.tests.test_invoices import plan
from billing.tests.test_usage_page import this_month
from devices.tests.test_browser import (  # noqa: F401 - fixtures
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

CHART_JS = """() => {
    const canvas = document.querySelector("canvas.usage-chart");
    const chart = Chart.getChart(canvas);
    const ctx = canvas.getContext("2d");
    const img = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let painted = 0;
    for (let i = 3; i < img.length; i += 4) { if (img[i] > 0) painted++; }
    return {
        sets: chart.data.datasets.map(d => [d.label, d.data.map(p => [p.x, p.y])]),
        painted: painted,
        width: canvas.getBoundingClientRect().width,
        doc: document.documentElement.scrollWidth,
        view: window.innerWidth,
    };
}"""


def test_usage_chart_renders_this_periods_points_at_phone_width(
    live_url,  # noqa: F811
    browser,  # noqa: F811
    tenant_a,
    victor,
):
    from playwright.sync_api import expect

    tenant_a.plan = plan("free")
    tenant_a.save(update_fields=["plan"])
    UsageCounter.objects.bulk_create(
        UsageCounter(tenant=tenant_a, kind="messages_in", value=v, minute=m)
        for v, m in [
            (100_000, this_month(1)),
            (50_000, this_month(2)),
            (7, this_month(1) - dt.timedelta(days=2)),  # last month: not drawn
        ]
    )
    page = log_in(browser, live_url, victor, viewport=PHONE)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_url}/billing/usage/")
    expect(page.locator("html")).to_have_attribute("data-usage-charts", "1")
    expect(page.locator('#usage-table tr[data-kind="messages_in"]')).to_contain_text(
        "150,000"
    )
    result = page.evaluate(CHART_JS)
    assert result["sets"] == [
        ["Device messages", [[1, 100_000], [2, 150_000]]],
        ["Limit", [[0, 300_000], [result["sets"][1][1][1][0], 300_000]]],
    ]
    assert result["sets"][1][1][1][0] in (28, 29, 30, 31)  # the month's days
    assert result["painted"] > 1000, "the canvas is blank"
    assert result["doc"] <= result["view"] == PHONE["width"], result
    assert 300 <= result["width"] <= PHONE["width"]
    assert not errors
    shot(page, "usage-phone.png")
