"""The captive portal of the board code under the MicroPython unix port: boots in the
portal do not count towards safe mode, and the whole provisioning flow (DNS catch-all,
redirect, form, Wi-Fi test, reboot into normal mode) in a private network namespace."""

import json
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from firmware import protocol as P
from firmware.tests import board as B
from firmware.tests.test_sim_mqtt import cmd, is_

pytestmark = [pytest.mark.micropython, pytest.mark.mqtt, pytest.mark.slow]


def provision(b, port, prefix):
    return {
        "wifi": [list(B.WIFI)],
        "bundle": {
            "v": 1,
            "device_id": b.device_id,
            "mqtt": {
                "host": "127.0.0.1",
                "port": port,
                "tls": False,
                "username": "",
                "password": "",
                "prefix": prefix,
            },
        },
    }


def test_portal_boots_do_not_count_towards_safe_mode(
    make_board, board_observer, own_broker, board_prefix
):
    """Four power cuts while unprovisioned, then provisioned: the first normal boot is
    boot 1, not in safe mode, and obeys commands (it acked `busy` before)."""
    b = make_board(
        start=False,
        provisioned=False,
        config="PORTAL_HTTP_PORT = 0\nPORTAL_DNS_PORT = 0",
    )
    b.start()
    for n in range(1, 5):
        B.wait(lambda n=n: b.saw("portal: serving") >= n, 20, f"portal boot {n}")
        b.power_cut()
        if n < 4:
            b.power_on()
    assert b.file("boot.json") in (None, '{"count": 0}'), b.file("boot.json")
    (b.fs / "provision.json").write_text(
        json.dumps(provision(b, own_broker.port, board_prefix))
    )
    b.power_on()
    obs = board_observer
    boot = obs.expect(is_("event", type="boot"), what="boot event", timeout=20)[2]
    assert boot["data"]["safe_mode"] is False and boot["data"]["boot_count"] == 1
    cmd(obs, b.device_id, "after-portal", "pump", "ON")
    ack = obs.expect(is_("ack", id="after-portal"), what="ack")[2]
    assert ack["ok"], ack


# --- the captive-portal flow in a network namespace ---------------------------------

CLIENT = r"""
import json, socket, sys, urllib.request, urllib.error
what, arg = sys.argv[1], sys.argv[2]
if what == "dns":
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    for label in arg.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00\x00\x01\x00\x01"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(q, ("127.0.0.1", 53))
    r = s.recv(512)
    print(json.dumps({"id": r[:2].hex(), "a": ".".join(str(x) for x in r[-4:])}))
else:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None
    opener = urllib.request.build_opener(NoRedirect)
    data = sys.argv[3].encode() if what == "post" else None
    try:
        r = opener.open(urllib.request.Request(arg, data=data), timeout=30)
        print(json.dumps({"status": r.status, "body": r.read().decode()}))
    except urllib.error.HTTPError as e:
        print(json.dumps({"status": e.code, "location": e.headers.get("Location")}))
"""


@pytest.fixture
def netns():
    name = "fwp-" + uuid.uuid4().hex[:6]
    ip = shutil.which("ip")
    if ip is None or subprocess.run([ip, "netns", "add", name]).returncode != 0:
        pytest.skip("no private network namespace here (`ip netns add` not allowed)")
    try:
        for c in (
            ["ip", "link", "set", "lo", "up"],
            # The access point's address, where the DNS answer sends the phone.
            ["ip", "addr", "add", "192.168.4.1/32", "dev", "lo"],
        ):
            subprocess.run(["ip", "netns", "exec", name] + c, check=True)
        yield name
    finally:
        subprocess.run([ip, "netns", "del", name])


def client(netns, *args):
    out = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", CLIENT] + list(args),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def form(**fields):
    from urllib.parse import urlencode

    return urlencode(fields)


def test_captive_portal_provisions_the_board_in_a_network_namespace(
    tmp_path, firmware_build, netns
):
    prefix = "fwportal-" + uuid.uuid4().hex[:6]
    broker = B.Broker(tmp_path / "broker", port=1883, netns=netns).start()
    b = B.Board(tmp_path / "board", provisioned=False, netns=netns)
    b.set_air({B.WIFI[0]: [B.WIFI[1], -55], "Neighbour": ["x" * 8, -80]})
    try:
        b.start()
        B.wait(lambda: b.saw("portal: serving"), 20, "portal up")
        ap = json.loads((b.sim / "ap").read_text())
        assert ap["essid"] == "PoolSaaS-A1B2C3" and ap["authmode"] == 0
        # A phone's connectivity check: every name resolves to the portal ...
        ans = client(netns, "dns", "connectivitycheck.gstatic.com")
        assert ans == {"id": "1234", "a": "192.168.4.1"}
        # ... and every other URL is sent to the page.
        r = client(netns, "get", "http://192.168.4.1/generate_204")
        assert r["status"] == 302 and r["location"] == "http://192.168.4.1/"
        page = client(netns, "get", "http://192.168.4.1/")
        assert page["status"] == 200 and b.device_id in page["body"]
        assert '<option value="PoolNet">' in page["body"]
        bundle = json.dumps(provision(b, 1883, prefix)["bundle"])
        bad = client(
            netns, "post", "http://192.168.4.1/save",
            form(ssid1="PoolNet", pw1="short", bundle=bundle),
        )  # fmt: skip
        assert "must be 8 to 63 characters" in bad["body"]
        wrong = client(
            netns, "post", "http://192.168.4.1/save",
            form(ssid1="PoolNet", pw1="wrong-password", bundle=bundle),
        )  # fmt: skip
        assert "Could not join" in wrong["body"]
        assert b.file("provision.json") is None
        ok = client(
            netns, "post", "http://192.168.4.1/save",
            form(ssid1="PoolNet", pw1=B.WIFI[1], bundle=bundle),
        )  # fmt: skip
        assert "Saved" in ok["body"] and "PoolNet" in ok["body"]
        saved = json.loads(b.file("provision.json"))
        assert saved["wifi"] == [list(B.WIFI)]
        # It restarts into normal mode and comes online on the broker of the bundle.
        online = subprocess.run(
            B.in_netns(netns, [
                "mosquitto_sub", "-p", "1883", "-t", prefix + "/+/status",
                "-C", "1", "-W", "30", "-v",
            ]),
            capture_output=True, text=True,
        )  # fmt: skip
        assert online.stdout.strip() == prefix + "/" + b.device_id + "/status online"
        assert b.boots == [B.PWRON_RESET, B.SOFT_RESET]
        assert b.file("boot.json") == '{"count": 1}'
    finally:
        b.stop()
        broker.kill()
        print("--- board log:\n" + b.log(200))
        time.sleep(0)


def netns_pub(netns, topic, payload):
    subprocess.run(
        B.in_netns(netns, ["mosquitto_pub", "-p", "1883", "-q", "1", "-t", topic,
                           "-m", payload]),
        check=True, timeout=30,
    )  # fmt: skip


def claim_lines(body):
    start = body.index("<pre")
    return body[body.index(">", start) + 1 : body.index("</pre>")].split("\n")


def test_portal_shows_the_claim_code_and_a_factory_reset_keeps_it(
    tmp_path, firmware_build, netns
):
    """The flashing station's claim.txt, shown on the portal's first page, still
    there after a Wi-Fi reset (`wifi_clear`) brought the portal back."""
    prefix = "fwclaim-" + uuid.uuid4().hex[:6]
    broker = B.Broker(tmp_path / "broker", port=1883, netns=netns).start()
    b = B.Board(tmp_path / "board", provisioned=False, netns=netns,
                device_id="ESP-A1B2C3")  # fmt: skip
    (b.fs / "claim.txt").write_text("BBNRMAGFJV94")
    (b.fs / "provision.json").write_text(json.dumps(provision(b, 1883, prefix)))
    try:
        b.start()
        B.wait(lambda: b.saw("link: connected"), 30, "online")
        # Factory reset over MQTT: acked, restarted, the portal is back.
        reset = P.encode_command("reset-1", int(time.time()) + 30, "wifi_clear")
        netns_pub(netns, f"{prefix}/{b.device_id}/cmd", reset)
        B.wait(lambda: b.saw("portal: serving"), 30, "portal after the Wi-Fi reset")
        page = client(netns, "get", "http://192.168.4.1/")
        assert page["status"] == 200
        assert claim_lines(page["body"]) == [
            "Device id: ESP-A1B2C3",
            "Claim code: BBNR-MAGF-JV94",
        ]
        assert b.file("claim.txt") == "BBNRMAGFJV94"
        assert json.loads(b.file("provision.json"))["wifi"] == []
        # A bad form keeps the two lines on the page it sends back.
        bad = client(netns, "post", "http://192.168.4.1/save", form(ssid1=""))
        assert "Claim code: BBNR-MAGF-JV94" in bad["body"]
        assert b.boots == [B.PWRON_RESET, B.SOFT_RESET] and b.crashes == []
    finally:
        b.stop()
        broker.kill()
        print("--- board log:\n" + b.log(200))


def test_portal_without_a_good_claim_code_says_so_and_escapes_what_it_shows(
    tmp_path, firmware_build, netns
):
    b = B.Board(tmp_path / "board", provisioned=False, netns=netns,
                device_id='ESP-<img src=x onerror="alert(1)">')  # fmt: skip
    try:
        for n, claim in enumerate(
            ("<script>alert(1)</script>", "BBNR-MAGF-JV9", "\x00\xff" * 6, None)
        ):
            if claim is None:
                (b.fs / "claim.txt").unlink()
            else:
                (b.fs / "claim.txt").write_bytes(claim.encode("latin-1"))
            if n == 0:
                b.start()
            else:
                b.power_cut()
                b.power_on()
            B.wait(lambda n=n: b.saw("portal: serving") > n, 30, f"portal {n}")
            page = client(netns, "get", "http://192.168.4.1/")
            assert page["status"] == 200, claim
            assert claim_lines(page["body"]) == [
                "Device id: ESP-&lt;img src=x onerror=&quot;alert(1)&quot;&gt;",
                "Claim code: not set (see the label)",
            ], claim
            assert "<script>" not in page["body"] and "<img" not in page["body"]
        assert b.crashes == []
    finally:
        b.stop()
        print("--- board log:\n" + b.log(200))
