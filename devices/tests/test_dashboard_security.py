"""Dashboard pages with hostile user text, secrets that must never show, and the
provisioning bundle that is shown once and never cached."""

import json
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from devices.models import Device, DeviceEvent
from devices.services.claims import claim_code_for

XSS = "<img src=x onerror=alert(1)>"
XSS_SCRIPT = "</script><script>alert(2)</script>"


@pytest.fixture
def hostile(pool_a, device_a):
    """Every user-supplied text of pool A made of markup."""
    pool_a.name = XSS
    pool_a.mode1_name = XSS
    pool_a.mode2_name = XSS_SCRIPT
    pool_a.save()
    device_a.online = True
    device_a.state = {"wifi": {"status": "connected", "ssid": XSS, "quality": XSS}}
    device_a.save()
    DeviceEvent.objects.create(
        tenant=pool_a.tenant,
        pool=pool_a,
        device=device_a,
        ts=timezone.now(),
        kind="error",
        message=XSS_SCRIPT,
    )
    return pool_a


def assert_no_live_markup(html: str):
    assert "<img src=x" not in html
    assert "<script>alert(2)" not in html
    # json_script escapes <, > and & inside the data blocks.
    for block in re.findall(
        r'<script id="[\w-]+" type="application/json">(.*?)</script>', html, re.S
    ):
        assert "<" not in block and ">" not in block
        json.loads(block)


@pytest.mark.parametrize(
    "name", ["pool_detail", "pool_programs", "pool_history", "pool_settings"]
)
def test_pool_pages_escape_user_text(login, alice, hostile, name):
    response = login(alice).get(reverse(name, args=[hostile.code]))
    assert response.status_code == 200
    html = response.content.decode()
    assert_no_live_markup(html)
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_lists_escape_user_text(login, alice, hostile):
    client = login(alice)
    for url in (reverse("pools"), reverse("devices"), reverse("device_add")):
        response = client.get(url)
        assert response.status_code == 200, url
        assert_no_live_markup(response.content.decode())


def test_pool_page_snapshot_keeps_the_text_as_data(login, alice, hostile):
    from devices.tests.test_dashboard import snapshot_of

    snap = snapshot_of(login(alice).get(reverse("pool_detail", args=[hostile.code])))
    assert snap["pool"]["name"] == XSS
    assert snap["pool"]["mode2_name"] == XSS_SCRIPT
    assert snap["events"][0]["message"] == XSS_SCRIPT


def test_scripts_never_turn_data_into_markup():
    """The pages' scripts put text in with textContent only: no innerHTML and
    friends anywhere in static/js (a review rule, checked here)."""
    from pathlib import Path

    from django.conf import settings

    scripts = sorted((Path(settings.BASE_DIR) / "static" / "js").glob("*.js"))
    assert scripts
    for path in scripts:
        source = path.read_text()
        for sink in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ):
            assert sink not in source, (path.name, sink)


def test_device_secret_never_on_a_page(login, adam, pool_a, platform_broker):
    client = login(adam)
    response = client.post(
        reverse("device_add"),
        {
            "device_id": "ESP-C0FFEE",
            "pool": pool_a.code.hex,
            "protocol": "ps1",
            "claim_code": claim_code_for("ESP-C0FFEE"),
        },
    )
    assert response.status_code == 200, response.content[:500]
    assert "no-store" in response["Cache-Control"]
    assert "ESP-C0FFEE is ready to connect" in response.content.decode()
    device = Device.objects.get(device_id="ESP-C0FFEE")
    # Without the dynsec plugin the bundle carries no password; give the device and
    # the broker stored secrets, which no page may show.
    password = "device-secret-Q9x7"
    device.mqtt_password = password
    device.save(update_fields=["mqtt_password"])
    platform_broker.username = "platform-user-Z3"
    platform_broker.password = "platform-secret-K8"
    platform_broker.save()
    # Never again: not on any page that shows the device, its pool or its broker.
    for url in (
        reverse("devices"),
        reverse("device_add"),
        reverse("pool_detail", args=[pool_a.code]),
        reverse("pool_settings", args=[pool_a.code]),
        reverse("pool_programs", args=[pool_a.code]),
        reverse("pool_history", args=[pool_a.code]),
        reverse("device_remove", args=[device.code]),
        reverse("device_replace", args=[pool_a.code]),
        reverse("brokers"),
        reverse("pools"),
        "/audit/",
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        for secret in (password, "platform-user-Z3", "platform-secret-K8"):
            assert secret not in html, (url, secret)
    # Posting the same form again (a reload) shows no bundle a second time.
    again = client.post(
        reverse("device_add"),
        {
            "device_id": "ESP-C0FFEE",
            "pool": pool_a.code.hex,
            "protocol": "ps1",
            "claim_code": claim_code_for("ESP-C0FFEE"),
        },
    )
    assert again.status_code == 400
    assert password not in again.content.decode()


def test_devices_page_never_loads_secrets(login, victor, device_a):
    """The list reads no secret column at all: nothing to leak, nothing to decrypt
    (a key rotation cannot break the page)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = login(victor)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(reverse("devices")).status_code == 200
    sql = " ".join(q["sql"] for q in queries.captured_queries)
    assert "ESP-A1A1A1" in client.get(reverse("devices")).content.decode()
    for column in (
        '"devices_device"."mqtt_password"',
        '"devices_broker"."username"',
        '"devices_broker"."password"',
    ):
        assert column not in sql, column
