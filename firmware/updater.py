"""The device's half of over-the-air updates (docs/protocol.md, "Over-the-air updates";
docs/ota.md): check the offered manifest, pull the bundle chunk by chunk into the
staging folder, verify it, unpack it, and hand over to otaboot for the swap.

Pure apart from the file system: no network (what it has to say goes to `send`, the
link's outbox), so it runs on the PC and under MicroPython in the tests.

- The manifest is authenticated before anything is written: HMAC-SHA256 with the
  device's own key (provisioning bundle, "ota_key") over the canonical JSON of its
  fields (sorted keys, no spaces), compared in constant time.
- Chunks are asked for by index, a window at a time, from the first missing one;
  a chunk that is not the next one (a duplicate, another campaign's, out of order)
  is ignored and asked for again.
- When the manifest lists each chunk's digest ("sums", authenticated by "smac"), a
  chunk is checked against it before it is written: a corrupted one is dropped and
  asked for again (MAX_BAD in one download, then the update fails), so that one bad
  chunk costs one chunk, not the whole download.
- The download survives a dropped link (asked for again on reconnect) and a reboot:
  the staging file's length says how many chunks are in, and with "sums" each of
  them is checked against its digest again (read from flash a piece at a time): the
  download goes on from the first missing or damaged one. The count of corrupted
  chunks is kept in ota.json with the rest, and every report of the download
  carries it ("corrupted").
- The whole bundle's SHA-256 is computed from flash once the last chunk is in, so
  a chunk written wrong is found too.
"""

import binascii
import hashlib
import json
import os
import time

try:
    from firmware import otaboot
except ImportError:
    import otaboot

try:
    ticks_ms, ticks_diff = time.ticks_ms, time.ticks_diff
except AttributeError:  # CPython (the tests)

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b


OFFER, CHUNK, GET, STATUS = "ota/offer", "ota/chunk", "ota/get", "ota/status"
HEADER = 8  # u32 campaign, u32 index, big-endian
WINDOW = 4  # chunks asked for at a time (the bridge's per-device burst)
RETRY_MS = 3000  # ask again when nothing came for this long
MAX_CHUNK = 4096
MAX_SIZE = 1024 * 1024
SUM = 4  # bytes of a chunk's SHA-256 listed per chunk in the manifest's "sums"
MAX_BAD = 8  # corrupted chunks dropped in one download before it fails
BUNDLE = "bundle.bin"
MAGIC = b"PSB1\n"
# Never in a bundle: they stay as flashed (otaboot.py), or are the board's own.
PERMANENT = ("boot", "main", "otaboot", "local_config")
_NAME_OK = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
_TOKEN_OK = _NAME_OK + ".-"
_HEX = "0123456789abcdef"


def hmac_sha256(key, msg):
    """RFC 2104 (MicroPython has hashlib.sha256 but no hmac module)."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + b"\x00" * (64 - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(msg)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def same(a, b):
    """Constant-time comparison of two byte strings."""
    if len(a) != len(b):
        return False
    d = 0
    for x, y in zip(a, b):  # noqa: B905 - MicroPython's zip has no strict
        d |= x ^ y
    return d == 0


def _token(v, what, allow_empty=False):
    if not isinstance(v, str) or not (allow_empty or v) or len(v) > 40:
        raise ValueError(what + ": invalid")
    for ch in v:
        if ch not in _TOKEN_OK:
            raise ValueError(what + ": invalid")
    return v


def _int(v, lo, hi, what):
    if type(v) is not int or not lo <= v <= hi:
        raise ValueError(what + ": invalid")
    return v


def _hex(v, n, what):
    if not isinstance(v, str) or len(v) != n:
        raise ValueError(what + ": invalid")
    for ch in v:
        if ch not in _HEX:
            raise ValueError(what + ": invalid")
    return v


def canonical(m, sums=False):
    """The bytes the manifest's HMAC covers (with `sums`: those its "smac" covers,
    the same fields and "sums"): exactly what Python's json.dumps(fields,
    sort_keys=True, separators=(",", ":")) gives for them (the strings are
    restricted to characters JSON does not escape)."""
    # One join (not a chain of +): with the sums the string is 2 KB and every +
    # would copy it again on the device's heap.
    return "".join((
        '{"c":', str(m["c"]), ',"chunk":', str(m["chunk"]),
        ',"chunks":', str(m["chunks"]), ',"from":"', m["from"],
        '","model":"', m["model"], '","sha256":"', m["sha256"],
        '","size":', str(m["size"]),
        ',"sums":"' if sums else "", m["sums"] if sums else "", '"' if sums else "",
        ',"version":"', m["version"], '"}',
    )).encode()  # fmt: skip


def chunk_sum(data):
    """A chunk's entry in the manifest's "sums": its SHA-256's first SUM bytes, hex.
    (It finds corruption; the whole bundle's SHA-256 is what authenticates.)"""
    return _sum_of(hashlib.sha256(data))


def _sum_of(sha):
    return binascii.hexlify(sha.digest()[:SUM]).decode()


def _digest(f, n, buf):
    """The SHA-256 object of the next n bytes of the open file f (fewer at its end),
    read into buf: the heap holds one buffer, not the chunk or the file."""
    sha = hashlib.sha256()
    mv = memoryview(buf)
    while n > 0:
        got = f.readinto(mv[: min(n, len(buf))])
        if not got:
            break
        sha.update(mv[:got])
        n -= got
    return sha


def _mac_ok(key, msg, mac):
    return same(binascii.hexlify(hmac_sha256(key, msg)), mac.encode())


def parse_manifest(payload, key):
    """The checked manifest (a dict), or ValueError with the reason. The HMAC is
    checked last, over the validated fields only. "sums" (each chunk's digest) is
    optional: a manifest without it (an older server or release) is checked by the
    whole hash only; with it, "smac" must authenticate it. (A device that knows no
    "sums" ignores both: "hmac" covers the other fields alone.)"""
    try:
        obj = json.loads(payload)
    except (ValueError, TypeError):
        raise ValueError("manifest: not JSON") from None
    if not isinstance(obj, dict):
        raise ValueError("manifest: not an object")
    m = {
        "c": _int(obj.get("c"), 1, 4294967295, "c"),
        "version": _token(obj.get("version"), "version"),
        "from": _token(obj.get("from", ""), "from", True),
        "model": _token(obj.get("model"), "model"),
        "size": _int(obj.get("size"), 1, MAX_SIZE, "size"),
        "sha256": _hex(obj.get("sha256"), 64, "sha256"),
        "chunk": _int(obj.get("chunk"), 256, MAX_CHUNK, "chunk"),
        "chunks": _int(obj.get("chunks"), 1, MAX_SIZE, "chunks"),
    }
    mac = _hex(obj.get("hmac"), 64, "hmac")
    if m["chunks"] != (m["size"] + m["chunk"] - 1) // m["chunk"]:
        raise ValueError("chunks: does not match size")
    sums = obj.get("sums")
    if sums is not None:
        m["sums"] = _hex(sums, 2 * SUM * m["chunks"], "sums")
        smac = _hex(obj.get("smac"), 64, "smac")
    if not key or not _mac_ok(key, canonical(m), mac):
        raise ValueError("manifest: bad hmac")
    if sums is not None and not _mac_ok(key, canonical(m, True), smac):
        raise ValueError("manifest: bad sums hmac")
    return m


def version_tuple(v):
    out = []
    for part in v.split("."):
        try:
            out.append(int(part))
        except ValueError:
            out.append(0)
    return tuple(out)


def _valid_name(name):
    dot = name.rfind(".")
    stem, ext = name[:dot], name[dot + 1 :]
    if (
        dot < 0
        or ext not in ("py", "mpy")
        or not stem
        or len(name) > 40
        or stem in PERMANENT
    ):
        return False
    for ch in stem:
        if ch not in _NAME_OK:
            return False
    return True


def unpack(src, dest):
    """Write the files of a bundle (PSB1: a line "PSB1", then for each file a line
    "<name> <size>" and its bytes) into the folder dest. ValueError if malformed."""
    names = []
    with open(src, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise ValueError("bundle: not a PSB1 bundle")
        while True:
            line = f.readline()
            if not line:
                break
            try:
                name, size = line.decode().strip().split(" ")
                size = int(size)
            except ValueError:
                raise ValueError("bundle: bad file header") from None
            if not _valid_name(name) or name in names or size < 0:
                raise ValueError("bundle: file name refused: " + name[:40])
            names.append(name)
            with open(dest + "/" + name, "wb") as out:
                left = size
                while left:
                    piece = f.read(min(left, 512))
                    if not piece:
                        raise ValueError("bundle: truncated")
                    out.write(piece)
                    left -= len(piece)
    if not names:
        raise ValueError("bundle: empty")
    return names


class Updater:
    """One device's updates. `send(suffix, payload)` publishes (the link's outbox);
    `root` is the board's root folder (tests use another)."""

    def __init__(self, key, version, model, send, root="", trial=None):
        self.key = key
        self.version = version
        self.model = model
        self.send = send
        self.root = root
        self.trial = trial or {}  # trial_s, trial_boots, trial_wdt_ms for the swap
        self.st = otaboot.load(root)
        self.m = None
        self.next = 0
        self.f = None
        self.asked_at = None
        self.asked_end = 0
        self.last_pct = -1
        self.ready = False  # verified and unpacked: the app may swap now
        self.report = None  # the newest status payload (sent again on reconnect)
        self.final = None  # the report whose delivery ends a trial or a rollback
        self.ignored = 0
        # Corrupted chunks dropped in this download (kept in ota.json, across reboots)
        bad = self.st.get("bad", 0)
        self.bad = bad if type(bad) is int and 0 <= bad <= MAX_BAD else 0
        phase = self.st.get("phase")
        if phase in ("download", "downloaded"):
            try:
                self._resume()
            except (OSError, KeyError, ValueError) as e:
                self._fail("resume: " + str(e))
        elif phase == "verified":
            self.m = self.st["m"]
            self.ready = True
        elif phase == "trial":
            self._status("succeeded", 100, "", self.st.get("c"))
            self.final = self.report
        elif phase == "rolled_back":
            self._status("rolled_back", 0, self.st.get("reason", ""), self.st.get("c"))
            self.final = self.report

    # --- paths and reports ------------------------------------------------------------

    def _p(self, name):
        return otaboot.path(self.root, name)

    def _bundle(self):
        return self._p(otaboot.NEW) + "/" + BUNDLE

    def _status(self, state, percent=0, reason="", c=None, bad=None):
        """Report (`bad`: the download's corrupted-chunk count, in its reports)."""
        body = {
            "c": c if c is not None else self.m["c"],
            "state": state,
            "percent": percent,
            "reason": reason[:200],
            "version": self.version,
        }
        if bad is not None:
            body["corrupted"] = bad
        self.report = json.dumps(body).encode()
        self.send(STATUS, self.report)

    def sent(self, payload):
        """The link delivered a status message (QoS 1, acknowledged)."""
        if payload is self.report:
            self.report = None
        if payload is not self.final:
            return
        self.final = None
        phase = self.st.get("phase")
        if phase == "trial":
            # Connected, and the cloud has heard the new version: healthy.
            otaboot.confirm(self.root)
            self.st = otaboot.load(self.root)
        elif phase == "rolled_back":
            otaboot.clear(self.root)
            self.st = {}

    def _fail(self, reason):
        print("ota: failed:", reason)
        c = (self.m or self.st.get("m") or {}).get("c")
        self._close()
        otaboot.rmtree(self._p(otaboot.NEW))
        otaboot.clear(self.root)
        self.st = {}
        if c is not None:
            self._status("failed", 0, reason, c, self.bad)
        self.m = None

    def _close(self):
        if self.f is not None:
            try:
                self.f.close()
            except OSError:
                pass
            self.f = None

    # --- the offer --------------------------------------------------------------------

    def offer(self, payload):
        """An `ota/offer` arrived: start (or continue) the download it describes."""
        try:
            m = parse_manifest(payload, self.key)
        except ValueError as e:
            print("ota: offer refused:", e)
            if self.m is None and "hmac" in str(e):
                try:
                    c = json.loads(payload).get("c")
                except (ValueError, AttributeError):
                    c = None
                if type(c) is int:
                    self._status("failed", 0, str(e), c)
            return False
        if self.st.get("phase") in ("trial", "rolled_back"):
            return False  # a version on trial, or a rollback still to report
        if self.m is not None:
            if m == self.m:
                self.ask(force=True)  # offered again: carry on from where we are
            return False
        if m["model"] != self.model:
            self._status("failed", 0, "wrong model " + m["model"], m["c"])
            return False
        if m["version"] == self.version:
            self._status("failed", 0, "already on " + m["version"], m["c"])
            return False
        if m["from"] and version_tuple(self.version) < version_tuple(m["from"]):
            self._status("failed", 0, "needs at least " + m["from"], m["c"])
            return False
        new = self._p(otaboot.NEW)
        otaboot.rmtree(new)
        os.mkdir(new)
        self.m = m
        self.st = {"phase": "download", "c": m["c"], "version": m["version"], "m": m}
        self.st["bad"] = 0
        otaboot.save(self.root, self.st)
        self.f = open(self._bundle(), "wb")
        self.next = 0
        self.bad = 0
        self.last_pct = -1
        self._progress()
        self.ask(force=True)
        return True

    def _resume(self):
        """After a reboot: the chunks already in the staging file count (each checked
        against its digest again when the manifest has them); the download goes on
        from the first missing or damaged one."""
        m = self.m = self.st["m"]
        bundle = self._bundle()
        size = os.stat(bundle)[6]
        # Complete when it has the bundle's size (the last chunk may be short).
        n = m["chunks"] if size >= m["size"] else size // m["chunk"]
        buf = bytearray(512)
        sums = m.get("sums")
        if sums is not None and n:
            with open(bundle, "rb") as src:
                for i in range(n):
                    want = sums[2 * SUM * i : 2 * SUM * (i + 1)]
                    if _sum_of(_digest(src, m["chunk"], buf)) != want:
                        # Damaged on flash (or written wrong): fetched again, and
                        # what follows it with it (chunks are appended in order).
                        self.bad += 1
                        print("ota: chunk", i, "on flash corrupted")
                        n = i
                        break
        keep = min(n * m["chunk"], m["size"])
        if keep != size:  # a chunk half written when the power went: cut it off
            tmp = bundle + ".tmp"
            with open(bundle, "rb") as src, open(tmp, "wb") as dst:
                left = keep
                while left:
                    got = src.readinto(memoryview(buf)[: min(left, len(buf))])
                    if not got:
                        break
                    dst.write(memoryview(buf)[:got])
                    left -= got
            os.remove(bundle)
            os.rename(tmp, bundle)
        self.next = n
        if self.bad != self.st.get("bad", 0):
            self.st["bad"] = self.bad
            otaboot.save(self.root, self.st)
        if self.bad >= MAX_BAD:
            self._fail("corrupted chunks: " + str(self.bad) + ", last " + str(n))
            return
        print("ota: resuming campaign", m["c"], "at chunk", n, "of", m["chunks"])
        if n >= m["chunks"]:
            self.st["phase"] = "downloaded"  # verified by the next step()
            return
        self.st["phase"] = "download"
        self.f = open(bundle, "ab")
        self.last_pct = -1
        self._progress()

    # --- the transfer -----------------------------------------------------------------

    @property
    def downloading(self):
        return self.f is not None

    def ask(self, force=False):
        """Ask for the next window of chunks, from the first missing one."""
        if not self.downloading:
            return
        now = ticks_ms()
        if not force and self.asked_at is not None:
            waited = ticks_diff(now, self.asked_at)
            if self.next < self.asked_end and waited < RETRY_MS:
                return
        n = min(WINDOW, self.m["chunks"] - self.next)
        self.asked_at = now
        self.asked_end = self.next + n
        body = '{"c":' + str(self.m["c"]) + ',"i":' + str(self.next)
        body += ',"n":' + str(n) + "}"
        self.send(GET, body.encode())

    def online(self):
        """The link (re)connected: ask again at once."""
        self.ask(force=True)
        if self.report is not None:
            self.send(STATUS, self.report)

    def chunk(self, payload):
        """An `ota/chunk` arrived (called from the MQTT reader: it only appends, or
        for a corrupted chunk saves the count in ota.json and reports it)."""
        if not self.downloading or len(payload) < HEADER:
            return False
        c = int.from_bytes(payload[0:4], "big")
        i = int.from_bytes(payload[4:8], "big")
        m = self.m
        want = m["chunk"] if i < m["chunks"] - 1 else m["size"] - i * m["chunk"]
        if c != m["c"] or i != self.next or len(payload) - HEADER != want:
            self.ignored += 1  # a duplicate, out of order, or not ours
            return False
        data = memoryview(payload)[HEADER:]
        sums, at = m.get("sums"), 2 * SUM * i
        if sums is not None and chunk_sum(data) != sums[at : at + 2 * SUM]:
            self.bad += 1  # corrupted on the way: dropped, asked for again
            print("ota: chunk", i, "corrupted")
            if self.bad >= MAX_BAD:
                self._fail("corrupted chunks: " + str(self.bad) + ", last " + str(i))
                return False
            # Kept across a reboot (MAX_BAD is per download), and told at once.
            self.st["bad"] = self.bad
            otaboot.save(self.root, self.st)
            pct = self.next * 100 // m["chunks"]
            self._status("downloading", pct, "", None, self.bad)
            self.ask(force=True)
            return False
        self.f.write(data)
        self.f.flush()
        self.next += 1
        if self.next >= m["chunks"]:
            self._close()
            self.st["phase"] = "downloaded"
            otaboot.save(self.root, self.st)
        else:
            self._progress()
            if self.next >= self.asked_end:
                self.ask(force=True)
        return True

    def _progress(self):
        pct = self.next * 100 // self.m["chunks"]
        if pct // 10 != self.last_pct // 10:
            self.last_pct = pct
            self._status("downloading", pct, "", None, self.bad)

    # --- the main loop's part ---------------------------------------------------------

    def step(self):
        """Once a loop turn: retries, and a finished download verified and unpacked.
        True when a verified bundle waits for the swap (`apply`)."""
        if self.downloading:
            self.ask()
        elif self.st.get("phase") == "downloaded":
            self._verify()
        return self.ready

    def _verify(self):
        # Hashed from flash: what is unpacked is what was checked (a chunk can be
        # checked intact on arrival and still be written wrong).
        sha = hashlib.sha256()
        try:
            with open(self._bundle(), "rb") as src:
                sha = _digest(src, MAX_SIZE + 1, bytearray(512))  # to its end
        except OSError:
            pass
        if binascii.hexlify(sha.digest()).decode() != self.m["sha256"]:
            self._fail("sha256 mismatch")
            return
        self._status("downloaded", 100, "", None, self.bad)
        new = self._p(otaboot.NEW)
        try:
            unpack(self._bundle(), new)
            os.remove(self._bundle())
        except (OSError, ValueError) as e:
            self._fail(str(e))
            return
        self.st["phase"] = "verified"
        otaboot.save(self.root, self.st)
        self._status("verified", 100, "", None, self.bad)
        self.ready = True

    def apply(self):
        """Swap the verified staging folder in (the app has switched the relays off
        and reboots next). The new version reports "succeeded" once it is online."""
        self._status("applying", 100, "", None, self.bad)
        st = self.st
        for k in ("trial_s", "trial_boots", "trial_wdt_ms"):
            if k in self.trial:
                st[k] = self.trial[k]
        st.pop("m", None)
        otaboot.swap(self.root, st)
        self.ready = False
        self.m = None
