"""The Plan admin is an AuditedModelAdmin: a model without a tenant, and the context it
records (actor, source, request id)."""

import json

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from billing.models import Plan

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db):
    from conftest import PASSWORD
    from tenants.models import User

    return User.objects.create_superuser(email="staff@poolsaas.test", password=PASSWORD)


def plan_data(**overrides):
    data = {
        "code": "pro-plus",
        "name": "Pro",
        "max_pools": 20,
        "max_devices": 20,
        "messages_per_month": 5_000_000,
        "history_days": 365,
        "api_requests_per_minute": 1200,
        "max_members": 10,
        "ota_campaigns_per_month": 10,
        "price_cents": 2900,
        "currency": "EUR",
    }
    data.update(overrides)
    return data


def test_add_change_delete_are_recorded_on_the_platform_chain(client, staff):
    client.force_login(staff)
    response = client.post(
        reverse("admin:billing_plan_add"),
        plan_data(),
        HTTP_X_REQUEST_ID="req-admin-0001",
        HTTP_USER_AGENT="pytest-admin",
    )
    assert response.status_code == 302
    plan = Plan.objects.get(code="pro-plus")

    client.post(
        reverse("admin:billing_plan_change", args=[plan.pk]),
        plan_data(max_pools=99, name="Pro Plus"),
    )
    plan.refresh_from_db()
    assert plan.max_pools == 99

    client.post(reverse("admin:billing_plan_delete", args=[plan.pk]), {"post": "yes"})
    assert not Plan.objects.filter(pk=plan.pk).exists()

    events = list(AuditEvent.objects.order_by("seq"))
    assert [e.action for e in events] == [
        "admin.created",
        "admin.changed",
        "admin.deleted",
    ]
    created, changed, deleted = events
    assert all(e.tenant is None and e.chain == "platform" for e in events)
    assert all(e.actor == staff and e.source == "admin" for e in events)
    assert created.request_id == "req-admin-0001"
    assert created.user_agent == "pytest-admin"
    assert changed.data == {"model": "billing.Plan", "fields": ["max_pools", "name"]}
    assert "Pro Plus" not in json.dumps(changed.data)
    assert "99" not in json.dumps(changed.data)
    assert deleted.data == {"model": "billing.Plan"}
    assert deleted.target_label == "Pro Plus"


def test_refused_form_records_nothing(client, staff):
    client.force_login(staff)
    response = client.post(reverse("admin:billing_plan_add"), plan_data(max_pools=-1))
    assert response.status_code == 200
    assert not Plan.objects.filter(code="pro-plus").exists()
    assert not AuditEvent.objects.exists()


def test_failed_delete_leaves_no_event(client, staff, tenant_a):
    # A plan in use is protected; the admin refuses, and no "deleted" is recorded.
    plan = Plan.objects.create(code="basic", name="Basic")
    tenant_a.plan = plan
    tenant_a.save()
    client.force_login(staff)
    response = client.post(
        reverse("admin:billing_plan_delete", args=[plan.pk]), {"post": "yes"}
    )
    assert Plan.objects.filter(pk=plan.pk).exists()
    assert response.status_code == 200
    assert not AuditEvent.objects.filter(action="admin.deleted").exists()
