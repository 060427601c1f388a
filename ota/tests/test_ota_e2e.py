"""Over-the-air updates end to end (issue 14): the board code under the real MicroPython
unix port (firmware/tests/board.py), provisioned with the bundle the dashboard makes,
the real bridge process (`manage.py mqtt_bridge`), Mosquitto, and a release uploaded
and a campaign started in the admin as staff do. The Celery beat step
(`ota.advance_campaigns`) is called here in a loop, as beat would.

What the device did is read from its file system (fw/, ota.json), its log, the
requests it published (`ota/get`, recorded by a client of our own on the broker)
and the rows the bridge wrote. Every wait is on a condition with a bound.
"""

import json
import socket
import threading
import uuid
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from audit.models import AuditEvent
from devices.models import Device, Pool
from devices.services.provisioning import bundle_build, bundle_json
from devices.tests.test_bridge import client as mqtt_client
from devices.tests.test_bridge import wait_for
from devices.tests.test_config_push import (  # noqa: F401 - fixtures
    bridge,
    prefix,
    wait_online,
)
from firmware import protocol
from firmware.tests import board as B
from firmware.tools.bundle import build
from ota.models import Campaign, DeviceUpdate, Release
from ota.tasks import advance_campaigns

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

CHUNK = 4096
TRIAL_S = 12
# The board's own settings (local_config.py): a short trial for the tests.
TRIAL = f"OTA_TRIAL_S = {TRIAL_S}\nOTA_TRIAL_BOOTS = 3\nOTA_TRIAL_WDT_MS = 10000\n"
# A few modules (a few chunks) with the new version in config.py; the others stay
# the factory's (otaboot puts fw/ before the root on sys.path).
SMALL = ["config.py", "app.py", "updater.py", "health.py", "creds.py", "hardware.py"]
BROKEN_LINK = (
    "    async def _session(self):\n",
    "    async def _session(self):\n        raise OSError('broken build')\n",
)


class Requests:
    """What the device asks the bridge for (`ota/get`), seen on the broker."""

    def __init__(self, device):
        self.topic = f"{device.topic_root}/ota/get"
        self.seen: list[dict] = []
        self.lock = threading.Lock()
        self.c = mqtt_client()
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", 1883)
        self.c.subscribe(self.topic, qos=0)
        self.c.loop_start()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.seen.append(json.loads(msg.payload))

    def since(self, n):
        with self.lock:
            return list(self.seen[n:])

    def __len__(self):
        with self.lock:
            return len(self.seen)

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


class ChunkCorrupter:
    """A TCP proxy between a board and Mosquitto that flips one bit of the first
    `ota/chunk` of index `index` on its way to the board (transit damage that the
    TCP checksums let through, as it were); everything else passes unchanged."""

    def __init__(self, index, upstream=("127.0.0.1", 1883)):
        self.index, self.upstream = index, upstream
        self.corrupted = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                board, _ = self.listener.accept()
            except OSError:
                return  # closed
            broker = socket.create_connection(self.upstream)
            self.sockets += [board, broker]
            threading.Thread(
                target=self._pipe, args=(board, broker), daemon=True
            ).start()
            threading.Thread(
                target=self._down, args=(broker, board), daemon=True
            ).start()

    def _pipe(self, src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            sock.close()

    def _down(self, src, dst):
        """Broker to board, packet by packet (fixed header, remaining length)."""
        buf = b""
        try:
            while data := src.recv(65536):
                buf += data
                while (packet := self._packet(buf)) is not None:
                    buf = buf[len(packet) :]
                    dst.sendall(self._maybe_corrupt(packet))
        except OSError:
            pass
        for sock in (src, dst):
            sock.close()

    @staticmethod
    def _packet(buf):
        length, shift = 0, 0
        for n in range(1, min(len(buf), 5)):
            length |= (buf[n] & 0x7F) << shift
            shift += 7
            if not buf[n] & 0x80:
                end = n + 1 + length
                return buf[:end] if len(buf) >= end else None
        return None

    def _maybe_corrupt(self, packet):
        if packet[0] >> 4 != 3 or self.corrupted.is_set():  # PUBLISH only, once
            return packet
        at = 1
        while packet[at] & 0x80:
            at += 1
        at += 1
        topic_len = int.from_bytes(packet[at : at + 2], "big")
        topic = packet[at + 2 : at + 2 + topic_len]
        payload = at + 2 + topic_len + (2 if (packet[0] >> 1) & 3 else 0)
        if not topic.endswith(b"/ota/chunk"):
            return packet
        if int.from_bytes(packet[payload + 4 : payload + 8], "big") != self.index:
            return packet
        self.corrupted.set()
        return packet[:-1] + bytes([packet[-1] ^ 0x01])

    def close(self):
        self.listener.close()
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def media(settings, tmp_path, bridge):  # noqa: F811
    """Releases in a folder the bridge process reads too."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    bridge.env["MEDIA_ROOT"] = settings.MEDIA_ROOT
    return Path(settings.MEDIA_ROOT)


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(
        make_user("ota-staff@poolsaas.test", is_staff=True, is_superuser=True)
    )
    return client


@pytest.fixture
def make_device(tenant_a, platform_broker, prefix):  # noqa: F811
    def make():
        pool = Pool.objects.create(tenant=tenant_a, name=f"OTA {uuid.uuid4().hex[:6]}")
        return Device.objects.create(
            tenant=tenant_a,
            pool=pool,
            broker=platform_broker,
            device_id=f"ESP-{uuid.uuid4().hex[:6].upper()}",
            topic_prefix=prefix,
        )

    return make


@pytest.fixture
def boards(tmp_path):
    made = []

    def make(device, *, ota_key=None, port=None):
        """A board provisioned as in the field: provision.json holds the bundle the
        dashboard gives (with its OTA key), as the captive portal saves it. `port`:
        the broker's port it is given instead (a proxy's)."""
        bundle = bundle_build(device=device, broker=device.broker, password="")
        if ota_key is not None:
            bundle["ota_key"] = ota_key
        if port is not None:
            bundle["mqtt"]["port"] = port
        b = B.Board(
            tmp_path / f"board-{device.device_id}",
            device_id=device.device_id,
            prefix=device.topic_prefix,
            provisioned=False,
            config=TRIAL,
        )
        parsed = protocol.parse_bundle(bundle_json(bundle).encode())
        prov = {"wifi": [list(B.WIFI)], "bundle": parsed}
        (b.fs / "provision.json").write_text(json.dumps(prov))
        made.append(b)
        return b.start()

    yield make
    for b in made:
        b.stop()
        print("--- board", b.device_id, "boots", b.boots, "log:\n" + b.log(300))


@pytest.fixture
def requests_seen():
    made = []

    def make(device):
        r = Requests(device)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


def upload_release(staff_client, data: bytes, version: str) -> Release:
    """Staff upload a release in the admin (hashed and chunked on upload)."""
    response = staff_client.post(
        reverse("admin:ota_release_add"),
        {
            "version": version,
            "hardware_model": "esp32",
            "min_from_version": "",
            "notes": "test release",
            "file": SimpleUploadedFile(f"app-{version}.bin", data),
            "_save": "Save",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    release = Release.objects.get(version=version, hardware_model="esp32")
    assert release.size == len(data) and release.chunk_count == -(-len(data) // CHUNK)
    return release


def start_campaign(staff_client, release: Release, device: Device) -> Campaign:
    # No retries: a device's failure stays `failed` for the test to read (the
    # engine would otherwise queue it again; ota/tests/test_engine*.py cover that).
    campaign = Campaign.objects.create(
        tenant=device.tenant,
        release=release,
        target_all=False,
        rate_per_minute=60,
        retries=0,
    )
    campaign.target_devices.set([device])
    response = staff_client.post(
        reverse("admin:ota_campaign_changelist"),
        {"action": "campaign_start", "_selected_action": [campaign.pk]},
    )
    assert response.status_code == 302
    campaign.refresh_from_db()
    assert campaign.state == "running"
    return campaign


def update_of(campaign: Campaign, device: Device) -> DeviceUpdate | None:
    return DeviceUpdate.objects.filter(campaign=campaign, device=device).first()


def run_until(campaign, device, states, timeout=90.0):
    """Beat's step, every half second, until the device's update is in `states`."""

    def reached():
        advance_campaigns()
        u = update_of(campaign, device)
        return u if u is not None and u.state in states else None

    return wait_for(reached, timeout=timeout, what=f"update in {states}")


def chunks_on_flash(b) -> int:
    try:
        return (b.fs / "fw.new" / "bundle.bin").stat().st_size // CHUNK
    except OSError:
        return 0


def ota_state(b) -> dict:
    text = b.file("ota.json")
    return json.loads(text) if text else {}


def fw_version(device) -> str | None:
    return Device.objects.get(pk=device.pk).firmware_version


def test_update_downloads_verifies_swaps_reboots_and_succeeds(
    bridge,  # noqa: F811
    media,
    staff_client,
    make_device,
    boards,
    requests_seen,
):
    device = make_device()
    bridge.start()
    b = boards(device)
    wait_online(device)
    wait_for(lambda: fw_version(device) == "ps1-0.1.0", timeout=30, what="factory fw")
    # The board names its model (hardware.MODEL) in the same telemetry.
    assert Device.objects.get(pk=device.pk).hardware_model == "esp32"
    seen = requests_seen(device)
    data = build(SMALL, version="1.2.0")
    release = upload_release(staff_client, data, "1.2.0")
    campaign = start_campaign(staff_client, release, device)
    assert AuditEvent.objects.filter(action="ota.campaign_start").count() == 1

    run_until(campaign, device, {"succeeded"}, timeout=120)

    # The new version runs: from fw/, reporting its version, after one reboot.
    wait_for(lambda: fw_version(device) == "ps1-1.2.0", timeout=30, what="new fw")
    assert (b.fs / "fw" / "config.mpy").exists()
    assert not (b.fs / "fw.new").exists()
    assert ota_state(b) == {}  # the trial is over: nothing left to do or report
    assert b.boots == [B.PWRON_RESET, B.SOFT_RESET]
    assert b.saw("otaboot: version 1.2.0 on trial") == 1
    # Chunks asked for in order from 0, each window once (nothing was lost here).
    starts = [r["i"] for r in seen.since(0)]
    assert starts[0] == 0 and starts == sorted(starts), starts
    assert max(r["i"] + r["n"] for r in seen.since(0)) == release.chunk_count
    assert b.watchdog_resets == 0


def test_an_interrupted_transfer_resumes_from_its_first_missing_chunk(
    bridge,  # noqa: F811
    media,
    staff_client,
    make_device,
    boards,
    requests_seen,
):
    """A power cut (reboot) and a Wi-Fi loss in the middle of a transfer: each time
    the device goes on from the first chunk it does not have, never from zero. The
    bridge serves one chunk a second per device here, so the transfer is slow."""
    bridge.env["OTA_DEVICE_CHUNKS_PER_S"] = "1"
    device = make_device()
    bridge.start()
    b = boards(device)
    wait_online(device)
    seen = requests_seen(device)
    data = build(version="1.2.0")  # every module: a dozen chunks
    release = upload_release(staff_client, data, "1.2.0")
    assert release.chunk_count >= 10
    campaign = start_campaign(staff_client, release, device)
    run_until(campaign, device, {"downloading"})

    wait_for(lambda: chunks_on_flash(b) >= 5, timeout=60, what="5 chunks on flash")
    b.power_cut()
    have = chunks_on_flash(b)
    assert 5 <= have < release.chunk_count
    before = cut_at = len(seen)
    after_cut = have
    b.power_on()
    first = wait_for(lambda: seen.since(before), timeout=60, what="a request")[0]
    assert first["i"] == have, (first, have)
    assert b.saw(f"ota: resuming campaign {campaign.pk} at chunk {have}") == 1

    wait_for(lambda: chunks_on_flash(b) >= have + 2, timeout=60, what="2 more chunks")
    b.wifi(False)
    wait_for(lambda: b.saw("Wi-Fi lost"), timeout=20, what="the link to drop")
    have = chunks_on_flash(b)
    before = len(seen)
    b.wifi(True)
    first = wait_for(lambda: seen.since(before), timeout=60, what="a request")[0]
    assert first["i"] == have, (first, have)

    run_until(campaign, device, {"succeeded"}, timeout=120)
    wait_for(lambda: fw_version(device) == "ps1-1.2.0", timeout=30, what="new fw")
    # No request after the power cut went back to a chunk the flash already had.
    assert min(r["i"] for r in seen.since(cut_at)) == after_cut
    assert min(r["i"] for r in seen.since(before)) == have
    assert b.boots == [B.PWRON_RESET, B.PWRON_RESET, B.SOFT_RESET]


def test_a_chunk_corrupted_in_transit_is_fetched_again_and_the_update_succeeds(
    bridge,  # noqa: F811
    media,
    staff_client,
    make_device,
    boards,
    requests_seen,
):
    """The board under MicroPython, behind a proxy that damages chunk 5 once on its
    way: the updater finds it by the manifest's sums, drops it, asks for it again
    (not for the whole bundle) and the update succeeds."""
    device = make_device()
    proxy = ChunkCorrupter(index=5)
    try:
        bridge.start()
        b = boards(device, port=proxy.port)
        wait_online(device)
        seen = requests_seen(device)
        release = upload_release(staff_client, build(version="1.2.0"), "1.2.0")
        assert release.chunk_count > 6
        campaign = start_campaign(staff_client, release, device)
        run_until(campaign, device, {"succeeded"}, timeout=120)
        wait_for(lambda: fw_version(device) == "ps1-1.2.0", timeout=30, what="new fw")
    finally:
        proxy.close()
    assert proxy.corrupted.is_set()
    assert b.saw("ota: chunk 5 corrupted") == 1
    assert update_of(campaign, device).corrupted_chunks == 1
    starts = [r["i"] for r in seen.since(0)]
    # Asked from chunk 5 again once the damaged copy was dropped; never from zero.
    assert starts.count(0) == 1 and 5 in starts, starts
    assert min(starts[starts.index(5) :]) == 5, starts
    assert b.boots == [B.PWRON_RESET, B.SOFT_RESET]


def test_corrupted_count_survives_a_power_cut_and_flash_damage_is_refetched(
    bridge,  # noqa: F811
    media,
    staff_client,
    make_device,
    boards,
    requests_seen,
):
    """The board under MicroPython behind the proxy that damages chunk 3 once in
    transit: the device drops it and reports the count at once (the campaign's row
    shows 1). Then the power goes, and a chunk already on flash is damaged
    meanwhile: at the resume the board checks its chunks against their digests,
    asks again from the damaged one (not from zero, not from its first missing
    one), and the count it kept across the reboot goes on: 2 on the row at the end.
    One chunk a second per device, so that the cut comes mid-transfer."""
    bridge.env["OTA_DEVICE_CHUNKS_PER_S"] = "1"
    device = make_device()
    proxy = ChunkCorrupter(index=3)
    try:
        bridge.start()
        b = boards(device, port=proxy.port)
        wait_online(device)
        seen = requests_seen(device)
        release = upload_release(staff_client, build(version="1.2.0"), "1.2.0")
        assert release.chunk_count >= 10
        campaign = start_campaign(staff_client, release, device)
        run_until(campaign, device, {"downloading"})
        wait_for(
            lambda: update_of(campaign, device).corrupted_chunks == 1,
            timeout=60,
            what="the transit corruption on the row",
        )
        assert proxy.corrupted.is_set() and b.saw("ota: chunk 3 corrupted") == 1
        wait_for(lambda: chunks_on_flash(b) >= 6, timeout=60, what="6 chunks")
        b.power_cut()
        have = chunks_on_flash(b)
        assert 6 <= have < release.chunk_count
        assert ota_state(b)["bad"] == 1  # kept on flash with the resume state
        damaged = have - 2
        bundle = b.fs / "fw.new" / "bundle.bin"
        data = bytearray(bundle.read_bytes())
        data[damaged * CHUNK + 100] ^= 0x04
        bundle.write_bytes(bytes(data))
        before = len(seen)
        b.power_on()
        first = wait_for(lambda: seen.since(before), timeout=60, what="a request")[0]
        assert first["i"] == damaged, (first, damaged, have)
        assert b.saw(f"ota: chunk {damaged} on flash corrupted") == 1
        assert b.saw(f"ota: resuming campaign {campaign.pk} at chunk {damaged}") == 1
        wait_for(
            lambda: update_of(campaign, device).corrupted_chunks == 2,
            timeout=60,
            what="the count after the reboot on the row",
        )
        u = run_until(campaign, device, {"succeeded"}, timeout=180)
        wait_for(lambda: fw_version(device) == "ps1-1.2.0", timeout=30, what="new fw")
    finally:
        proxy.close()
    assert u.corrupted_chunks == 2
    # After the cut nothing was asked for below the damaged chunk.
    assert min(r["i"] for r in seen.since(before)) == damaged
    assert b.boots == [B.PWRON_RESET, B.PWRON_RESET, B.SOFT_RESET]


def test_a_bad_hmac_or_a_wrong_image_hash_is_refused_and_the_old_version_runs_on(
    bridge,  # noqa: F811
    media,
    staff_client,
    make_device,
    boards,
    requests_seen,
):
    forged_for, tampered_for = make_device(), make_device()
    bridge.start()
    # Provisioned with a key that is not its own: every manifest fails its HMAC.
    b1 = boards(forged_for, ota_key="00" * 32)
    b2 = boards(tampered_for)
    wait_online(forged_for)
    wait_online(tampered_for)
    seen1 = requests_seen(forged_for)
    good = upload_release(staff_client, build(SMALL, version="1.2.0"), "1.2.0")
    c1 = start_campaign(staff_client, good, forged_for)
    u1 = run_until(c1, forged_for, {"failed"})
    assert u1.reason == "manifest: bad hmac"
    assert len(seen1) == 0  # not one chunk asked for

    # The stored image changed after upload (same size): the chunk no longer matches
    # its digest in the authenticated manifest. Served the same every time, it is
    # dropped and asked for again until the device gives up.
    data = build(SMALL, version="1.3.0")
    bad = upload_release(staff_client, data, "1.3.0")
    with open(bad.file.path, "r+b") as f:
        f.seek(len(data) // 2)
        f.write(b"\x00\xff" * 8)
    index = len(data) // 2 // CHUNK
    c2 = start_campaign(staff_client, bad, tampered_for)
    u2 = run_until(c2, tampered_for, {"failed"})
    assert u2.reason == f"corrupted chunks: 8, last {index}"
    assert u2.corrupted_chunks == 8
    assert b2.saw(f"ota: chunk {index} corrupted") == 8
    # A release uploaded before the per-chunk sums (none in its manifest): only the
    # whole hash, checked from flash after the last chunk, finds it.
    old = upload_release(staff_client, data, "1.4.0")
    with open(old.file.path, "r+b") as f:
        f.seek(len(data) // 2)
        f.write(b"\x00\xff" * 8)
    Release.objects.filter(pk=old.pk).update(chunk_sums="")
    c3 = start_campaign(staff_client, old, tampered_for)
    u3 = run_until(c3, tampered_for, {"failed"})
    assert u3.reason == "sha256 mismatch"

    for b, device in ((b1, forged_for), (b2, tampered_for)):
        assert not (b.fs / "fw").exists() and not (b.fs / "fw.new").exists()
        assert ota_state(b) == {}
        assert b.boots == [B.PWRON_RESET]
        assert fw_version(device) == "ps1-0.1.0"
    assert b1.saw("ota: offer refused: manifest: bad hmac") >= 1


def test_a_version_that_never_reports_healthy_is_rolled_back(
    bridge,  # noqa: F811
    media,
    staff_client,
    make_device,
    boards,
):
    """The new version boots but never connects (a broken link.py): at the trial's
    deadline the board's own timer rolls it back to the previous modules, which
    connect and report `rolled_back`."""
    device = make_device()
    bridge.start()
    b = boards(device)
    wait_online(device)
    link = (Path(B.FW) / "link.py").read_text()
    assert link.count(BROKEN_LINK[0]) == 1
    data = build(
        ["config.py", "link.py"],
        version="1.4.0",
        patch={"link.py": link.replace(*BROKEN_LINK)},
    )
    release = upload_release(staff_client, data, "1.4.0")
    campaign = start_campaign(staff_client, release, device)
    run_until(campaign, device, {"applying"})

    u = run_until(campaign, device, {"rolled_back"}, timeout=TRIAL_S + 90)
    assert u.reason == f"no healthy report within {TRIAL_S} s"
    assert b.saw("link: OSError('broken build'") >= 1
    assert b.saw("otaboot: rolled back") == 1
    # The first update had no folder before it: the factory modules run again.
    assert not (b.fs / "fw").exists()
    wait_for(lambda: ota_state(b) == {}, timeout=20, what="rollback reported")
    assert b.boots == [B.PWRON_RESET, B.SOFT_RESET, B.SOFT_RESET]
    assert fw_version(device) == "ps1-0.1.0"


def test_a_version_that_crashes_at_start_is_rolled_back_after_its_trial_boots(
    bridge,  # noqa: F811
    media,
    staff_client,
    make_device,
    boards,
):
    """The new app.py raises at import, before the app's own watchdog exists: the
    trial watchdog otaboot armed resets the board, each boot is counted, and after
    OTA_TRIAL_BOOTS the previous modules come back and report why."""
    device = make_device()
    bridge.start()
    b = boards(device)
    wait_online(device)
    app = (Path(B.FW) / "app.py").read_text()
    data = build(
        ["config.py", "app.py"],
        version="1.5.0",
        patch={"app.py": 'raise RuntimeError("crash at start")\n' + app},
    )
    release = upload_release(staff_client, data, "1.5.0")
    campaign = start_campaign(staff_client, release, device)
    u = run_until(campaign, device, {"rolled_back"}, timeout=150)
    assert u.reason == "not healthy after 3 boots"
    assert b.saw("crash at start") == 3
    assert b.boots == [B.PWRON_RESET, B.SOFT_RESET] + [B.WDT_RESET] * 3
    assert not (b.fs / "fw").exists()
    wait_for(lambda: ota_state(b) == {}, timeout=20, what="rollback reported")
    assert fw_version(device) == "ps1-0.1.0"
