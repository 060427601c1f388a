"""Issue 9.3: the bundle page tells the truth about the password it shows.

With per-device credentials (dynamic security) the page shows the device's own new
password once and says so; without them the bundle's password is empty and the page
says that instead of "the only time the device's password is shown".
"""

import json
import re
from html import unescape

import pytest
from django.urls import reverse

from devices.services.claims import claim_code_for
from devices.tests import test_dynsec

dynsec_broker = test_dynsec.dynsec_broker
dynsec_settings = test_dynsec.dynsec_settings


def add_on_the_page(client, pool, device_id):
    response = client.post(
        reverse("device_add"),
        {
            "device_id": device_id,
            "pool": pool.code.hex,
            "protocol": "ps1",
            "claim_code": claim_code_for(device_id),
        },
    )
    assert response.status_code == 200, response.content.decode()[:2000]
    html = response.content.decode()
    shown = re.search(r'<pre class="bundle">(.*?)</pre>', html, re.S)
    return html, json.loads(unescape(shown.group(1)))


def test_without_per_device_credentials_the_page_says_there_is_no_password(
    login, adam, pool_a, platform_broker
):
    html, bundle = add_on_the_page(login(adam), pool_a, "ESP-0B0B0B")
    assert bundle["auth"] == "none" and bundle["mqtt"]["password"] == ""
    assert "holds no password" in html
    assert "only time the device's password is shown" not in html


@pytest.mark.mqtt
def test_with_dynamic_security_the_page_shows_the_devices_own_password_once(
    login, adam, pool_a, platform_broker, dynsec_settings
):
    device_id = test_dynsec.random_device_id()
    html, bundle = add_on_the_page(login(adam), pool_a, device_id)
    try:
        assert bundle["auth"] == "device" and bundle["mqtt"]["password"]
        assert "only time the device's password is shown" in html
        assert "holds no password" not in html
        probe = test_dynsec.MqttProbe(device_id)
        try:
            assert probe.connect(device_id, bundle["mqtt"]["password"])
        finally:
            probe.close()
    finally:
        from devices.services.dynsec import dynsec_device_delete

        dynsec_device_delete(device_id=device_id)
