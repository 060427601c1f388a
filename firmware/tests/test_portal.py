"""firmware.portal: the pure parts of the captive portal (CPython and MicroPython)."""

import json

try:
    from firmware import portal
    from firmware.tests.helpers import raises, tmpdir
except ImportError:  # MicroPython: flat filesystem
    import portal
    from helpers import raises, tmpdir

BUNDLE = {
    "v": 1,
    "device_id": "ESP-A1B2C3",
    "mqtt": {
        "host": "mqtt.example.com",
        "port": 8883,
        "tls": True,
        "username": "ESP-A1B2C3",
        "password": "p&ss=word",
        "prefix": "devices",
    },
}


def quote(s):
    out = ""
    for ch in s:
        if ch.isalpha() or ch.isdigit():
            out += ch
        else:
            for b in ch.encode():
                out += "%" + "0123456789ABCDEF"[b >> 4] + "0123456789ABCDEF"[b & 15]
    return out


def test_form_with_bundle_builds_provision():
    body = (
        "ssid1=Pool+House&pw1="
        + quote("sécret pw")
        + "&ssid2=&pw2=&ssid3=Back&pw3=&bundle="
        + quote(json.dumps(BUNDLE))
    )
    form = portal.parse_form(body.encode())
    assert form["ssid1"] == "Pool House" and form["pw1"] == "sécret pw"
    prov = portal.build_provision(form)
    assert prov["wifi"] == [["Pool House", "sécret pw"], ["Back", ""]]
    assert prov["bundle"]["mqtt"]["password"] == "p&ss=word"
    path = tmpdir() + "/provision.json"
    portal.save_provision(prov, path, path + ".ca")
    with open(path) as f:
        assert json.loads(f.read()) == prov


def test_form_errors_are_messages():
    e = raises(ValueError, portal.build_provision, {"bundle": json.dumps(BUNDLE)})
    assert "at least one" in str(e)
    e = raises(ValueError, portal.build_provision, {"ssid1": "x", "pw1": "short"})
    assert "8 to 63" in str(e)
    e = raises(ValueError, portal.build_provision, {"ssid1": "x", "bundle": "{bad"})
    assert "not valid" in str(e)


def test_dns_answer_points_everything_at_the_portal():
    # Query id 0x1234 for "a.io" type A class IN.
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    q += b"\x01a\x02io\x00\x00\x01\x00\x01"
    r = portal.dns_answer(q, "192.168.4.1")
    assert r[:2] == b"\x12\x34" and r[7] == 1
    assert r.endswith(bytes([192, 168, 4, 1]))
    assert portal.dns_answer(b"\x00\x01") is None
    assert portal.dns_answer(q[:15]) is None


def test_page_escapes_network_names():
    html = portal.page("ESP-A1B2C3", ['<script>"x"'], "Saved & done")
    assert "<script>" not in html and "&lt;script&gt;&quot;x&quot;" in html
    assert "Saved &amp; done" in html


def _claim_file(text):
    path = tmpdir() + "/claim.txt"
    with open(path, "w") as f:
        f.write(text)
    return path


def test_claim_code_read_from_claim_txt_grouped_by_four():
    assert portal.read_claim(_claim_file("BBNRMAGFJV94")) == "BBNR-MAGF-JV94"
    # What a text editor or the flashing station may leave around it.
    assert portal.read_claim(_claim_file("bbnrmagfjv94\r\n")) == "BBNR-MAGF-JV94"
    for bad in ("", "BBNR-MAGF-JV94", "BBNRMAGFJV9", "BBNRMAGFJV944", "BBNRMAGFJV9U",
                "<script>x</s", "\xff\xfe" * 6):  # fmt: skip
        assert portal.read_claim(_claim_file(bad)) is None, bad
    assert portal.read_claim(tmpdir() + "/missing.txt") is None
    with open(tmpdir() + "/bin.txt", "wb") as f:
        f.write(b"\xff\xfe\x00BBNRMAGF")
    assert portal.read_claim(tmpdir() + "/bin.txt") is None


def test_page_shows_device_id_and_claim_code_escaped():
    html = portal.page("ESP-A1B2C3", [], "", "BBNR-MAGF-JV94")
    assert "Device id: ESP-A1B2C3\nClaim code: BBNR-MAGF-JV94" in html
    assert "<pre" in html  # monospace
    html = portal.page("ESP-A1B2C3", [])
    assert "Claim code: not set (see the label)" in html
    html = portal.page('<img src=x onerror="1">', [], "", "<b>&")
    assert "<img" not in html and "<b>" not in html
    assert "Device id: &lt;img src=x onerror=&quot;1&quot;&gt;" in html
    assert "Claim code: &lt;b&gt;&amp;" in html
    # The error page after a bad form keeps the two lines.
    assert "Claim code: BBNR" in portal.page("ESP-A1B2C3", [], "Bad", "BBNR-MAGF-JV94")


def test_a_new_bundle_drops_rotated_credentials_the_same_bundle_keeps_them():
    d = tmpdir()
    path, creds_path = d + "/provision.json", d + "/creds.json"
    prov = {"wifi": [["Pool", ""]], "bundle": BUNDLE}
    portal.save_provision(prov, path, path + ".ca", creds_path)
    with open(creds_path, "w") as f:
        f.write("{}")
    # Wi-Fi reset, then the same bundle pasted again: the rotated pair stays.
    portal.save_provision(prov, path, path + ".ca", creds_path)
    assert open(creds_path).read() == "{}"
    other = json.loads(json.dumps(BUNDLE))
    other["mqtt"]["password"] = "a-new-one"
    portal.save_provision({"wifi": [], "bundle": other}, path, path + ".ca", creds_path)
    raises(OSError, open, creds_path)
