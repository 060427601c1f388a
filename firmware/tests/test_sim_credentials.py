"""The simulator's devices (firmware.sim) rotate their credentials as the board does
(docs/protocol.md 3.2.1, in memory), so server tests can drive a rotation end to end
against the dynamic-security Mosquitto."""

import secrets

import pytest

from firmware.sim import VirtualDevice
from firmware.tests.test_board_credentials import (
    ADMIN,
    ADMIN_PW,
    PORT,
    Accounts,
    dynsec,  # noqa: F401 - the fixture
    new_id,
    rotate,
    went_offline,
)
from firmware.tests.test_sim_mqtt import Observer, cmd, is_

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


def test_virtual_device_switches_credentials_or_stays_on_the_old_ones(dynsec):  # noqa: F811
    prefix = "fwsimrot-" + secrets.token_hex(4)
    obs = Observer(f"mqtt://{ADMIN}:{ADMIN_PW}@127.0.0.1:{PORT}", prefix).start()
    dev = new_id()
    acc = Accounts(prefix, dev)
    d = None
    try:
        old_pw = acc.client(dev)
        new_pw = acc.client(dev + "~1")
        d = VirtualDevice(dev, broker=f"mqtt://127.0.0.1:{PORT}", username=dev,
                          password=old_pw, prefix=prefix, keepalive=5,
                          reconnect_delay=(0.2, 1))  # fmt: skip
        d.start().wait_connected(10)
        # Published after its SUBSCRIBE on the same connection: subscribed by now.
        obs.expect(lambda i, k, v, r: k == "status" and v and not r, what="online")
        rotate(obs, dev, "k3-sim", dev + "~1", new_pw)
        ack = obs.expect(is_("ack", id="k3-sim"), what="ack", timeout=15)[2]
        assert ack == {"id": "k3-sim", "ok": True}
        assert (d.username, d.password) == (dev + "~1", new_pw)
        acc.delete(dev)
        cmd(obs, dev, "after", "override_clear")
        assert obs.expect(is_("ack", id="after"), what="ack", timeout=10)[2]["ok"]
        # Re-sent: the same answer from the ring.
        rotate(obs, dev, "k3-sim", dev + "~1", new_pw)
        assert obs.expect(is_("ack", id="k3-sim"), n=2, what="re-ack")[2] == ack
        # Refused: back on the current pair, acked failed.
        rotate(obs, dev, "k3-bad", dev + "~9", "no-such-password")
        bad = obs.expect(is_("ack", id="k3-bad"), what="failed ack", timeout=15)[2]
        assert bad["error"] == "failed" and bad["reason"] == "new credentials refused"
        d.wait_connected(10)
        cmd(obs, dev, "still", "override_clear")
        assert obs.expect(is_("ack", id="still"), what="ack", timeout=10)[2]["ok"]
        assert d.username == dev + "~1" and went_offline(obs) == []
    finally:
        if d is not None:
            d.stop()
        obs.clear_retained([dev])
        obs.stop()
        acc.cleanup()
