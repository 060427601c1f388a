"""/api/v1/brokers/: secrets write-only, ETag/If-Match on updates."""

import uuid

import pytest

from audit.models import AuditEvent
from devices.models import Broker
from poolsaas.api.testing import api_client, assert_error

BROKERS = "/api/v1/brokers/"
SECRET = "s3cret-broker-password-XYZ"
NEW_BROKER = {
    "name": "Our broker",
    "host": "mqtt.example.com",
    "port": 8883,
    "username": "acme-user-SECRET",
    "password": SECRET,
}


@pytest.fixture
def broker_a(adam):
    from devices.services.brokers import broker_create

    return broker_create(
        membership=adam,
        name="Acme",
        host="127.0.0.1",
        port=1883,
        use_tls=False,
        username="acme-user-SECRET",
        password=SECRET,
    )


@pytest.fixture
def broker_b(carol):
    from devices.services.brokers import broker_create

    return broker_create(
        membership=carol, name="Globex", host="127.0.0.1", port=1883, use_tls=False
    )


def assert_no_secret(response):
    assert SECRET not in response.content.decode()
    assert "acme-user-SECRET" not in response.content.decode()


def test_create_never_echoes_secrets(adam):
    response = api_client(adam).post(BROKERS, NEW_BROKER, format="json")
    assert response.status_code == 201, response.content
    assert_no_secret(response)
    body = response.json()
    assert body["credentials_set"] is True
    assert "password" not in body and "username" not in body
    broker = Broker.objects.get(code=body["code"])
    assert broker.password == SECRET and broker.tenant == adam.tenant
    assert response["ETag"]


def test_list_and_retrieve_never_show_secrets(victor, broker_a, broker_b):
    client = api_client(victor)
    response = client.get(BROKERS)
    assert [b["code"] for b in response.json()["results"]] == [str(broker_a.code)]
    assert_no_secret(response)
    response = client.get(f"{BROKERS}{broker_a.code}/")
    assert response.status_code == 200
    assert_no_secret(response)


def test_operator_cannot_create(olivia):
    assert_error(api_client(olivia).post(BROKERS, NEW_BROKER, format="json"), 403)
    assert not Broker.objects.filter(tenant=olivia.tenant).exists()


def test_create_bad_input_is_400(adam):
    response = api_client(adam).post(
        BROKERS, {"name": "x", "host": "h", "port": 70000}, format="json"
    )
    error = assert_error(response, 400, "invalid")
    assert "port" in error["fields"]
    response = api_client(adam).post(
        BROKERS,
        {"name": "x", "host": "h", "topic_prefix": "bad/#"},
        format="json",
    )
    error = assert_error(response, 400, "invalid")
    assert "topic_prefix" in error["fields"]
    assert not Broker.objects.filter(tenant=adam.tenant).exists()


def update(client, broker, data, etag=None):
    headers = {"HTTP_IF_MATCH": etag} if etag else {}
    return client.put(f"{BROKERS}{broker.code}/", data, format="json", **headers)


def test_update_needs_the_current_etag(adam, broker_a):
    client = api_client(adam)
    etag = client.get(f"{BROKERS}{broker_a.code}/")["ETag"]
    # The address stays: a new one would need the secrets again.
    data = {"name": "Acme 2", "host": "127.0.0.1", "port": 1883, "use_tls": False}
    assert_error(update(client, broker_a, data), 428, "precondition_required")
    assert_error(update(client, broker_a, data, '"stale"'), 412, "precondition_failed")
    response = update(client, broker_a, data, etag)
    assert response.status_code == 200, response.content
    assert response["ETag"] != etag
    assert_no_secret(response)
    broker_a.refresh_from_db()
    assert broker_a.name == "Acme 2"
    assert broker_a.password == SECRET  # omitted secrets are kept
    # The old ETag no longer matches: a second writer cannot overwrite silently.
    assert_error(update(client, broker_a, {**data, "name": "Acme 3"}, etag), 412)
    broker_a.refresh_from_db()
    assert broker_a.name == "Acme 2"


def test_update_secret_is_audited_without_its_value(adam, broker_a):
    client = api_client(adam)
    etag = client.get(f"{BROKERS}{broker_a.code}/")["ETag"]
    data = {"name": "Acme", "host": "127.0.0.1", "password": "new-password-123"}
    response = update(client, broker_a, data, etag)
    assert response.status_code == 200
    assert "new-password-123" not in response.content.decode()
    event = AuditEvent.objects.get(action="broker.secret_changed")
    assert "new-password-123" not in str(event.data)


def test_update_by_viewer_is_403_and_foreign_is_404(victor, carol, broker_a):
    data = {"name": "x", "host": "h"}
    assert_error(update(api_client(victor), broker_a, data, "*"), 403)
    assert_error(update(api_client(carol), broker_a, data, "*"), 404)
    broker_a.refresh_from_db()
    assert broker_a.name == "Acme"


def test_update_bad_input_is_400_and_unchanged(adam, broker_a):
    response = update(api_client(adam), broker_a, {"name": "", "host": "h"}, "*")
    assert "name" in assert_error(response, 400)["fields"]
    broker_a.refresh_from_db()
    assert broker_a.name == "Acme"


@pytest.mark.parametrize("code", ["nope", str(uuid.uuid4())])
def test_made_up_code_is_404(adam, code):
    assert_error(api_client(adam).get(f"{BROKERS}{code}/"), 404, "not_found")


def test_delete(adam, carol, broker_a):
    assert_error(api_client(carol).delete(f"{BROKERS}{broker_a.code}/"), 404)
    assert api_client(adam).delete(f"{BROKERS}{broker_a.code}/").status_code == 204
    assert not Broker.objects.filter(pk=broker_a.pk).exists()


def test_patch_is_405(adam, broker_a):
    response = api_client(adam).patch(f"{BROKERS}{broker_a.code}/", {}, format="json")
    assert_error(response, 405)


def test_list_query_count_is_constant(adam, django_assert_max_num_queries):
    from devices.services.brokers import broker_create

    for i in range(20):
        broker_create(membership=adam, name=f"B{i:02}", host="127.0.0.1", port=1883)
    with django_assert_max_num_queries(6):
        response = api_client(adam).get(BROKERS)
    assert response.json()["count"] == 20


def test_credentials_set_follows_what_is_stored(adam, broker_a, broker_b, carol):
    """credentials_set says whether secrets are stored now: cleared credentials are
    not "set", although they were changed (secrets_changed_at is not None)."""
    client = api_client(adam)
    url = f"{BROKERS}{broker_a.code}/"
    assert client.get(url).json()["credentials_set"] is True
    cleared = {"name": "Acme", "host": "127.0.0.1", "username": "", "password": ""}
    response = update(client, broker_a, cleared, client.get(url)["ETag"])
    assert response.status_code == 200, response.content
    broker_a.refresh_from_db()
    assert broker_a.secrets_changed_at is not None
    assert response.json()["credentials_set"] is False
    assert client.get(url).json()["credentials_set"] is False
    # A broker created without credentials never had any.
    assert (
        api_client(carol).get(f"{BROKERS}{broker_b.code}/").json()["credentials_set"]
        is False
    )
    only_password = {"name": "Acme", "host": "127.0.0.1", "password": "p-123456"}
    response = update(client, broker_a, only_password, client.get(url)["ETag"])
    assert response.json()["credentials_set"] is True
    assert "p-123456" not in response.content.decode()
