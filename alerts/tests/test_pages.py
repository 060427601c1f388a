"""The alerts pages: firing alerts on the overview and the pool page, acknowledge
and resolve (who, when, audited), the history per pool (paginated), the rules pages
(tenant defaults, a pool's overrides); roles as on the devices pages."""

import uuid

import pytest
from django.urls import reverse
from django.utils import timezone

from alerts.models import AlertRule, Kind
from alerts.tests.web_fixtures import fire
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def alert_a(pool_a):
    return fire(pool_a)


def test_firing_alert_on_the_overview_and_the_pool_page(login, victor, alert_a):
    client = login(victor)
    overview = client.get("/pools/").content.decode()
    assert 'id="alerts-panel"' in overview
    assert f'data-alert="{alert_a.code.hex}"' in overview
    assert "Freeze risk" in overview and "Acme Main Pool" in overview
    page = client.get(f"/pools/{alert_a.pool.code}/").content.decode()
    assert f'data-alert="{alert_a.code.hex}"' in page
    assert "2.5 °C" in page and "Not acknowledged" in page
    # A viewer reads but gets no buttons.
    assert 'data-action="acknowledge"' not in page
    assert 'data-action="resolve"' not in page


def test_the_pool_snapshot_carries_the_firing_alerts(login, victor, alert_a, pool_a):
    from devices.selectors import pool_snapshot

    snap = pool_snapshot(membership=victor, pool=pool_a)
    assert [a["code"] for a in snap["alerts"]] == [alert_a.code.hex]
    fire(pool_a, kind=Kind.WATER_ABOVE, state="resolved")
    snap = pool_snapshot(membership=victor, pool=pool_a)
    assert len(snap["alerts"]) == 1


def test_empty_states(login, victor, pool_a):
    client = login(victor)
    page = client.get(f"/pools/{pool_a.code}/").content.decode()
    assert "Nothing is firing." in page
    history = client.get(f"/pools/{pool_a.code}/alerts/").content.decode()
    assert "No alerts yet" in history
    assert "No alerts yet" in client.get("/alerts/").content.decode()


def test_operator_acknowledges_who_and_when_audited(login, olivia, alert_a):
    client = login(olivia)
    page = client.get(f"/pools/{alert_a.pool.code}/").content.decode()
    assert 'data-action="acknowledge"' in page
    response = client.post(
        f"/alerts/{alert_a.code}/acknowledge/",
        {"next": f"/pools/{alert_a.pool.code}/"},
    )
    assert response.status_code == 302
    assert response["Location"] == f"/pools/{alert_a.pool.code}/"
    alert_a.refresh_from_db()
    assert alert_a.acknowledged_by == olivia.user
    assert alert_a.acknowledged_at is not None
    event = AuditEvent.objects.get(action="alert.acknowledged")
    assert event.actor == olivia.user and event.target_code == str(alert_a.code)
    page = client.get(f"/pools/{alert_a.pool.code}/").content.decode()
    assert "Acknowledged by olivia@acme.test" in page
    # A second acknowledgement keeps the first one's name and time.
    first = alert_a.acknowledged_at
    client.post(f"/alerts/{alert_a.code}/acknowledge/")
    alert_a.refresh_from_db()
    assert alert_a.acknowledged_at == first
    assert AuditEvent.objects.filter(action="alert.acknowledged").count() == 1


def test_acknowledge_and_resolve_broadcast_after_commit(
    login, olivia, alert_a, django_capture_on_commit_callbacks, monkeypatch
):
    from poolsaas.live import groups

    sent = []
    monkeypatch.setattr(groups, "broadcast_now", lambda g, m: sent.append((g, m)))
    client = login(olivia)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/alerts/{alert_a.code}/acknowledge/")
    pool_hex = alert_a.pool.code.hex
    assert [g for g, _ in sent] == [
        f"pool.{pool_hex}",
        f"tenant.{alert_a.tenant.code.hex}",
    ]
    message = sent[0][1]
    assert message["type"] == "pool.alert"
    assert message["alert"]["acknowledged_by"] == "olivia@acme.test"
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/alerts/{alert_a.code}/resolve/")
    assert sent[0][1]["alert"]["state"] == "resolved"
    assert sent[1][1]["type"] == "tenant.alert"


def test_resolve_by_hand(login, olivia, alert_a):
    client = login(olivia)
    response = client.post(f"/alerts/{alert_a.code}/resolve/")
    assert response.status_code == 302
    alert_a.refresh_from_db()
    assert alert_a.state == "resolved" and alert_a.resolved_at
    assert AuditEvent.objects.filter(action="alert.resolved").count() == 1
    # Again: a clear message, nothing changed.
    response = client.post(f"/alerts/{alert_a.code}/resolve/", follow=True)
    assert "resolved already" in response.content.decode()
    response = client.post(f"/alerts/{alert_a.code}/acknowledge/", follow=True)
    assert "nothing to acknowledge" in response.content.decode()
    alert_a.refresh_from_db()
    assert alert_a.acknowledged_at is None


def test_viewer_may_not_acknowledge_or_resolve(login, victor, alert_a):
    client = login(victor)
    for action in ("acknowledge", "resolve"):
        response = client.post(f"/alerts/{alert_a.code}/{action}/")
        assert response.status_code == 403
        assert "operator role" in response.content.decode()
    alert_a.refresh_from_db()
    assert alert_a.state == "firing" and alert_a.acknowledged_at is None


def test_next_may_not_leave_the_site(login, olivia, alert_a):
    response = login(olivia).post(
        f"/alerts/{alert_a.code}/acknowledge/", {"next": "https://evil.test/"}
    )
    assert response["Location"] == f"/pools/{alert_a.pool.code}/alerts/"


def test_get_is_not_allowed_on_actions(login, olivia, alert_a):
    assert login(olivia).get(f"/alerts/{alert_a.code}/acknowledge/").status_code == 405


def test_history_is_paginated_and_filtered(login, victor, pool_a):
    for i in range(30):
        fire(pool_a, kind=Kind.WATER_ABOVE, minutes_ago=100 + i, state="resolved")
    fire(pool_a)
    client = login(victor)
    first = client.get(f"/pools/{pool_a.code}/alerts/").content.decode()
    assert first.count("<tr data-alert=") == 25
    assert "Page 1 of 2" in first
    second = client.get(f"/pools/{pool_a.code}/alerts/?page=2").content.decode()
    assert second.count("<tr data-alert=") == 6
    firing = client.get(f"/pools/{pool_a.code}/alerts/?state=firing").content.decode()
    assert firing.count("<tr data-alert=") == 1
    # An unknown state is "all", a page past the end the last page.
    assert (
        client.get(f"/pools/{pool_a.code}/alerts/?state=x&page=99").status_code == 200
    )


def test_history_lists_without_a_query_per_alert(
    login, victor, pool_a, django_assert_max_num_queries, olivia
):
    for i in range(10):
        fire(
            pool_a,
            kind=Kind.WATER_ABOVE,
            minutes_ago=i + 10,
            state="resolved",
            acknowledged_by=olivia.user,
            acknowledged_at=timezone.now(),
        )
    client = login(victor)
    client.get("/alerts/")  # warm the session
    with django_assert_max_num_queries(12):
        page = client.get("/alerts/")
    assert page.content.decode().count("olivia@acme.test") == 10


def test_rules_page_shows_defaults_and_overrides(login, victor, pool_a, tenant_a):
    AlertRule.objects.create(tenant=tenant_a, kind=Kind.FREEZE_RISK, threshold=4)
    AlertRule.objects.create(
        tenant=tenant_a, pool=pool_a, kind=Kind.WATER_ABOVE, threshold=31
    )
    client = login(victor)
    page = client.get(f"/pools/{pool_a.code}/alerts/rules/").content.decode()
    assert "Default: 4 °C" in page
    assert "This pool's own:</strong> 31 °C" in page
    assert "changing them needs the admin role" in page
    assert '<form method="post" class="rule-form"' not in page
    defaults = client.get("/alerts/rules/").content.decode()
    assert "4 °C" in defaults and "No default" in defaults


def test_admin_sets_and_removes_a_pool_override(login, adam, pool_a, tenant_a):
    AlertRule.objects.create(tenant=tenant_a, kind=Kind.FREEZE_RISK, threshold=4)
    client = login(adam)
    url = f"/pools/{pool_a.code}/alerts/rules/"
    form = client.get(url).content.decode()
    assert 'value="4.0"' in form  # the default prefills the override form
    response = client.post(
        url,
        {
            "kind": "freeze_risk",
            "action": "save",
            "freeze_risk-threshold": "6",
            "freeze_risk-hysteresis": "0.5",
            "freeze_risk-renotify_minutes": "60",
            "freeze_risk-enabled": "on",
        },
    )
    assert response.status_code == 302
    override = AlertRule.objects.get(pool=pool_a, kind="freeze_risk")
    assert (override.threshold, override.hysteresis, override.renotify_minutes) == (
        6,
        0.5,
        60,
    )
    assert AuditEvent.objects.filter(action="alert_rule.created").count() == 1
    # Saved again: the same override changes.
    client.post(
        url,
        {
            "kind": "freeze_risk",
            "freeze_risk-threshold": "7",
            "freeze_risk-hysteresis": "0.5",
            "freeze_risk-renotify_minutes": "60",
        },
    )
    override.refresh_from_db()
    assert override.threshold == 7 and not override.enabled
    assert AlertRule.objects.filter(pool=pool_a).count() == 1
    response = client.post(url, {"kind": "freeze_risk", "action": "delete"})
    assert response.status_code == 302
    assert not AlertRule.objects.filter(pool=pool_a).exists()
    assert AlertRule.objects.filter(pool__isnull=True).count() == 1


def test_admin_edits_a_tenant_default(login, adam, tenant_a):
    client = login(adam)
    response = client.post(
        "/alerts/rules/",
        {
            "kind": "device_offline",
            "device_offline-threshold": "30",
            "device_offline-hysteresis": "0",
            "device_offline-renotify_minutes": "0",
            "device_offline-enabled": "on",
        },
    )
    assert response.status_code == 302
    rule = AlertRule.objects.get(tenant=tenant_a, pool__isnull=True)
    assert rule.kind == "device_offline" and rule.threshold == 30


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("threshold", "80", "Enter a water temperature in °C from -10 to 50."),
        ("threshold", "nan", "Enter a number."),
        ("threshold", "", "This field is required."),
        ("hysteresis", "-1", "Enter a hysteresis from 0 to 10."),
        ("renotify_minutes", "99999", "Enter whole minutes from 0 (never) to 10080."),
    ],
)
def test_bad_rule_input_is_refused_nothing_changed(
    login, adam, pool_a, field, value, message
):
    data = {
        "kind": "water_above",
        "water_above-threshold": "30",
        "water_above-hysteresis": "1",
        "water_above-renotify_minutes": "0",
        "water_above-enabled": "on",
    }
    data[f"water_above-{field}"] = value
    response = login(adam).post(f"/pools/{pool_a.code}/alerts/rules/", data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not AlertRule.objects.exists()


def test_unknown_kind_is_refused(login, adam, pool_a):
    response = login(adam).post(f"/pools/{pool_a.code}/alerts/rules/", {"kind": "x"})
    assert response.status_code == 400
    assert "Choose a rule to change." in response.content.decode()


def test_operator_may_not_change_rules(login, olivia, pool_a):
    response = login(olivia).post(
        f"/pools/{pool_a.code}/alerts/rules/",
        {"kind": "water_above", "water_above-threshold": "30"},
    )
    assert response.status_code == 403
    assert "admin role" in response.content.decode()
    assert not AlertRule.objects.exists()


def test_pages_need_a_login(client, alert_a):
    for path in ("/alerts/", f"/pools/{alert_a.pool.code}/alerts/", "/alerts/rules/"):
        response = client.get(path)
        assert response.status_code == 302 and "/login/" in response["Location"]


def test_nav_links(login, victor, pool_a):
    page = login(victor).get(f"/pools/{pool_a.code}/").content.decode()
    assert f'href="{reverse("alerts")}"' in page
    assert f'href="/pools/{pool_a.code}/alerts/"' in page


def test_made_up_alert_is_404(login, olivia):
    response = login(olivia).post(f"/alerts/{uuid.uuid4()}/acknowledge/")
    assert response.status_code == 404


def test_alert_page_shows_the_delivery_log_to_admins_only(
    login, adam, olivia, alert_a, settings
):
    from alerts.models import Delivery, WebhookSubscription

    webhook = WebhookSubscription.objects.create(
        tenant=alert_a.tenant, url="https://93.184.215.14/hook", secret="s" * 20
    )
    Delivery.objects.create(
        alert=alert_a,
        event="fired",
        channel="email",
        recipient="adam@acme.test",
        status="sent",
        ok=True,
    )
    Delivery.objects.create(
        alert=alert_a,
        webhook=webhook,
        event="fired",
        channel="webhook",
        attempt=2,
        status="failed",
        status_code=503,
        error="Service Unavailable",
    )
    html = login(adam).get(f"/alerts/{alert_a.code}/").content.decode()
    assert "Delivery log" in html
    assert "adam@acme.test" in html and "HTTP 503" in html
    assert "Service Unavailable" in html and "s" * 20 not in html
    html = login(olivia).get(f"/alerts/{alert_a.code}/").content.decode()
    assert "Freeze risk" in html and "not yet" in html
    assert "Delivery log" not in html and "adam@acme.test" not in html
    assert 'data-action="acknowledge"' in html


def test_alert_page_empty_log(login, adam, alert_a):
    html = login(adam).get(f"/alerts/{alert_a.code}/").content.decode()
    assert "Nobody has been told yet" in html
