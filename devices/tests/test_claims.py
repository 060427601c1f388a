"""Issue 10.7: device ids on the platform broker can neither be probed nor squatted.

Adding an id there needs the device's claim code (devices/services/claims.py). The
answer to a wrong code is the same for another tenant's id and a free one; a row
registered before claims by somebody who proved nothing is released to whoever
proves they hold the device; a tenant's own broker needs no code.
"""

import io

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.urls import reverse

from audit.models import AuditEvent
from devices.models import Device, DeviceEvent
from devices.services.claims import (
    claim_code_for,
    claim_code_matches,
)
from devices.services.onboarding import device_add, device_replace
from poolsaas.api.testing import api_client

FREE_ID = "ESP-F7EE00"


@pytest.fixture
def claimed_b(device_b):
    device_b.claimed_at = device_b.created_at
    device_b.save(update_fields=["claimed_at"])
    return device_b


def refusal(membership, pool, device_id, code):
    with pytest.raises(ValidationError) as info:
        device_add(
            membership=membership, pool=pool, device_id=device_id, claim_code=code
        )
    return info.value.message_dict


@pytest.mark.parametrize("code", ["", "AAAA-AAAA-AAAA", None])
def test_a_wrong_code_answers_the_same_for_a_foreign_id_and_a_free_one(
    alice, pool_a, device_b, platform_broker, code
):
    """The probe of the attack: another tenant's id against a free id."""
    foreign = refusal(alice, pool_a, device_b.device_id, code)
    free = refusal(alice, pool_a, FREE_ID, code)
    assert foreign == free
    assert set(foreign) == {"claim_code"}
    assert not Device.objects.filter(pool=pool_a).exists()
    assert Device.objects.get(pk=device_b.pk).tenant_id == device_b.tenant_id


def test_the_api_and_page_answers_are_byte_identical(
    adam, login, pool_a, device_b, platform_broker
):
    client = api_client(adam)

    def api(device_id):
        response = client.post(
            "/api/v1/devices/",
            {"pool": str(pool_a.code), "device_id": device_id, "claim_code": "X"},
            format="json",
        )
        assert response.status_code == 400
        return response.content.replace(device_id.encode(), b"<id>")

    assert api(device_b.device_id) == api(FREE_ID)

    page = login(adam)

    def html(device_id):
        response = page.post(
            reverse("device_add"),
            {"device_id": device_id, "pool": pool_a.code.hex, "protocol": "ps1"},
        )
        assert response.status_code == 400
        body = response.content.decode().replace(device_id, "<id>")
        # The CSRF token differs per response; nothing else may.
        return [line for line in body.splitlines() if "csrfmiddlewaretoken" not in line]

    assert html(device_b.device_id) == html(FREE_ID)


def test_a_squatter_without_the_code_cannot_register_an_id(
    carol, pool_b, platform_broker
):
    """The squat of the attack: an id guessed from the MAC range is refused."""
    assert set(refusal(carol, pool_b, FREE_ID, "")) == {"claim_code"}
    assert not Device.objects.filter(device_id=FREE_ID).exists()


def test_a_squat_from_before_claims_is_released_to_the_holder(
    alice, pool_a, device_b, platform_broker
):
    """device_b (tenant B) was registered without a claim; tenant A holds the device
    and its label: A gets it, B's row goes, B's audit trail says why."""
    assert device_b.claimed_at is None
    device, _bundle = device_add(
        membership=alice,
        pool=pool_a,
        device_id=device_b.device_id,
        claim_code=claim_code_for(device_b.device_id),
    )
    assert device.tenant_id == alice.tenant_id and device.claimed_at is not None
    assert not Device.objects.filter(pk=device_b.pk).exists()
    released = AuditEvent.objects.get(action="device.released")
    assert released.tenant_id == device_b.tenant_id
    assert released.actor_id is None  # who claimed it is not B's business
    assert DeviceEvent.objects.filter(
        pool=device_b.pool, kind="device.released"
    ).exists()
    added = AuditEvent.objects.get(action="device.added")
    assert added.data["claimed"] and added.data["released_from_another_tenant"]


def test_a_claimed_device_stays_with_its_tenant(alice, pool_a, claimed_b):
    message = refusal(
        alice, pool_a, claimed_b.device_id, claim_code_for(claimed_b.device_id)
    )
    assert "registered to another account" in message["device_id"][0]
    assert Device.objects.get(pk=claimed_b.pk).tenant_id == claimed_b.tenant_id


def test_an_own_device_id_says_so(alice, pool_a, device_a, tenant_a):
    from devices.models import Pool

    other = Pool.objects.create(tenant=tenant_a, name="Other")
    message = refusal(alice, other, device_a.device_id, claim_code_for("ESP-A1A1A1"))
    assert "already one of your devices" in message["device_id"][0]


def test_a_tenants_own_broker_needs_no_code(alice, pool_a, claimed_b):
    from devices.services.brokers import broker_create

    own = broker_create(
        membership=alice, name="Own", host="mqtt.acme.test", port=8883, use_tls=True
    )
    device, _ = device_add(
        membership=alice, pool=pool_a, device_id=claimed_b.device_id, broker=own
    )
    assert device.broker == own and device.claimed_at is None
    assert Device.objects.filter(pk=claimed_b.pk).exists()


def test_replacing_on_the_platform_broker_needs_the_new_devices_code(
    alice, pool_a, device_a
):
    with pytest.raises(ValidationError) as info:
        device_replace(membership=alice, pool=pool_a, device_id=FREE_ID, claim_code="")
    assert set(info.value.message_dict) == {"claim_code"}
    assert Device.objects.get(pool=pool_a) == device_a
    new, _ = device_replace(
        membership=alice,
        pool=pool_a,
        device_id=FREE_ID,
        claim_code=claim_code_for(FREE_ID),
    )
    assert new.device_id == FREE_ID and new.claimed_at is not None


def test_codes_as_people_type_them(settings):
    settings.DEVICE_CLAIM_KEY = "factory-test-key"
    # Pinned: the factory's tool and this derivation must agree (docs/protocol.md).
    assert claim_code_for("ESP-A1B2C3") == "BBNR-MAGF-JV94"
    for typed in ("BBNR-MAGF-JV94", "bbnrmagfjv94", " bbnr magf jv94 "):
        assert claim_code_matches(device_id="ESP-A1B2C3", code=typed)
    for wrong in ("BBNR-MAGF-JV95", "", None, 12, "BBNR-MAGF-JV9"):
        assert not claim_code_matches(device_id="ESP-A1B2C3", code=wrong)
    assert not claim_code_matches(device_id="ESP-A1B2C4", code="BBNR-MAGF-JV94")
    # Read-alike letters count as the digits they look like.
    settings.DEVICE_CLAIM_KEY = "another-key"
    code = claim_code_for("ESP-A1B2C3")
    assert code != "BBNR-MAGF-JV94"
    typed = code.replace("0", "O").replace("1", "I")
    assert claim_code_matches(device_id="ESP-A1B2C3", code=typed)


def test_the_operator_command_prints_codes(settings):
    settings.DEVICE_CLAIM_KEY = "factory-test-key"
    out = io.StringIO()
    call_command("device_claim_code", "esp-a1b2c3", "pool-01", stdout=out)
    assert out.getvalue().splitlines() == [
        "ESP-A1B2C3 BBNR-MAGF-JV94",
        f"pool-01 {claim_code_for('pool-01')}",
    ]
