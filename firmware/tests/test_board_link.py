"""The board code (main.py -> app, link, mqtt, hardware, health), precompiled, under
the MicroPython unix port against a Mosquitto of the test's own: the outages it must
survive.

Each test holds one outage of issue 11 at its cause; see board.py for the emulator.
"""

import time

import pytest

from firmware.tests import board as B
from firmware.tests.test_sim_mqtt import cmd, is_

pytestmark = [pytest.mark.micropython, pytest.mark.mqtt, pytest.mark.slow]


def online(n=1):
    # Live (not retained) "online" messages only: a resubscribing observer also gets
    # the retained one again.
    return lambda i, k, v, r: k == "status" and v is True and not r


def offline():
    return lambda i, k, v, r: k == "status" and v is False and not r


def test_online_board_publishes_state_and_acks_commands(board_observer, make_board):
    obs = board_observer
    b = make_board()
    obs.expect(online(), what="online")
    obs.expect(is_("event", type="boot"), what="boot event")
    obs.expect(lambda i, k, v, r: k == "pump" and v is False, what="pump/state")
    tel = obs.expect(is_("telemetry"), what="telemetry")[2]
    assert tel["fw"].startswith("ps1-") and tel["mem_free"] > 0
    assert tel["hw"] == "esp32"  # hardware.MODEL, the board's own
    cmd(obs, b.device_id, "c-on", "pump", "ON")
    ack = obs.expect(is_("ack", id="c-on"), what="ack")[2]
    assert ack["ok"] and ack["state"]["pump"] is True
    B.wait(b.pump_on, 10, "pump relay on")
    assert obs.bad == [] and b.watchdog_resets == 0


def test_local_config_names_another_hardware_model(board_observer, make_board):
    # A bench board or another build says what it is: telemetry and the OTA updater
    # (app.ota_enable takes the controller's) use config.HW_MODEL over hardware.MODEL.
    b = make_board(config='HW_MODEL = "esp32s3"')
    tel = board_observer.expect(
        lambda i, k, v, r: i == b.device_id and k == "telemetry", what="telemetry"
    )[2]
    assert tel["hw"] == "esp32s3"


def test_reconnects_after_wifi_loss_reboot_power_cut_and_broker_restart_with_a_kept_session(  # noqa: E501
    board_observer, make_board, own_broker
):
    """Persistent session (clean=False): the broker answers session present on every
    reconnect, and the board must take it (mqtt_as refused it and never came back)."""
    obs = board_observer
    b = make_board()
    obs.expect(online(), what="first online")

    # Wi-Fi gone: the broker sees the link drop (will), a command waits in the session.
    b.wifi(False)
    obs.expect(offline(), what="will after Wi-Fi loss")
    cmd(obs, b.device_id, "while-away", "pump", "ON")
    b.wifi(True)
    obs.expect(online(), n=2, what="online after Wi-Fi is back", timeout=20)
    ack = obs.expect(is_("ack", id="while-away"), what="queued command acked")[2]
    assert ack["ok"], ack

    # Reboot on command: clean offline, back with the session still on the broker.
    cmd(obs, b.device_id, "boot-1", "reboot")
    obs.expect(is_("ack", id="boot-1", ok=True), what="reboot ack")
    obs.expect(online(), n=3, what="online after reboot", timeout=20)
    obs.expect(is_("event", type="boot"), n=2, what="second boot event", timeout=10)

    # Power cut: no goodbye, the will says offline; powered on again.
    b.power_cut()
    obs.expect(offline(), n=3, what="will after power cut")
    b.power_on()
    obs.expect(online(), n=4, what="online after power cut", timeout=20)

    # Broker restart (sessions saved to disk and loaded again): back on its own.
    own_broker.restart()
    obs.expect(online(), n=5, what="online after broker restart", timeout=25)
    # (Not a relay switch: just after a boot the relay protection may answer busy.)
    cmd(obs, b.device_id, "after-restart", "override_clear")
    ack = obs.expect(is_("ack", id="after-restart"), what="ack", timeout=15)[2]
    assert ack["ok"], ack
    boots = [
        m[2]["data"] for m in obs.seen if m[1] == "event" and m[2]["type"] == "boot"
    ]
    assert [d["reason"] for d in boots] == ["power_on", "soft_reset", "power_on"]
    assert b.watchdog_resets == 0 and b.saw("session present") >= 1


def test_controller_keeps_running_while_the_broker_is_frozen(
    board_observer, make_board, own_broker
):
    """A frozen broker (SIGSTOP: the socket open, nothing answered) must not stop the
    1 s loop: freeze protection switches the pump on, the watchdog (10 s here) never
    fires, and what happened reaches the cloud once the broker is back."""
    obs = board_observer
    b = make_board(start=False)
    b.set_temp(18.0)
    b.start()
    obs.expect(online(), what="online")
    obs.expect(lambda i, k, v, r: k == "temperature" and v == 18.0, what="18 °C")
    own_broker.freeze()
    frozen_at = time.monotonic()
    b.set_temp(0.5)
    B.wait(b.pump_on, 30, "freeze protection turns the pump on, broker frozen")
    # Frozen for longer than the watchdog timeout, with the loop running through it.
    while time.monotonic() - frozen_at < 16:
        assert b.proc.poll() is None and b.watchdog_resets == 0
        time.sleep(0.2)
    own_broker.thaw()
    ev = obs.expect(
        is_("event", type="freeze_protect"), what="freeze event after thaw", timeout=30
    )[2]
    assert ev["data"]["active"] is True
    obs.expect(lambda i, k, v, r: k == "pump" and v is True, what="pump ON", timeout=10)
    assert b.watchdog_resets == 0 and b.boots == [B.PWRON_RESET]


def test_tls_errors_in_connect_are_retried_until_the_certificate_is_trusted(
    tmp_path, firmware_build, board_prefix
):
    """A broker whose certificate the board's CA did not sign: the TLS error (a
    ValueError on MicroPython) must not end the connection task. When the broker gets
    a certificate from the board's CA, the board connects without a reboot."""
    from firmware.tests.test_sim_mqtt import Observer

    good = B.make_ca(tmp_path / "pki", "good")
    other = B.make_ca(tmp_path / "pki", "other")
    broker = B.Broker(tmp_path / "tls-broker", tls=other).start()
    obs = Observer(broker.url, board_prefix).start()
    b = B.Board(
        tmp_path / "board",
        broker.tls_port,
        board_prefix,
        tls=True,
        ca_pem=open(good["cafile"]).read(),
    )
    try:
        b.start()
        B.wait(lambda: b.saw("link: ValueError") >= 3, 40, "three refused attempts")
        broker.tls = good
        broker.restart()
        obs.expect(online(), what="online once the certificate is trusted", timeout=20)
        assert b.boots == [B.PWRON_RESET] and b.watchdog_resets == 0
    finally:
        b.stop()
        obs.stop()
        broker.kill()
        print("--- board log:\n" + b.log(200))
