"""A device's hardware model, end to end: simulated devices (firmware.sim, the real
controller and the board's own updater) report `hw` in their telemetry over the
machine's Mosquitto to a real bridge process (`manage.py mqtt_bridge`), which stores
it on the device; a campaign for an esp32 release then skips the esp32s3 device
("wrong hardware model (esp32s3, not esp32)") and updates the esp32 one. A device
on firmware from before the model (no `hw`) counts as esp32, as before; a v3.1
device keeps working and stays out. The s3 device, offered the esp32 manifest
anyway, refuses it itself. Every wait is on a condition with a bound.
"""

import json
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from devices.models import Device, Pool
from devices.tests.test_bridge import V31Device, client, wait_for
from devices.tests.test_config_push import (  # noqa: F401 - fixtures
    bridge,
    prefix,
)
from firmware.sim import VirtualDevice
from firmware.tools.bundle import pack
from ota.models import DeviceUpdate, Release
from ota.services import (
    campaign_create,
    campaign_set_state,
    device_ota_key,
    manifest,
)
from ota.tasks import advance_campaigns
from ota.tests.test_ota_e2e import (  # noqa: F401 - fixtures
    media,
    staff_client,
    upload_release,
)
from poolsaas.api.testing import api_client

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

BUNDLE = pack({"config.py": b'FW_VERSION = "ps1-1.2.0"\n', "pad.py": b"#" * 9000})


@pytest.fixture
def rows(tenant_a, platform_broker, prefix):  # noqa: F811
    def make(name, protocol="ps1"):
        pool = Pool.objects.create(tenant=tenant_a, name=f"HW {name}")
        device_id = (
            f"ESP-{uuid.uuid4().hex[:6].upper()}"
            if protocol == "ps1"
            else f"esp32-pool-{uuid.uuid4().hex[:6]}"
        )
        return Device.objects.create(
            tenant=tenant_a,
            pool=pool,
            broker=platform_broker,
            device_id=device_id,
            topic_prefix=prefix,
            protocol=protocol,
        )

    return make


@pytest.fixture
def sims(tmp_path):
    running = []

    def make(row, **kw):
        sim = VirtualDevice(
            row.device_id,
            prefix=row.topic_prefix,
            clean_session=True,
            reconnect_delay=(1, 2),
            interval=2,
            ota_key=device_ota_key(row.device_id).hex(),
            ota_root=str(tmp_path / "boards" / row.device_id),
            **kw,
        ).start()
        running.append(sim)
        return sim

    yield make
    for sim in running:
        sim.begin_stop()
    for sim in running:
        sim.finish_stop()


class StatusWatcher:
    """Subscribes to the devices' `ota/status` on the broker: what they report."""

    def __init__(self, root):
        self.seen = []
        self.c = client()
        self.c.on_message = lambda c, u, m: self.seen.append(
            (m.topic, json.loads(m.payload))
        )
        self.c.connect("127.0.0.1", 1883)
        self.c.loop_start()
        self.c.subscribe(f"{root}/+/ota/status", qos=1)

    def publish(self, topic, payload):
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_the_reported_hardware_model_is_stored_and_a_campaign_skips_another_model(
    bridge,  # noqa: F811
    media,  # noqa: F811
    staff_client,  # noqa: F811
    adam,
    rows,
    sims,
    prefix,  # noqa: F811
):
    s3, esp32, old = rows("s3"), rows("esp32"), rows("old")
    legacy = rows("legacy", protocol="v3.1")
    # The rows before the bridge: the v3.1 device publishes its state once, at
    # connect, and a bridge that did not know it yet would drop it.
    bridge.start()
    s3_sim = sims(s3, hw_model="esp32s3")
    esp32_sim = sims(esp32)  # the simulator's default: the board's, esp32
    sims(old, hw_model=None)  # firmware from before the model: no "hw"
    v31 = V31Device(prefix, legacy.device_id)
    v31.c.connect("127.0.0.1", 1883)
    v31.c.loop_start()
    watcher = StatusWatcher(prefix)
    try:
        for sim in (s3_sim, esp32_sim):
            sim.wait_connected(30)

        def stored():
            got = dict(
                Device.objects.filter(pk__in=[s3.pk, esp32.pk]).values_list(
                    "device_id", "hardware_model"
                )
            )
            return got == {s3.device_id: "esp32s3", esp32.device_id: "esp32"}

        wait_for(stored, timeout=60, what="the bridge to store both models")
        # The old firmware's telemetry is valid without it (its version is stored),
        # and the v3.1 device's state topics work as ever; neither has a model.
        wait_for(
            lambda: Device.objects.get(pk=old.pk).firmware_version == "ps1-0.1.0-sim",
            timeout=60,
            what="the old firmware's telemetry",
        )
        wait_for(
            lambda: Device.objects.get(pk=legacy.pk).state.get("temperature") == 25.3,
            timeout=60,
            what="the v3.1 device's state",
        )
        for row in (old, legacy):
            assert Device.objects.get(pk=row.pk).hardware_model == ""

        # Staff see it in the admin, the tenant in the API and on the device's page.
        admin = staff_client.get(reverse("admin:devices_device_change", args=[s3.pk]))
        assert "esp32s3" in admin.content.decode()
        api = api_client(adam).get(f"/api/v1/devices/{s3.code}/")
        assert api.status_code == 200 and api.json()["hardware_model"] == "esp32s3"
        member = Client()
        member.force_login(adam.user)
        page = member.get(reverse("ota_device", args=[s3.code])).content.decode()
        assert "Hardware esp32s3" in page

        release = upload_release(staff_client, BUNDLE, "1.2.0")  # esp32
        targets = [s3.code, esp32.code, old.code, legacy.code]
        preview = api_client(adam).post(
            "/api/v1/ota/campaigns/preview/",
            {
                "release": str(release.code),
                "target_all": False,
                "devices": [str(c) for c in targets],
            },
            format="json",
        )
        assert preview.status_code == 200, preview.content
        body = preview.json()
        assert sorted(body["devices"]) == sorted([esp32.device_id, old.device_id])
        assert {d["device_id"]: d["reason"] for d in body["skipped_devices"]} == {
            s3.device_id: "wrong hardware model (esp32s3, not esp32)",
            legacy.device_id: "wrong hardware model (v3.1, not esp32)",
        }

        campaign = campaign_create(
            actor=adam.user,
            tenant=adam.tenant,
            release=release,
            target_all=False,
            device_ids=targets,
            rate_per_minute=1000,
            retries=0,
        )
        campaign_set_state(campaign, "start", actor=adam.user)

        def updated():
            advance_campaigns()
            return (
                DeviceUpdate.objects.filter(
                    campaign=campaign, state__in=DeviceUpdate.FINAL
                ).count()
                == 4
            )

        wait_for(updated, timeout=180, what="every device's update final")
        got = {
            u.device_id: (u.state, u.reason)
            for u in DeviceUpdate.objects.filter(campaign=campaign)
        }
        assert got == {
            esp32.pk: ("succeeded", ""),
            old.pk: ("succeeded", ""),
            s3.pk: ("skipped", "wrong hardware model (esp32s3, not esp32)"),
            legacy.pk: ("skipped", "wrong hardware model (v3.1, not esp32)"),
        }
        # Nothing was offered to the s3 device: it never asked for a chunk.
        assert s3_sim.ota.asks == [] and s3_sim.ota.reports == []
        assert esp32_sim.ota.version == "1.2.0"

        # Offered the esp32 manifest all the same (authentic: its own key), the
        # device refuses it itself and writes nothing; its skipped row stays.
        offer = manifest(DeviceUpdate.objects.get(campaign=campaign, device=s3))
        watcher.publish(f"{prefix}/{s3.device_id}/ota/offer", json.dumps(offer))
        wait_for(
            lambda: any(
                t == f"{prefix}/{s3.device_id}/ota/status" for t, _ in watcher.seen
            ),
            timeout=30,
            what="the s3 device's refusal",
        )
        ((_, status),) = [
            (t, s) for t, s in watcher.seen if t.startswith(f"{prefix}/{s3.device_id}/")
        ]
        assert (status["c"], status["state"], status["reason"]) == (
            campaign.pk,
            "failed",
            "wrong model esp32",
        )
        assert s3_sim.ota.version == "0.1.0" and s3_sim.ota.asks == []
        assert DeviceUpdate.objects.get(campaign=campaign, device=s3).reason == (
            "wrong hardware model (esp32s3, not esp32)"
        )
        assert Device.objects.get(pk=s3.pk).hardware_model == "esp32s3"
    finally:
        watcher.close()
        v31.c.disconnect()
        v31.c.loop_stop()


def test_an_esp32s3_device_takes_an_esp32s3_release(
    bridge,  # noqa: F811
    media,  # noqa: F811
    staff_client,  # noqa: F811
    adam,
    rows,
    sims,
):
    """The other way round: a release for esp32s3 reaches the s3 device only."""
    s3, esp32 = rows("s3"), rows("esp32")
    bridge.start()
    s3_sim = sims(s3, hw_model="esp32s3")
    sims(esp32)
    wait_for(
        lambda: (
            Device.objects.filter(
                pk__in=[s3.pk, esp32.pk], hardware_model__in=["esp32s3", "esp32"]
            ).count()
            == 2
        ),
        timeout=60,
        what="both models stored",
    )
    response = staff_client.post(
        reverse("admin:ota_release_add"),
        {
            "version": "1.2.0",
            "hardware_model": "esp32s3",
            "min_from_version": "",
            "notes": "s3",
            "file": SimpleUploadedFile("app-s3.bin", BUNDLE),
            "_save": "Save",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    release = Release.objects.get(hardware_model="esp32s3")
    campaign = campaign_create(
        actor=adam.user,
        tenant=adam.tenant,
        release=release,
        rate_per_minute=1000,
        retries=0,
    )
    campaign_set_state(campaign, "start", actor=adam.user)

    def finished():
        advance_campaigns()
        return (
            DeviceUpdate.objects.filter(
                campaign=campaign, state__in=DeviceUpdate.FINAL
            ).count()
            == 2
        )

    wait_for(finished, timeout=180, what="both updates final")
    got = {
        u.device_id: (u.state, u.reason)
        for u in DeviceUpdate.objects.filter(campaign=campaign)
    }
    assert got == {
        s3.pk: ("succeeded", ""),
        esp32.pk: ("skipped", "wrong hardware model (esp32, not esp32s3)"),
    }
    assert s3_sim.ota.version == "1.2.0"
