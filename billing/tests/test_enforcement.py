"""Plan limits refuse, in words and with the upgrade path, on every path that creates
what they limit: page, API and admin (one rule, billing.services.plan_limit_check);
the API's rate answers 429 naming the plan's limit, with Retry-After."""

import pytest
from django.core import mail
from django.urls import reverse

from billing.services import PlanLimitReached, plan_limit_check
from devices.models import Device, Pool
from devices.services.claims import claim_code_for
from poolsaas.api.testing import api_client, assert_error
from tenants.models import Invitation, Membership, User
from tenants.services import InvitationInvalid

pytestmark = pytest.mark.django_db

LIMIT_WORDS = "Plan limit reached: the Free plan allows 1"
UPGRADE = "Upgrade to Business"


@pytest.fixture
def free_a(tenant_a, make_plan):
    tenant_a.plan = make_plan(max_pools=1, max_devices=1, max_members=2)
    tenant_a.save()
    return tenant_a


def test_without_a_plan_nothing_is_limited(tenant_a, pool_a):
    for _ in range(3):
        Pool.objects.create(tenant=tenant_a, name="p")
    plan_limit_check(tenant=tenant_a, limit="pools")


def test_the_rule_names_the_limit_and_the_upgrade(free_a, pool_a):
    with pytest.raises(PlanLimitReached) as info:
        plan_limit_check(tenant=free_a, limit="pools")
    message = info.value.messages[0]
    assert message.startswith(f"{LIMIT_WORDS} pools.")
    assert "Upgrade to Business (200 pools)" in message
    assert info.value.limit == "pools"


def test_new_pool_over_the_plan_refused_on_the_page(client, login, alice, free_a):
    login(alice)
    form = {"timezone_name": "UTC", "mode1_name": "A", "mode2_name": "B"}
    assert client.post(reverse("pool_add"), {"name": "One", **form}).status_code == 302
    response = client.post(reverse("pool_add"), {"name": "Two", **form})
    assert response.status_code == 400
    html = response.content.decode()
    assert f"{LIMIT_WORDS} pools." in html and UPGRADE in html
    assert list(Pool.objects.filter(tenant=free_a).values_list("name", flat=True)) == [
        "One"
    ]


def test_new_pool_over_the_plan_refused_by_the_api(adam, free_a, pool_a):
    response = api_client(adam).post("/api/v1/pools/", {"name": "Two"}, format="json")
    error = assert_error(response, 400, "plan_limit")
    assert error["limit"] == "pools"
    assert f"{LIMIT_WORDS} pools." in error["message"] and UPGRADE in error["message"]
    assert Pool.objects.filter(tenant=free_a).count() == 1


def test_new_pool_device_and_member_over_the_plan_refused_in_the_admin(
    client, free_a, alice, adam, pool_a, device_a, platform_broker
):
    from conftest import PASSWORD
    from tenants.models import User

    staff = User.objects.create_superuser(email="ops@poolsaas.test", password=PASSWORD)
    client.force_login(staff)
    response = client.post(
        reverse("admin:devices_pool_add"),
        {
            "tenant": free_a.pk,
            "name": "Admin pool",
            "timezone": "Europe/Madrid",
            "mode1_name": "A",
            "mode2_name": "B",
            "settings": "{}",
        },
    )
    assert response.status_code == 200
    assert f"{LIMIT_WORDS} pools." in response.content.decode()
    assert Pool.objects.filter(tenant=free_a).count() == 1

    response = client.post(
        reverse("admin:devices_device_add"),
        {
            "tenant": free_a.pk,
            "device_id": "ESP-ADADAD",
            "broker": platform_broker.pk,
            "topic_prefix": "pool",
            "protocol": "ps1",
            "pool": "",
        },
    )
    assert response.status_code == 200
    assert f"{LIMIT_WORDS} devices." in response.content.decode()
    assert Device.objects.filter(tenant=free_a).count() == 1

    response = client.post(
        reverse("admin:tenants_membership_add"),
        {"tenant": free_a.pk, "user": staff.pk, "role": "viewer"},
    )
    assert response.status_code == 200
    assert "allows 2 team members" in response.content.decode()
    assert not Membership.objects.filter(user=staff).exists()


def test_new_device_over_the_plan_refused_by_the_api(
    adam, free_a, device_a, platform_broker
):
    free_a.plan.max_pools = 5
    free_a.plan.save()
    second = Pool.objects.create(tenant=free_a, name="Second")
    response = api_client(adam).post(
        "/api/v1/devices/",
        {
            "pool": str(second.code),
            "device_id": "esp-c4c4c4",
            "claim_code": claim_code_for("ESP-C4C4C4"),
        },
        format="json",
    )
    error = assert_error(response, 400, "plan_limit")
    assert error["limit"] == "devices"
    assert f"{LIMIT_WORDS} devices." in error["message"]
    assert not Device.objects.filter(device_id="ESP-C4C4C4").exists()


def test_new_device_over_the_plan_refused_on_the_page(
    client, login, alice, free_a, device_a, platform_broker
):
    free_a.plan.max_pools = 5
    free_a.plan.save()
    second = Pool.objects.create(tenant=free_a, name="Second")
    login(alice)
    response = client.post(
        reverse("device_add"),
        {
            "pool": str(second.code),
            "device_id": "ESP-C5C5C5",
            "broker": "",
            "protocol": "ps1",
            "claim_code": claim_code_for("ESP-C5C5C5"),
        },
    )
    assert response.status_code == 400
    assert f"{LIMIT_WORDS} devices." in response.content.decode()
    assert not Device.objects.filter(device_id="ESP-C5C5C5").exists()


def test_new_member_over_the_plan_refused_on_invite_and_accept(
    client, login, alice, adam, free_a
):
    # alice and adam: the two members Free allows.
    login(alice)
    response = client.post(
        reverse("team_invite"), {"email": "new@acme.test", "role": "viewer"}
    )
    assert response.status_code == 400
    assert "Plan limit reached: the Free plan allows 2 team members." in (
        response.content.decode()
    )
    assert not Invitation.objects.filter(email="new@acme.test").exists()
    assert not mail.outbox


def test_an_invitation_accepted_after_the_team_filled_up_is_refused(
    client, alice, make_user, free_a
):
    from tenants.services import invitation_accept, invitation_create

    _invitation, token = invitation_create(
        membership=alice, email="late@acme.test", role="viewer"
    )
    # Meanwhile staff add a member directly (the admin's plain add).
    Membership.objects.create(
        tenant=free_a, user=make_user("direct@acme.test"), role="viewer"
    )
    client.force_login(make_user("late@acme.test"))
    response = client.post(reverse("invitation_accept", args=[token]))
    assert response.status_code == 403
    assert "2 team members" in response.content.decode()
    assert not Membership.objects.filter(user__email="late@acme.test").exists()
    with pytest.raises(InvitationInvalid, match="2 team members") as info:
        invitation_accept(token=token, user=User.objects.get(email="late@acme.test"))
    assert info.value.kind == "plan_limit"


def test_api_over_the_plans_rate_is_429_naming_the_limit(victor, tenant_a, make_plan):
    tenant_a.plan = make_plan(api_requests_per_minute=2)
    tenant_a.save()
    client = api_client(victor)
    assert client.get("/api/v1/pools/").status_code == 200
    assert client.get("/api/v1/pools/").status_code == 200
    response = client.get("/api/v1/pools/")
    error = assert_error(response, 429, "throttled")
    assert error["limit"] == "tenant"
    assert error["message"].startswith(
        "Plan limit reached: the Free plan allows 2 API requests per minute."
    )
    assert "Upgrade to Business (3,000 requests per minute)" in error["message"]
    assert int(response["Retry-After"]) >= 1
