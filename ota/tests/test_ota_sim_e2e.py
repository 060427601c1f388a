"""A campaign of 20 simulated devices (firmware.sim, each taking updates through the
board's own firmware/updater.py) over the real bridge process and Mosquitto: 15
update normally, one has its TCP connection dropped half-way through the transfer
and resumes from its first missing chunk, one has a chunk corrupted on its way to
flash and reports the failed verification, one receives a chunk corrupted in
transit, drops it and fetches it again, one loses power half-way with a chunk
damaged on flash meanwhile (found at the resume and fetched again), one receives a
corrupted chunk and then loses power (its count survives the reboot); each
device's count of corrupted chunks ends on its row. The Celery beat step is called
in a loop, as beat would. Then a campaign stepped by real Celery workers in which
one chunk arrives corrupted, is fetched again (its row says 1) and the campaign
completes. No timing is asserted; every wait is on a condition with a bound.
"""

import uuid
from pathlib import Path

import pytest

from devices.models import Device, Pool
from devices.tests.test_bridge import wait_for
from devices.tests.test_config_push import (  # noqa: F401 - fixtures
    bridge,
    prefix,
)
from firmware.sim import VirtualDevice
from firmware.tools.bundle import pack
from ota.models import Campaign, DeviceUpdate
from ota.services import campaign_set_state, device_ota_key
from ota.tasks import advance_campaigns
from ota.tests.test_engine_e2e import (  # noqa: F401 - fixtures
    beat,
    worker_env,
    workers,
)
from ota.tests.test_ota_e2e import (  # noqa: F401 - fixtures
    media,
    staff_client,
    upload_release,
)

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

DEVICES = 20
# About 40 KB: ten chunks, so that "half-way" is a real point in the transfer.
BUNDLE = pack({"config.py": b'FW_VERSION = "ps1-1.2.0"\n', "pad.py": b"#" * 40000})


@pytest.fixture
def fleet(tenant_a, platform_broker, prefix, tmp_path):  # noqa: F811
    """Devices of tenant A (rows), and their simulators (`switches`: the simulator's
    switches by device index)."""
    sims = []

    def make(count=DEVICES, switches=None):
        rows = []
        for n in range(count):
            pool = Pool.objects.create(tenant=tenant_a, name=f"OTA sim {n}")
            rows.append(
                Device.objects.create(
                    tenant=tenant_a,
                    pool=pool,
                    broker=platform_broker,
                    device_id=f"ESP-{uuid.uuid4().hex[:6].upper()}",
                    topic_prefix=prefix,
                )
            )
        for n, row in enumerate(rows):
            sims.append(
                VirtualDevice(
                    row.device_id,
                    prefix=prefix,
                    clean_session=True,
                    reconnect_delay=(1, 2),
                    # The key of the device's provisioning bundle.
                    ota_key=device_ota_key(row.device_id).hex(),
                    ota_root=str(tmp_path / "boards" / row.device_id),
                    ota_opts=(switches or {}).get(n),
                ).start()
            )
        for sim in sims:
            sim.wait_connected(30)
        return rows, sims

    yield make
    for sim in sims:
        sim.begin_stop()
    for sim in sims:
        sim.finish_stop()


def test_twenty_simulated_devices_update_one_resumes_after_a_drop_one_fails(
    bridge,  # noqa: F811
    media,  # noqa: F811
    staff_client,  # noqa: F811
    fleet,
):
    bridge.start()
    rows, sims = fleet(
        switches={
            0: {"drop_at": 0.5},
            1: {"fail_verify": True},
            2: {"corrupt_at": 0.3},
            3: {"reboot_at": 0.5, "damage_on_reboot": True},
            4: {"corrupt_at": 0.2, "reboot_at": 0.6},
        }
    )
    release = upload_release(staff_client, BUNDLE, "1.2.0")
    assert release.chunk_count == 10
    # No retries (the corrupted device's failure is final) and no abort on one
    # failure in 20.
    campaign = Campaign.objects.create(
        tenant=rows[0].tenant,
        release=release,
        target_all=False,
        rate_per_minute=1000,
        retries=0,
        abort_after=DEVICES + 1,
    )
    campaign.target_devices.set(rows)
    campaign_set_state(campaign, "start")

    def finished():
        advance_campaigns()
        updates = DeviceUpdate.objects.filter(campaign=campaign)
        done = updates.filter(state__in=DeviceUpdate.FINAL).count()
        return done == DEVICES

    wait_for(finished, timeout=300, what="all 20 updates final")
    states = {
        u.device_id: (u.state, u.reason)
        for u in DeviceUpdate.objects.filter(campaign=campaign)
    }
    dropped, corrupted = rows[0], rows[1]
    assert states[dropped.pk] == ("succeeded", "")
    assert states.pop(corrupted.pk) == ("failed", "sha256 mismatch")
    assert {s for s, _ in states.values()} == {"succeeded"}, states

    # The dropped device: its socket went down half-way, it asked again from the
    # first chunk it did not have (not from 0), and no chunk was written twice.
    drop = sims[0].ota
    assert drop.dropped_at == release.chunk_count // 2
    assert sims[0].connects >= 2
    # (What was in flight when the socket went down may still have arrived.)
    assert drop.missing_at_reconnect >= drop.dropped_at > 0
    assert drop.resumed_from() == drop.missing_at_reconnect
    assert min(i for i, _ in drop.asks[drop._asks_at_online :]) == (
        drop.missing_at_reconnect
    )
    assert drop.chunks_in == release.chunk_count
    # The device whose chunk 3 came corrupted: dropped, fetched again, done.
    assert (sims[2].ota.corrupted_index, sims[2].ota.refetched) == (3, True)
    assert sims[2].ota.chunks_in == release.chunk_count
    # The device whose chunk 4 was damaged on flash while it was off: asked again
    # from 4 at the resume (not from 5, its first missing one, nor from 0).
    flash = sims[3].ota
    assert (flash.rebooted_at, flash.damaged_index) == (5, 4)
    after = [i for i, _ in flash.asks[flash.asks_at_reboot :]]
    assert after[0] == 4 and min(after) == 4, flash.asks
    # The one that lost power after a corrupted chunk: its count went on from 1.
    assert (sims[4].ota.corrupted_index, sims[4].ota.rebooted_at) == (2, 6)
    # Each device's count of corrupted chunks, as it reported it, on its row.
    counts = dict(
        DeviceUpdate.objects.filter(campaign=campaign).values_list(
            "device_id", "corrupted_chunks"
        )
    )
    assert [counts[r.pk] for r in rows[:5]] == [0, 0, 1, 1, 1], counts
    assert set(counts[r.pk] for r in rows[5:]) == {0}

    # Every other device runs the new version from fw/, and says so in telemetry;
    # the corrupted one stays on its old version with nothing staged.
    for row, sim in zip(rows, sims, strict=True):
        if row is corrupted:
            assert sim.ota.version == "0.1.0"
            assert not Path(sim.ota.root, "fw").exists()
            assert not Path(sim.ota.root, "fw.new").exists()
            continue
        assert sim.ota.version == "1.2.0", row.device_id
        assert sim.ota.crashes == 0
    wait_for(
        lambda: (
            Device.objects.filter(
                pk__in=[r.pk for r in rows], firmware_version="ps1-1.2.0-sim"
            ).count()
            == DEVICES - 1
        ),
        timeout=60,
        what="telemetry naming the new version",
    )
    # (Its telemetry at connect may have come before the bridge knew the device.)
    assert Device.objects.get(pk=corrupted.pk).firmware_version != "ps1-1.2.0-sim"


@pytest.mark.redis
@pytest.mark.postgres_only
def test_a_chunk_corrupted_in_transit_is_fetched_again_and_the_campaign_completes(
    bridge,  # noqa: F811
    media,  # noqa: F811
    staff_client,  # noqa: F811
    fleet,
    workers,  # noqa: F811
    beat,  # noqa: F811
):
    """Real Celery workers step the campaign (the test plays beat); one device's
    chunk 5 arrives with a bit flipped: the device finds it by the manifest's sums,
    asks for it again (not for the whole bundle) and updates; the campaign
    completes with every device on the new version."""
    bridge.start()
    rows, sims = fleet(3, switches={1: {"corrupt_at": 0.5}})
    release = upload_release(staff_client, BUNDLE, "1.2.0")
    assert len(release.chunk_sums) == 8 * release.chunk_count
    campaign = Campaign.objects.create(
        tenant=rows[0].tenant,
        release=release,
        target_all=False,
        rate_per_minute=1000,
        retries=0,
    )
    campaign.target_devices.set(rows)
    campaign_set_state(campaign, "start")
    beat()
    wait_for(
        lambda: Campaign.objects.get(pk=campaign.pk).state == "completed",
        timeout=180,
        what="the campaign to complete",
    )
    states = DeviceUpdate.objects.filter(campaign=campaign)
    assert sorted(u.state for u in states) == ["succeeded"] * 3
    # The count the device reported with its download, on its row.
    counts = dict(states.values_list("device_id", "corrupted_chunks"))
    assert [counts[r.pk] for r in rows] == [0, 1, 0], counts
    ota = sims[1].ota
    assert (ota.corrupted_index, ota.refetched) == (5, True)
    assert ota.version == "1.2.0" and ota.chunks_in == release.chunk_count
    # Chunk 5 was asked for in a window, then again from 5 itself; nothing before it
    # was asked for after that (never from zero again). The first window may be
    # asked for twice: an offer can reach the device again before its first report.
    firsts = [i for i, _ in ota.asks]
    again = firsts.index(5)
    assert any(i <= 5 < i + n for i, n in ota.asks[:again]), ota.asks
    assert min(firsts[again:]) == 5, ota.asks
    assert all(s.ota.version == "1.2.0" for s in sims)
