"""Staff admin of the alerts app: rules editable (checked like the members' pages,
audited), alerts and deliveries read-only, the webhook secret write-only and never
displayed, tenant filters on every list."""

import pytest
from django.urls import reverse

from alerts.models import AlertRule, Delivery, WebhookSubscription
from alerts.tests.web_fixtures import WEBHOOK_SECRET, fire, make_foreign
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(
        make_user("staff@poolsaas.test", is_staff=True, is_superuser=True)
    )
    return client


@pytest.fixture
def foreign(carol, pool_b):
    return make_foreign(pool_b)


@pytest.mark.parametrize(
    "model", ["alertrule", "alert", "webhooksubscription", "delivery"]
)
def test_lists_open_with_a_tenant_filter(staff_client, foreign, model):
    response = staff_client.get(reverse(f"admin:alerts_{model}_changelist"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Globex Residence" in html  # the tenant filter and the rows
    assert WEBHOOK_SECRET not in html
    tenant = foreign["pool"].tenant
    param = "alert__tenant__id__exact" if model == "delivery" else "tenant__id__exact"
    filtered = staff_client.get(
        reverse(f"admin:alerts_{model}_changelist"), {param: tenant.pk}
    )
    # An unknown filter would redirect to ?e=1.
    assert filtered.status_code == 200


def test_webhook_secret_is_never_displayed_and_write_only(staff_client, foreign):
    webhook = foreign["webhook"]
    url = reverse("admin:alerts_webhooksubscription_change", args=[webhook.pk])
    html = staff_client.get(url).content.decode()
    assert WEBHOOK_SECRET not in html
    assert "Currently: ••• set" in html
    assert 'name="new_secret"' in html and 'name="secret"' not in html
    changelist = staff_client.get(
        reverse("admin:alerts_webhooksubscription_changelist")
    ).content.decode()
    assert "••• set" in changelist and WEBHOOK_SECRET not in changelist
    data = {
        "tenant": webhook.tenant_id,
        "url": "https://93.184.215.14/other",
        "enabled": "on",
        "new_secret": "",
        "_save": "Save",
    }
    response = staff_client.post(url, data)
    assert response.status_code == 302, response.content
    webhook.refresh_from_db()
    assert webhook.url == "https://93.184.215.14/other"
    assert webhook.secret == WEBHOOK_SECRET  # blank keeps it
    staff_client.post(url, {**data, "new_secret": "staff-typed-secret-77"})
    webhook.refresh_from_db()
    assert webhook.secret == "staff-typed-secret-77"
    events = AuditEvent.objects.filter(
        action="admin.changed", target_code=str(webhook.code)
    )
    assert events.count() == 2
    assert "staff-typed-secret-77" not in str(list(events.values("data")))


def test_webhook_admin_refuses_an_internal_url(staff_client, tenant_a, settings):
    settings.BROKER_ALLOW_PRIVATE_HOSTS = False
    response = staff_client.post(
        reverse("admin:alerts_webhooksubscription_add"),
        {
            "tenant": tenant_a.pk,
            "url": "http://127.0.0.1:8000/hook",
            "enabled": "on",
            "new_secret": "a-long-enough-secret",
        },
    )
    assert response.status_code == 200
    assert "public internet" in response.content.decode()
    assert not WebhookSubscription.objects.exists()


def test_alerts_and_deliveries_are_read_only(staff_client, foreign):
    alert, delivery = foreign["alert"], foreign["delivery"]
    for model, obj in (("alert", alert), ("delivery", delivery)):
        assert staff_client.get(reverse(f"admin:alerts_{model}_add")).status_code == 403
        change = staff_client.get(
            reverse(f"admin:alerts_{model}_change", args=[obj.pk])
        )
        assert change.status_code == 200
        assert 'name="_save"' not in change.content.decode()
        assert (
            staff_client.post(
                reverse(f"admin:alerts_{model}_delete", args=[obj.pk]), {"post": "yes"}
            ).status_code
            == 403
        )
    assert Delivery.objects.filter(pk=delivery.pk).exists()
    html = staff_client.get(
        reverse("admin:alerts_alert_change", args=[alert.pk])
    ).content.decode()
    assert WEBHOOK_SECRET not in html


def test_rule_admin_checks_like_the_pages_and_is_audited(
    staff_client, tenant_a, pool_b
):
    add = reverse("admin:alerts_alertrule_add")
    base = {
        "tenant": tenant_a.pk,
        "kind": "water_above",
        "enabled": "on",
        "threshold": "99",
        "hysteresis": "1",
        "renotify_minutes": "0",
    }
    response = staff_client.post(add, base)
    assert response.status_code == 200
    assert "from -10 to 50" in response.content.decode()
    response = staff_client.post(add, {**base, "threshold": "30", "pool": pool_b.pk})
    assert "This pool belongs to another tenant." in response.content.decode()
    assert not AlertRule.objects.exists()
    response = staff_client.post(add, {**base, "threshold": "30"})
    assert response.status_code == 302
    rule = AlertRule.objects.get()
    assert AuditEvent.objects.filter(
        action="admin.created", target_code=str(rule.code)
    ).exists()


def test_alert_admin_lists_who_acknowledged(staff_client, pool_a, olivia):
    from django.utils import timezone

    fire(pool_a, acknowledged_by=olivia.user, acknowledged_at=timezone.now())
    html = staff_client.get(reverse("admin:alerts_alert_changelist")).content.decode()
    assert "olivia@acme.test" in html
