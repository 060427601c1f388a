import hashlib
import hmac
import json
from collections import Counter
from types import SimpleNamespace

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from devices.bridge.rooms import Context, Message
from ota.models import Campaign, DeviceUpdate
from ota.mqtt import HEADER, OtaRoom
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
    return Message(
        device.broker_id, "t", info, suffix, json.dumps(body).encode(), 0, False
    )


def test_release_hash_size_chunks(release):
    assert release.sha256 == hashlib.sha256(BLOB).hexdigest()
    assert (release.size, release.chunk_count, release.chunk_size) == (10240, 3, 4096)


def test_step_offers_only_own_tenant_and_manifest_hmac(campaign, device_a, device_b):
    assert campaign_step(campaign.pk) == 1
    update = DeviceUpdate.objects.get(campaign=campaign)
    assert update.device == device_a and update.state == "offered"
    assert not DeviceUpdate.objects.filter(device=device_b).exists()
    m = manifest(update)
    mac = m.pop("hmac")
    canonical = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
    key = device_ota_key(device_a.device_id)
    assert mac == hmac.new(key, canonical, hashlib.sha256).hexdigest()


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
