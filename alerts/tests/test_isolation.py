"""Another tenant's alerts, rules, webhooks and deliveries: every page and API
endpoint answers their codes exactly as it answers made-up ones (404, the same
bytes), list filters stay inside the tenant, services refuse them with "not
found", and nothing of tenant B changes."""

import uuid

import pytest
from django.http import Http404

from alerts import services
from alerts.models import Alert, AlertRule, Delivery, WebhookSubscription
from alerts.tests.web_fixtures import WEBHOOK_SECRET, fire, make_foreign
from poolsaas.api.testing import api_client, assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture
def foreign(carol, pool_b):
    return make_foreign(pool_b)


def _codes(foreign) -> dict:
    return {
        "alert": foreign["alert"].code,
        "rule": foreign["rule"].code,
        "webhook": foreign["webhook"].code,
        "pool": foreign["pool"].code,
    }


PAGES = [
    ("get", "/alerts/{alert}/"),
    ("get", "/pools/{pool}/alerts/"),
    ("get", "/pools/{pool}/alerts/rules/"),
    ("post", "/pools/{pool}/alerts/rules/"),
    ("post", "/alerts/{alert}/acknowledge/"),
    ("post", "/alerts/{alert}/resolve/"),
]


@pytest.mark.parametrize(("method", "path"), PAGES)
def test_pages_answer_foreign_exactly_like_made_up(login, alice, foreign, method, path):
    client = login(alice)
    data = {
        "kind": "water_above",
        "action": "delete",
        "water_above-threshold": "20",
    }
    kwargs = {"data": data} if method == "post" else {}
    got = getattr(client, method)(path.format(**_codes(foreign)), **kwargs)
    made_up = getattr(client, method)(
        path.format(**{k: uuid.uuid4() for k in _codes(foreign)}), **kwargs
    )
    malformed = getattr(client, method)(
        path.format(**dict.fromkeys(_codes(foreign), "x")), **kwargs
    )
    assert got.status_code == made_up.status_code == malformed.status_code == 404
    assert got.content == made_up.content == malformed.content
    _unchanged(foreign)


API = [
    ("get", "/api/v1/alerts/{alert}/", None),
    ("post", "/api/v1/alerts/{alert}/acknowledge/", None),
    ("post", "/api/v1/alerts/{alert}/resolve/", None),
    ("get", "/api/v1/alerts/{alert}/deliveries/", None),
    ("get", "/api/v1/alert-rules/{rule}/", None),
    ("patch", "/api/v1/alert-rules/{rule}/", {"threshold": 20}),
    ("delete", "/api/v1/alert-rules/{rule}/", None),
    ("get", "/api/v1/webhooks/{webhook}/", None),
    ("patch", "/api/v1/webhooks/{webhook}/", {"enabled": False}),
    ("delete", "/api/v1/webhooks/{webhook}/", None),
]


@pytest.mark.parametrize(("method", "path", "body"), API)
def test_api_answers_foreign_exactly_like_made_up(alice, foreign, method, path, body):
    client = api_client(alice)

    def call(codes):
        kwargs = {"format": "json"} if body is not None else {}
        return getattr(client, method)(path.format(**codes), body, **kwargs)

    got = call(_codes(foreign))
    made_up = call({k: uuid.uuid4() for k in _codes(foreign)})
    malformed = call(dict.fromkeys(_codes(foreign), "x"))
    assert_error(got, 404, "not_found")
    assert got.content == made_up.content == malformed.content
    _unchanged(foreign)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/alerts/", {}),
        ("/api/v1/alerts/", {"pool": "{pool}"}),
        ("/api/v1/alerts/", {"ordering": "tenant"}),
        ("/api/v1/alert-rules/", {}),
        ("/api/v1/alert-rules/", {"pool": "{pool}"}),
        ("/api/v1/webhooks/", {}),
    ],
)
def test_lists_and_filters_stay_in_the_tenant(alice, pool_a, foreign, path, params):
    fire(pool_a)
    params = {k: v.format(**_codes(foreign)) for k, v in params.items()}
    response = api_client(alice).get(path, params)
    assert response.status_code == 200, response.content
    text = response.content.decode()
    for code in _codes(foreign).values():
        assert code.hex not in text and str(code) not in text
    assert "Globex" not in text and WEBHOOK_SECRET not in text


def test_overview_and_alert_pages_show_only_the_tenants_alerts(
    login, alice, pool_a, foreign
):
    mine = fire(pool_a)
    client = login(alice)
    for path in ("/pools/", "/alerts/", "/alerts/?state=firing"):
        html = client.get(path).content.decode()
        assert mine.code.hex in html
        assert foreign["alert"].code.hex not in html and "Globex" not in html


def test_a_new_rule_on_a_foreign_pool_reads_like_a_made_up_pool(adam, foreign):
    client = api_client(adam)

    def add(pool):
        return client.post(
            "/api/v1/alert-rules/",
            {"kind": "water_below", "pool": str(pool), "threshold": 10},
            format="json",
        )

    got, made_up = add(foreign["pool"].code), add(uuid.uuid4())
    assert_error(got, 400)
    assert got.content == made_up.content
    assert not AlertRule.objects.filter(tenant=adam.tenant).exists()


SERVICES = {
    "alert_acknowledge_by_member": lambda me, f: services.alert_acknowledge_by_member(
        membership=me, alert=f["alert"]
    ),
    "alert_resolve_by_member": lambda me, f: services.alert_resolve_by_member(
        membership=me, alert=f["alert"]
    ),
    "alert_rule_update": lambda me, f: services.alert_rule_update(
        membership=me,
        rule=f["rule"],
        threshold=20,
        hysteresis=1,
        renotify_minutes=0,
        enabled=True,
    ),
    "alert_rule_delete": lambda me, f: services.alert_rule_delete(
        membership=me, rule=f["rule"]
    ),
    "alert_rule_create on a foreign pool": lambda me, f: services.alert_rule_create(
        membership=me, kind="water_below", threshold=10, pool=f["pool"]
    ),
    "webhook_update": lambda me, f: services.webhook_update(
        membership=me, webhook=f["webhook"], enabled=False
    ),
    "webhook_delete": lambda me, f: services.webhook_delete(
        membership=me, webhook=f["webhook"]
    ),
}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_services_refuse_foreign_objects_as_not_found(alice, foreign, name):
    with pytest.raises(Http404):
        SERVICES[name](alice, foreign)
    _unchanged(foreign)


def _unchanged(foreign):
    alert = Alert.objects.get(pk=foreign["alert"].pk)
    assert alert.state == "firing" and alert.acknowledged_at is None
    assert AlertRule.objects.get(pk=foreign["rule"].pk).threshold == 31
    assert AlertRule.objects.filter(pk=foreign["default"].pk).exists()
    assert WebhookSubscription.objects.get(pk=foreign["webhook"].pk).enabled
    assert Delivery.objects.filter(pk=foreign["delivery"].pk).exists()
