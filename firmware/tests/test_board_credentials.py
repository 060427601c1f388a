"""Credential rotation on the board (docs/protocol.md 3.2.1): the board code under the
MicroPython unix port against the real dynamic-security Mosquitto (127.0.0.1:18883,
deploy/mosquitto/start-dynsec.sh), whose clients the test makes with mosquitto_ctrl
as the platform does: bound to the device's client id, with a role limited to the
device's topics.
"""

import json
import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from firmware import protocol as P
from firmware.tests import board as B
from firmware.tests.test_sim_mqtt import Observer, cmd, is_

pytestmark = [pytest.mark.micropython, pytest.mark.mqtt, pytest.mark.slow]

PORT = int(os.environ.get("POOLSAAS_TEST_DYNSEC_PORT", "18883"))
ADMIN, ADMIN_PW = "poolsaas-admin", "poolsaas-dynsec-dev"
SCRIPT = (
    Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "start-dynsec.sh"
)


def ctrl(*args, check=True):
    out = subprocess.run(
        ["mosquitto_ctrl", "-h", "127.0.0.1", "-p", str(PORT), "-u", ADMIN,
         "-P", ADMIN_PW, "dynsec"] + list(args),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    # The response topic is shared: mosquitto_ctrl also prints other admins' answers
    # (other tests on this broker), so only an error of this very command counts.
    if check and (out.returncode or f"{args[0]}: Error" in out.stdout + out.stderr):
        raise AssertionError(f"mosquitto_ctrl {args[0]}: {out.stdout} {out.stderr}")
    return out


@pytest.fixture(scope="module")
def dynsec():
    env = dict(os.environ)
    env.update(
        DYNSEC_PORT=str(PORT), DYNSEC_ADMIN_USER=ADMIN, DYNSEC_ADMIN_PASSWORD=ADMIN_PW
    )
    r = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr


class Accounts:
    """Dynamic-security clients and the role of one device, removed afterwards."""

    def __init__(self, prefix, device_id):
        self.device_id = device_id
        self.role = "fwtest-" + device_id
        self.users = []
        ctrl("createRole", self.role)
        root = f"{prefix}/{device_id}"
        for suffix in P.DEVICE_TO_CLOUD:
            ctrl("addRoleACL", self.role, "publishClientSend", f"{root}/{suffix}",
                 "allow")  # fmt: skip
        for suffix in P.DEVICE_SUBSCRIPTIONS:
            ctrl("addRoleACL", self.role, "subscribeLiteral", f"{root}/{suffix}",
                 "allow")  # fmt: skip

    def client(self, username):
        """A client bound to the device's client id; returns its password."""
        password = secrets.token_urlsafe(18)
        ctrl("createClient", username, "-c", self.device_id, "-p", password)
        ctrl("addClientRole", username, self.role)
        self.users.append(username)
        return password

    def delete(self, username):
        ctrl("deleteClient", username)
        self.users.remove(username)

    def cleanup(self):
        for u in list(self.users):
            ctrl("deleteClient", u, check=False)
        ctrl("deleteRole", self.role, check=False)


@pytest.fixture
def rotation(dynsec, tmp_path, firmware_build):
    """(make_board, observer, accounts): boards on the dynamic-security broker."""
    prefix = "fwrot-" + secrets.token_hex(4)
    obs = Observer(f"mqtt://{ADMIN}:{ADMIN_PW}@127.0.0.1:{PORT}", prefix).start()
    made = []

    def make(device_id, username, password, start=True):
        b = B.Board(
            tmp_path / f"board{len(made)}", PORT, prefix, device_id=device_id,
            username=username, password=password,
        )  # fmt: skip
        made.append(b)
        return b.start() if start else b

    accounts = []

    def account(device_id):
        a = Accounts(prefix, device_id)
        accounts.append(a)
        return a

    yield make, obs, account
    for b in made:
        b.stop()
        print("--- board", b.device_id, "boots", b.boots, "log:\n" + b.log(200))
    obs.clear_retained([b.device_id for b in made])
    obs.stop()
    for a in accounts:
        a.cleanup()


def online(i, k, v, r):
    return k == "status" and v is True and not r


def went_offline(obs):
    """Any sign of going offline: status offline (will or goodbye), Wi-Fi gone."""
    obs.kinds()
    return [
        m
        for m in obs.seen
        if not m[3]
        and (
            (m[1] == "status" and m[2] is False)
            or (m[1] == "wifi" and m[2]["status"] == "disconnected")
        )
    ]


def creds_file(b):
    text = b.file("creds.json")
    return json.loads(text) if text else None


def rotate(obs, device_id, cid, username, password):
    value = {"username": username, "password": password}
    cmd(obs, device_id, cid, "credentials", value, exp=int(time.time()) + 86400)


def new_id():
    return "ESP-" + secrets.token_hex(3).upper()


def test_board_switches_to_the_new_credentials_and_acks_over_the_new_connection(
    rotation,
):
    make, obs, account = rotation
    dev = new_id()
    acc = account(dev)
    old_pw = acc.client(dev)
    new_user = dev + "~1"
    new_pw = acc.client(new_user)
    b = make(dev, dev, old_pw)
    obs.expect(online, what="online with the bundle's pair", timeout=20)

    rotate(obs, dev, "k3-1a2b3c4d", new_user, new_pw)
    ack = obs.expect(is_("ack", id="k3-1a2b3c4d"), what="credentials ack", timeout=20)
    assert ack[2] == {"id": "k3-1a2b3c4d", "ok": True}
    # A switch is not going offline: no status offline, no wifi disconnected.
    obs.expect(online, n=2, what="online on the new connection")
    assert went_offline(obs) == []
    assert creds_file(b) == {"current": {"username": new_user, "password": new_pw}}
    assert b.saw("link: switching credentials") == 1

    # The old account goes (as the server does after the ack): a board still using
    # it would be kicked off. It stays connected and obeys.
    acc.delete(dev)
    cmd(obs, dev, "after-delete", "override_clear")
    assert obs.expect(is_("ack", id="after-delete"), what="ack", timeout=15)[2]["ok"]
    time.sleep(2)
    assert went_offline(obs) == []
    assert len([m for m in obs.seen if online(*m)]) == 2

    # The cloud re-sends the same id: the original answer, no second switch.
    rotate(obs, dev, "k3-1a2b3c4d", new_user, new_pw)
    again = obs.expect(is_("ack", id="k3-1a2b3c4d"), n=2, what="re-ack", timeout=15)
    assert again[2] == ack[2] and b.saw("link: switching credentials") == 1

    # Rebooted: it connects with the new pair (the only one left on the broker).
    b.power_cut()
    b.power_on()
    obs.expect(online, n=3, what="online after the reboot", timeout=25)
    cmd(obs, dev, "after-boot", "override_clear")
    assert obs.expect(is_("ack", id="after-boot"), what="ack", timeout=15)[2]["ok"]
    # The password never reached the log, the telemetry or any other message.
    assert new_pw not in b.log(10**6) and old_pw not in b.log(10**6)
    assert not [m for m in obs.seen if new_pw in json.dumps(m[2])]
    assert b.watchdog_resets == 0 and obs.bad == []


def test_refused_credentials_are_dropped_and_the_board_stays_on_the_old_ones(
    rotation,
):
    make, obs, account = rotation
    dev = new_id()
    acc = account(dev)
    pw = acc.client(dev)
    b = make(dev, dev, pw)
    obs.expect(online, what="online", timeout=20)
    # A user name the broker does not know: CONNACK "not authorised".
    rotate(obs, dev, "k3-refused", dev + "~9", "not-a-real-password")
    ack = obs.expect(is_("ack", id="k3-refused"), what="failed ack", timeout=20)[2]
    assert ack == {
        "id": "k3-refused",
        "ok": False,
        "error": "failed",
        "reason": "new credentials refused",
    }
    assert creds_file(b) == {"current": {"username": dev, "password": pw}}
    cmd(obs, dev, "still-there", "override_clear")
    assert obs.expect(is_("ack", id="still-there"), what="ack", timeout=15)[2]["ok"]
    assert went_offline(obs) == []
    # Another device's account, or a malformed password: refused before any switch.
    rotate(obs, dev, "k3-foreign", "ESP-000000~1", "whatever-password")
    ack = obs.expect(is_("ack", id="k3-foreign"), what="invalid ack", timeout=15)[2]
    assert ack["error"] == "invalid" and "whatever" not in ack["reason"]
    # Rebooted: still the old pair, which works.
    b.power_cut()
    b.power_on()
    obs.expect(online, n=3, what="online after the reboot", timeout=25)
    assert b.saw("link: switching credentials") == 1
    assert "not-a-real-password" not in b.log(10**6)


def test_a_pending_pair_found_at_boot_is_tried_first_and_acked_with_its_command_id(
    rotation,
):
    """Power lost mid-switch: the pending slot is in flash, the ack not sent."""
    make, obs, account = rotation
    dev = new_id()
    acc = account(dev)
    old_pw = acc.client(dev)
    new_pw = acc.client(dev + "~2")
    b = make(dev, dev, old_pw, start=False)
    (b.fs / "creds.json").write_text(
        json.dumps(
            {
                "current": {"username": dev, "password": old_pw},
                "pending": {"username": dev + "~2", "password": new_pw, "id": "k3-pc"},
            }
        )
    )
    b.start()
    ack = obs.expect(is_("ack", id="k3-pc"), what="ack after the boot", timeout=25)
    assert ack[2] == {"id": "k3-pc", "ok": True}
    assert creds_file(b) == {"current": {"username": dev + "~2", "password": new_pw}}
    tries = [ln.split()[-1] for ln in b.lines if "link: connecting as" in ln]
    assert tries == [dev + "~2"], tries
    # The same after a power cut with a pending pair the broker refuses.
    b.power_cut()
    (b.fs / "creds.json").write_text(
        json.dumps(
            {
                "current": {"username": dev + "~2", "password": new_pw},
                "pending": {"username": dev + "~3", "password": new_pw, "id": "k3-no"},
            }
        )
    )
    b.power_on()
    ack = obs.expect(is_("ack", id="k3-no"), what="failed ack after boot", timeout=25)
    assert ack[2]["error"] == "failed"
    assert creds_file(b) == {"current": {"username": dev + "~2", "password": new_pw}}
    assert b.watchdog_resets == 0


def test_network_failures_alternate_pending_and_current_and_the_switch_is_retried(
    tmp_path, firmware_build, own_broker, board_prefix
):
    """No broker at all (network failure, not a refusal): both pairs are kept and
    tried in turn, pending first; online with the current one, the board tries the
    pending one again a little later and acks then."""
    obs = Observer(own_broker.url, board_prefix).start()
    dev = new_id()
    b = B.Board(tmp_path / "board", own_broker.port, board_prefix, device_id=dev,
                username=dev, password="old-password")  # fmt: skip
    (b.fs / "creds.json").write_text(
        json.dumps(
            {
                "current": {"username": dev, "password": "old-password"},
                "pending": {"username": dev + "~1", "password": "new-pw-1", "id": "k3"},
            }
        )
    )
    own_broker.stop()
    try:
        b.start()
        B.wait(lambda: b.saw("link: connecting as") >= 4, 40, "four attempts")
        tries = [ln.split()[-1] for ln in b.lines if "link: connecting as" in ln]
        assert tries[:4] == [dev + "~1", dev, dev + "~1", dev], tries
        assert json.loads(b.file("creds.json"))["pending"]["id"] == "k3"
        # Back with whichever pair comes next; the ack follows on the pending one.
        own_broker.start()
        ack = obs.expect(is_("ack", id="k3"), what="ack", timeout=45)[2]
        assert ack == {"id": "k3", "ok": True}
        assert json.loads(b.file("creds.json")) == {
            "current": {"username": dev + "~1", "password": "new-pw-1"}
        }
    finally:
        b.stop()
        obs.stop()
        print("--- board log:\n" + b.log(200))
