"""Tenant isolation across the whole API, seen by an attacker holding a valid token of
tenant A: every object endpoint answers another tenant's codes exactly as it answers
made-up ones, filters and ordering stay inside the tenant, payloads cannot point at
another tenant's objects, and no secret comes back from any endpoint."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from devices.models import Broker, Command, Device, Pool
from poolsaas.api.testing import api_client, assert_error

DEVICE_SECRET = "device-secret-Pw9q"
BROKER_USER = "broker-user-Uq4z"
BROKER_SECRET = "broker-secret-Kx2m"


@pytest.fixture
def tenant_b_objects(carol, pool_b, device_b):
    """One of everything in tenant B, for alice (owner of A) to try."""
    from devices.services.brokers import broker_create
    from tenants.services import invitation_create

    broker = broker_create(
        membership=carol,
        name="Globex",
        host="127.0.0.1",
        port=1883,
        username=BROKER_USER,
        password=BROKER_SECRET,
    )
    command = Command.objects.create(
        tenant=pool_b.tenant,
        pool=pool_b,
        device=device_b,
        op="pump",
        value="ON",
        expires_at=timezone.now() + timedelta(seconds=30),
    )
    invitation, _ = invitation_create(
        membership=carol, email="new@globex.test", role="viewer"
    )
    return {
        "pool": pool_b.code,
        "device": device_b.code,
        "broker": broker.code,
        "command": command.code,
        "member": carol.code,
        "invitation": invitation.code,
    }


# (method, path, body): every endpoint that names an object of the caller's tenant.
OBJECT_ENDPOINTS = [
    ("get", "/api/v1/pools/{pool}/", None),
    ("patch", "/api/v1/pools/{pool}/", {"name": "Taken"}),
    ("get", "/api/v1/pools/{pool}/state/", None),
    ("get", "/api/v1/pools/{pool}/telemetry/", None),
    ("get", "/api/v1/pools/{pool}/commands/", None),
    ("post", "/api/v1/pools/{pool}/commands/", {"op": "pump", "value": "ON"}),
    ("get", "/api/v1/pools/{pool}/events/", None),
    ("get", "/api/v1/pools/{pool}/programs/", None),
    ("put", "/api/v1/pools/{pool}/programs/", {"programs": []}),
    ("get", "/api/v1/devices/{device}/", None),
    ("get", "/api/v1/devices/{device}/state/", None),
    ("delete", "/api/v1/devices/{device}/", None),
    ("get", "/api/v1/brokers/{broker}/", None),
    ("put", "/api/v1/brokers/{broker}/", {"name": "x", "host": "h"}),
    ("delete", "/api/v1/brokers/{broker}/", None),
    ("get", "/api/v1/commands/{command}/", None),
    ("get", "/api/v1/members/{member}/", None),
    ("patch", "/api/v1/members/{member}/", {"role": "viewer"}),
    ("delete", "/api/v1/members/{member}/", None),
    ("delete", "/api/v1/invitations/{invitation}/", None),
]


def _call(client, method, path, body):
    kwargs = {"format": "json", "HTTP_IF_MATCH": "*"} if body is not None else {}
    return getattr(client, method)(path, body, **kwargs)


@pytest.mark.parametrize(("method", "path", "body"), OBJECT_ENDPOINTS)
def test_foreign_code_answers_exactly_like_a_made_up_one(
    alice, tenant_b_objects, method, path, body
):
    client = api_client(alice)
    foreign = _call(client, method, path.format(**tenant_b_objects), body)
    made_up = _call(
        client,
        method,
        path.format(**{k: uuid.uuid4() for k in tenant_b_objects}),
        body,
    )
    malformed = _call(
        client, method, path.format(**dict.fromkeys(tenant_b_objects, "x")), body
    )
    assert_error(foreign, 404, "not_found")
    assert foreign.json() == made_up.json() == malformed.json()
    assert foreign.status_code == made_up.status_code == malformed.status_code
    # Nothing in tenant B changed.
    assert Pool.objects.get(code=tenant_b_objects["pool"]).name == "Globex Pool"
    assert Device.objects.filter(code=tenant_b_objects["device"]).exists()
    assert Broker.objects.get(code=tenant_b_objects["broker"]).name == "Globex"
    assert Command.objects.filter(tenant__slug="globex").count() == 1


def test_payload_references_to_another_tenant_answer_like_made_up_ones(
    adam, pool_a, tenant_b_objects
):
    """A device created on B's pool or with B's broker: a field error that reads the
    same as for a code that exists nowhere, and nothing is created."""
    client = api_client(adam)

    def add(**codes):
        return client.post(
            "/api/v1/devices/",
            {"pool": str(pool_a.code), "device_id": "ESP-D00D00", **codes},
            format="json",
        )

    for field in ("pool", "broker"):
        foreign = add(**{field: str(tenant_b_objects[field])})
        made_up = add(**{field: str(uuid.uuid4())})
        error = assert_error(foreign, 400, "invalid")
        assert list(error["fields"]) == [field]
        assert foreign.json() == made_up.json()
    assert not Device.objects.filter(device_id="ESP-D00D00").exists()


def test_tenant_of_new_rows_is_the_tokens_never_the_payloads(
    adam, tenant_b, platform_broker
):
    client = api_client(adam)
    response = client.post(
        "/api/v1/pools/",
        {"name": "Mine", "tenant": str(tenant_b.code), "tenant_id": tenant_b.pk},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert Pool.objects.get(code=response.json()["code"]).tenant == adam.tenant
    response = client.post(
        "/api/v1/brokers/",
        {"name": "B", "host": "127.0.0.1", "tenant": str(tenant_b.code)},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert Broker.objects.get(code=response.json()["code"]).tenant == adam.tenant


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/devices/", {"pool": "{pool}"}),
        ("/api/v1/pools/", {"q": "Globex"}),
        ("/api/v1/pools/", {"ordering": "tenant__name"}),
        ("/api/v1/devices/", {"ordering": "-tenant__slug"}),
        ("/api/v1/devices/", {"ordering": "mqtt_password"}),
        ("/api/v1/brokers/", {"ordering": "password"}),
        ("/api/v1/brokers/", {"ordering": "-username"}),
        ("/api/v1/members/", {"ordering": "tenant"}),
        ("/api/v1/audit-events/", {"actor": "carol"}),
        ("/api/v1/invitations/", {}),
    ],
)
def test_filters_and_ordering_never_reach_another_tenant(
    alice, device_a, tenant_b_objects, path, params
):
    params = {k: v.format(**tenant_b_objects) for k, v in params.items()}
    response = api_client(alice).get(path, params)
    assert response.status_code == 200, response.content
    text = response.content.decode()
    for code in tenant_b_objects.values():
        assert code.hex not in text and str(code) not in text
    assert "Globex" not in text and "carol@" not in text


def test_ordering_by_a_secret_cannot_be_used_as_an_oracle(adam, alice):
    """Ordering on a field outside ordering_fields is ignored: the order of the list
    is the default one whatever the secret values are."""
    from devices.services.brokers import broker_create

    for name, password in (("a", "zzz"), ("b", "aaa"), ("c", "mmm")):
        broker_create(
            membership=adam, name=name, host="127.0.0.1", port=1883, password=password
        )
    client = api_client(alice)
    names = [b["name"] for b in client.get("/api/v1/brokers/").json()["results"]]
    for ordering in ("password", "-password", "username", "secrets_changed_at"):
        got = client.get("/api/v1/brokers/", {"ordering": ordering}).json()
        assert [b["name"] for b in got["results"]] == names, ordering


def test_no_secret_in_any_api_answer(adam, pool_a, device_a, carol, tenant_b_objects):
    """Everything an admin can read, with secrets stored for the device, the tenant's
    broker and the platform broker: none of them appears anywhere."""
    from devices.services.brokers import broker_create

    device_a.mqtt_password = DEVICE_SECRET
    device_a.save()
    platform = device_a.broker
    platform.username = "platform-user-Rr5"
    platform.password = "platform-secret-Tt6"
    platform.save()
    broker = broker_create(
        membership=adam,
        name="Acme",
        host="127.0.0.1",
        port=1883,
        username=BROKER_USER + "A",
        password=BROKER_SECRET + "A",
    )
    client = api_client(adam)
    secrets = [
        DEVICE_SECRET,
        "platform-user-Rr5",
        "platform-secret-Tt6",
        BROKER_USER,
        BROKER_SECRET,
    ]
    paths = [
        "/api/v1/tenant/",
        "/api/v1/members/",
        "/api/v1/invitations/",
        "/api/v1/pools/",
        f"/api/v1/pools/{pool_a.code}/",
        f"/api/v1/pools/{pool_a.code}/state/",
        f"/api/v1/pools/{pool_a.code}/commands/",
        f"/api/v1/pools/{pool_a.code}/events/",
        f"/api/v1/pools/{pool_a.code}/programs/",
        "/api/v1/devices/",
        f"/api/v1/devices/{device_a.code}/",
        f"/api/v1/devices/{device_a.code}/state/",
        "/api/v1/brokers/",
        f"/api/v1/brokers/{broker.code}/",
        "/api/v1/audit-events/",
        "/api/schema/",
    ]
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, (path, response.content[:300])
        text = response.content.decode()
        for secret in secrets:
            assert secret not in text, (path, secret)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/nothing/"),
        ("post", "/api/v1/pools/x/y/z/"),
        ("delete", "/api/nothing"),
        ("get", "/api/v2/pools/"),
    ],
)
def test_unknown_api_paths_answer_in_the_api_shape(alice, method, path):
    response = getattr(api_client(alice), method)(path)
    assert_error(response, 404, "not_found")
    assert response["Content-Type"].startswith("application/json")


def test_rate_headers_on_errors_too(alice, pool_b):
    client = api_client(alice)
    for response in (
        client.get("/api/v1/pools/"),
        client.get(f"/api/v1/pools/{pool_b.code}/"),
        client.put("/api/v1/pools/", {}, format="json"),
        client.post("/api/v1/pools/", "x", content_type="text/plain"),
        api_client(token="garbage").get("/api/v1/pools/"),
    ):
        assert response.status_code in (200, 401, 404, 405, 415)
        assert int(response["X-RateLimit-Limit"]) > 0
        assert int(response["X-RateLimit-Remaining"]) >= 0
        assert "X-RateLimit-Reset" in response
        if response.status_code != 200:
            assert_error(response, response.status_code)


@pytest.mark.parametrize(
    "value",
    [
        {"mode": "²", "duration": 60},
        {"mode": 1, "duration": "9" * 5000},
        {"mode": 1, "duration": "１２"},
    ],
)
def test_odd_timer_numbers_are_400_not_500(olivia, device_a, value):
    device_a.online = True
    device_a.save()
    response = api_client(olivia).post(
        f"/api/v1/pools/{device_a.pool.code}/commands/",
        {"op": "timer", "value": value},
        format="json",
    )
    assert "value" in assert_error(response, 400, "invalid")["fields"]
    assert not Command.objects.exists()


def test_an_unexpected_error_is_a_500_in_the_one_shape(alice, monkeypatch, caplog):
    """A bug answers JSON in the error shape (no HTML page, no traceback) and is
    logged with its traceback. The failure is forced in the access layer, the one
    place every list goes through."""
    from devices import selectors

    def broken(**kwargs):
        raise RuntimeError("boom: internal detail")

    monkeypatch.setattr(selectors, "pools_for_member", broken)
    from devices.api.views.pools import PoolViewSet

    monkeypatch.setattr(PoolViewSet, "list_selector", broken)
    client = api_client(alice)
    client.raise_request_exception = False
    response = client.get("/api/v1/pools/")
    error = assert_error(response, 500, "server_error")
    assert "boom" not in response.content.decode()
    assert "logged" in error["message"]
    assert any("boom: internal detail" in str(r.exc_info) for r in caplog.records)


def test_every_list_endpoint_is_paginated_and_bounded(alice, pool_a):
    client = api_client(alice)
    for path in (
        "/api/v1/pools/",
        "/api/v1/devices/",
        "/api/v1/brokers/",
        "/api/v1/members/",
        "/api/v1/invitations/",
        "/api/v1/audit-events/",
        f"/api/v1/pools/{pool_a.code}/commands/",
        f"/api/v1/pools/{pool_a.code}/events/",
    ):
        body = client.get(path, {"page_size": 100_000}).json()
        assert set(body) == {"count", "next", "previous", "results"}, path
        assert_error(client.get(path, {"page": 999}), 404, "not_found")
