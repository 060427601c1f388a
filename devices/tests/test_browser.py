"""The dashboard in a real browser, through the whole stack: Debian's chromium driven by
Playwright, daphne serving the app (a subprocess on the test database), the real MQTT
bridge (in this process), Mosquitto, Redis and a scripted device (firmware.sim).

Screenshots of the pool page at phone and desktop sizes go to test-artifacts/.
"""

import gc
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, connections

from conftest import PASSWORD
from devices.models import Device, Program
from devices.services.claims import claim_code_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.mqtt,
    pytest.mark.redis,
    pytest.mark.postgres_only,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


def _needs():
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    if not os.environ.get("REDIS_URL"):
        pytest.skip("the live server and the bridge share the channel layer via Redis")
    if connection.vendor != "postgresql":
        pytest.skip("the live server process needs a database it can share")


def _wait_healthy(port: int, proc, timeout=90.0):
    """Until daphne answers GET /api/health (a listening socket alone says nothing:
    the kernel accepts connections before daphne serves them). 30 s ran out at
    load 35 (nine engineers' suites on two cores)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited with {proc.returncode}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/api/health")
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            time.sleep(0.1)
        finally:
            conn.close()
    raise RuntimeError("daphne did not start")


def wait_for(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# Generous waits: under load (the whole suite on a busy machine) a page or a device
# answer may take seconds; every wait below is on a condition, never a fixed sleep.
EXPECT_TIMEOUT_MS = 15_000
ACTION_TIMEOUT_MS = 20_000


@pytest.fixture(autouse=True)
def _orm_beside_playwright(monkeypatch):
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM
    # calls are still plain synchronous code (Django's documented escape hatch).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(autouse=True)
def _generous_expect():
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    yield
    expect.set_options(timeout=5_000)


@pytest.fixture
def live_url(transactional_db):
    """daphne on the test database, in its own process (as in production)."""
    _needs()
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    env = {
        **os.environ,
        "DEBUG": "true",
        "DATABASE_URL": f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
    }
    # The escape hatch is for this test process only: the server keeps Django's
    # async-safety checks.
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    # The listening socket is made here and handed to daphne (--fd): a port picked
    # free and bound later could be taken by another process in between.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "daphne.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "--fd", str(listener.fileno())]
        + ["poolsaas.asgi:application"],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        pass_fds=[listener.fileno()],
    )
    listener.close()  # daphne holds its own copy
    try:
        _wait_healthy(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def browser():
    _needs()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield instance
        # ORM calls made while Playwright's loop runs got their own connections
        # (Django keys connections by context there); close them with it.
        connections.close_all()
        instance.close()


def clear_retained(prefix):
    """Delete the retained messages under the prefix (Mosquitto keeps them)."""
    import paho.mqtt.client as mqtt

    topics = set()
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"dash-clear-{uuid.uuid4().hex[:8]}",
    )
    client.on_message = lambda c, u, m: m.retain and m.payload and topics.add(m.topic)
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    client.subscribe(f"{prefix}/#")
    time.sleep(0.3)
    for topic in topics:
        client.publish(topic, b"", qos=1, retain=True).wait_for_publish(2)
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def prefix():
    value = f"dash-{uuid.uuid4().hex[:10]}"
    yield value
    clear_retained(value)


@pytest.fixture
def live_pool(pool_a, platform_broker, prefix):
    """pool_a with a ps1 device on the platform broker, the bridge and the device
    running."""
    from devices.bridge.runner import Bridge
    from firmware.sim import VirtualDevice

    device_id = f"ESP-{uuid.uuid4().hex[:6].upper()}"
    device = Device.objects.create(
        tenant=pool_a.tenant,
        pool=pool_a,
        broker=platform_broker,
        device_id=device_id,
        topic_prefix=prefix,
    )
    bridge = Bridge(
        refresh_interval=0.3,
        sweep_interval=0.1,
        flush_interval=0.1,
        broadcast_window=0.05,
        min_backoff=0.1,
        max_backoff=0.5,
        share_group=f"dash{uuid.uuid4().hex[:8]}",
        stats_interval=3600,
    ).start()
    sim = VirtualDevice(device_id, prefix=prefix, reconnect_delay=(1, 2)).start()
    try:
        assert bridge.wait_ready(10)
        sim.wait_connected()
        wait_for(lambda: Device.objects.get(pk=device.pk).online, what="online")
        yield pool_a, device, sim
    finally:
        sim.stop()
        bridge.stop()
        # The bridge threads' database connections die with them; collect them now
        # so the test database can be dropped at the end of the session.
        gc.collect()


def log_in(browser, base, membership, viewport=PHONE):
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    # The test settings hash with MD5 for speed; the live server only knows the
    # production hashers, so store this one password in a form it can check.
    user = membership.user
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, "browsertest", 1000)
    user.save(update_fields=["password"])
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.set_default_navigation_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{base}/login/")
    page.fill("#id_username", membership.user.email)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_url(re.compile(r".*/pools/.*"), timeout=ACTION_TIMEOUT_MS)
    except PlaywrightTimeout:
        shot(page, "login-failed.png")
        raise AssertionError(page.url + "\n" + page.content()[:3000]) from None
    return page


def shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_operator_switches_pump_runs_timer_and_saves_a_program(
    live_url, browser, live_pool, olivia
):
    from playwright.sync_api import expect

    pool, device, sim = live_pool
    page = log_in(browser, live_url, olivia)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # The overview updates live: a change made at the device shows without reload.
    row = page.locator(f'tr[data-pool="{pool.code.hex}"]')
    expect(page.locator("#overview-conn")).to_contain_text("Live")
    expect(row.locator('[data-field="valve"]')).to_have_text("Cascada")
    assert sim.local("valve", 2)[0]
    expect(row.locator('[data-field="valve"]')).to_have_text("Eyectores")
    shot(page, "overview-phone.png")
    row.locator("a").first.click()
    expect(page.locator("#page-conn")).to_have_text("live")
    expect(page.locator("#device-conn")).to_have_text("device online")
    pump = page.locator("#pump")
    expect(pump).to_be_enabled()

    pump.click()
    expect(page.locator("#pump-feedback")).to_have_text("Pump on: done.")
    expect(pump).to_have_attribute("aria-checked", "true")
    assert sim.controller.pump is True
    # A manual switch pauses the programs until midnight, and the page says so.
    expect(page.locator("#override")).to_contain_text("Programs are paused until")
    expect(page.locator("#log li").first).to_contain_text(olivia.user.email)

    # Switching back at once is refused by the device (it keeps a minimum interval
    # between switches): the page says why and shows the pump as it really is. The
    # interval is held long for this click, so the refusal does not depend on how
    # fast the command travels (a server config arriving meanwhile may still reset
    # it: then the switch is done, and the page must show that instead).
    sim.controller.thresholds["min_switch_interval_s"] = 600
    pump.click()
    feedback = page.locator("#pump-feedback")
    expect(feedback).to_have_text(re.compile(r"^Pump off(: done\.| failed: .+)$"))
    if "failed" in feedback.inner_text():
        expect(feedback).to_contain_text("min switch interval")
        expect(pump).to_have_attribute("aria-checked", "true")
        assert sim.controller.pump is True
    else:
        expect(pump).to_have_attribute("aria-checked", "false")
    # The timer below may need to switch the pump: wait until the device allows it
    # (polled, bounded) rather than for a fixed time.
    sim.controller.thresholds["min_switch_interval_s"] = 3
    wait_for(
        lambda: sim.controller._wait_s("pump", sim.clock()) == 0,
        timeout=10,
        what="the device to allow a pump switch",
    )

    page.fill("#timer-minutes", "2")
    # In the valve's current mode (set at the device above): no valve switch, so the
    # device's 3 s between switches cannot refuse it.
    page.click('label.seg:has(input[name="timer-mode"][value="2"])')
    page.click("#timer-start")
    expect(page.locator("#timer-feedback")).to_contain_text("done")
    countdown = page.locator("#countdown")
    expect(countdown).to_have_text(re.compile(r"^(2:00|1:[0-5]\d)$"))

    def seconds(text):
        m, s = text.split(":")
        return int(m) * 60 + int(s)

    # It counts down, live and at the right pace: wait (bounded) until it shows two
    # seconds less, and check that took about two seconds.
    first = seconds(countdown.inner_text())
    started = time.monotonic()
    page.wait_for_function(
        """(target) => {
            const t = document.getElementById("countdown").textContent.split(":");
            return t.length === 2 && Number(t[0]) * 60 + Number(t[1]) <= target;
        }""",
        arg=first - 2,
        timeout=15_000,
    )
    took = time.monotonic() - started
    assert 0.5 <= took <= 6, took
    assert sim.controller.timer_active
    log = page.locator("#log li").all_inner_texts()
    assert len(log) == len(set(log)), log  # each event once
    shot(page, "pool-phone.png")
    page.set_viewport_size(DESKTOP)
    shot(page, "pool-desktop.png")

    page.click("nav.pool-nav >> text=Programs")
    page.fill('[name="s1_d0_start"]', "08:00")
    page.fill('[name="s1_d0_stop"]', "09:30")
    page.select_option('[name="s1_d0_mode"]', "2")
    page.check('[name="s1_enabled"]')
    page.click("text=Save programs")
    expect(page.locator(".messages")).to_contain_text("Programs saved.")
    shot(page, "programs-desktop.png")
    page.click("nav.pool-nav >> text=History")
    expect(page.locator("#temperature-chart")).to_be_visible()
    expect(page.locator("#run-h")).to_contain_text("minutes per hour")
    page.wait_for_function(
        "() => window.Chart && Chart.getChart('temperature-chart') !== undefined"
    )
    shot(page, "history-desktop.png")
    assert not errors, errors
    program = Program.objects.get(pool=pool, slot=1)
    assert program.enabled
    assert program.days[0] == {"mode": 2, "start": "08:00", "stop": "09:30"}
    pool.refresh_from_db()
    assert pool.config_version == 1  # what a ps1 device is then sent to apply


def test_viewer_finds_controls_disabled(live_url, browser, live_pool, victor):
    from playwright.sync_api import expect

    pool, device, sim = live_pool
    page = log_in(browser, live_url, victor)
    page.goto(f"{live_url}/pools/{pool.code.hex}/")
    expect(page.locator("#page-conn")).to_have_text("live")
    expect(page.locator("#pump")).to_be_disabled()
    expect(page.locator("[data-valve='1']")).to_be_disabled()
    expect(page.locator("#timer-start")).to_be_disabled()
    expect(page.locator("#controls-reason")).to_contain_text("You are a viewer")
    shot(page, "pool-viewer-phone.png")


def test_globex_owner_gets_404_on_an_acme_pool(live_url, browser, pool_a, carol):
    page = log_in(browser, live_url, carol)
    response = page.goto(f"{live_url}/pools/{pool_a.code.hex}/")
    assert response.status == 404
    assert "Acme" not in page.content()


def test_admin_adds_a_device_and_gets_its_bundle_once(
    live_url, browser, adam, pool_a, platform_broker
):
    from playwright.sync_api import expect

    page = log_in(browser, live_url, adam, viewport=DESKTOP)
    page.click("text=Devices")
    page.click("text=Add device")
    page.fill("#device_id", "ESP-ABC123")
    page.fill("#claim_code", claim_code_for("ESP-ABC123"))
    page.select_option("#pool", pool_a.code.hex)
    page.click("button:has-text('Add device')")
    expect(page.locator("h1")).to_contain_text("ESP-ABC123 is ready to connect")
    expect(page.locator("#bundle-qr svg")).to_be_visible()
    with page.expect_download() as download:
        page.click("#bundle-download")
    bundle = json.loads(Path(download.value.path()).read_text())
    assert bundle["device_id"] == "ESP-ABC123" and "password" in bundle["mqtt"]
    shot(page, "device-bundle-desktop.png")
    page.goto(f"{live_url}/devices/")
    expect(page.locator("table")).to_contain_text("ESP-ABC123")
    password = bundle["mqtt"]["password"]
    assert not password or password not in page.content()


def test_controls_turn_off_with_the_reason_when_the_device_goes_offline(
    live_url, browser, live_pool, olivia
):
    from playwright.sync_api import expect

    pool, device, sim = live_pool
    page = log_in(browser, live_url, olivia)
    page.goto(f"{live_url}/pools/{pool.code.hex}/")
    expect(page.locator("#page-conn")).to_have_text("live")
    expect(page.locator("#pump")).to_be_enabled()
    sim.kill()  # power lost: the broker publishes the device's last will
    expect(page.locator("#device-conn")).to_have_text("device offline")
    expect(page.locator("#pump")).to_be_disabled()
    expect(page.locator("#controls-reason")).to_contain_text("The device is offline")


XSS = "<img src=x onerror=alert(1)>"


def test_hostile_names_and_messages_stay_text_in_the_browser(
    live_url, browser, pool_a, device_a, olivia
):
    """A pool, its mode names, Wi-Fi name and event log made of markup: the pages and
    their scripts (snapshot and live deltas) show it as text, and nothing runs."""
    from django.utils import timezone
    from playwright.sync_api import expect

    from devices.models import DeviceEvent
    from poolsaas.live import groups as broadcast

    pool_a.name = XSS
    pool_a.mode1_name = XSS
    pool_a.save()
    device_a.state = {"wifi": {"status": "connected", "ssid": XSS, "quality": XSS}}
    device_a.save()
    DeviceEvent.objects.create(
        tenant=pool_a.tenant, pool=pool_a, ts=timezone.now(), kind=XSS, message=XSS
    )
    page = log_in(browser, live_url, olivia)
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    expect(page.locator("#overview-conn")).to_contain_text("Live")
    page.goto(f"{live_url}/pools/{pool_a.code.hex}/")
    expect(page.locator("#page-conn")).to_have_text("live")
    expect(page.locator("h1")).to_have_text(XSS)
    expect(page.locator("#log li").first).to_contain_text(XSS)
    expect(page.locator("#wifi-detail")).to_contain_text(XSS)
    # A live delta goes through the script's other path (addLog). Sent from a thread
    # of its own: Playwright's event loop runs in this one.
    message = {
        "type": "pool.event",
        "pool": pool_a.code.hex,
        "event": {"kind": "error", "message": "live " + XSS, "ts": "", "actor": XSS},
    }
    sent = []
    sender = threading.Thread(
        target=lambda: sent.append(
            broadcast.broadcast_now(broadcast.pool_group(pool_a.code), message)
        )
    )
    sender.start()
    sender.join(10)
    assert sent == [True]
    expect(page.locator("#log li").first).to_contain_text("live " + XSS)
    assert page.locator("img").count() == 0
    for url in (
        "/pools/",
        f"/pools/{pool_a.code.hex}/programs/",
        f"/pools/{pool_a.code.hex}/history/",
        "/devices/",
    ):
        page.goto(live_url + url)
        expect(page.get_by_text(XSS).first).to_be_visible()
        assert page.locator("img").count() == 0, url
    assert not dialogs, dialogs
