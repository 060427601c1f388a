"""Every service that takes an object refuses another tenant's the same way: "not
found" (Http404, which every entry point answers 404), never a 500, a 400 or a 403
that would confirm the object exists. Called directly, as a new entry point could."""

import pytest
from django.http import Http404

from devices.models import Broker, Device, Pool
from devices.services import brokers as broker_services
from devices.services import commands, onboarding, pools, programs
from tenants import services as tenant_services
from tenants.models import Invitation, Membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def foreign(carol, pool_b, device_b, mailoutbox):
    broker = broker_services.broker_create(
        membership=carol, name="Globex", host="mqtt.globex.test"
    )
    invitation, _ = tenant_services.invitation_create(
        membership=carol, email="new@globex.test", role="viewer"
    )
    return {
        "pool": pool_b,
        "device": device_b,
        "broker": broker,
        "invitation": invitation,
        "member": carol,
    }


CALLS = {
    "pool_update": lambda me, f: pools.pool_update(
        membership=me, pool=f["pool"], name="Mine now"
    ),
    "programs_save": lambda me, f: programs.programs_save(
        membership=me, pool=f["pool"], programs=[]
    ),
    "command_send": lambda me, f: commands.command_send(
        membership=me, pool=f["pool"], op="pump", value="ON"
    ),
    "device_add to a foreign pool": lambda me, f: onboarding.device_add(
        membership=me, pool=f["pool"], device_id="ESP-C0FFEE"
    ),
    "device_add on a foreign broker": lambda me, f: onboarding.device_add(
        membership=me,
        pool=Pool.objects.create(tenant=me.tenant, name="Empty"),
        device_id="ESP-C0FFEE",
        broker=f["broker"],
    ),
    "device_replace": lambda me, f: onboarding.device_replace(
        membership=me, pool=f["pool"], device_id="ESP-C0FFEE"
    ),
    "device_remove": lambda me, f: onboarding.device_remove(
        membership=me, device=f["device"]
    ),
    "broker_update": lambda me, f: broker_services.broker_update(
        membership=me, broker=f["broker"], name="Mine now"
    ),
    "broker_delete": lambda me, f: broker_services.broker_delete(
        membership=me, broker=f["broker"]
    ),
    "broker_test_connection": lambda me, f: broker_services.broker_test_connection(
        membership=me, broker=f["broker"], timeout=0.5
    ),
    "invitation_revoke": lambda me, f: tenant_services.invitation_revoke(
        membership=me, invitation=f["invitation"]
    ),
    "membership_role_change": lambda me, f: tenant_services.membership_role_change(
        membership=me, target=f["member"], role="viewer"
    ),
    "membership_remove": lambda me, f: tenant_services.membership_remove(
        membership=me, target=f["member"]
    ),
}


def _state():
    return (
        list(Pool.objects.order_by("pk").values_list("name", "config_version")),
        list(Device.objects.order_by("pk").values_list("device_id", "pool_id")),
        list(Broker.objects.order_by("pk").values_list("name", flat=True)),
        list(Invitation.objects.values_list("revoked_at", flat=True)),
        list(Membership.objects.order_by("pk").values_list("role", flat=True)),
    )


@pytest.mark.parametrize("name", CALLS)
def test_a_foreign_object_is_not_found_and_nothing_changes(alice, foreign, name):
    before = _state()
    with pytest.raises(Http404):
        CALLS[name](alice, foreign)
    after = _state()
    if name == "device_add on a foreign broker":
        after[0].pop()  # the empty pool the call was given
    assert after == before


def test_the_platform_broker_is_not_a_tenants_to_change(alice, platform_broker):
    for call in (
        broker_services.broker_update,
        broker_services.broker_delete,
    ):
        with pytest.raises(Http404):
            call(membership=alice, broker=platform_broker)
    assert Broker.objects.filter(pk=platform_broker.pk, is_platform=True).exists()
