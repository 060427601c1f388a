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
from gateway.tests.test_e2e import set_live_password, v31_pool  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.mqtt,
    pytest.mark.redis,
    pytest.mark.postgres_only,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


def test_the_demo_page_shows_the_state_and_switches_the_pump(
    live_url,  # noqa: F811
    browser,  # noqa: F811
    v31_pool,  # noqa: F811
    olivia,
):
    from playwright.sync_api import expect

    from conftest import PASSWORD

    pool, device, sim, _ = v31_pool
    set_live_password(olivia.user)
    page = browser.new_page()
    page.set_default_timeout(ACTION_TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{live_url}/mqtt-demo/")
    page.fill("#demo-email", olivia.user.email)
    page.fill("#demo-password", PASSWORD)
    page.click("#demo-login button[type=submit]")
    expect(page.locator("#demo-conn")).to_have_text("connected")
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
    assert errors == []


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
