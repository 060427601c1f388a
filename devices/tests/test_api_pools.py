"""/api/v1/pools/: list, create, read, update and state (the history endpoint,
/pools/{code}/telemetry/, is tested in telemetry/tests/test_api_history.py)."""

import uuid

import pytest

from audit.models import AuditEvent
from devices.models import Pool
from poolsaas.api.testing import api_client, assert_error

POOLS = "/api/v1/pools/"


def url(pool, suffix=""):
    return f"{POOLS}{pool.code}/{suffix}"


# --- list ----------------------------------------------------------------------------


def test_list_shows_own_pools_only(victor, pool_a, pool_b, device_a):
    body = api_client(victor).get(POOLS).json()
    assert [p["code"] for p in body["results"]] == [str(pool_a.code)]
    assert body["results"][0]["device"]["device_id"] == "ESP-A1A1A1"
    assert body["count"] == 1


def test_list_search_and_ordering(alice, tenant_a):
    for name in ["Beta", "Alpha", "Gamma"]:
        Pool.objects.create(tenant=tenant_a, name=name)
    client = api_client(alice)
    names = [
        p["name"] for p in client.get(POOLS, {"ordering": "-name"}).json()["results"]
    ]
    assert names == ["Gamma", "Beta", "Alpha"]
    found = client.get(POOLS, {"q": "alp"}).json()["results"]
    assert [p["name"] for p in found] == ["Alpha"]


@pytest.mark.parametrize(
    ("count", "page_size", "queries"),
    [
        (0, 50, 2),
        (5, 50, 2),
        (50, 100, 2),
        # A list longer than its page is counted in SQL too.
        (51, 50, 3),
        (120, 50, 3),
    ],
)
def test_list_runs_a_constant_number_of_queries(
    alice,
    tenant_a,
    platform_broker,
    count,
    page_size,
    queries,
    django_assert_num_queries,
):
    from billing.models import Plan
    from devices.models import Device

    tenant_a.plan = Plan.objects.create(code="api-queries", name="API queries")
    tenant_a.save(update_fields=["plan"])
    for i in range(count):
        pool = Pool.objects.create(tenant=tenant_a, name=f"Pool {i:03}")
        Device.objects.create(
            tenant=tenant_a, pool=pool, broker=platform_broker, device_id=f"ESP-{i:06X}"
        )
    client = api_client(alice)
    # The caller (membership, user, tenant and plan in one), the page of pools with
    # their devices, and only when the list is longer than the page its count.
    with django_assert_num_queries(queries):
        response = client.get(POOLS, {"page_size": page_size})
    body = response.json()
    assert body["count"] == count
    assert len(body["results"]) == min(count, page_size)
    assert (body["next"] is not None) == (count > page_size)
    if count > page_size:
        rest = client.get(body["next"]).json()
        assert rest["count"] == count
        assert len(rest["results"]) == min(count - page_size, page_size)


# --- create --------------------------------------------------------------------------


def test_admin_creates_a_pool_in_their_own_tenant(adam, tenant_b):
    response = api_client(adam).post(
        POOLS,
        {"name": "Garden", "timezone": "Europe/Berlin", "tenant": str(tenant_b.code)},
        format="json",
    )
    assert response.status_code == 201, response.content
    pool = Pool.objects.get(code=response.json()["code"])
    assert pool.tenant == adam.tenant  # never from input
    assert pool.timezone == "Europe/Berlin"
    assert response.json()["device"] is None
    assert AuditEvent.objects.filter(action="pool.created", actor=adam.user).exists()


def test_operator_cannot_create_pools(olivia):
    response = api_client(olivia).post(POOLS, {"name": "Nope"}, format="json")
    assert_error(response, 403, "permission_denied")
    assert not Pool.objects.filter(name="Nope").exists()


def test_create_with_bad_fields_is_400_and_changes_nothing(alice):
    response = api_client(alice).post(
        POOLS, {"name": "", "timezone": "Mars/Olympus"}, format="json"
    )
    error = assert_error(response, 400, "invalid")
    assert "name" in error["fields"]
    response = api_client(alice).post(
        POOLS, {"name": "Ok", "timezone": "Mars/Olympus"}, format="json"
    )
    error = assert_error(response, 400, "invalid")
    assert "Mars/Olympus" in error["fields"]["timezone"][0]
    assert not Pool.objects.exists()


def test_create_with_form_data_is_415(alice):
    response = api_client(alice).post(POOLS, {"name": "Form"})  # multipart
    assert_error(response, 415, "unsupported_media_type")


def test_put_and_delete_are_405(alice, pool_a):
    client = api_client(alice)
    assert_error(client.put(url(pool_a), {"name": "x"}, format="json"), 405)
    assert_error(client.delete(url(pool_a)), 405, "method_not_allowed")


# --- read / update -------------------------------------------------------------------


def test_retrieve(victor, pool_a):
    body = api_client(victor).get(url(pool_a)).json()
    assert body["name"] == "Acme Main Pool"
    assert body["code"] == str(pool_a.code)


@pytest.mark.parametrize("code", ["nope", str(uuid.uuid4())])
def test_made_up_code_is_404(alice, code):
    assert_error(api_client(alice).get(f"{POOLS}{code}/"), 404, "not_found")


def test_foreign_pool_is_404_for_every_verb(carol, pool_a):
    client = api_client(carol)
    assert_error(client.get(url(pool_a)), 404)
    assert_error(client.patch(url(pool_a), {"name": "x"}, format="json"), 404)
    assert_error(client.get(url(pool_a, "state/")), 404)
    assert_error(client.get(url(pool_a, "telemetry/")), 404)
    assert Pool.objects.get(pk=pool_a.pk).name == "Acme Main Pool"


def test_patch_renames(adam, pool_a):
    response = api_client(adam).patch(url(pool_a), {"name": "Renamed"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["name"] == "Renamed"
    pool_a.refresh_from_db()
    assert pool_a.name == "Renamed"


def test_patch_by_viewer_is_403(victor, pool_a):
    response = api_client(victor).patch(url(pool_a), {"name": "x"}, format="json")
    assert_error(response, 403)
    pool_a.refresh_from_db()
    assert pool_a.name == "Acme Main Pool"


def test_patch_bad_input_is_400(adam, pool_a):
    response = api_client(adam).patch(
        url(pool_a), {"mode1_name": "Same", "mode2_name": "same"}, format="json"
    )
    error = assert_error(response, 400, "invalid")
    assert "mode2_name" in error["fields"]
    pool_a.refresh_from_db()
    assert pool_a.mode1_name == "Cascada"


# --- state ---------------------------------------------------------------------------


def test_state(victor, device_a):
    device_a.state = {"pump": True, "valve": 2, "temperature": 26.5}
    device_a.online = True
    device_a.save()
    body = api_client(victor).get(url(device_a.pool, "state/")).json()
    assert body["state"]["pump"] is True
    assert body["online"] is True
    assert body["device"] == device_a.code.hex


def test_state_of_a_pool_without_device_is_404(victor, pool_a):
    assert_error(api_client(victor).get(url(pool_a, "state/")), 404)
