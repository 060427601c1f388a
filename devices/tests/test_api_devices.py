"""/api/v1/devices/: list, read, add (bundle once), remove, state."""

import uuid

from audit.models import AuditEvent
from devices.models import Device
from devices.services.claims import claim_code_for
from poolsaas.api.testing import api_client, assert_error

DEVICES = "/api/v1/devices/"


def test_list_own_devices_with_filters(victor, device_a, device_b):
    client = api_client(victor)
    body = client.get(DEVICES).json()
    assert [d["device_id"] for d in body["results"]] == ["ESP-A1A1A1"]
    assert body["results"][0]["pool"] == device_a.pool.code.hex
    assert body["results"][0]["broker"] is None  # the shared platform broker
    assert client.get(DEVICES, {"online": "true"}).json()["count"] == 0
    assert client.get(DEVICES, {"pool": str(device_a.pool.code)}).json()["count"] == 1
    assert client.get(DEVICES, {"pool": str(device_b.pool.code)}).json()["count"] == 0


def test_list_query_count_is_constant(
    alice, tenant_a, platform_broker, django_assert_max_num_queries
):
    from devices.models import Pool

    for i in range(30):
        pool = Pool.objects.create(tenant=tenant_a, name=f"P{i}")
        Device.objects.create(
            tenant=tenant_a, pool=pool, broker=platform_broker, device_id=f"ESP-{i:06X}"
        )
    with django_assert_max_num_queries(6):
        body = api_client(alice).get(DEVICES).json()
    assert body["count"] == 30


def test_retrieve_and_state(victor, device_a):
    device_a.state = {"pump": False, "temperature": 24.0}
    device_a.save()
    client = api_client(victor)
    assert client.get(f"{DEVICES}{device_a.code}/").json()["device_id"] == "ESP-A1A1A1"
    state = client.get(f"{DEVICES}{device_a.code}/state/").json()
    assert state["state"] == {"pump": False, "temperature": 24.0}
    assert state["pool"] == device_a.pool.code.hex


def test_foreign_and_made_up_devices_are_404(carol, device_a):
    client = api_client(carol)
    assert_error(client.get(f"{DEVICES}{device_a.code}/"), 404)
    assert_error(client.get(f"{DEVICES}{device_a.code}/state/"), 404)
    assert_error(client.delete(f"{DEVICES}{device_a.code}/"), 404)
    assert_error(client.get(f"{DEVICES}{uuid.uuid4()}/"), 404)
    assert_error(client.get(f"{DEVICES}nope/state/"), 404)
    assert Device.objects.filter(pk=device_a.pk).exists()


def test_add_returns_the_bundle_once(adam, pool_a, platform_broker):
    response = api_client(adam).post(
        DEVICES,
        {
            "pool": str(pool_a.code),
            "device_id": "esp-c3c3c3",
            "claim_code": claim_code_for("ESP-C3C3C3").lower(),  # read off a label
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    device = Device.objects.get(code=body["code"])
    assert device.tenant == adam.tenant and device.pool == pool_a
    assert body["bundle"]["device_id"] == device.device_id
    assert set(body["bundle"]["mqtt"]) >= {"host", "port", "tls", "username", "prefix"}
    assert AuditEvent.objects.filter(action="device.added").exists()
    # Never again: reads have no bundle and no password.
    again = api_client(adam).get(f"{DEVICES}{device.code}/")
    assert "bundle" not in again.json()
    if device.mqtt_password:
        assert device.mqtt_password not in again.content.decode()


def test_add_to_a_foreign_pool_or_broker_is_a_field_error(adam, pool_b, pool_a):
    response = api_client(adam).post(
        DEVICES, {"pool": str(pool_b.code), "device_id": "ESP-C3C3C3"}, format="json"
    )
    assert "pool" in assert_error(response, 400)["fields"]
    response = api_client(adam).post(
        DEVICES,
        {
            "pool": str(pool_a.code),
            "device_id": "ESP-C3C3C3",
            "broker": str(uuid.uuid4()),
        },
        format="json",
    )
    assert "broker" in assert_error(response, 400)["fields"]
    assert not Device.objects.exists()


def test_add_bad_input(adam, device_a, pool_a):
    client = api_client(adam)
    response = client.post(DEVICES, {"pool": "x", "device_id": ""}, format="json")
    assert set(assert_error(response, 400)["fields"]) >= {"pool", "device_id"}
    # The pool already has a device.
    response = client.post(
        DEVICES, {"pool": str(pool_a.code), "device_id": "ESP-D4D4D4"}, format="json"
    )
    assert "pool" in assert_error(response, 400)["fields"]
    assert Device.objects.count() == 1


def test_operator_cannot_add_or_remove(olivia, pool_a, device_b, tenant_a):
    from devices.models import Pool

    spare = Pool.objects.create(tenant=tenant_a, name="Spare")
    client = api_client(olivia)
    response = client.post(
        DEVICES, {"pool": str(spare.code), "device_id": "ESP-E5E5E5"}, format="json"
    )
    assert_error(response, 403)
    assert not Device.objects.filter(device_id="ESP-E5E5E5").exists()


def test_remove(adam, olivia, device_a):
    assert_error(api_client(olivia).delete(f"{DEVICES}{device_a.code}/"), 403)
    assert api_client(adam).delete(f"{DEVICES}{device_a.code}/").status_code == 204
    assert not Device.objects.filter(pk=device_a.pk).exists()


def test_put_is_405(adam, device_a):
    response = api_client(adam).put(f"{DEVICES}{device_a.code}/", {}, format="json")
    assert_error(response, 405)
