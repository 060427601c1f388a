"""The example page /mqtt-demo/ in Debian's chromium: MQTT.js from the npm package
against daphne, the real bridge, Mosquitto and a scripted v3.1 device."""

import json

import pytest

from audit.models import AuditEvent
from devices.models import Command
from devices.tests.test_browser import (  # noqa: F401
    ACTION_TIMEOUT_MS,
    _generous_expect,
    _orm_beside_playwright,
    browser,
    live_url,
    prefix,
    wait_for,
)
from gateway.tests.test_consumer import parse
from gateway.tests.test_e2e import set_live_password, v31_pool  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.mqtt,
    pytest.mark.redis,
    pytest.mark.postgres_only,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


def open_demo(browser, live_url, membership):  # noqa: F811
    """The demo page, logged in as `membership` through its own form, connected."""
    from playwright.sync_api import expect

    from conftest import PASSWORD

    set_live_password(membership.user)
    page = browser.new_page()
    page.set_default_timeout(ACTION_TIMEOUT_MS)
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.mqtt_frames = []

    def on_socket(ws):
        if "/mqtt" in ws.url:
            ws.on("framereceived", lambda payload: page.mqtt_frames.append(payload))

    page.on("websocket", on_socket)
    page.goto(f"{live_url}/mqtt-demo/")
    page.fill("#demo-email", membership.user.email)
    page.fill("#demo-password", PASSWORD)
    page.click("#demo-login button[type=submit]")
    expect(page.locator("#demo-conn")).to_have_text("connected")
    return page


def received_packets(page) -> list[tuple[int, bytes]]:
    """The MQTT packets the page's socket received (frames may merge packets)."""
    return parse(b"".join(f for f in page.mqtt_frames if isinstance(f, bytes)))


def test_the_demo_page_shows_the_state_and_switches_the_pump(
    live_url,  # noqa: F811
    browser,  # noqa: F811
    v31_pool,  # noqa: F811
    olivia,
):
    from playwright.sync_api import expect

    pool, device, sim, _ = v31_pool
    page = open_demo(browser, live_url, olivia)
    row = page.locator(f'tr[data-root="{device.topic_prefix}/{device.device_id}"]')
    expect(row.locator('[data-field="pump"]')).to_have_text("OFF")
    expect(row.locator('[data-field="valve"]')).to_have_text("1")
    row.locator("button.demo-pump").click()
    wait_for(lambda: ("pump/set", b"ON") in sim.sets, what="the device's set")
    expect(row.locator('[data-field="pump"]')).to_have_text("ON")
    command = wait_for(
        lambda: Command.objects.filter(pool=pool, status="done").first(),
        what="a done command",
    )
    assert (command.source, command.actor_id) == ("gateway", olivia.user_id)
    event = AuditEvent.objects.get(action="command.sent", target_code=command.code)
    assert (event.actor_id, event.source) == (olivia.user_id, "gateway")
    assert page.errors == []


def test_a_bad_token_is_refused_once_and_mqtt_js_does_not_retry(
    live_url,  # noqa: F811
    browser,  # noqa: F811
    v31_pool,  # noqa: F811
    olivia,
):
    """The page's login answers a token the gateway refuses (the response rewritten
    in the browser): MQTT.js gets CONNACK 'not authorized', says so, and opens no
    second socket although its reconnectPeriod is 2 s."""
    from playwright.sync_api import expect

    from conftest import PASSWORD

    set_live_password(olivia.user)
    page = browser.new_page()
    page.set_default_timeout(ACTION_TIMEOUT_MS)
    sockets = []
    page.on(
        "websocket", lambda ws: sockets.append(ws.url) if "/mqtt" in ws.url else None
    )

    def spoil_token(route):
        response = route.fetch()
        login = response.json()
        login["token"] = login["token"][:-8] + "AAAAAAAA"
        route.fulfill(response=response, body=json.dumps(login))

    page.route("**/api/login", spoil_token)
    page.goto(f"{live_url}/mqtt-demo/")
    page.fill("#demo-email", olivia.user.email)
    page.fill("#demo-password", PASSWORD)
    page.click("#demo-login button[type=submit]")
    expect(page.locator("#demo-conn")).to_contain_text("refused")
    # Three reconnect periods: a retrying client would have opened more sockets.
    page.wait_for_timeout(6000)
    assert len(sockets) == 1
    expect(page.locator("#demo-conn")).to_contain_text("refused")


def test_a_viewers_click_creates_no_command_and_no_false_state(
    live_url,  # noqa: F811
    browser,  # noqa: F811
    v31_pool,  # noqa: F811
    victor,
):
    from playwright.sync_api import expect

    pool, device, sim, _ = v31_pool
    root = f"{device.topic_prefix}/{device.device_id}"
    page = open_demo(browser, live_url, victor)
    row = page.locator(f'tr[data-root="{root}"]')
    expect(row.locator('[data-field="pump"]')).to_have_text("OFF")
    row.locator("button.demo-pump").click()
    # The PUBACK comes once the gateway has handled (here: refused) the publish.
    expect(page.locator("#demo-log")).to_contain_text(
        f"acknowledged {root}/pump/set ON"
    )
    assert not Command.objects.filter(pool=pool).exists()
    # A later change at the device arrives; nothing claimed the pump was on before it.
    sim.valve = "2"
    sim.pub("valve/state", "2")
    expect(row.locator('[data-field="valve"]')).to_have_text("2")
    expect(row.locator('[data-field="pump"]')).to_have_text("OFF")
    expect(page.locator("#demo-log")).not_to_contain_text(f"{root}/pump/state ON")
    assert sim.sets == []
    assert not Command.objects.filter(pool=pool).exists()
    assert page.errors == []


def test_another_tenants_token_gets_subscription_failures(
    live_url,  # noqa: F811
    browser,  # noqa: F811
    v31_pool,  # noqa: F811
    carol,
):
    from playwright.sync_api import expect

    _, device, _, _ = v31_pool
    root = f"{device.topic_prefix}/{device.device_id}"
    page = open_demo(browser, live_url, carol)
    defaults = ["+/+/pump/state", "+/+/valve/state", "+/+/temperature/state"]
    for topic_filter in defaults:
        item = page.locator(f'#demo-subs li[data-filter="{topic_filter}"]')
        expect(item).to_have_attribute("data-code", "128")
    # The user types this tenant's device topics into the page's filter form.
    for topic_filter in (f"{root}/pump/state", f"{device.topic_prefix}/#"):
        page.fill("#demo-filter", topic_filter)
        page.click("#demo-subscribe button[type=submit]")
        item = page.locator(f'#demo-subs li[data-filter="{topic_filter}"]')
        expect(item).to_have_attribute("data-code", "128")
        expect(item).to_contain_text("refused (0x80)")
    expect(page.locator(f'tr[data-root="{root}"]')).to_have_count(0)
    # On the wire: SUBACKs whose every return code is 0x80, and not one PUBLISH.
    packets = received_packets(page)
    subacks = [body[2:] for first, body in packets if first == 0x90]
    assert subacks == [b"\x80\x80\x80", b"\x80", b"\x80"], packets
    assert [first for first, _ in packets if first >> 4 == 3] == []
    assert page.errors == []
