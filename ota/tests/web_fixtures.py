"""What the OTA pages' and API's tests share: releases and campaigns made through
the engine's services (never written to the models here), in a private MEDIA_ROOT.
Import the fixtures into a test module (`from ota.tests.web_fixtures import *`)."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from devices.models import Device

BLOB = bytes(range(256)) * 40  # 10240 bytes: three chunks

__all__ = [
    "BLOB",
    "media",
    "platform_release",
    "own_release",
    "fleet",
    "campaign_a",
    "running_a",
    "campaign_b",
    "consent_a",
    "upload",
    "make_campaign",
    "report",
]


def upload(data: bytes = BLOB, name: str = "app.bin") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def platform_release(media, db):
    from ota.services import release_create

    return release_create(
        upload=upload(), version="1.4.0", hardware_model="esp32", notes="Faster."
    )


@pytest.fixture
def own_release(media, adam):
    from ota.services import release_create

    return release_create(
        upload=upload(b"own" * 1000),
        version="1.5.0",
        hardware_model="esp32",
        tenant=adam.tenant,
        actor=adam.user,
    )


@pytest.fixture
def fleet(pool_a, device_a, platform_broker):
    """device_a on 1.3.0 plus a second Acme device already on 1.4.0."""
    from devices.models import Pool

    Device.objects.filter(pk=device_a.pk).update(firmware_version="1.3.0")
    device_a.refresh_from_db()
    pool2 = Pool.objects.create(tenant=pool_a.tenant, name="Acme Spa")
    current = Device.objects.create(
        tenant=pool_a.tenant,
        pool=pool2,
        broker=platform_broker,
        device_id="ESP-C3C3C3",
        firmware_version="1.4.0",
    )
    return device_a, current


def make_campaign(membership, release, **kwargs):
    from ota.services import campaign_create

    values = {
        "target_all": True,
        "pool_ids": (),
        "device_ids": (),
        "below_version": "",
        "rate_per_minute": 10,
        "growth_factor": 1.0,
        "abort_after": 5,
        "abort_ratio": 0.2,
        "retries": 2,
        "max_attempts_per_day": 3,
        "window_start": None,
        "window_end": None,
        "require_consent": False,
    }
    values.update(kwargs)
    return campaign_create(
        actor=membership.user, tenant=membership.tenant, release=release, **values
    )


@pytest.fixture
def campaign_a(adam, platform_release, fleet):
    return make_campaign(adam, platform_release)


@pytest.fixture
def running_a(adam, campaign_a):
    """campaign_a started and stepped once: its devices enrolled and offered."""
    from ota.services import campaign_set_state, campaign_step

    campaign = campaign_set_state(campaign_a, "start", actor=adam.user)
    campaign_step(campaign.pk)
    campaign.refresh_from_db()
    return campaign


@pytest.fixture
def consent_a(adam, platform_release, fleet):
    """device_a's update in a started campaign that waits for the pool's consent."""
    from ota.models import DeviceUpdate
    from ota.services import campaign_set_state, campaign_step

    campaign = make_campaign(adam, platform_release, require_consent=True)
    campaign_set_state(campaign, "start", actor=adam.user)
    campaign_step(campaign.pk)
    update = DeviceUpdate.objects.get(campaign=campaign, device=fleet[0])
    assert update.state == "awaiting_consent"
    return update


@pytest.fixture
def campaign_b(carol, platform_release, device_b):
    return make_campaign(carol, platform_release)


def report(campaign, device, state, percent=0, reason="", version="", corrupted=None):
    """The device's report, as the bridge hands it to the engine."""
    from ota.services import device_update_report

    return device_update_report(
        device_pk=device.pk,
        campaign_id=campaign.pk,
        state=state,
        percent=percent,
        reason=reason,
        version=version,
        corrupted=corrupted,
    )
