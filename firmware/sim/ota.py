"""Over-the-air updates in the simulator: the board's own `firmware/updater.py` (offer
checked with the device's OTA key, chunks pulled by index, resume from the first
missing one, hashed while written, verified, unpacked) and `firmware/otaboot.py`
(swap, trial boots, rollback), each device over a real folder of its own.

The host (a VirtualDevice, or a load-mode worker sharing one connection among many
devices) hands over what arrives on `ota/offer` and `ota/chunk`, calls `online()`
after each (re)connect and `step()` a few times a second, and publishes what `send`
is given. Switches (docs/ota.md, "Simulator"):

- fail_verify: one chunk is corrupted as it is written to flash (after the updater
  checked it), so the whole hash fails and the device reports `failed` (sha256
  mismatch);
- corrupt_at (0..1): once, the chunk at that share of the transfer arrives with a
  bit flipped (in transit, before the updater sees it): with the manifest's
  per-chunk sums the updater drops it and fetches it again (`corrupted_index`,
  `refetched`); without them only the whole hash would find it;
- reboot_at (0..1): the device loses power once when that share of the chunks is
  in and boots again (the staging file and ota.json kept, as on flash); with
  damage_on_reboot the last chunk on flash gets a bit flipped meanwhile, so the
  updater's check at the resume finds it and fetches it again (`rebooted_at`,
  `damaged_index`);
- crash_new: the new version crashes at start (before it can report), boot after
  boot, until otaboot rolls back after its trial boots; the old version then reports
  `rolled_back`;
- drop_at (0..1): the link drops once when that share of the chunks is in. With a
  `drop` callback (a VirtualDevice: its TCP socket is shut under paho, which
  reconnects) the host does it; otherwise (load mode, a shared connection) this
  device alone is cut off for `drop_for` seconds: what arrives meanwhile is lost
  and nothing is sent. Either way the download goes on from its first missing chunk.
"""

import binascii
import json
import os
import threading
import time

from firmware import otaboot, updater

VERSION_FILE = "sim_version"  # in an application folder: the version it holds


def _flipped(payload):
    data = bytearray(payload)
    data[-1] ^= 0xFF
    return bytes(data)


class _FlipOnWrite:
    """The staging file, with the next write's last byte flipped."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        return self.f.write(_flipped(data))

    def __getattr__(self, name):
        return getattr(self.f, name)


class SimOta:
    """One simulated device's updates. `send(suffix, payload, qos)` publishes and
    returns paho's MQTTMessageInfo (or None when it could not)."""

    def __init__(
        self,
        key,
        root,
        send,
        *,
        version="0.1.0",
        model="esp32",
        fail_verify=False,
        corrupt_at=None,
        crash_new=False,
        drop_at=0.0,
        drop_for=2.0,
        drop=None,
        reboot_at=0.0,
        damage_on_reboot=False,
        trial_boots=3,
        on_version=None,
    ):
        self.key = binascii.unhexlify(key) if isinstance(key, str) else key
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        self._send_out = send
        self.factory_version = version
        self.model = model
        self.fail_verify = fail_verify
        self.corrupt_at = corrupt_at
        self.crash_new = crash_new
        self.drop_at = drop_at
        self.drop_for = drop_for
        self._drop = drop
        self.reboot_at = reboot_at
        self.damage_on_reboot = damage_on_reboot
        self.rebooted_at = None  # the chunks on flash when the power went
        self.damaged_index = None  # the chunk damaged on flash meanwhile
        self.asks_at_reboot = None  # len(asks) then
        self.trial_boots = trial_boots
        self.on_version = on_version
        self.lock = threading.RLock()
        # What happened, for tests and benches.
        self.asks = []  # (first index, n) of every ota/get sent
        self.reports = []  # (state, reason) of every ota/status sent
        self.boots = 0
        # The newest corrupted-chunk count the device reported ("corrupted").
        self.corrupted_reported = None
        self.crashes = 0
        self.dropped_at = None  # the first missing chunk when the link dropped
        self.missing_at_reconnect = None  # the first missing one when it came back
        self._asks_at_online = 0
        self.link_down_until = 0.0
        self.chunks_in = 0
        self._corrupted = False
        self.corrupted_index = None  # the chunk corrupted in transit (corrupt_at)
        self.refetched = False  # ... and taken intact afterwards
        self._acks = []  # (MQTTMessageInfo, payload) of status reports in flight
        self._boot()

    # --- boot ---------------------------------------------------------------------

    def _running_version(self):
        f = otaboot.folder(self.root)
        if f:
            try:
                with open(f + "/" + VERSION_FILE) as fh:
                    return fh.read().strip()
            except OSError:
                pass
        return self.factory_version

    def _boot(self):
        """What main.py does: otaboot decides (a trial boot counted, a rollback after
        too many), then the application starts; a crashing new version resets and
        boots again (bounded by the trial boots)."""
        for _ in range(self.trial_boots + 2):
            self.boots += 1
            st = otaboot.decide(self.root)
            if st.get("phase") == "trial" and self.crash_new:
                self.crashes += 1  # crashed at import: the trial watchdog resets
                continue
            break
        self.version = self._running_version()
        self.updater = updater.Updater(
            self.key,
            self.version,
            self.model,
            self._send,
            self.root,
            {"trial_boots": self.trial_boots},
        )
        if self.on_version is not None:
            self.on_version(self.version)

    # --- the link -----------------------------------------------------------------

    @property
    def link_up(self):
        return time.monotonic() >= self.link_down_until

    def _send(self, suffix, payload):
        if not self.link_up:
            return
        if suffix == updater.GET:
            body = json.loads(payload)
            self.asks.append((body["i"], body["n"]))
            info = self._send_out(suffix, payload, 0)
        else:
            info = self._send_out(suffix, payload, 1)
            if suffix == updater.STATUS:
                body = json.loads(payload)
                self.reports.append((body["state"], body["reason"]))
                if "corrupted" in body:
                    self.corrupted_reported = body["corrupted"]
                if info is not None:
                    self._acks = self._acks[-20:] + [(info, payload)]

    def online(self):
        """The host's connection is up (again): ask again, report again."""
        with self.lock:
            if self.link_up:
                self._online()

    def _online(self):
        u = self.updater
        if self.dropped_at is not None and self.missing_at_reconnect is None:
            if u.downloading:
                self.missing_at_reconnect = u.next
                self._asks_at_online = len(self.asks)
        u.online()

    def offer(self, payload):
        with self.lock:
            if self.link_up:
                self.updater.offer(bytes(payload))

    def chunk(self, payload):
        with self.lock:
            if not self.link_up:
                return False
            u = self.updater
            f = flipped = None
            verify_at = None
            if self.fail_verify and not self._corrupted and u.m:
                verify_at = u.m["chunks"] // 2
            if self._due(payload, verify_at):
                f = u.f = _FlipOnWrite(u.f)  # a bit flipped on the way to flash
                self._corrupted = True
            elif self._due(payload, self._corrupt_index()):
                payload = flipped = _flipped(payload)  # flipped on the way here
                self.corrupted_index = u.next
            i = u.next
            try:
                ok = u.chunk(payload)
            finally:
                if f is not None and u.f is f:
                    u.f = f.f
            if ok:
                self.chunks_in += 1
                if i == self.corrupted_index and flipped is None:
                    self.refetched = True
                self._maybe_drop()
                self._maybe_reboot()
            return ok

    def _corrupt_index(self):
        u = self.updater
        if self.corrupt_at is None or self.corrupted_index is not None or not u.m:
            return None
        return min(int(u.m["chunks"] * self.corrupt_at), u.m["chunks"] - 1)

    def _due(self, payload, index):
        """Is this the chunk `index`, the one the updater waits for?"""
        u = self.updater
        if index is None or not u.downloading:
            return False
        if len(payload) <= updater.HEADER or u.next != index:
            return False
        return int.from_bytes(payload[4:8], "big") == index

    def _maybe_drop(self):
        u = self.updater
        if not self.drop_at or self.dropped_at is not None or not u.downloading:
            return
        if u.next < max(1, int(u.m["chunks"] * self.drop_at)):
            return
        self.dropped_at = u.next
        if self._drop is not None:
            threading.Thread(target=self._drop, daemon=True).start()
        else:
            self.link_down_until = time.monotonic() + self.drop_for
            self._was_down = True

    def _maybe_reboot(self):
        """The power cut of `reboot_at`: the board boots again from its flash."""
        u = self.updater
        if not self.reboot_at or self.rebooted_at is not None or not u.downloading:
            return
        if u.next < max(1, int(u.m["chunks"] * self.reboot_at)):
            return
        self.rebooted_at = u.next
        self.asks_at_reboot = len(self.asks)
        u._close()
        if self.damage_on_reboot:
            self.damaged_index = u.next - 1
            bundle = u._bundle()
            with open(bundle, "r+b") as f:
                f.seek(self.damaged_index * u.m["chunk"])
                byte = f.read(1)
                f.seek(self.damaged_index * u.m["chunk"])
                f.write(bytes([byte[0] ^ 0x01]))
        self._acks = []
        self._boot()

    def resumed_from(self):
        """The first chunk asked for after the link came back (None: no drop yet,
        or not back yet); `missing_at_reconnect` is what it should be. (What was in
        flight when the link dropped may still have arrived.)"""
        if self.missing_at_reconnect is None:
            return None
        if len(self.asks) <= self._asks_at_online:
            return None
        return self.asks[self._asks_at_online][0]

    # --- the main loop's part -------------------------------------------------------

    @property
    def busy(self):
        """An update under way (downloading, verifying, or a report to deliver)."""
        u = self.updater
        return u.downloading or u.ready or bool(self._acks) or u.final is not None

    def step(self):
        """A loop turn: acknowledged reports, the end of a virtual outage, retries,
        a finished download verified, a verified one swapped in and rebooted."""
        with self.lock:
            if not self.link_up:
                return
            if getattr(self, "_was_down", False):
                self._was_down = False
                self._online()
            still = []
            for info, payload in self._acks:
                if info.is_published():
                    self.updater.sent(payload)
                elif info.rc == 0:
                    still.append((info, payload))
            self._acks = still
            if self.updater.step():
                self._apply()

    def _apply(self):
        """The app's part of the swap: relays off (nothing to switch here), the
        version written into the staging folder, otaboot's swap, a reboot."""
        new = otaboot.path(self.root, otaboot.NEW)
        with open(new + "/" + VERSION_FILE, "w") as fh:
            fh.write(self.updater.m["version"])
        self.updater.apply()
        self._acks = []
        self._boot()  # the new version reports `succeeded` (or the old, rolled_back)
