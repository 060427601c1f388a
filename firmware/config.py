"""Firmware defaults. Override any name in a git-ignored local_config.py on the board;
Wi-Fi networks and the MQTT bundle normally come from the captive portal
(provision.json), which wins over both."""

import json

FW_VERSION = "ps1-0.1.0"
HW_MODEL = None  # None: the board's own, hardware.MODEL; set it to name another

# Up to 3 (ssid, password) pairs, in priority order.
WIFI = []
MQTT = {
    "host": "",
    "port": 8883,
    "tls": True,
    "username": "",
    "password": "",
    "prefix": "devices",
}
DEVICE_ID = None  # None: ESP-XXXXXX from the MAC
KEEPALIVE_S = 30
NTP_HOST = "pool.ntp.org"

# Pins of a typical ESP32 relay board; change them in local_config.py.
PIN_PUMP = 26
PIN_VALVE = 27
PIN_ONEWIRE = 4
PIN_LED = 2  # None: no status LED
RELAY_ACTIVE_LOW = True

STATE_FILE = "state.json"
PROVISION_FILE = "provision.json"
BOOT_FILE = "boot.json"
CA_FILE = "ca.pem"
# Written by the flashing station (tools/flash.sh): the claim code, 12 characters.
CLAIM_FILE = "claim.txt"
# The MQTT pair in use after a credential rotation, and a pending one (creds.py).
CREDS_FILE = "creds.json"
PORTAL_HTTP_PORT = 80
PORTAL_DNS_PORT = 53

# Over-the-air updates (updater.py, otaboot.py). The key authenticates manifests
# (hex; normally from the provisioning bundle's "ota_key"). A new version must report
# healthy within OTA_TRIAL_S and OTA_TRIAL_BOOTS boots, or it is rolled back.
OTA_KEY = ""
OTA_TRIAL_S = 180
OTA_TRIAL_BOOTS = 3
OTA_TRIAL_WDT_MS = 30000

WDT_TIMEOUT_MS = 30000
# Crashes in a row (boots that never became healthy) before safe mode.
SAFE_MODE_AFTER = 3
HEALTHY_AFTER_S = 120
SENSOR_EVERY_S = 5

try:
    from local_config import *  # noqa: F403 - board-specific overrides
except ImportError:
    pass


def load_provision():
    """provision.json from the portal: {"wifi": [[ssid, pw]..], "bundle": {..}}."""
    try:
        with open(PROVISION_FILE) as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def settings():
    """Effective Wi-Fi list, MQTT settings and device id."""
    wifi = list(WIFI)
    mqtt = dict(MQTT)
    device_id = DEVICE_ID
    ota_key = OTA_KEY
    prov = load_provision()
    if prov:
        wifi = [tuple(n) for n in prov.get("wifi", [])] or wifi
        bundle = prov.get("bundle")
        if bundle:
            mqtt.update(bundle["mqtt"])
            device_id = bundle["device_id"]
            ota_key = bundle.get("ota_key") or ota_key
    return {
        "wifi": wifi[:3],
        "mqtt": mqtt,
        "device_id": device_id,
        "ota_key": ota_key,
    }
