"""The campaign engine without MQTT: targeting and why devices are skipped, the
validation of campaign_create, consent, windows in each pool's zone, rate and
growth, retries and the daily cap, timeouts, rollbacks seen in telemetry, the
abort threshold, pause/resume/cancel, the audit trail and what is broadcast."""

import datetime
import uuid
import zoneinfo

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from audit.models import AuditEvent
from devices.models import Device, Pool
from ota import live
from ota.models import Campaign, DeviceUpdate
from ota.selectors import campaign_counts, device_history
from ota.services import (
    campaign_create,
    campaign_preview,
    campaign_set_state,
    campaign_step,
    device_update_report,
    release_create,
    release_retire,
    update_consent,
)

BLOB = b"PSB1\n" + bytes(9000)


@pytest.fixture
def sent(monkeypatch):
    """What ota.live broadcast (group, message), and the throttle forgotten."""
    from poolsaas.live import groups

    out = []
    # at once, not after commit: these tests run inside one transaction
    monkeypatch.setattr(groups, "broadcast", lambda g, m: out.append((g, m)))
    live._sent.clear()
    return out


@pytest.fixture
def release(db):
    return release_create(
        upload=SimpleUploadedFile("a.bin", BLOB),
        version="1.2.0",
        hardware_model="esp32",
        min_from_version="0.1.0",
    )


def make_devices(tenant, broker, n, *, fw="ps1-0.1.0", tz="Europe/Madrid", **kw):
    made = []
    for i in range(n):
        pool = Pool.objects.create(tenant=tenant, name=f"P{i}", timezone=tz)
        made.append(
            Device.objects.create(
                tenant=tenant,
                pool=pool,
                broker=broker,
                device_id=f"ESP-{uuid.uuid4().hex[:6].upper()}",
                firmware_version=fw,
                **kw,
            )
        )
    return made


def create(alice, release, **kw):
    return campaign_create(actor=alice.user, tenant=alice.tenant, release=release, **kw)


def started(alice, release, **kw):
    c = create(alice, release, **kw)
    return campaign_set_state(c, "start", actor=alice.user)


def states(campaign):
    return sorted(campaign.updates.values_list("state", flat=True))


def report(u, state, **kw):
    return device_update_report(
        device_pk=u.device_id, campaign_id=u.campaign_id, state=state, **kw
    )


def test_preview_says_why_devices_are_skipped(alice, release, platform_broker):
    ok, current, old, unknown = make_devices(alice.tenant, platform_broker, 4)
    Device.objects.filter(pk=current.pk).update(firmware_version="ps1-1.2.0")
    Device.objects.filter(pk=old.pk).update(firmware_version="ps1-0.0.9")
    Device.objects.filter(pk=unknown.pk).update(firmware_version="")
    legacy = make_devices(alice.tenant, platform_broker, 1, protocol="v3.1")[0]
    p = campaign_preview(tenant=alice.tenant, release=release)
    assert p.matched == [ok]
    assert dict((d.pk, r) for d, r in p.skipped) == {
        current.pk: "already current",
        old.pk: "below min_from_version 0.1.0",
        unknown.pk: "version unknown",
        legacy.pk: "wrong hardware model (v3.1, not esp32)",
    }
    # Chosen pools and devices, and "below a version".
    p = campaign_preview(
        tenant=alice.tenant,
        release=release,
        target_all=False,
        pool_ids=[ok.pool.code],
        device_ids=[current.code.hex],
    )
    assert p.matched == [ok] and [d for d, _ in p.skipped] == [current]
    p = campaign_preview(tenant=alice.tenant, release=release, below_version="0.1.0")
    assert p.matched == [] and ("not below 0.1.0" in {r for _, r in p.skipped})


def test_a_devices_model_is_the_one_it_reported_else_its_protocols(
    alice, release, platform_broker
):
    s3, esp32, silent = make_devices(alice.tenant, platform_broker, 3)
    Device.objects.filter(pk=s3.pk).update(hardware_model="esp32s3")
    Device.objects.filter(pk=esp32.pk).update(hardware_model="esp32")
    # A v3.1 device stays out whatever its row says: it cannot take our updates.
    legacy = make_devices(
        alice.tenant, platform_broker, 1, protocol="v3.1", hardware_model="esp32"
    )[0]
    p = campaign_preview(tenant=alice.tenant, release=release)
    assert {d.pk for d in p.matched} == {esp32.pk, silent.pk}  # silent: ps1's esp32
    assert dict((d.pk, r) for d, r in p.skipped) == {
        s3.pk: "wrong hardware model (esp32s3, not esp32)",
        legacy.pk: "wrong hardware model (v3.1, not esp32)",
    }
    s3_release = release_create(
        upload=SimpleUploadedFile("s3.bin", BLOB),
        version="1.2.0",
        hardware_model="esp32s3",
    )
    p = campaign_preview(tenant=alice.tenant, release=s3_release)
    assert p.matched == [Device.objects.get(pk=s3.pk)]
    assert dict((d.pk, r) for d, r in p.skipped) == {
        esp32.pk: "wrong hardware model (esp32, not esp32s3)",
        silent.pk: "wrong hardware model (esp32, not esp32s3)",
        legacy.pk: "wrong hardware model (v3.1, not esp32s3)",
    }
    # The campaign enrols the same way: the s3 device skipped with why.
    c = started(alice, release)
    campaign_step(c.pk)
    assert dict(c.updates.values_list("device_id", "reason")) == {
        esp32.pk: "",
        silent.pk: "",
        s3.pk: "wrong hardware model (esp32s3, not esp32)",
        legacy.pk: "wrong hardware model (v3.1, not esp32)",
    }
    assert c.updates.get(device=s3).state == "skipped"


def test_create_validates_and_refuses_foreign_objects(
    alice, carol, release, platform_broker, device_b
):
    make_devices(alice.tenant, platform_broker, 1)
    with pytest.raises(ValidationError) as e:
        create(alice, release, rate_per_minute=-1, abort_ratio=2, retries=99)
    assert set(e.value.message_dict) == {"rate_per_minute", "abort_ratio", "retries"}
    with pytest.raises(ValidationError) as e:
        create(alice, release, window_start=datetime.time(2))
    assert "window_end" in e.value.message_dict
    for kw in ({"device_ids": [device_b.code]}, {"pool_ids": [device_b.pool.code]}):
        with pytest.raises(ValidationError) as e:
            create(alice, release, target_all=False, **kw)
        assert "not found" in str(e.value)
    theirs = release_create(
        upload=SimpleUploadedFile("b.bin", BLOB),
        version="1.3.0",
        hardware_model="esp32",
        tenant=carol.tenant,
    )
    with pytest.raises(ValidationError) as e:
        create(alice, theirs)
    assert e.value.message_dict == {"release": ["release not found"]}
    release_retire(actor=None, release=release)
    with pytest.raises(ValidationError) as e:
        create(alice, release)
    assert "retired" in str(e.value)
    assert not Campaign.objects.exists()


def test_plan_limit_on_campaigns(alice, release, platform_broker):
    from billing.models import Plan
    from billing.services import PlanLimitReached

    plan = Plan.objects.create(
        code="ota-tiny",
        name="Tiny",
        max_pools=100,
        max_devices=100,
        max_members=10,
        messages_per_month=10**8,
        history_days=30,
        api_requests_per_minute=100,
        ota_campaigns_per_month=1,
    )
    alice.tenant.plan = plan
    alice.tenant.save()
    make_devices(alice.tenant, platform_broker, 1)
    create(alice, release)
    with pytest.raises(PlanLimitReached):
        create(alice, release)
    assert Campaign.objects.count() == 1
    assert AuditEvent.objects.filter(action="ota.campaign_create").count() == 1


def test_rate_offers_per_minute_and_grows_after_successful_batches(
    alice, release, platform_broker, sent
):
    make_devices(alice.tenant, platform_broker, 12)
    c = started(alice, release, rate_per_minute=2, growth_factor=2.0, retries=0)
    assert campaign_step(c.pk) == 2  # the first minute's worth at once
    assert campaign_step(c.pk) == 0  # no credit yet
    for u in DeviceUpdate.objects.filter(state="offered"):
        report(u, "succeeded", version="1.2.0")
    # A minute later: the batch succeeded, the rate doubled to 4.
    Campaign.objects.filter(pk=c.pk).update(
        stepped_at=timezone.now() - datetime.timedelta(minutes=1)
    )
    assert campaign_step(c.pk) == 4
    c.refresh_from_db()
    assert c.current_rate == 4.0 and c.batch == 2
    # One failure in batch 2: no growth after it.
    first, *rest = DeviceUpdate.objects.filter(state="offered")
    report(first, "failed", reason="sha256 mismatch")
    for u in rest:
        report(u, "succeeded", version="1.2.0")
    Campaign.objects.filter(pk=c.pk).update(
        stepped_at=timezone.now() - datetime.timedelta(minutes=1)
    )
    campaign_step(c.pk)
    c.refresh_from_db()
    assert c.current_rate == 4.0
    # Every change went out once, to the tenant's group, with the device's code.
    kinds = [(m["state"], m["device"]) for _, m in sent]
    assert len(kinds) == len(set(kinds))
    group = f"tenant.{alice.tenant.code.hex}"
    assert {g for g, _ in sent} == {group}
    assert sent[0][1]["type"] == "ota.update"
    assert set(sent[0][1]) == {
        "type",
        "campaign",
        "device",
        "state",
        "percent",
        "reason",
        "corrupted_chunks",
    }


def test_progress_is_broadcast_every_5_percent(alice, release, platform_broker, sent):
    make_devices(alice.tenant, platform_broker, 1)
    c = started(alice, release)
    campaign_step(c.pk)
    u = DeviceUpdate.objects.get()
    sent.clear()
    for pct in (0, 1, 2, 5, 6, 9, 10, 50, 51):
        report(u, "downloading", percent=pct)
    assert [m["percent"] for _, m in sent] == [0, 5, 10, 50]


def test_a_change_of_the_corrupted_count_alone_is_broadcast(
    alice, release, platform_broker, sent
):
    make_devices(alice.tenant, platform_broker, 1)
    c = started(alice, release)
    campaign_step(c.pk)
    u = DeviceUpdate.objects.get()
    sent.clear()
    report(u, "downloading", percent=50)
    report(u, "downloading", percent=50, corrupted=1)
    report(u, "downloading", percent=51, corrupted=1)
    assert [(m["percent"], m["corrupted_chunks"]) for _, m in sent] == [
        (50, 0),
        (50, 1),
    ]


def test_a_retry_starts_its_corrupted_count_from_zero(alice, release, platform_broker):
    make_devices(alice.tenant, platform_broker, 1)
    c = started(alice, release, retries=1, abort_after=99)
    campaign_step(c.pk)
    u = DeviceUpdate.objects.get()
    report(u, "failed", reason="corrupted chunks: 8, last 2", corrupted=8)
    assert DeviceUpdate.objects.get().corrupted_chunks == 8
    Campaign.objects.filter(pk=c.pk).update(stepped_at=None)
    assert campaign_step(c.pk) == 1
    u = DeviceUpdate.objects.get()
    assert (u.state, u.attempts, u.corrupted_chunks) == ("offered", 2, 0)


def test_abort_threshold_aborts_and_stops_offering(alice, release, platform_broker):
    make_devices(alice.tenant, platform_broker, 8)
    c = started(alice, release, rate_per_minute=3, abort_after=3, abort_ratio=0.5)
    assert campaign_step(c.pk) == 3
    a, b, d = DeviceUpdate.objects.filter(state="offered")
    report(a, "failed", reason="sha256 mismatch")
    report(b, "rolled_back", reason="not healthy after 3 boots")
    report(d, "downloading", percent=10)
    assert campaign_step(c.pk) == 0  # 2 done: below abort_after, but no credit
    report(d, "succeeded", version="1.2.0")
    Campaign.objects.filter(pk=c.pk).update(
        stepped_at=timezone.now() - datetime.timedelta(minutes=5)
    )
    assert campaign_step(c.pk) == 0
    c.refresh_from_db()
    assert c.state == "aborted" and "2 of 3 devices failed" in c.state_reason
    assert campaign_counts(c)["skipped"] == 6  # the queued ones (and a, to retry)
    assert AuditEvent.objects.filter(action="ota.campaign_abort").count() == 1


def test_retries_and_the_daily_attempt_cap(alice, release, platform_broker):
    make_devices(alice.tenant, platform_broker, 1)
    c = started(alice, release, retries=5, max_attempts_per_day=2, abort_after=99)
    for attempt in (1, 2):
        Campaign.objects.filter(pk=c.pk).update(stepped_at=None)
        assert campaign_step(c.pk) == 1
        u = DeviceUpdate.objects.get()
        assert u.attempts == attempt
        report(u, "failed", reason="manifest: bad hmac")
    Campaign.objects.filter(pk=c.pk).update(stepped_at=None)
    assert campaign_step(c.pk) == 0  # two today: the third waits for tomorrow
    u = DeviceUpdate.objects.get()
    assert u.state == "queued"
    DeviceUpdate.objects.filter(pk=u.pk).update(
        attempt_day=u.attempt_day - datetime.timedelta(days=1)
    )
    assert campaign_step(c.pk) == 1


def test_no_retries_left_is_final_and_completes(alice, release, platform_broker):
    make_devices(alice.tenant, platform_broker, 1)
    c = started(alice, release, retries=0, abort_after=99)
    campaign_step(c.pk)
    report(DeviceUpdate.objects.get(), "failed", reason="boom")
    campaign_step(c.pk)
    c.refresh_from_db()
    assert c.state == "completed" and states(c) == ["failed"]


def test_maintenance_window_in_each_pools_zone(alice, release, platform_broker):
    """A window of the next two hours in Madrid holds the Madrid pool back only if
    it is not yet open there; it is open now in a zone where it is that time."""
    now = timezone.now()
    here = now.astimezone(zoneinfo.ZoneInfo("Asia/Tokyo"))
    start = (here - datetime.timedelta(minutes=30)).time().replace(tzinfo=None)
    end = (here + datetime.timedelta(minutes=30)).time().replace(tzinfo=None)
    tokyo = make_devices(alice.tenant, platform_broker, 1, tz="Asia/Tokyo")[0]
    make_devices(alice.tenant, platform_broker, 1, tz="America/New_York")
    c = started(alice, release, window_start=start, window_end=end)
    assert campaign_step(c.pk) == 1
    assert DeviceUpdate.objects.get(state="offered").device == tokyo
    assert DeviceUpdate.objects.filter(state="queued").count() == 1


def test_consent_accept_and_decline(alice, release, platform_broker, sent):
    make_devices(alice.tenant, platform_broker, 2)
    c = started(alice, release, require_consent=True)
    assert campaign_step(c.pk) == 0
    yes, no = DeviceUpdate.objects.all()
    assert states(c) == ["awaiting_consent"] * 2
    update_consent(actor=alice.user, update=yes, accept=True)
    update_consent(actor=alice.user, update=no, accept=False)
    with pytest.raises(ValueError):
        update_consent(actor=alice.user, update=no, accept=True)
    assert campaign_step(c.pk) == 1
    no.refresh_from_db()
    assert no.state == "skipped" and no.reason == "declined by alice@acme.test"
    assert DeviceUpdate.objects.get(pk=yes.pk).state == "offered"
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"ota.consent_accept", "ota.consent_decline"} <= actions


def test_pause_resume_cancel(alice, release, platform_broker):
    make_devices(alice.tenant, platform_broker, 3)
    c = started(alice, release, rate_per_minute=1)
    assert campaign_step(c.pk) == 1
    campaign_set_state(c, "pause", actor=alice.user)
    Campaign.objects.filter(pk=c.pk).update(stepped_at=None)
    assert campaign_step(c.pk) == 0  # a paused campaign is not stepped
    # Paused for longer than the deadline: resuming does not time the device out.
    DeviceUpdate.objects.filter(state="offered").update(
        heard_at=timezone.now() - datetime.timedelta(hours=1)
    )
    campaign_set_state(c, "resume", actor=alice.user)
    assert campaign_step(c.pk) == 1
    assert "timed_out" not in states(c)
    with pytest.raises(ValueError):
        campaign_set_state(c, "resume", actor=alice.user)
    campaign_set_state(c, "cancel", actor=alice.user)
    assert (
        states(c) == ["queued", "skipped", "skipped"] or states(c).count("skipped") == 3
    )
    assert campaign_step(c.pk) == 0


def test_silent_device_times_out_and_a_rollback_is_seen_in_telemetry(
    alice, release, platform_broker
):
    silent, back = make_devices(alice.tenant, platform_broker, 2)
    c = started(alice, release, retries=0, abort_after=99, device_timeout_s=60)
    campaign_step(c.pk)
    late = timezone.now() - datetime.timedelta(seconds=61)
    u_silent = DeviceUpdate.objects.get(device=silent)
    u_back = DeviceUpdate.objects.get(device=back)
    report(u_back, "applying")
    DeviceUpdate.objects.update(heard_at=late)
    # `back` rebooted and speaks again, on the version it had before.
    Device.objects.filter(pk=back.pk).update(last_seen_at=timezone.now())
    campaign_step(c.pk)
    u_silent.refresh_from_db()
    u_back.refresh_from_db()
    assert u_silent.state == "timed_out" and "60 s" in u_silent.reason
    assert (u_back.state, u_back.reason) == ("rolled_back", "came back on 0.1.0")
    # The device's own reason, arriving later, replaces the guess.
    report(u_back, "rolled_back", reason="not healthy after 3 boots")
    u_back.refresh_from_db()
    assert u_back.reason == "not healthy after 3 boots"
    assert [h.pk for h in device_history(back)] == [u_back.pk]


def test_device_refusals_that_mean_not_a_target_are_skips(
    alice, release, platform_broker
):
    make_devices(alice.tenant, platform_broker, 1)
    c = started(alice, release)
    campaign_step(c.pk)
    u = DeviceUpdate.objects.get()
    report(u, "failed", reason="already on 1.2.0")
    u.refresh_from_db()
    assert u.state == "skipped"


def test_release_tenant_and_retire_audited(alice, carol):
    mine = release_create(
        upload=SimpleUploadedFile("m.bin", BLOB),
        version="2.0.0",
        hardware_model="esp32",
        tenant=alice.tenant,
        actor=alice.user,
    )
    # Another tenant may have the same version: kept apart.
    theirs = release_create(
        upload=SimpleUploadedFile("t.bin", BLOB),
        version="2.0.0",
        hardware_model="esp32",
        tenant=carol.tenant,
    )
    assert mine.file.name != theirs.file.name
    with pytest.raises(ValidationError):  # twice for one tenant: refused
        release_create(
            upload=SimpleUploadedFile("m.bin", BLOB),
            version="2.0.0",
            hardware_model="esp32",
            tenant=alice.tenant,
        )
    with pytest.raises(ValidationError) as e:
        release_create(
            upload=SimpleUploadedFile("e.bin", b""), version="2.0.1", hardware_model="x"
        )
    assert "empty" in str(e.value)
    release_retire(actor=alice.user, release=mine)
    assert mine.retired and mine.retired_at
    ev = AuditEvent.objects.get(action="ota.release_retire")
    assert ev.tenant == alice.tenant


def test_ota_bytes_served_are_metered_per_tenant(
    alice, release, platform_broker, monkeypatch
):
    """The room counts the chunk bytes it sent for the device's tenant and hands
    them to billing.metering once a second."""
    from collections import Counter

    from billing import metering
    from devices.bridge.rooms import Context
    from ota.mqtt import OtaRoom
    from ota.tests.test_ota import Clock, FakeOut, _msg

    got = []
    monkeypatch.setattr(metering, "add_many", lambda counts: got.append(counts))
    (device,) = make_devices(alice.tenant, platform_broker, 1)
    c = started(alice, release)
    campaign_step(c.pk)
    clock = Clock()
    room, out = OtaRoom(clock=clock), FakeOut()
    room.handle(
        _msg(device, "ota/get", {"c": c.pk, "i": 0, "n": 3}), Context(Counter())
    )
    room.updates(out)
    clock.now += 1.5
    room.updates(out)  # nothing waiting: nothing to do
    room.handle(
        _msg(device, "ota/get", {"c": c.pk, "i": 2, "n": 1}), Context(Counter())
    )
    room.updates(out)
    sent = sum(len(p) for _, p in out.sent)
    # Only the room's calls: the API-call batcher's thread may flush meanwhile.
    ours = [c for c in got if any(kind == metering.OTA_BYTES for _, kind in c)]
    assert ours == [{(alice.tenant.pk, metering.OTA_BYTES): sent}]
