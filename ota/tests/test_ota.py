import hashlib
import hmac
import json
from collections import Counter
from types import SimpleNamespace

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from devices.bridge.rooms import Context, Message
from ota.models import Campaign, DeviceUpdate
from ota.mqtt import HEADER, OtaRoom, coalesced
from ota.services import (
    _claim,
    campaign_set_state,
    campaign_step,
    device_ota_key,
    manifest,
    release_create,
)

BLOB = bytes(range(256)) * 40  # 10240 bytes: three chunks


class FakeOut:
    def __init__(self):
        self.sent = []
        self.counters = Counter()

    def publish(self, broker_id, topic, payload, *, qos=1, retain=False):
        self.sent.append((topic, payload))
        return True


@pytest.fixture
def release(db, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    upload = SimpleUploadedFile("app.bin", BLOB)
    return release_create(upload=upload, version="1.2.0", hardware_model="esp32")


@pytest.fixture
def campaign(release, tenant_a, device_a, device_b):
    c = Campaign.objects.create(tenant=tenant_a, release=release, rate_per_minute=5)
    return campaign_set_state(c, "start")


def _msg(device, suffix, body):
    info = SimpleNamespace(pk=device.pk)
    topic = f"{device.topic_root}/{suffix}"
    return Message(
        device.broker_id, topic, info, suffix, json.dumps(body).encode(), 0, False
    )


def test_release_hash_size_chunks(release):
    assert release.sha256 == hashlib.sha256(BLOB).hexdigest()
    assert (release.size, release.chunk_count, release.chunk_size) == (10240, 3, 4096)
    # Each chunk's digest, as the device computes it (the last chunk shorter).
    from firmware import updater

    pieces = [BLOB[i : i + 4096] for i in range(0, len(BLOB), 4096)]
    assert release.chunk_sums == "".join(updater.chunk_sum(p) for p in pieces)


def test_chunk_sums_do_not_depend_on_the_upload_pieces():
    from ota.services.releases import _ChunkSums

    whole = _ChunkSums(4096)
    whole.update(BLOB)
    odd = _ChunkSums(4096)
    for at in range(0, len(BLOB), 1000):  # pieces across chunk boundaries
        odd.update(BLOB[at : at + 1000])
    assert odd.hexdigest() == whole.hexdigest() and len(whole.sums) == 3


def test_step_offers_only_own_tenant_and_manifest_hmac(campaign, device_a, device_b):
    assert campaign_step(campaign.pk) == 1
    update = DeviceUpdate.objects.get(campaign=campaign)
    assert update.device == device_a and update.state == "offered"
    assert not DeviceUpdate.objects.filter(device=device_b).exists()
    m = manifest(update)
    mac, smac = m.pop("hmac"), m.pop("smac")
    key = device_ota_key(device_a.device_id)

    def mac_of(fields):
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()

    assert m["sums"] == campaign.release.chunk_sums
    assert smac == mac_of(m)  # the fields and the sums
    m.pop("sums")
    assert mac == mac_of(m)  # the fields alone, as before the sums (older devices)


def test_claim_is_exclusive(campaign):
    assert _claim(campaign.pk)
    assert not _claim(campaign.pk)
    assert campaign_step(campaign.pk) == 0  # another worker holds it


def test_room_serves_chunks_and_records_success(campaign, device_a, device_b):
    campaign_step(campaign.pk)
    room, out, ctx = OtaRoom(), FakeOut(), Context(counters=Counter())
    room.publish(out)
    assert out.sent[0][0].endswith("/ota/offer")
    out.sent.clear()
    got = b""
    for i in range(3):
        assert room.handle(_msg(device_a, "ota/get", {"c": campaign.pk, "i": i}), ctx)
        room.updates(out)
        topic, payload = out.sent[-1]
        assert topic.endswith("/ota/chunk")
        assert HEADER.unpack(payload[:8]) == (campaign.pk, i)
        got += payload[8:]
    assert hashlib.sha256(got).hexdigest() == campaign.release.sha256
    # tenant B's device gets nothing of tenant A's campaign
    room.handle(_msg(device_b, "ota/get", {"c": campaign.pk, "i": 0}), ctx)
    room.updates(out)
    assert out.counters["ota:refused"] == 1 and len(out.sent) == 3
    room.handle(
        _msg(device_a, "ota/status", {"c": campaign.pk, "state": "succeeded"}), ctx
    )
    room.flush(room.drain(), out)
    assert DeviceUpdate.objects.get(device=device_a).state == "succeeded"


def test_failed_report_keeps_reason(campaign, device_a):
    campaign_step(campaign.pk)
    room, out, ctx = OtaRoom(), FakeOut(), Context(counters=Counter())
    body = {"c": campaign.pk, "state": "failed", "reason": "sha256 mismatch"}
    room.handle(_msg(device_a, "ota/status", body), ctx)
    room.flush(room.drain(), out)
    u = DeviceUpdate.objects.get(device=device_a)
    assert (u.state, u.reason) == ("failed", "sha256 mismatch")


def test_a_batchs_progress_reports_are_written_once_per_device(campaign, device_a):
    """Reports of one batch: a `downloading` one superseded by a later report of the
    same device is not written (the newest percent is); every other state is."""
    campaign_step(campaign.pk)
    room, out, ctx = OtaRoom(), FakeOut(), Context(counters=Counter())
    for percent in (10, 20, 35):
        body = {"c": campaign.pk, "state": "downloading", "percent": percent}
        room.handle(_msg(device_a, "ota/status", body), ctx)
    batch = room.drain()
    with CaptureQueriesContext(connection) as one:
        room.flush(batch, out)
    u = DeviceUpdate.objects.get(device=device_a)
    assert (u.state, u.percent) == ("downloading", 35)
    with CaptureQueriesContext(connection) as single:
        room.flush(batch[-1:], out)
    assert len(one) == len(single)  # three reports, written as one


def test_a_percent_that_is_no_number_is_read_as_zero(campaign, device_a):
    """1e400 is infinity to json: int() of it raised OverflowError, which the writer
    took for a database outage, holding every report behind it."""
    campaign_step(campaign.pk)
    room, out, ctx = OtaRoom(), FakeOut(), Context(counters=Counter())
    for percent in (float("inf"), 1e400, "12"):
        body = {"c": campaign.pk, "state": "downloading", "percent": percent}
        room.handle(_msg(device_a, "ota/status", body), ctx)
        room.flush(room.drain(), out)
    u = DeviceUpdate.objects.get(device=device_a)
    assert (u.state, u.percent) == ("downloading", 12)


def test_coalesced_keeps_every_step_and_every_device_in_order():
    def r(pk, state, percent=0, campaign=1):
        return {
            "device_pk": pk,
            "campaign_id": campaign,
            "state": state,
            "percent": percent,
        }

    reports = [
        r(1, "downloading", 10),
        r(2, "downloading", 50),
        r(1, "downloading", 20, campaign=9),  # another campaign's: kept
        r(1, "downloading", 90),
        r(1, "downloaded"),
        r(1, "verified"),
        r(2, "failed"),
        r(1, "downloading", 5),  # a new download after `verified`: newest kept
    ]
    assert coalesced(reports) == [
        reports[2],
        reports[4],
        reports[5],
        reports[6],
        reports[7],
    ]
    assert coalesced([]) == []
    # A state the service does not take supersedes nothing; a dropped progress
    # report's corrupted-chunk count goes on in the newer one.
    bogus = [r(1, "downloading", 40), r(1, "whatever")]
    assert coalesced(bogus) == bogus
    counted = [{**r(1, "downloading", 40), "corrupted": 2}, r(1, "downloading", 60)]
    assert coalesced(counted) == [{**r(1, "downloading", 60), "corrupted": 2}]
    assert coalesced(reports[:1]) == reports[:1]


def test_reports_carry_the_corrupted_count_and_a_bad_one_changes_nothing(
    campaign, device_a, caplog
):
    """`corrupted` (docs/protocol.md 10) is stored on the device's row; a report
    without it (an older device) keeps what is there; a value that is not a count
    is not stored, counted and logged, and the rest of the report still counts."""
    campaign_step(campaign.pk)
    room, out, ctx = OtaRoom(), FakeOut(), Context(counters=Counter())

    def status(state, percent, **extra):
        body = {"c": campaign.pk, "state": state, "percent": percent, **extra}
        assert room.handle(_msg(device_a, "ota/status", body), ctx)
        room.flush(room.drain(), out)
        u = DeviceUpdate.objects.get(device=device_a)
        return u.state, u.percent, u.corrupted_chunks

    assert status("downloading", 0) == ("downloading", 0, 0)  # an older device
    assert status("downloading", 20, corrupted=2) == ("downloading", 20, 2)
    assert status("downloading", 30) == ("downloading", 30, 2)
    for bad in ("3", -1, 1.5, True, 10**6, [1], {"n": 1}):
        assert status("downloading", 40, corrupted=bad) == ("downloading", 40, 2)
    assert ctx.counters["ota:bad_corrupted"] == 7
    assert "not one" in caplog.text and device_a.device_id in caplog.text
    assert status("downloaded", 100, corrupted=3) == ("downloaded", 100, 3)
    # The new version's word after the swap carries no count: the row keeps it.
    status("applying", 100, corrupted=3)
    status("succeeded", 100, version="1.2.0")
    assert DeviceUpdate.objects.get(device=device_a).corrupted_chunks == 3


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_chunks_are_rationed_per_device_and_in_total(
    campaign, device_a, settings, pool_a, platform_broker
):
    """OTA never starves telemetry: one worker pass serves at most PER_CALL chunks,
    a second at most OTA_CHUNKS_PER_S in all and OTA_DEVICE_CHUNKS_PER_S per device;
    what waits is served later, devices taking turns, nothing twice."""
    from devices.models import Device, Pool
    from ota.mqtt import MAX_WINDOW, PER_CALL

    settings.OTA_CHUNKS_PER_S, settings.OTA_DEVICE_CHUNKS_PER_S = 40, 4
    big = SimpleUploadedFile("big.bin", bytes(4096 * 30))
    release = release_create(upload=big, version="1.3.0", hardware_model="esp32")
    c = Campaign.objects.create(tenant=pool_a.tenant, release=release)
    campaign_set_state(c, "start")
    devices = [device_a] + [
        Device.objects.create(
            tenant=pool_a.tenant,
            pool=Pool.objects.create(tenant=pool_a.tenant, name=f"Pool {n}"),
            broker=platform_broker,
            device_id=f"ESP-C0{n:04X}",
        )
        for n in range(19)
    ]
    for d in devices:
        DeviceUpdate.objects.create(campaign=c, device=d, state="downloading")
    clock = Clock()
    room, out, ctx = OtaRoom(clock=clock), FakeOut(), Context(counters=Counter())
    for d in devices:  # every device asks for 8 (more than a window: clipped to 4)
        room.handle(_msg(d, "ota/get", {"c": c.pk, "i": 0, "n": 8}), ctx)
    room.updates(out)
    assert len(out.sent) == min(PER_CALL, 40)
    for _ in range(5):  # more passes in the same instant: the total bucket is empty
        room.updates(out)
    assert len(out.sent) == min(PER_CALL, 40)
    served = Counter()
    seen = set()
    for _second in range(1, 4):
        clock.now += 1.0
        for _ in range(10):
            room.updates(out)
    for topic, payload in out.sent:
        campaign_id, index = HEADER.unpack(payload[:8])
        assert (topic, index) not in seen  # nothing sent twice
        seen.add((topic, index))
        served[topic] += 1
    # Every device got its whole window (4 each, 80 in all) within the budgets.
    assert len(out.sent) == 20 * MAX_WINDOW
    assert set(served.values()) == {MAX_WINDOW}
    assert room.deferred > 0 and room.stats()["ota_chunks_sent"] == 80


def test_one_device_cannot_take_more_than_its_rate(device_a, settings):
    settings.OTA_CHUNKS_PER_S, settings.OTA_DEVICE_CHUNKS_PER_S = 1000, 2
    big = SimpleUploadedFile("big.bin", bytes(4096 * 30))
    release = release_create(upload=big, version="1.3.0", hardware_model="esp32")
    campaign = Campaign.objects.create(tenant=device_a.tenant, release=release)
    campaign_set_state(campaign, "start")
    DeviceUpdate.objects.create(campaign=campaign, device=device_a, state="downloading")
    clock = Clock()
    room, out, ctx = OtaRoom(clock=clock), FakeOut(), Context(counters=Counter())
    got = []
    for _step in range(20):  # 2 s in tenths; the device always asks for more
        want = len(got)
        room.handle(
            _msg(device_a, "ota/get", {"c": campaign.pk, "i": want, "n": 4}), ctx
        )
        room.updates(out)
        got = [HEADER.unpack(p[:8])[1] for _, p in out.sent]
        clock.now += 0.1
    # A full window at first (4), then 2 a second: 4 + 2 * 2 in 2 s, in order.
    assert got == list(range(len(got))) and 7 <= len(got) <= 8


def test_manifest_verifies_on_the_device_with_its_bundle_key(
    campaign, device_a, settings
):
    """The server's manifest, checked by the firmware's own parser with the key of
    the device's provisioning bundle; another device's key is refused."""
    from devices.services.provisioning import bundle_build
    from firmware import updater
    from firmware.protocol import parse_bundle
    from firmware.tests.helpers import raises

    settings.OTA_SECRET = "ota-secret-for-tests"
    campaign_step(campaign.pk)
    update = DeviceUpdate.objects.get(device=device_a)
    bundle = bundle_build(device=device_a, broker=device_a.broker, password="pw")
    parsed = parse_bundle(json.dumps(bundle).encode())
    key = bytes.fromhex(parsed["ota_key"])
    payload = json.dumps(manifest(update)).encode()
    m = updater.parse_manifest(payload, key)
    assert m["sha256"] == campaign.release.sha256 and m["chunks"] == 3
    assert m["sums"] == campaign.release.chunk_sums
    other = device_ota_key("ESP-FFFFFF")
    assert "hmac" in str(raises(ValueError, updater.parse_manifest, payload, other))
    settings.OTA_SECRET = "another-secret"  # the key depends on the OTA secret
    assert device_ota_key(device_a.device_id) != key


def test_succeeded_on_the_old_version_is_recorded_as_rolled_back(campaign, device_a):
    from ota.services import device_update_report

    campaign_step(campaign.pk)
    kw = {"device_pk": device_a.pk, "campaign_id": campaign.pk}
    assert device_update_report(state="applying", **kw)
    assert device_update_report(state="succeeded", version="0.1.0", **kw)
    u = DeviceUpdate.objects.get(device=device_a)
    assert u.state == "rolled_back" and "0.1.0" in u.reason
