"""firmware.updater and firmware.otaboot: manifest check, chunked download with resume,
verification, the swap, the trial and the rollback (CPython and MicroPython).

The board's file system is a temporary folder (`root`); nothing here needs a network.
"""

import binascii
import hashlib
import json
import os

try:
    from firmware import otaboot, updater
    from firmware.tests.helpers import raises, tmpdir
except ImportError:  # MicroPython: flat filesystem
    import otaboot
    import updater
    from helpers import raises, tmpdir

KEY = b"k" * 32
CHUNK = 256


def pack(files):
    out = [b"PSB1\n"]
    for name, data in files:
        out.append((name + " " + str(len(data)) + "\n").encode())
        out.append(data)
    return b"".join(out)


APP_V2 = [("app.py", b"VERSION = 2\n" * 40), ("link.py", b"# link v2\n" * 30)]


def manifest(blob, c=7, key=KEY, version="1.2.0", model="esp32", sha=None, sums=False):
    m = {
        "c": c,
        "version": version,
        "from": "",
        "model": model,
        "size": len(blob),
        "sha256": sha or binascii.hexlify(hashlib.sha256(blob).digest()).decode(),
        "chunk": CHUNK,
        "chunks": (len(blob) + CHUNK - 1) // CHUNK,
    }
    m["hmac"] = binascii.hexlify(
        updater.hmac_sha256(key, updater.canonical(m))
    ).decode()
    if sums:  # each chunk's digest, as the server lists them (ota.services.manifest)
        n = m["chunks"]
        m["sums"] = "".join(
            updater.chunk_sum(blob[i * CHUNK : (i + 1) * CHUNK]) for i in range(n)
        )
        m["smac"] = binascii.hexlify(
            updater.hmac_sha256(key, updater.canonical(m, True))
        ).decode()
    return json.dumps(m).encode()


def corrupt(payload):
    data = bytearray(payload)
    data[-1] ^= 0x01  # one bit flipped on the way
    return bytes(data)


def chunk(blob, i, c=7):
    return (
        c.to_bytes(4, "big") + i.to_bytes(4, "big") + blob[i * CHUNK : (i + 1) * CHUNK]
    )


class Sent:
    def __init__(self):
        self.items = []

    def __call__(self, suffix, payload):
        self.items.append((suffix, payload))

    def gets(self):
        return [json.loads(p) for s, p in self.items if s == updater.GET]

    def states(self):
        return [json.loads(p)["state"] for s, p in self.items if s == updater.STATUS]

    def last_status(self):
        return [json.loads(p) for s, p in self.items if s == updater.STATUS][-1]


def board(files=None):
    """A board root with a current application folder (fw/) when files are given."""
    root = tmpdir()
    if files:
        os.mkdir(root + "/fw")
        for name, data in files:
            with open(root + "/fw/" + name, "wb") as f:
                f.write(data)
    return root


def read(path):
    with open(path, "rb") as f:
        return f.read()


def make(root, sent, version="1.0.0"):
    return updater.Updater(KEY, version, "esp32", sent, root, {"trial_s": 30})


def download(u, blob, start=0, c=7):
    n = (len(blob) + CHUNK - 1) // CHUNK
    for i in range(start, n):
        assert u.chunk(chunk(blob, i, c))


def test_hmac_sha256_is_rfc_4231_case_2():
    mac = updater.hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert binascii.hexlify(mac) == (
        b"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_canonical_is_sorted_compact_json():
    m = json.loads(manifest(b"x" * 600))
    m.pop("hmac")
    text = updater.canonical(m).decode()
    assert text.startswith('{"c":7,"chunk":256,"chunks":3,"from":"","model":"esp32"')
    assert json.loads(text) == m
    try:
        import hmac

        expected = json.dumps(m, sort_keys=True, separators=(",", ":"))
        assert text == expected
        assert hmac.new(KEY, text.encode(), "sha256").digest() == (
            updater.hmac_sha256(KEY, text.encode())
        )
    except (ImportError, TypeError):  # MicroPython: no hmac, json has no sort_keys
        pass


def test_manifest_with_a_bad_hmac_or_changed_field_is_refused():
    blob = pack(APP_V2)
    assert updater.parse_manifest(manifest(blob), KEY)["size"] == len(blob)
    e = raises(ValueError, updater.parse_manifest, manifest(blob, key=b"x" * 32), KEY)
    assert "hmac" in str(e)
    m = json.loads(manifest(blob))
    m["sha256"] = "0" * 64  # the image swapped, the MAC kept
    e = raises(ValueError, updater.parse_manifest, json.dumps(m).encode(), KEY)
    assert "hmac" in str(e)
    raises(ValueError, updater.parse_manifest, b"[1]", KEY)
    raises(ValueError, updater.parse_manifest, manifest(blob), b"")


def test_chunk_sums_are_authenticated_and_older_manifests_still_accepted():
    blob = pack(APP_V2)
    m = updater.parse_manifest(manifest(blob, sums=True), KEY)
    assert len(m["sums"]) == 2 * updater.SUM * m["chunks"]
    assert m["sums"][:8] == updater.chunk_sum(blob[:CHUNK])
    assert "sums" not in updater.parse_manifest(manifest(blob), KEY)  # older server
    signed = json.loads(manifest(blob, sums=True))
    # A device that knows no "sums" checks "hmac" over the other fields only.
    old = {k: v for k, v in signed.items() if k not in ("sums", "smac", "hmac")}
    mac = binascii.hexlify(updater.hmac_sha256(KEY, updater.canonical(old)))
    assert mac.decode() == signed["hmac"]
    changed = dict(signed, sums="0" * 8 + signed["sums"][8:])  # one digest replaced
    e = raises(ValueError, updater.parse_manifest, json.dumps(changed).encode(), KEY)
    assert str(e) == "manifest: bad sums hmac"
    for bad in ({"smac": None}, {"sums": signed["sums"][:-8]}, {"sums": "X" * 8}):
        e = raises(
            ValueError, updater.parse_manifest, json.dumps(dict(signed, **bad)), KEY
        )
        assert str(e).endswith(": invalid"), e


def test_a_corrupted_chunk_is_dropped_and_fetched_again():
    root, sent = board(), Sent()
    blob = pack(APP_V2)
    n = (len(blob) + CHUNK - 1) // CHUNK
    u = make(root, sent)
    assert u.offer(manifest(blob, sums=True))
    assert u.chunk(chunk(blob, 0))
    asks = len(sent.gets())
    assert not u.chunk(corrupt(chunk(blob, 1)))
    assert u.bad == 1 and u.next == 1
    assert os.stat(root + "/fw.new/bundle.bin")[6] == CHUNK  # nothing written
    assert sent.gets()[asks:] == [{"c": 7, "i": 1, "n": min(4, n - 1)}]
    download(u, blob, start=1)
    assert u.step() and sent.states()[-2:] == ["downloaded", "verified"]
    assert read(root + "/fw.new/app.py") == APP_V2[0][1]


def test_too_many_corrupted_chunks_fail_the_update():
    v1 = [("app.py", b"VERSION = 1\n")]
    root, sent = board(v1), Sent()
    blob = pack(APP_V2)
    u = make(root, sent)
    assert u.offer(manifest(blob, sums=True))
    assert u.chunk(chunk(blob, 0))
    for _ in range(updater.MAX_BAD - 1):
        assert not u.chunk(corrupt(chunk(blob, 1)))
    assert u.downloading and sent.states()[-1] == "downloading"
    assert not u.chunk(corrupt(chunk(blob, 1)))
    assert not u.downloading
    assert sent.last_status()["state"] == "failed"
    assert sent.last_status()["reason"] == "corrupted chunks: 8, last 1"
    assert not otaboot.exists(root + "/fw.new") and otaboot.load(root) == {}
    assert read(root + "/fw/app.py") == v1[0][1]


def test_bad_hmac_offer_writes_nothing_and_reports_failed():
    root, sent = board(APP_V2[:1]), Sent()
    u = make(root, sent)
    assert not u.offer(manifest(pack(APP_V2), key=b"x" * 32))
    assert sent.gets() == [] and sent.states() == ["failed"]
    assert "hmac" in sent.last_status()["reason"]
    assert not otaboot.exists(root + "/fw.new") and otaboot.load(root) == {}


def test_download_verify_swap_trial_confirm():
    v1 = [("app.py", b"VERSION = 1\n")]
    root, sent = board(v1), Sent()
    blob = pack(APP_V2)
    u = make(root, sent)
    assert u.offer(manifest(blob))
    assert sent.gets()[0] == {"c": 7, "i": 0, "n": 4}
    assert u.chunk(chunk(blob, 0))
    assert not u.chunk(chunk(blob, 0))  # a duplicate
    assert not u.chunk(chunk(blob, 1, c=8))  # another campaign's
    assert not u.chunk(chunk(blob, 2))  # out of order: asked for again later
    download(u, blob, start=1)
    assert u.ignored == 3
    assert u.step() and sent.states()[-2:] == ["downloaded", "verified"]
    assert read(root + "/fw.new/app.py") == APP_V2[0][1]
    u.apply()
    assert sent.states()[-1] == "applying"
    u.sent(u.report)  # "applying" delivered before the reboot: not a healthy report
    assert otaboot.load(root)["phase"] == "trial"
    assert read(root + "/fw/app.py") == APP_V2[0][1]
    assert read(root + "/fw.old/app.py") == v1[0][1]
    assert not otaboot.exists(root + "/fw.new")
    st = otaboot.decide(root)  # the reboot into the new version
    assert st["phase"] == "trial" and st["boots"] == 1 and st["trial_s"] == 30
    sent2 = Sent()
    u2 = make(root, sent2, version="1.2.0")
    assert sent2.last_status()["state"] == "succeeded"
    u2.sent(u2.report)  # delivered (PUBACK): healthy
    assert otaboot.load(root) == {}  # nothing left to do or report
    assert otaboot.decide(root) == {}


def test_resume_after_reboot_from_the_first_missing_chunk():
    root, sent = board(), Sent()
    blob = pack(APP_V2 + [("extra.py", b"#" * 700)])
    n = (len(blob) + CHUNK - 1) // CHUNK
    u = make(root, sent)
    u.offer(manifest(blob))
    for i in range(3):
        u.chunk(chunk(blob, i))
    # Power cut in the middle of writing chunk 3: half of it reached the flash.
    u.f.write(blob[3 * CHUNK : 3 * CHUNK + 100])
    u.f.close()
    sent2 = Sent()
    u2 = make(root, sent2)
    assert u2.downloading and u2.next == 3
    u2.online()
    assert sent2.gets() == [{"c": 7, "i": 3, "n": n - 3}]
    download(u2, blob, start=3)
    assert u2.next == n and u2.step()
    assert read(root + "/fw.new/app.py") == APP_V2[0][1]


def test_resume_after_a_dropped_link_asks_again():
    root, sent = board(), Sent()
    blob = pack(APP_V2)
    u = make(root, sent)
    u.offer(manifest(blob))
    u.chunk(chunk(blob, 0))
    u.online()  # reconnected: the chunks asked for before may be lost
    assert sent.gets()[-1]["i"] == 1


def test_wrong_image_hash_is_refused_and_the_old_version_stays():
    v1 = [("app.py", b"VERSION = 1\n")]
    root, sent = board(v1), Sent()
    blob = pack(APP_V2)
    u = make(root, sent)
    u.offer(manifest(blob, sha="ab" * 32))
    download(u, blob)
    assert not u.step()
    assert sent.last_status()["state"] == "failed"
    assert sent.last_status()["reason"] == "sha256 mismatch"
    assert not otaboot.exists(root + "/fw.new") and otaboot.load(root) == {}
    assert read(root + "/fw/app.py") == v1[0][1]


def test_bundle_with_a_permanent_file_is_refused():
    root, sent = board(), Sent()
    blob = pack([("main.py", b"import evil\n")])
    u = make(root, sent)
    u.offer(manifest(blob))
    download(u, blob)
    u.step()
    assert sent.last_status()["state"] == "failed"
    assert "refused" in sent.last_status()["reason"]


def test_rollback_after_too_many_trial_boots():
    v1 = [("app.py", b"VERSION = 1\n")]
    root, sent = board(v1), Sent()
    blob = pack(APP_V2)
    u = make(root, sent)
    u.offer(manifest(blob))
    download(u, blob)
    u.step()
    u.apply()
    for _boot in (1, 2, 3):
        assert otaboot.decide(root)["phase"] == "trial"
    st = otaboot.decide(root)  # the fourth boot without a healthy report
    assert st["phase"] == "rolled_back" and "3 boots" in st["reason"]
    assert read(root + "/fw/app.py") == v1[0][1]
    assert not otaboot.exists(root + "/fw.old")
    sent2 = Sent()
    u2 = make(root, sent2)
    assert sent2.last_status()["state"] == "rolled_back"
    assert not u2.offer(manifest(blob))  # the rollback is reported first
    u2.sent(u2.report)
    assert otaboot.load(root) == {}


def test_first_update_rolls_back_to_the_factory_modules():
    root, sent = board(), Sent()
    u = make(root, sent)
    blob = pack(APP_V2)
    u.offer(manifest(blob))
    download(u, blob)
    u.step()
    u.apply()
    assert otaboot.folder(root) == root + "/fw"
    otaboot.decide(root)
    otaboot.rollback(root, otaboot.load(root), "no healthy report within 30 s")
    assert otaboot.folder(root) is None
    assert otaboot.load(root)["phase"] == "rolled_back"


def test_a_swap_cut_by_a_power_loss_is_finished_at_boot():
    v1 = [("app.py", b"VERSION = 1\n")]
    for cut in ("before", "after_old"):
        root = board(v1)
        os.mkdir(root + "/fw.new")
        with open(root + "/fw.new/app.py", "wb") as f:
            f.write(b"VERSION = 2\n")
        otaboot.save(root, {"phase": "swap", "c": 7, "prev": True})
        if cut == "after_old":
            os.rename(root + "/fw", root + "/fw.old")
        st = otaboot.decide(root)
        assert st["phase"] == "trial", cut
        assert read(root + "/fw/app.py") == b"VERSION = 2\n", cut
        assert read(root + "/fw.old/app.py") == b"VERSION = 1\n", cut


def test_a_rollback_cut_by_a_power_loss_is_finished_at_boot():
    root = board([("app.py", b"VERSION = 2\n")])
    os.mkdir(root + "/fw.old")
    with open(root + "/fw.old/app.py", "wb") as f:
        f.write(b"VERSION = 1\n")
    otaboot.save(root, {"phase": "rollback", "c": 7, "prev": True, "reason": "x"})
    os.rename(root + "/fw", root + "/fw.bad")  # cut after the first rename
    assert otaboot.decide(root)["phase"] == "rolled_back"
    assert read(root + "/fw/app.py") == b"VERSION = 1\n"
    assert not otaboot.exists(root + "/fw.bad")


def test_offer_of_the_running_version_or_another_model_is_refused():
    root, sent = board(), Sent()
    u = make(root, sent, version="1.2.0")
    assert not u.offer(manifest(pack(APP_V2)))
    assert "already" in sent.last_status()["reason"]
    u = make(root, sent)
    assert not u.offer(manifest(pack(APP_V2), model="esp32s3"))
    assert "model" in sent.last_status()["reason"]
    assert sent.gets() == []


def damage(path, at):
    """One bit flipped in the file on flash at byte `at`."""
    data = bytearray(read(path))
    data[at] ^= 0x01
    with open(path, "wb") as f:
        f.write(data)


def statuses(sent):
    return [json.loads(p) for s, p in sent.items if s == updater.STATUS]


def test_the_corrupted_count_is_reported_and_kept_across_a_reboot():
    root, sent = board(), Sent()
    blob = pack(APP_V2 + [("extra.py", b"#" * 700)])
    n = (len(blob) + CHUNK - 1) // CHUNK
    u = make(root, sent)
    assert u.offer(manifest(blob, sums=True))
    assert sent.last_status()["corrupted"] == 0
    assert u.chunk(chunk(blob, 0))
    assert not u.chunk(corrupt(chunk(blob, 1)))
    # Told at once (not only with the next 10 %), and written down for a reboot.
    assert sent.last_status()["state"] == "downloading"
    assert sent.last_status()["corrupted"] == 1
    assert otaboot.load(root)["bad"] == 1
    download(u, blob[: 3 * CHUNK], start=1)
    u.f.close()  # the power goes
    sent2 = Sent()
    u2 = make(root, sent2)
    assert u2.downloading and u2.next == 3 and u2.bad == 1
    assert sent2.last_status()["corrupted"] == 1
    assert not u2.chunk(corrupt(chunk(blob, 3)))
    assert sent2.last_status()["corrupted"] == 2
    download(u2, blob, start=3)
    assert u2.step()
    u2.apply()
    tail = statuses(sent2)[-3:]
    assert [s["state"] for s in tail] == ["downloaded", "verified", "applying"]
    assert [s["corrupted"] for s in tail] == [2, 2, 2]
    assert u2.next == n


def test_the_cap_on_corrupted_chunks_counts_those_before_a_reboot():
    root, sent = board(), Sent()
    blob = pack(APP_V2)
    u = make(root, sent)
    assert u.offer(manifest(blob, sums=True))
    for _ in range(updater.MAX_BAD - 1):
        assert not u.chunk(corrupt(chunk(blob, 0)))
    u.f.close()
    sent2 = Sent()
    u2 = make(root, sent2)
    assert u2.bad == updater.MAX_BAD - 1
    assert not u2.chunk(corrupt(chunk(blob, 0)))
    assert not u2.downloading
    assert sent2.last_status()["reason"] == "corrupted chunks: 8, last 0"
    assert sent2.last_status()["corrupted"] == 8


def test_a_chunk_damaged_on_flash_is_fetched_again_at_resume():
    root, sent = board(), Sent()
    blob = pack(APP_V2 + [("extra.py", b"#" * 700)])
    n = (len(blob) + CHUNK - 1) // CHUNK
    u = make(root, sent)
    u.offer(manifest(blob, sums=True))
    download(u, blob[: 5 * CHUNK])
    u.f.close()  # the power goes; chunk 2 is damaged on flash meanwhile
    damage(root + "/fw.new/bundle.bin", 2 * CHUNK + 17)
    sent2 = Sent()
    u2 = make(root, sent2)
    assert u2.downloading and u2.next == 2 and u2.bad == 1
    assert os.stat(root + "/fw.new/bundle.bin")[6] == 2 * CHUNK
    assert otaboot.load(root)["bad"] == 1
    assert sent2.last_status()["corrupted"] == 1
    u2.online()
    assert sent2.gets()[-1] == {"c": 7, "i": 2, "n": 4}
    download(u2, blob, start=2)
    assert u2.next == n and u2.step()
    assert read(root + "/fw.new/app.py") == APP_V2[0][1]


def test_a_complete_download_damaged_on_flash_is_fetched_again_not_failed():
    # The power went after the last chunk: at the reboot the bundle is complete
    # (its last chunk short) but its chunk 1 is damaged; only that one and what
    # follows are fetched again, instead of the whole hash failing the update.
    root, sent = board(), Sent()
    blob = pack(APP_V2)
    n = (len(blob) + CHUNK - 1) // CHUNK
    assert len(blob) % CHUNK
    u = make(root, sent)
    u.offer(manifest(blob, sums=True))
    download(u, blob)
    assert otaboot.load(root)["phase"] == "downloaded"
    assert make(root, Sent()).next == n  # the short last chunk is not cut off
    damage(root + "/fw.new/bundle.bin", CHUNK + 3)
    sent2 = Sent()
    u2 = make(root, sent2)
    assert u2.downloading and u2.next == 1 and u2.bad == 1
    download(u2, blob, start=1)
    assert u2.step()
    assert sent2.states()[-2:] == ["downloaded", "verified"]


def test_damage_on_flash_counts_towards_the_cap():
    root, sent = board(), Sent()
    blob = pack(APP_V2)
    u = make(root, sent)
    u.offer(manifest(blob, sums=True))
    for _ in range(updater.MAX_BAD - 1):
        assert not u.chunk(corrupt(chunk(blob, 0)))
    download(u, blob[: 2 * CHUNK])
    u.f.close()
    damage(root + "/fw.new/bundle.bin", 5)
    sent2 = Sent()
    u2 = make(root, sent2)
    assert not u2.downloading
    assert sent2.last_status()["state"] == "failed"
    assert sent2.last_status()["reason"] == "corrupted chunks: 8, last 0"
    assert not otaboot.exists(root + "/fw.new") and otaboot.load(root) == {}


def test_without_sums_the_chunks_on_flash_are_not_checked_at_resume():
    root, sent = board(), Sent()
    blob = pack(APP_V2)
    u = make(root, sent)
    u.offer(manifest(blob))  # an older release: no per-chunk digests
    download(u, blob[: 2 * CHUNK])
    u.f.close()
    damage(root + "/fw.new/bundle.bin", 5)
    sent2 = Sent()
    u2 = make(root, sent2)
    assert u2.next == 2 and u2.bad == 0
    download(u2, blob, start=2)
    assert not u2.step()
    assert sent2.last_status()["reason"] == "sha256 mismatch"


def test_a_bad_count_in_the_state_file_is_taken_as_none():
    for bad in ("3", -1, updater.MAX_BAD + 1, 1.5, None, True):
        root, sent = board(), Sent()
        blob = pack(APP_V2)
        u = make(root, sent)
        u.offer(manifest(blob, sums=True))
        u.chunk(chunk(blob, 0))
        u.f.close()
        st = otaboot.load(root)
        st["bad"] = bad
        otaboot.save(root, st)
        u2 = make(root, Sent())
        assert u2.downloading and u2.next == 1 and u2.bad == 0, bad
