"""The devices dashboard's rough edges, at phone size (390 × 844) and on desktop, in
Debian's chromium against a live daphne (fixtures of test_browser): the programs
editor fits a 360 px screen with the pool's mode names readable, one event-log entry
per command, "never connected" for a device never seen.

Screenshots go to test-artifacts/ui-*.png.
"""

import re

import pytest

from devices.models import Device, DeviceEvent, Program
from devices.tests.test_browser import (  # noqa: F401 - fixtures
    DESKTOP,
    PHONE,
    _generous_expect,
    _orm_beside_playwright,
    browser,
    live_pool,
    live_url,
    log_in,
    prefix,
    shot,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.mqtt,
    pytest.mark.redis,
    pytest.mark.postgres_only,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

# Widths of the page and of each mode select against the text of its chosen option
# (measured with the select's own font; 18 px for the arrow).
LAYOUT_JS = """() => {
    const ctx = document.createElement("canvas").getContext("2d");
    const cut = [];
    for (const sel of document.querySelectorAll("select[name$=_mode]")) {
        const cs = getComputedStyle(sel);
        ctx.font = cs.font;
        const text = sel.options[sel.selectedIndex].text;
        const need = ctx.measureText(text).width + parseFloat(cs.paddingLeft)
            + parseFloat(cs.paddingRight) + 18;
        if (sel.offsetParent !== null && need > sel.clientWidth + 0.5) {
            cut.push([sel.name, text, need, sel.clientWidth]);
        }
    }
    const wide = [];
    for (const el of document.querySelectorAll("body *")) {
        const r = el.getBoundingClientRect();
        if (r.right > window.innerWidth + 0.5 && wide.length < 8) {
            wide.push([el.tagName, el.className, el.name || "", Math.round(r.right)]);
        }
    }
    return {
        wide: wide,
        doc: document.documentElement.scrollWidth,
        view: window.innerWidth,
        cut: cut,
    };
}"""

# Left edge and width of every field of program 1's rows.
COLUMNS_JS = """() => Array.from(
    document.querySelectorAll('[name^="s1_d"]')).map(
    el => { const r = el.getBoundingClientRect(); return [el.name, r.x, r.width]; })"""


def _layout(page):
    return page.evaluate(LAYOUT_JS)


def test_programs_editor_fits_a_phone_with_mode_names_readable(
    live_url,  # noqa: F811
    browser,  # noqa: F811
    device_a,
    olivia,
):
    from playwright.sync_api import expect

    pool = device_a.pool
    Program.objects.create(
        tenant=pool.tenant,
        pool=pool,
        slot=1,
        enabled=True,
        days=[{"mode": 2, "start": "08:00", "stop": "09:30"}] + [None] * 6,
    )
    page = log_in(browser, live_url, olivia, viewport={"width": 360, "height": 800})
    page.goto(f"{live_url}/pools/{pool.code}/programs/")
    layout = _layout(page)
    assert layout["doc"] <= layout["view"] == 360, layout
    assert not layout["cut"], layout["cut"]
    monday = page.locator('[name="s1_d0_mode"]')
    expect(monday.locator("option:checked")).to_have_text("Eyectores")
    # One format for times: 24 h text, as typed and as stored.
    expect(page.locator('[name="s1_d0_stop"]')).to_have_value("09:30")
    assert page.locator('[name="s1_d0_stop"]').get_attribute("type") == "text"
    # Programs without days fold to a line; the one in use is open.
    assert page.locator("#program-1").get_attribute("open") is not None
    assert page.locator("#program-3").get_attribute("open") is None

    page.set_viewport_size(PHONE)
    layout = _layout(page)
    assert layout["doc"] <= layout["view"] == 390, layout
    assert not layout["cut"], layout["cut"]
    shot(page, "ui-programs-phone.png")

    # Copy Monday to the weekdays, one click.
    page.click('#program-1 [data-copy="weekdays"]')
    for day in range(1, 5):
        expect(page.locator(f'[name="s1_d{day}_start"]')).to_have_value("08:00")
        expect(page.locator(f'[name="s1_d{day}_mode"]')).to_have_value("2")
    expect(page.locator('[name="s1_d5_start"]')).to_have_value("")
    expect(page.locator("#program-1 [data-summary]")).to_have_text("on · 5 days")

    # An empty stop: said plainly, beside the field, and no column moves.
    before = page.evaluate(COLUMNS_JS)
    page.fill('[name="s1_d2_stop"]', "")
    page.fill('[name="s1_d3_start"]', "930")  # tidied to 09:30 on the way
    page.fill('[name="s1_d3_stop"]', "1015")
    page.click("text=Save programs")
    expect(page.locator("#program-errors")).to_contain_text("Nothing was saved")
    wednesday = page.locator('.day[data-slot="1"][data-day="2"]')
    expect(wednesday.locator(".field-error")).to_have_text("Stop time missing.")
    expect(page.locator('[name="s1_d3_start"]')).to_have_value("09:30")
    # The answer is a new page: measured once its stylesheet applies (the text is
    # in the DOM before; under load the columns were once measured unstyled).
    page.wait_for_load_state("load")
    after = page.evaluate(COLUMNS_JS)
    assert [(n, round(x), round(w)) for n, x, w in after] == [
        (n, round(x), round(w)) for n, x, w in before
    ]
    layout = _layout(page)
    assert layout["doc"] <= layout["view"], layout
    shot(page, "ui-programs-phone-error.png")
    assert Program.objects.get(pool=pool, slot=1).days[1] is None  # nothing saved

    page.set_viewport_size(DESKTOP)
    page.fill('[name="s1_d2_stop"]', "09:30")
    page.click("text=Save programs")
    expect(page.locator(".messages")).to_contain_text("Programs saved.")
    days = Program.objects.get(pool=pool, slot=1).days
    assert days[3] == {"mode": 2, "start": "09:30", "stop": "10:15"}
    shot(page, "ui-programs-desktop.png")


def test_long_mode_names_wrap_instead_of_being_cut(
    live_url,  # noqa: F811
    browser,  # noqa: F811
    device_a,
    olivia,
):
    from playwright.sync_api import expect

    pool = device_a.pool
    pool.mode1_name = "Cascada del jardín norte"
    pool.mode2_name = "Eyectores de la playa sur"
    pool.save(update_fields=["mode1_name", "mode2_name"])
    page = log_in(browser, live_url, olivia, viewport={"width": 360, "height": 800})
    page.goto(f"{live_url}/pools/{pool.code}/programs/")
    # A pool without programs starts with the first one open.
    assert page.locator("#program-1").get_attribute("open") is not None
    expect(page.locator('[name="s1_d0_mode"]')).to_be_visible()
    layout = _layout(page)
    assert layout["doc"] <= layout["view"], layout
    assert not layout["cut"], layout["cut"]
    shot(page, "ui-programs-phone-long-names.png")


def test_one_event_log_entry_per_command_with_mode_names(
    live_url,  # noqa: F811
    browser,  # noqa: F811
    live_pool,  # noqa: F811
    olivia,
):
    from playwright.sync_api import expect

    pool, device, sim = live_pool
    page = log_in(browser, live_url, olivia)
    page.goto(f"{live_url}/pools/{pool.code}/")
    expect(page.locator("#page-conn")).to_have_text("live")
    page.click('[data-valve="2"]')
    expect(page.locator("#valve-feedback")).to_have_text("Valve to Eyectores: done.")
    entries = page.locator("#log li", has_text="Valve")
    expect(entries).to_have_count(1)
    entry = entries.first
    # Updated in place, live: the entry now says done, with the pool's mode name.
    expect(entry.locator(".kind")).to_have_text("Done")
    expect(entry).to_contain_text("Valve to Eyectores by " + olivia.user.email)
    assert "Valve 2" not in page.locator("#log").inner_text()
    # The same after a reload (the snapshot), and every kind is in words.
    page.reload()
    expect(page.locator("#page-conn")).to_have_text("live")
    expect(page.locator("#log li", has_text="Valve")).to_have_count(1)
    kinds = page.locator("#log .kind").all_inner_texts()
    assert kinds and not [k for k in kinds if re.search(r"[._]", k)], kinds
    assert (
        DeviceEvent.objects.filter(pool=pool, kind__startswith="command.").count() == 1
    )
    layout = _layout(page)
    assert layout["doc"] <= layout["view"], layout
    shot(page, "ui-pool-log-phone.png")
    page.set_viewport_size(DESKTOP)
    shot(page, "ui-pool-log-desktop.png")


def test_a_device_never_seen_says_never_connected(
    live_url,  # noqa: F811
    browser,  # noqa: F811
    device_a,
    alice,
):
    from playwright.sync_api import expect

    Device.objects.filter(pk=device_a.pk).update(
        last_seen_at=None, online=False, state={}
    )
    page = log_in(browser, live_url, alice)
    page.goto(f"{live_url}/devices/")
    row = page.locator("tr", has_text=device_a.device_id)
    expect(row.locator('[data-label="State"]')).to_have_text("never connected")
    expect(row.locator('[data-label="Signal"]')).to_have_text("—")
    expect(row.locator('[data-label="Last seen"]')).to_have_text("never connected")
    assert row.locator(".q-weak").count() == 0
    layout = _layout(page)
    assert layout["doc"] <= layout["view"], layout
    shot(page, "ui-devices-phone.png")
    page.goto(f"{live_url}/pools/{device_a.pool.code}/")
    expect(page.locator("#device-conn")).to_have_text("never connected")
    page.set_viewport_size(DESKTOP)
    page.goto(f"{live_url}/devices/")
    shot(page, "ui-devices-desktop.png")


TICKS_JS = """(id) => {
    const x = Chart.getChart(id).scales.x;
    return x.ticks.map(t => [t.value, t.label]);
}"""


def test_history_charts_tick_at_round_hours_and_days(
    live_url,  # noqa: F811
    browser,  # noqa: F811
    device_a,
    victor,
):
    from django.utils import timezone
    from playwright.sync_api import expect

    from telemetry.models import TelemetrySample
    from tenants.management.commands.seed_demo import demo_history

    TelemetrySample.objects.bulk_create(
        demo_history(device=device_a, now=timezone.now())
    )
    pool = device_a.pool
    page = log_in(browser, live_url, victor)
    for viewport, size in ((PHONE, "phone"), (DESKTOP, "desktop")):
        page.set_viewport_size(viewport)
        for range_name, step in (("day", 3600), ("week", 86400)):
            page.goto(f"{live_url}/pools/{pool.code}/history/?range={range_name}")
            expect(page.locator("#temperature-chart")).to_be_visible()
            page.wait_for_function(
                "() => window.Chart && Chart.getChart('runtime-chart') !== undefined"
            )
            offset = page.evaluate(
                "() => JSON.parse(document.getElementById('history-data')"
                ".textContent).offset"
            )
            for chart in ("temperature-chart", "runtime-chart"):
                ticks = page.evaluate(TICKS_JS, chart)
                assert len(ticks) >= 3, ticks
                for value, label in ticks:
                    assert (value + offset) % step == 0, (chart, value, label)
                    if range_name == "day":
                        assert label.endswith(":00"), label
            points = page.locator(".chart-box + p").first.inner_text()
            assert int(points.split()[0]) > 200, points  # a week of seeded history
            layout = _layout(page)
            assert layout["doc"] <= layout["view"], layout
            shot(page, f"ui-history-{range_name}-{size}.png")
