"""The usage page and /api/v1/usage/: this period's counters of the caller's tenant
only, each against its plan limit; an empty state; every member may look."""

import datetime as dt

import pytest
from django.utils import timezone

from billing.invoices import month_of
from billing.models import UsageCounter
from billing.tests.test_invoices import plan
from poolsaas.api.testing import api_client, assert_error

pytestmark = pytest.mark.django_db


def this_month(day: int, hour: int = 12) -> dt.datetime:
    start = month_of(timezone.now().astimezone(dt.UTC).date()).start
    return dt.datetime.combine(start, dt.time(hour), tzinfo=dt.UTC).replace(day=day)


@pytest.fixture
def counted(tenant_a, tenant_b):
    tenant_a.plan = plan("free")  # 300,000 messages a month
    tenant_a.save(update_fields=["plan"])
    rows = [
        (tenant_a, "messages_in", 150_000, this_month(1)),
        (tenant_a, "messages_in", 90_000, this_month(1, 13)),
        (tenant_a, "messages_in", 30_000, this_month(2)),
        (tenant_a, "api_calls", 420, this_month(2)),
        (tenant_a, "socket_minutes:dashboard", 95, this_month(2)),
        (tenant_a, "ota_bytes", 1_048_576, this_month(2)),
        # Last month's and another tenant's: not on this page.
        (tenant_a, "messages_in", 999_999, this_month(1) - dt.timedelta(days=3)),
        (tenant_b, "messages_in", 77_777, this_month(1)),
    ]
    UsageCounter.objects.bulk_create(
        UsageCounter(tenant=t, kind=k, value=v, minute=m) for t, k, v, m in rows
    )
    return tenant_a


def test_usage_page_shows_each_counter_against_its_limit(login, victor, counted):
    response = login(victor).get("/billing/usage/")
    assert response.status_code == 200
    rows = {row["kind"]: row for row in response.context["rows"]}
    assert rows["messages_in"]["used"] == 270_000
    assert rows["messages_in"]["limit"] == 300_000
    assert rows["messages_in"]["percent"] == 90.0
    assert rows["api_calls"]["used"] == 420 and rows["api_calls"]["limit"] is None
    assert rows["socket_minutes:dashboard"]["used"] == 95
    assert rows["socket_minutes:dashboard"]["label"] == "Dashboard socket minutes"
    assert rows["ota_bytes"]["used"] == 1_048_576
    assert rows["ota_bytes"]["label"] == "OTA bytes"
    chart = response.context["chart"]
    messages = next(s for s in chart["series"] if s["kind"] == "messages_in")
    day1, day2 = (this_month(1).date().isoformat(), this_month(2).date().isoformat())
    assert messages["points"] == [[day1, 240_000], [day2, 270_000]]
    assert messages["limit"] == 300_000
    content = response.content.decode()
    assert "on the Free plan" in content and "usage-empty" not in content
    assert "vendor/chartjs/chart.umd.min.js" in content
    assert "77,777" not in content and "999,999" not in content
    assert 'data-limit="devices"' in content  # the plan's other limits, too


def test_usage_page_empty_state(login, alice):
    response = login(alice).get("/billing/usage/")
    assert response.status_code == 200
    content = response.content.decode()
    assert 'id="usage-empty"' in content and "Nothing used yet" in content
    assert "without a plan (no limits)" in content
    assert "chart.umd.min.js" not in content  # no series, no chart script


def test_usage_page_needs_a_login_and_a_tenant(client, make_user):
    assert client.get("/billing/usage/").status_code == 302
    client.force_login(make_user("loner@nowhere.test"))
    assert client.get("/billing/usage/").status_code == 404


def test_usage_api_gives_the_period_by_kind(victor, carol, counted):
    body = api_client(victor).get("/api/v1/usage/").json()
    start = month_of(timezone.now().astimezone(dt.UTC).date())
    assert body["period_start"] == start.start.isoformat()
    assert body["period_end"] == start.end.isoformat()
    assert body["plan"] == "free"
    kinds = {k["kind"]: k for k in body["kinds"]}
    assert kinds["messages_in"] == {
        "kind": "messages_in",
        "label": "Device messages",
        "used": 270_000,
        "limit": 300_000,
        "percent": 90.0,
    }
    assert kinds["api_calls"]["used"] == 420
    assert kinds["socket_minutes:dashboard"]["used"] == 95
    assert kinds["ota_bytes"] == {
        "kind": "ota_bytes",
        "label": "OTA bytes",
        "used": 1_048_576,
        "limit": None,
        "percent": None,
    }
    limits = {row["limit"]: row for row in body["limits"]}
    assert limits["messages"]["allowed"] == 300_000
    assert limits["devices"] == {
        "limit": "devices",
        "name": "devices",
        "used": 0,
        "allowed": 1,
        "percent": 0,
    }
    other = api_client(carol).get("/api/v1/usage/").json()
    # Another tenant's: its own only (nothing counted shows as 0).
    assert {k["kind"]: k["used"] for k in other["kinds"]} == {
        "messages_in": 77_777,
        "ota_bytes": 0,
        "socket_minutes:dashboard": 0,
    }
    assert_error(api_client().get("/api/v1/usage/"), 401)
