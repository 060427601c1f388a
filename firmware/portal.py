"""Captive portal for provisioning: access point PoolSaaS-XXXXXX, a DNS server that
answers every name with the portal's address, and one page that takes the Wi-Fi
credentials (up to 3 networks) and the provisioning bundle (JSON, or the QR text).

The form handling, the DNS answer and the HTML are pure functions (tested on the PC and
under MicroPython); only run() touches the network.
"""

import json

try:
    from firmware import protocol_device as P  # CPython (tests)
except ImportError:
    import protocol_device as P

AP_IP = "192.168.4.1"
MAX_BODY = 12000
# Crockford's base32 alphabet of claim codes (docs/protocol.md 7.1).
CLAIM_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def url_decode(s):
    s = s.replace("+", " ")
    out = bytearray()
    b = s.encode()
    i = 0
    while i < len(b):
        c = b[i]
        if c == 37 and i + 2 < len(b):  # "%xx"
            try:
                out.append(int(b[i + 1 : i + 3], 16))
                i += 3
                continue
            except ValueError:
                pass
        out.append(c)
        i += 1
    return bytes(out).decode()


def parse_form(body):
    """application/x-www-form-urlencoded -> dict of str."""
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body).decode()
    form = {}
    for part in body.split("&"):
        if not part:
            continue
        k, _, v = part.partition("=")
        form[url_decode(k)] = url_decode(v)
    return form


def build_provision(form):
    """provision.json content from the submitted form; ValueError with a message for
    the page when something is missing or wrong."""
    wifi = []
    for i in ("1", "2", "3"):
        ssid = form.get("ssid" + i, "").strip()
        if ssid:
            if len(ssid) > 32:
                raise ValueError("Network name " + i + " is longer than 32 characters")
            pw = form.get("pw" + i, "")
            if pw and not 8 <= len(pw) <= 63:
                raise ValueError("Wi-Fi password " + i + " must be 8 to 63 characters")
            wifi.append([ssid, pw])
    if not wifi:
        raise ValueError("Enter at least one Wi-Fi network")
    text = form.get("bundle", "").strip()
    if not text:
        raise ValueError("Paste the provisioning bundle from the dashboard")
    try:
        bundle = P.parse_bundle(text.encode())
    except P.ProtocolError as e:
        raise ValueError("The provisioning bundle is not valid: " + e.msg) from None
    return {"wifi": wifi, "bundle": bundle}


def dns_answer(query, ip=AP_IP):
    """Answer any DNS query with one A record for ip (captive-portal detection)."""
    if len(query) < 12:
        return None
    # End of the first question: labels, zero byte, QTYPE, QCLASS.
    i = 12
    while i < len(query) and query[i] != 0:
        i += query[i] + 1
    end = i + 5
    if end > len(query):
        return None
    resp = bytearray(query[:2])
    resp += b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"
    resp += query[12:end]
    resp += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04"
    resp += bytes(int(x) for x in ip.split("."))
    return bytes(resp)


def html_escape(s):
    return (
        s.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
    )


def read_claim(path):
    """The claim code the flashing station wrote (claim.txt: 12 characters, no
    dashes) as printed on the label, XXXX-XXXX-XXXX; None when the file is missing,
    unreadable or not a code."""
    try:
        with open(path, "rb") as f:
            raw = f.read(64)
        code = raw.decode().strip().upper()
    except (OSError, ValueError, UnicodeError):
        return None
    if len(code) != 12:
        return None
    for c in code:
        if c not in CLAIM_ALPHABET:
            return None
    return code[:4] + "-" + code[4:8] + "-" + code[8:]


def identity(device_id, claim):
    """The two lines of the label: what the dashboard asks for to add the device."""
    code = html_escape(claim) if claim else "not set (see the label)"
    return (
        '<pre style="font-size:1.2em">Device id: '
        + html_escape(device_id)
        + "\nClaim code: "
        + code
        + "</pre>"
    )


def page(device_id, networks, message="", claim=None):
    opts = "".join(
        '<option value="' + html_escape(n) + '">' for n in networks if n
    )  # datalist: pick a scanned network or type a hidden one
    rows = ""
    for i in ("1", "2", "3"):
        rows += (
            "<p>Network "
            + i
            + ' <input name="ssid'
            + i
            + '" list="nets" maxlength="32">'
            ' password <input name="pw' + i + '" type="password" maxlength="63"></p>'
        )
    msg = "<p><b>" + html_escape(message) + "</b></p>" if message else ""
    return (
        "<!doctype html><html><head><meta name=viewport content='width=device-width'>"
        "<title>PoolSaaS setup</title></head><body><h1>PoolSaaS "
        + html_escape(device_id)
        + "</h1>"
        + identity(device_id, claim)
        + msg
        + '<form method="post" action="/save"><datalist id="nets">'
        + opts
        + "</datalist>"
        + rows
        + "<p>Provisioning bundle (from the dashboard, or the QR code text)<br>"
        '<textarea name="bundle" rows="8" cols="40"></textarea></p>'
        '<p><button type="submit">Save and connect</button></p></form></body></html>'
    )


def _same_bundle(path, bundle):
    try:
        with open(path) as f:
            old = json.loads(f.read()).get("bundle")
    except (OSError, ValueError, AttributeError):
        return False
    return old == bundle


def save_provision(prov, path, ca_path, creds_path=None):
    """Write provision.json (and the CA) with an atomic replace.

    A different bundle brings its own MQTT credentials: the rotated ones of the old
    bundle (creds_path) go. The same bundle pasted again after a Wi-Fi reset keeps
    them, since the rotated pair is newer than the one printed in the bundle.
    """
    import os

    if creds_path and not _same_bundle(path, prov["bundle"]):
        for p in (creds_path, creds_path + ".tmp"):
            try:
                os.remove(p)
            except OSError:
                pass

    ca = prov["bundle"].get("ca")
    if ca:
        with open(ca_path, "w") as f:
            f.write(ca)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(prov))
    try:
        os.rename(tmp, path)
    except OSError:
        os.remove(path)
        os.rename(tmp, path)


# --- the network side (board only) --------------------------------------------------


async def _test_wifi(networks, timeout_s=20):
    import asyncio

    import network

    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    failed = failed_statuses(network)
    for ssid, pw in networks:
        sta.disconnect()
        sta.connect(ssid, pw)
        for _ in range(timeout_s * 2):
            if sta.isconnected():
                return ssid
            if sta.status() in failed:
                break  # wrong password, no such network: no point in waiting
            await asyncio.sleep_ms(500)
    return None


def failed_statuses(network):
    """The station statuses that mean the attempt is over (ESP32 names)."""
    names = ("STAT_WRONG_PASSWORD", "STAT_NO_AP_FOUND", "STAT_CONNECT_FAIL")
    return [getattr(network, n) for n in names if hasattr(network, n)]


async def _dns_server(ip, port=53):
    import asyncio
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    # An address from getaddrinfo, not a tuple: what every port's socket accepts.
    s.bind(socket.getaddrinfo("0.0.0.0", port)[0][-1])  # noqa: S104 - AP only
    while True:
        try:
            data, addr = s.recvfrom(512)
            ans = dns_answer(data, ip)
            if ans:
                s.sendto(ans, addr)
        except OSError:
            await asyncio.sleep_ms(50)


async def run(
    device_id,
    suffix,
    provision_path,
    ca_path,
    http_port=80,
    dns_port=53,
    claim_path=None,
    creds_path=None,
):
    """Serve the portal until a working configuration is saved, then reboot."""
    import asyncio

    import machine
    import network

    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    try:
        networks = sorted({r[0].decode() for r in sta.scan()})
    except OSError:
        networks = []
    ap = network.WLAN(network.AP_IF)
    ap.active(True)
    ap.config(essid="PoolSaaS-" + suffix, authmode=network.AUTH_OPEN)
    ip = ap.ifconfig()[0] or AP_IP
    done = asyncio.Event()
    claim = read_claim(claim_path) if claim_path else None

    async def handle(reader, writer):
        try:
            line = await reader.readline()
            method, path = (line.decode().split(" ") + ["", ""])[:2]
            length = 0
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.decode().partition(":")
                if name.strip().lower() == "content-length":
                    length = min(int(value.strip() or 0), MAX_BODY)
            status, body = "200 OK", ""
            if method == "POST" and path == "/save":
                form = parse_form(await reader.readexactly(length) if length else b"")
                try:
                    prov = build_provision(form)
                    ssid = await _test_wifi(prov["wifi"])
                    if ssid is None:
                        raise ValueError("Could not join any of those Wi-Fi networks")
                    save_provision(prov, provision_path, ca_path, creds_path)
                    body = "<h1>Saved</h1><p>Connected to " + html_escape(ssid)
                    body += ". The controller restarts now.</p>"
                    done.set()
                except ValueError as e:
                    body = page(device_id, networks, str(e), claim)
            elif path in ("/", "/index.html"):
                body = page(device_id, networks, "", claim)
            else:
                # Phones probe well-known URLs: send them to the portal page.
                status = "302 Found\r\nLocation: http://" + ip + "/"
            data = body.encode()
            head = "HTTP/1.0 " + status + "\r\nContent-Type: text/html; charset=utf-8"
            head += "\r\nContent-Length: " + str(len(data)) + "\r\n\r\n"
            writer.write(head.encode())
            writer.write(data)
            await writer.drain()
        except (OSError, ValueError) as e:
            print("portal:", e)
        finally:
            writer.close()

    asyncio.create_task(_dns_server(ip, dns_port))
    await asyncio.start_server(handle, "0.0.0.0", http_port)  # noqa: S104 - AP only
    print("portal: serving", ap.config("essid"))
    await done.wait()
    await asyncio.sleep(3)
    machine.reset()
