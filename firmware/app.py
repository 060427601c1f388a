"""Start-up and the main loop on the board: boot counter, portal or normal mode, the
1 s controller loop, and the watchdog that is fed only while that loop is healthy."""

import asyncio
import gc
import time

# One module at a time with a collection in between: loading code leaves temporary
# allocations behind, and a small heap must not be fragmented before the start.
import protocol_device  # noqa: F401 - the largest, first

gc.collect()
import controller  # noqa: E402

gc.collect()
import config  # noqa: E402
import creds  # noqa: E402
import hardware  # noqa: E402
import health  # noqa: E402

gc.collect()
import mqtt  # noqa: E402, F401

gc.collect()
from link import Link  # noqa: E402

gc.collect()


def pem_to_der(pem):
    import binascii

    lines = [
        ln.strip()
        for ln in pem.strip().split("\n")
        if ln.strip() and not ln.startswith("-----")
    ]
    return binascii.a2b_base64("".join(lines))


def read_ca():
    try:
        with open(config.CA_FILE) as f:
            return pem_to_der(f.read())
    except (OSError, ValueError):
        return None


def forget_wifi():
    """wifi/clear: drop the networks, keep the MQTT bundle, so the portal asks only for
    Wi-Fi on the next boot."""
    prov = config.load_provision() or {}
    prov["wifi"] = []
    # Atomic, like every file the board rewrites. The claim code (claim.txt) and the
    # MQTT credentials (creds.json) stay.
    controller.FileStore(config.PROVISION_FILE).save(prov)


async def run(settings, counter, safe_mode):
    relays = hardware.Relays(config.PIN_PUMP, config.PIN_VALVE, config.RELAY_ACTIVE_LOW)
    relays.all_off()
    sensor = hardware.TempSensor(config.PIN_ONEWIRE)
    led = hardware.Led(config.PIN_LED)
    asyncio.create_task(led.run())
    offset = hardware.unix_offset()

    def clock():
        return int(time.time()) + offset

    model = config.HW_MODEL or hardware.MODEL
    if safe_mode:
        # No saved state, no programs, relays stay off: only reachable and rebootable.
        ctl = controller.Controller(clock, None, None, config.FW_VERSION, model)
        led.pattern = 100
    else:
        ctl = controller.Controller(
            clock,
            controller.FileStore(config.STATE_FILE),
            relays.set,
            config.FW_VERSION,
            model,
        )
        relays.set(ctl.pump, ctl.valve)
    settings["ca_der"] = read_ca()
    settings["keepalive"] = config.KEEPALIVE_S
    settings["ntp_host"] = config.NTP_HOST
    m = settings["mqtt"]
    store = creds.CredStore(config.CREDS_FILE, m["username"], m["password"])
    link = Link(settings, ctl, hardware, safe_mode, counter.count, store)
    ctl.device_id = settings["device_id"]
    ctl.on_credentials = link.credentials
    ota_enable(settings, link)
    asyncio.create_task(link.run())

    reading = {"temp": None, "fresh": False}

    async def sensor_loop():
        while True:
            reading["temp"] = await sensor.read()
            reading["fresh"] = True
            await asyncio.sleep(config.SENSOR_EVERY_S)

    asyncio.create_task(sensor_loop())

    import machine

    wdt = machine.WDT(timeout=config.WDT_TIMEOUT_MS)
    gc.collect()
    # Also collect once a quarter of what is free now has been allocated since the
    # last collection, before an allocation has to fail for it.
    gc.threshold(gc.mem_free() // 4)
    started = time.ticks_ms()
    failures = 0
    while True:
        turn_start = time.ticks_ms()
        try:
            if not safe_mode:
                ctl.tick(reading["temp"], reading["fresh"])
            reading["fresh"] = False
            # Neither call waits for the network: the controller keeps its 1 s beat
            # whatever the link does (link.py, Outbox).
            link.handle_inbox()
            link.flush()
            ota = link.ota
            if ota is not None and ota.step() and not link.restart:
                # The pump relay is off during the swap; the controller's state
                # (state.json, outside the application folder) survives it.
                relays.all_off()
                ota.apply()
                link.restart = "ota"
            if link.up:
                led.pattern = 100 if safe_mode else 0
            else:
                led.pattern = 500
            if link.restart:
                await link.goodbye()
                if link.restart == "wifi_clear":
                    forget_wifi()
                await asyncio.sleep(1)
                machine.reset()
            # Healthy means the loop ran for a while, with or without a network: power
            # cuts during an Internet outage are not a crash loop.
            if counter.count and (
                time.ticks_diff(time.ticks_ms(), started)
                > config.HEALTHY_AFTER_S * 1000
            ):
                counter.healthy()
            failures = 0
        except Exception as e:  # noqa: BLE001 - counted; the watchdog decides
            failures += 1
            print("main loop error:", e)
        # Fed only after a good turn: a wedged or failing loop ends in a reset.
        if failures < 5:
            wdt.feed()
        # A collection every second (a few ms) keeps the small heap unfragmented.
        gc.collect()
        await asyncio.sleep_ms(
            max(10, 1000 - time.ticks_diff(time.ticks_ms(), turn_start))
        )


def ota_enable(settings, link):
    """Updates on, when the board has its OTA key (provisioning bundle): the link
    subscribes to the OTA topics and loads the updater (updater.py, ~10 KB of heap)
    only when an offer arrives, or now when an update is under way (ota.json)."""
    key = settings.get("ota_key")
    if not key:
        return
    import binascii

    try:
        key = binascii.unhexlify(key)
    except ValueError:
        print("ota: the OTA key is not hex; updates off")
        return
    trial = {
        "trial_s": config.OTA_TRIAL_S,
        "trial_boots": config.OTA_TRIAL_BOOTS,
        "trial_wdt_ms": config.OTA_TRIAL_WDT_MS,
    }
    version = config.FW_VERSION.split("-")[-1]

    def load():
        gc.collect()
        import updater

        return updater.Updater(key, version, link.ctl.hw, link.pub, "", trial)

    link.ota_load = load
    try:
        import os

        os.stat("ota.json")  # otaboot.STATE: an update to go on with or report
        link.ota = load()
    except OSError:
        pass


def main():
    settings = config.settings()
    suffix = hardware.unique_suffix()
    if not settings["device_id"]:
        settings["device_id"] = "ESP-" + suffix
    if not settings["wifi"] or not settings["mqtt"]["host"]:
        # Not counted as a boot: unplugging an unprovisioned board is not a crash, and
        # must not put its first provisioned boot into safe mode.
        import portal

        asyncio.run(
            portal.run(
                settings["device_id"],
                suffix,
                config.PROVISION_FILE,
                config.CA_FILE,
                config.PORTAL_HTTP_PORT,
                config.PORTAL_DNS_PORT,
                config.CLAIM_FILE,
                config.CREDS_FILE,
            )
        )
        return
    counter = health.BootCounter(config.BOOT_FILE, config.SAFE_MODE_AFTER)
    safe_mode = counter.boot()
    asyncio.run(run(settings, counter, safe_mode))
