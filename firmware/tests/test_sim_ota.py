"""firmware.sim.ota (CPython, no broker): the simulator's updates go through the
board's own updater and otaboot; a fake bridge answers each `ota/get` at once.

The end-to-end version (the real bridge, Mosquitto, 20 simulated devices) is
ota/tests/test_ota_sim_e2e.py.
"""

import collections
import json
import time

from firmware import otaboot
from firmware.sim.ota import SimOta
from firmware.tests.test_updater import APP_V2, KEY, chunk, manifest, pack

BLOB = pack(APP_V2 + [("extra.py", b"# padding\n" * 120)])  # 8 chunks of 256 bytes
C = 7


class Info:
    """paho's MQTTMessageInfo as far as SimOta looks (acknowledged at once)."""

    rc = 0

    def is_published(self):
        return True


class FakeBridge:
    """Answers every ota/get with the chunks asked for, through a queue (the device
    may send again while it handles a chunk)."""

    def __init__(self, blob=BLOB, lose=()):
        self.blob = blob
        self.queue = collections.deque()
        self.status = []
        self.gets = []
        self.lose = set(lose)  # chunk indexes lost once on the way
        self.ota = None

    def send(self, suffix, payload, qos):
        body = json.loads(payload)
        if suffix == "ota/get":
            self.gets.append(body)
            for i in range(body["i"], body["i"] + body["n"]):
                if i in self.lose:
                    self.lose.discard(i)
                    continue
                self.queue.append(chunk(self.blob, i, C))
        else:
            self.status.append(body)
        return Info()

    def run(self, ota, limit=5.0):
        """Deliver chunks and step the device until nothing is left to do."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            while self.queue:
                ota.chunk(self.queue.popleft())
            ota.step()
            if not self.queue and not ota.busy and not ota.updater.downloading:
                ota.step()
                if not self.queue and not ota.busy:
                    return
            time.sleep(0.01)

    def states(self):
        return [s["state"] for s in self.status]


def device(tmp_path, bridge, **switches):
    return SimOta(KEY, tmp_path / "dev", bridge.send, version="1.0.0", **switches)


def test_sim_updates_through_the_board_updater_and_reboots_into_the_new_version(
    tmp_path,
):
    bridge = FakeBridge()
    ota = device(tmp_path, bridge)
    ota.offer(manifest(BLOB, c=C))
    bridge.run(ota)
    assert ota.version == "1.2.0"
    assert bridge.states()[-1] == "succeeded"
    assert bridge.status[-1]["version"] == "1.2.0"
    assert {"downloading", "downloaded", "verified", "applying"} <= set(bridge.states())
    # The trial is over (the report was acknowledged): nothing left in ota.json.
    assert otaboot.load(ota.root) == {}
    assert (tmp_path / "dev" / "fw" / "app.py").read_bytes() == APP_V2[0][1]
    assert ota.boots == 2 and ota.crashes == 0
    # Every chunk asked for once, in order.
    starts = [g["i"] for g in bridge.gets]
    assert starts == sorted(starts) and starts[0] == 0


def test_a_bad_hmac_is_refused_before_anything_is_written(tmp_path):
    bridge = FakeBridge()
    ota = device(tmp_path, bridge)
    ota.offer(manifest(BLOB, c=C, key=b"x" * 32))
    assert bridge.gets == [] and ota.version == "1.0.0"
    assert bridge.states() == ["failed"] and "hmac" in bridge.status[0]["reason"]
    assert not (tmp_path / "dev" / otaboot.NEW).exists()


def test_a_manifest_for_another_model_is_refused_before_anything_is_written(
    tmp_path,
):
    bridge = FakeBridge()
    ota = device(tmp_path, bridge, model="esp32s3")
    ota.offer(manifest(BLOB, c=C, model="esp32"))
    assert bridge.gets == [] and ota.version == "1.0.0"
    assert [(s["state"], s["reason"]) for s in bridge.status] == [
        ("failed", "wrong model esp32")
    ]
    assert not (tmp_path / "dev" / otaboot.NEW).exists()
    # Its own model's release goes through.
    ota.offer(manifest(BLOB, c=C, model="esp32s3"))
    bridge.run(ota)
    assert ota.version == "1.2.0" and bridge.states()[-1] == "succeeded"


def test_fail_verify_switch_reports_a_hash_mismatch_and_keeps_the_old_version(
    tmp_path,
):
    bridge = FakeBridge()
    ota = device(tmp_path, bridge, fail_verify=True)
    ota.offer(manifest(BLOB, c=C))
    bridge.run(ota)
    assert ota.version == "1.0.0"
    assert bridge.states()[-1] == "failed"
    assert bridge.status[-1]["reason"] == "sha256 mismatch"
    assert not (tmp_path / "dev" / "fw").exists()


def test_crash_new_switch_rolls_back_after_the_trial_boots(tmp_path):
    bridge = FakeBridge()
    ota = device(tmp_path, bridge, crash_new=True, trial_boots=2)
    ota.offer(manifest(BLOB, c=C))
    bridge.run(ota)
    assert ota.version == "1.0.0" and ota.crashes == 2
    assert bridge.states()[-1] == "rolled_back"
    assert "not healthy after 2 boots" in bridge.status[-1]["reason"]
    assert bridge.status[-1]["version"] == "1.0.0"
    assert otaboot.load(ota.root) == {}  # reported and forgotten


def test_drop_switch_cuts_the_link_and_the_download_resumes_at_the_first_missing(
    tmp_path,
):
    bridge = FakeBridge()
    ota = device(tmp_path, bridge, drop_at=0.5, drop_for=0.2)
    ota.offer(manifest(BLOB, c=C))
    n = json.loads(manifest(BLOB, c=C))["chunks"]
    bridge.run(ota)
    assert ota.dropped_at == n // 2
    # What was in flight when the link dropped was lost; asked again from there.
    assert ota.missing_at_reconnect == ota.dropped_at
    assert ota.resumed_from() == ota.dropped_at
    assert ota.version == "1.2.0" and bridge.states()[-1] == "succeeded"
    assert ota.chunks_in == n  # no chunk fetched twice into the file


def test_a_lost_chunk_is_asked_for_again_from_the_first_missing(tmp_path):
    bridge = FakeBridge(lose={2})
    ota = device(tmp_path, bridge)
    ota.offer(manifest(BLOB, c=C))
    # Chunk 2 never came: after RETRY_MS the device asks again from 2.
    import firmware.updater as U

    old = U.RETRY_MS
    U.RETRY_MS = 50
    try:
        bridge.run(ota)
    finally:
        U.RETRY_MS = old
    # The window 0-3 lost chunk 2 (3 was ignored as out of order): asked again at 2.
    assert [g["i"] for g in bridge.gets] == [0, 2, 6]
    assert ota.version == "1.2.0"


def test_fail_verify_corrupts_on_write_even_past_the_chunk_sums(tmp_path):
    bridge = FakeBridge()
    ota = device(tmp_path, bridge, fail_verify=True)
    ota.offer(manifest(BLOB, c=C, sums=True))
    bridge.run(ota)
    assert ota.version == "1.0.0" and ota.corrupted_index is None
    assert bridge.status[-1]["reason"] == "sha256 mismatch"


def test_a_chunk_corrupted_in_transit_is_fetched_again_and_the_update_succeeds(
    tmp_path,
):
    bridge = FakeBridge()
    ota = device(tmp_path, bridge, corrupt_at=0.5)
    ota.offer(manifest(BLOB, c=C, sums=True))
    n = json.loads(manifest(BLOB, c=C))["chunks"]
    bridge.run(ota)
    assert ota.corrupted_index == n // 2 and ota.refetched
    assert ota.version == "1.2.0" and bridge.states()[-1] == "succeeded"
    # Asked again from the corrupted chunk, never from 0.
    starts = [g["i"] for g in bridge.gets]
    assert starts.count(n // 2) == 2 and starts.count(0) == 1, starts
    assert ota.chunks_in == n


def test_without_chunk_sums_a_chunk_corrupted_in_transit_fails_the_whole_hash(
    tmp_path,
):
    bridge = FakeBridge()
    ota = device(tmp_path, bridge, corrupt_at=0.5)
    ota.offer(manifest(BLOB, c=C))  # an older manifest: no per-chunk sums
    bridge.run(ota)
    assert ota.corrupted_index is not None and not ota.refetched
    assert ota.version == "1.0.0"
    assert bridge.status[-1]["reason"] == "sha256 mismatch"


def test_corrupt_at_reports_the_count_with_the_download(tmp_path):
    bridge = FakeBridge()
    ota = device(tmp_path, bridge, corrupt_at=0.5)
    ota.offer(manifest(BLOB, c=C, sums=True))
    bridge.run(ota)
    assert ota.refetched and ota.corrupted_reported == 1
    counts = [s.get("corrupted") for s in bridge.status]
    assert counts[0] == 0  # downloading, 0 %
    by_state = {s["state"]: s.get("corrupted") for s in bridge.status}
    assert by_state["downloaded"] == by_state["applying"] == 1
    assert "corrupted" not in bridge.status[-1]  # succeeded: the new version's word


def test_reboot_at_resumes_and_the_count_survives_it(tmp_path):
    bridge = FakeBridge()
    ota = device(tmp_path, bridge, corrupt_at=0.2, reboot_at=0.5)
    ota.offer(manifest(BLOB, c=C, sums=True))
    n = json.loads(manifest(BLOB, c=C))["chunks"]
    bridge.run(ota)
    assert ota.rebooted_at == n // 2 and ota.boots == 3  # the cut, then the swap
    assert ota.damaged_index is None and ota.refetched
    # After the reboot the count goes on from 1, and the download from the cut.
    after = [s for s in bridge.status if s["state"] != "succeeded"][-1]
    assert after["state"] == "applying" and after["corrupted"] == 1
    starts = [i for i, _ in ota.asks]
    assert starts.count(0) == 1, starts
    # (Chunks in flight at the cut may still arrive; none is asked for again.)
    assert min(starts[ota.asks_at_reboot :]) >= ota.rebooted_at, starts
    assert ota.version == "1.2.0"


def test_damage_on_reboot_is_found_at_the_resume_and_fetched_again(tmp_path):
    bridge = FakeBridge()
    ota = device(tmp_path, bridge, reboot_at=0.5, damage_on_reboot=True)
    ota.offer(manifest(BLOB, c=C, sums=True))
    n = json.loads(manifest(BLOB, c=C))["chunks"]
    bridge.run(ota)
    assert ota.rebooted_at == n // 2 and ota.damaged_index == n // 2 - 1
    assert ota.corrupted_reported == 1
    # The first request after the reboot is for the damaged chunk, not the next one.
    after = [i for i, _ in ota.asks[ota.asks_at_reboot :]]
    assert after[0] == n // 2 - 1 and min(after) == n // 2 - 1, ota.asks
    assert ota.version == "1.2.0" and bridge.states()[-1] == "succeeded"
