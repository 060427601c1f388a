"""The pool page shows, live, what the ps1 device did with the pool's programs:
pending, applied (version N), rejected with the device's reason (issue 9, point 1).

Chromium (Playwright) on daphne (a process on the test database), the bridge
(`manage.py mqtt_bridge`, a process), Mosquitto, Redis and a simulated device. The
programs are saved by an integrator through the REST API while the page is open.
"""

import json
import urllib.request

import pytest

from devices.models import Device
from devices.tests.test_browser import (  # noqa: F401 - fixtures
    _generous_expect,
    _orm_beside_playwright,
    browser,
    live_url,
    log_in,
    shot,
)
from devices.tests.test_config_push import (  # noqa: F401 - fixtures
    TIMEOUT,
    bridge,
    prefix,
    program_around_now,
    ps1_pool,
    sims,
    wait_for,
)
from poolsaas.api.testing import tokens_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.mqtt,
    pytest.mark.redis,
    pytest.mark.postgres_only,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


class Integrator:
    """The REST API over HTTP, on the live server, as an integrator calls it."""

    def __init__(self, base, membership):
        self.base = base
        # The browser's login on the live server may have rehashed the password
        # (another hasher there), and tokens carry a digest of the current one.
        membership.user.refresh_from_db()
        self.token = str(tokens_for(membership).access_token)

    def call(self, method, path, body=None, headers=None):
        # The test's own live server (http://127.0.0.1:port).
        request = urllib.request.Request(  # noqa: S310
            self.base + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                **(headers or {}),
            },
        )
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310
            return response.headers, json.loads(response.read())

    def put_programs(self, pool, programs) -> int:
        path = f"/api/v1/pools/{pool.code}/programs/"
        headers, _ = self.call("GET", path)
        _, body = self.call(
            "PUT", path, {"programs": programs}, {"If-Match": headers["ETag"]}
        )
        return body["version"]


def test_the_pool_page_follows_the_device_answer_live(
    live_url,  # noqa: F811
    browser,  # noqa: F811
    bridge,  # noqa: F811
    ps1_pool,  # noqa: F811
    sims,  # noqa: F811
    olivia,
):
    from playwright.sync_api import expect

    pool, device = ps1_pool
    bridge.start()
    page = log_in(browser, live_url, olivia)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{live_url}/pools/{pool.code.hex}/")
    expect(page.locator("#page-conn")).to_have_text("live")
    status = page.locator("#config-status")
    text = page.locator("#config-text")
    expect(text).to_have_text("pending (version 0 not confirmed yet)")

    # Saved elsewhere while the device is offline: the open page says pending.
    api = Integrator(live_url, olivia)
    assert api.put_programs(pool, [program_around_now(pool.timezone)]) == 1
    expect(text).to_have_text("pending (version 1 not confirmed yet)")
    expect(status).to_have_attribute("data-status", "pending")

    sim = sims(device)  # the device comes online and applies it
    expect(text).to_have_text("applied (version 1)")
    expect(status).to_have_attribute("data-status", "applied")
    expect(page.locator("#pump-label")).to_have_text("On")
    shot(page, "config-applied-phone.png")

    reason = "thresholds: not supported by this firmware"

    def older_firmware(payload):
        return {"version": json.loads(payload)["version"], "ok": False, "error": reason}

    sim.controller.handle_config = older_firmware
    assert api.put_programs(pool, []) == 2
    expect(text).to_have_text(f"rejected by the device: {reason}")
    expect(status).to_have_attribute("data-status", "rejected")
    shot(page, "config-rejected-phone.png")
    wait_for(
        lambda: Device.objects.get(pk=device.pk).config_version_applied == 1,
        timeout=TIMEOUT,
    )
    # After a reload the server renders the same words.
    page.reload()
    expect(text).to_have_text(f"rejected by the device: {reason}")
    assert not errors, errors
