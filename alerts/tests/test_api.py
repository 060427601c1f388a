"""/api/v1/alerts/ and /api/v1/webhooks/: reads with filters, acknowledge and
resolve, the delivery log for admins, webhook subscriptions whose secret is taken
on create and never returned; roles as everywhere in the API."""

import pytest

from alerts.models import Alert, Delivery, WebhookSubscription
from alerts.tests.web_fixtures import WEBHOOK_SECRET, fire
from audit.models import AuditEvent
from poolsaas.api.testing import api_client, assert_error

pytestmark = pytest.mark.django_db

PUBLIC_URL = "https://93.184.215.14/poolsaas-hook?token=abc"


@pytest.fixture(autouse=True)
def _public_only(settings):
    settings.BROKER_ALLOW_PRIVATE_HOSTS = False


@pytest.fixture
def alert_a(pool_a):
    return fire(pool_a)


@pytest.fixture
def webhook_a(adam):
    from alerts.services import webhook_subscribe

    return webhook_subscribe(membership=adam, url=PUBLIC_URL, secret=WEBHOOK_SECRET)


def test_list_and_detail(victor, alert_a, pool_a):
    fire(pool_a, kind="water_above", state="resolved", minutes_ago=60)
    client = api_client(victor)
    body = client.get("/api/v1/alerts/").json()
    assert body["count"] == 2
    first = body["results"][0]
    assert first == {
        "code": str(alert_a.code),
        "pool": str(pool_a.code),
        "pool_name": "Acme Main Pool",
        "kind": "freeze_risk",
        "label": "Freeze risk (cold water, pump off)",
        "state": "firing",
        "value": 2.5,
        "threshold": 4.0,
        "fired_at": first["fired_at"],
        "resolved_at": None,
        "acknowledged_by": None,
        "acknowledged_at": None,
    }
    detail = client.get(f"/api/v1/alerts/{alert_a.code}/")
    assert detail.status_code == 200 and detail.json() == first


def test_filters(victor, alert_a, pool_a, tenant_a):
    from devices.models import Pool

    other = Pool.objects.create(tenant=tenant_a, name="Spa")
    fire(other, kind="water_above")
    fire(pool_a, kind="water_below", state="resolved")
    client = api_client(victor)

    def codes(**params):
        return {
            a["code"] for a in client.get("/api/v1/alerts/", params).json()["results"]
        }

    assert len(codes()) == 3
    assert len(codes(state="firing")) == 2
    assert len(codes(state="resolved")) == 1
    assert len(codes(pool=str(other.code))) == 1
    assert codes(pool=pool_a.code.hex, state="firing") == {str(alert_a.code)}
    assert len(codes(kind="water_above")) == 1
    error = assert_error(client.get("/api/v1/alerts/", {"state": "burning"}), 400)
    assert "state" in error["fields"]
    error = assert_error(client.get("/api/v1/alerts/", {"pool": "nope"}), 400)
    assert "pool" in error["fields"]


def test_list_has_no_query_per_alert(
    victor, pool_a, olivia, django_assert_max_num_queries
):
    from django.utils import timezone

    for i in range(15):
        fire(
            pool_a,
            kind="water_above",
            state="resolved",
            minutes_ago=i + 1,
            acknowledged_by=olivia.user,
            acknowledged_at=timezone.now(),
        )
    client = api_client(victor)
    client.get("/api/v1/alerts/")
    # Authentication, throttling and the page: the same for 1 alert or 15.
    with django_assert_max_num_queries(8):
        body = client.get("/api/v1/alerts/").json()
    assert body["count"] == 15


def test_acknowledge(olivia, alert_a):
    client = api_client(olivia)
    response = client.post(f"/api/v1/alerts/{alert_a.code}/acknowledge/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["acknowledged_by"] == "olivia@acme.test"
    assert body["acknowledged_at"]
    event = AuditEvent.objects.get(action="alert.acknowledged")
    assert event.source == "api"
    # Idempotent: the first acknowledgement stays.
    again = client.post(f"/api/v1/alerts/{alert_a.code}/acknowledge/").json()
    assert again["acknowledged_at"] == body["acknowledged_at"]


def test_resolve_then_acknowledge_is_a_clear_400(olivia, alert_a):
    client = api_client(olivia)
    body = client.post(f"/api/v1/alerts/{alert_a.code}/resolve/").json()
    assert body["state"] == "resolved" and body["resolved_at"]
    error = assert_error(client.post(f"/api/v1/alerts/{alert_a.code}/resolve/"), 400)
    assert "resolved already" in error["message"]
    error = assert_error(
        client.post(f"/api/v1/alerts/{alert_a.code}/acknowledge/"), 400
    )
    assert "nothing to acknowledge" in error["message"]


def test_viewer_may_not_acknowledge_or_resolve(victor, alert_a):
    client = api_client(victor)
    for action in ("acknowledge", "resolve"):
        assert_error(client.post(f"/api/v1/alerts/{alert_a.code}/{action}/"), 403)
    alert_a.refresh_from_db()
    assert alert_a.state == "firing" and alert_a.acknowledged_at is None


def test_delivery_log_is_for_admins(adam, olivia, alert_a, webhook_a):
    Delivery.objects.create(alert=alert_a, event="fired", channel="email", ok=True)
    Delivery.objects.create(
        alert=alert_a,
        webhook=webhook_a,
        event="fired",
        channel="webhook",
        attempt=1,
        status_code=503,
        error="",
    )
    Delivery.objects.create(
        alert=alert_a,
        webhook=webhook_a,
        event="fired",
        channel="webhook",
        attempt=2,
        status_code=200,
        ok=True,
    )
    path = f"/api/v1/alerts/{alert_a.code}/deliveries/"
    body = api_client(adam).get(path).json()
    assert body["count"] == 3
    assert [
        (d["channel"], d["attempt"], d["status_code"]) for d in body["results"]
    ] == [
        ("email", 1, None),
        ("webhook", 1, 503),
        ("webhook", 2, 200),
    ]
    assert body["results"][1]["webhook"] == str(webhook_a.code)
    assert WEBHOOK_SECRET not in str(body)
    assert_error(api_client(olivia).get(path), 403)


def test_webhook_create_never_returns_the_secret(adam):
    client = api_client(adam)
    response = client.post(
        "/api/v1/webhooks/",
        {"url": PUBLIC_URL, "secret": WEBHOOK_SECRET},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"code", "url", "enabled", "created_at"}
    webhook = WebhookSubscription.objects.get(code=body["code"])
    assert webhook.secret == WEBHOOK_SECRET and webhook.tenant == adam.tenant
    for answer in (
        client.get("/api/v1/webhooks/"),
        client.get(f"/api/v1/webhooks/{webhook.code}/"),
        client.patch(
            f"/api/v1/webhooks/{webhook.code}/", {"enabled": False}, format="json"
        ),
    ):
        assert answer.status_code == 200
        assert WEBHOOK_SECRET not in answer.content.decode()
        assert "secret" not in answer.content.decode()
    event = AuditEvent.objects.get(action="webhook.created")
    assert WEBHOOK_SECRET not in str(event.data) and "token" not in str(event.data)


def test_webhook_update_and_delete(adam, webhook_a):
    client = api_client(adam)
    path = f"/api/v1/webhooks/{webhook_a.code}/"
    new_secret = "another-long-secret-123"
    body = client.patch(
        path, {"enabled": False, "secret": new_secret}, format="json"
    ).json()
    assert body["enabled"] is False
    webhook_a.refresh_from_db()
    assert webhook_a.secret == new_secret and not webhook_a.enabled
    assert AuditEvent.objects.get(action="webhook.changed").data["fields"] == [
        "secret",
        "enabled",
    ]
    assert client.delete(path).status_code == 204
    assert not WebhookSubscription.objects.exists()
    assert AuditEvent.objects.filter(action="webhook.deleted").count() == 1


@pytest.mark.parametrize(
    "body,field,message",
    [
        ({"url": PUBLIC_URL}, "secret", "This field is required."),
        ({"url": PUBLIC_URL, "secret": "short"}, "secret", "at least 16"),
        ({"url": "ftp://93.184.215.14/x", "secret": WEBHOOK_SECRET}, "url", "http(s)"),
        (
            {"url": "http://127.0.0.1:8000/hook", "secret": WEBHOOK_SECRET},
            "url",
            "not one on the public internet",
        ),
        (
            {"url": "http://10.1.2.3/hook", "secret": WEBHOOK_SECRET},
            "url",
            "private",
        ),
    ],
)
def test_bad_webhook_input_is_a_clear_400_nothing_created(adam, body, field, message):
    error = assert_error(
        api_client(adam).post("/api/v1/webhooks/", body, format="json"), 400
    )
    assert field in error["fields"], error
    assert message in " ".join(error["fields"][field]), error
    assert not WebhookSubscription.objects.exists()


def test_bad_webhook_update_changes_nothing(adam, webhook_a):
    client = api_client(adam)
    path = f"/api/v1/webhooks/{webhook_a.code}/"
    error = assert_error(
        client.patch(path, {"url": "http://[::1]/x", "enabled": False}, format="json"),
        400,
    )
    assert "url" in error["fields"]
    webhook_a.refresh_from_db()
    assert webhook_a.url == PUBLIC_URL and webhook_a.enabled


def test_webhooks_need_the_admin_role(olivia, victor, webhook_a):
    for member in (olivia, victor):
        client = api_client(member)
        assert_error(client.get("/api/v1/webhooks/"), 403)
        assert_error(client.get(f"/api/v1/webhooks/{webhook_a.code}/"), 403)
        assert_error(
            client.post(
                "/api/v1/webhooks/",
                {"url": PUBLIC_URL, "secret": WEBHOOK_SECRET},
                format="json",
            ),
            403,
        )
        assert_error(client.delete(f"/api/v1/webhooks/{webhook_a.code}/"), 403)
    assert WebhookSubscription.objects.count() == 1


def test_the_tenant_of_a_new_webhook_is_the_tokens(adam, tenant_b):
    response = api_client(adam).post(
        "/api/v1/webhooks/",
        {"url": PUBLIC_URL, "secret": WEBHOOK_SECRET, "tenant": str(tenant_b.code)},
        format="json",
    )
    assert response.status_code == 201
    assert WebhookSubscription.objects.get().tenant == adam.tenant


def test_needs_a_token(alert_a):
    assert_error(api_client().get("/api/v1/alerts/"), 401)
    assert Alert.objects.count() == 1


def test_rules_crud(adam, victor, pool_a):
    client = api_client(adam)
    default = client.post(
        "/api/v1/alert-rules/",
        {"kind": "freeze_risk", "threshold": 4, "renotify_minutes": 60},
        format="json",
    )
    assert default.status_code == 201, default.content
    assert default.json()["pool"] is None
    override = client.post(
        "/api/v1/alert-rules/",
        {"kind": "freeze_risk", "pool": str(pool_a.code), "threshold": 6},
        format="json",
    ).json()
    assert override["pool"] == str(pool_a.code)
    listed = api_client(victor).get("/api/v1/alert-rules/").json()["results"]
    assert [r["pool"] for r in listed] == [None, str(pool_a.code)]
    only_defaults = client.get("/api/v1/alert-rules/", {"default": "true"}).json()
    assert only_defaults["count"] == 1
    path = f"/api/v1/alert-rules/{override['code']}/"
    changed = client.patch(path, {"enabled": False}, format="json").json()
    assert changed["enabled"] is False and changed["threshold"] == 6
    assert client.delete(path).status_code == 204
    assert AuditEvent.objects.filter(action__startswith="alert_rule.").count() == 4


def test_rule_bad_input_and_roles(adam, olivia, pool_a):
    from alerts.models import AlertRule

    client = api_client(adam)
    error = assert_error(
        client.post(
            "/api/v1/alert-rules/",
            {"kind": "device_offline", "threshold": 0},
            format="json",
        ),
        400,
    )
    assert "minutes offline" in " ".join(error["fields"]["threshold"])
    client.post(
        "/api/v1/alert-rules/", {"kind": "water_above", "threshold": 30}, format="json"
    )
    error = assert_error(
        client.post(
            "/api/v1/alert-rules/",
            {"kind": "water_above", "threshold": 31},
            format="json",
        ),
        400,
    )
    assert "default rule of this kind already" in " ".join(error["fields"]["kind"])
    assert_error(
        api_client(olivia).post(
            "/api/v1/alert-rules/",
            {"kind": "water_below", "threshold": 10},
            format="json",
        ),
        403,
    )
    assert AlertRule.objects.count() == 1
