"""/api/v1/pools/{code}/commands/, /api/v1/commands/{code}/ and pool events."""

import datetime as dt
import uuid

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from devices.models import Command, DeviceEvent
from poolsaas.api.testing import api_client, assert_error


def commands_url(pool):
    return f"/api/v1/pools/{pool.code}/commands/"


@pytest.fixture
def online_a(device_a):
    device_a.online = True
    device_a.state = {"pump": False, "valve": 1}
    device_a.save()
    return device_a


def test_operator_sends_a_command_and_polls_it(olivia, online_a):
    client = api_client(olivia)
    response = client.post(
        commands_url(online_a.pool), {"op": "pump", "value": "ON"}, format="json"
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "pending"
    assert body["op"] == "pump" and body["value"] == "ON"
    assert body["actor"] == "olivia@acme.test"
    assert body["source"] == "api"
    command = Command.objects.get(code=body["code"])
    assert command.tenant == olivia.tenant and command.device == online_a
    location = response["Location"]
    assert location == f"http://testserver/api/v1/commands/{command.code}/"
    # The bridge finishes it; the poll URL shows the outcome.
    Command.objects.filter(pk=command.pk).update(
        status="done", completed_at=timezone.now()
    )
    polled = client.get(location)
    assert polled.status_code == 200
    assert polled.json()["status"] == "done"
    assert AuditEvent.objects.filter(action="command.sent", actor=olivia.user).exists()


def test_command_to_an_offline_device_fails_at_once(olivia, device_a):
    response = api_client(olivia).post(
        commands_url(device_a.pool), {"op": "pump", "value": "ON"}, format="json"
    )
    assert response.status_code == 202
    assert response.json()["status"] == "failed"
    assert "offline" in response.json()["error"]


def test_viewer_cannot_send_commands(victor, online_a):
    response = api_client(victor).post(
        commands_url(online_a.pool), {"op": "pump", "value": "ON"}, format="json"
    )
    assert_error(response, 403, "permission_denied")
    assert not Command.objects.exists()


def test_foreign_pool_is_404_even_for_an_owner(carol, online_a):
    response = api_client(carol).post(
        commands_url(online_a.pool), {"op": "pump", "value": "ON"}, format="json"
    )
    assert_error(response, 404)
    assert_error(api_client(carol).get(commands_url(online_a.pool)), 404)
    assert not Command.objects.exists()


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"op": "pump", "value": "SIDEWAYS"}, "value"),
        ({"op": "launch"}, "op"),
        ({"op": "timer", "value": {"mode": 3, "duration": 10}}, "value"),
        ({}, "op"),
    ],
)
def test_bad_commands_are_400(olivia, online_a, payload, field):
    response = api_client(olivia).post(
        commands_url(online_a.pool), payload, format="json"
    )
    error = assert_error(response, 400, "invalid")
    assert field in error["fields"]
    assert not Command.objects.exists()


def test_made_up_pool_or_command_is_404(olivia):
    assert_error(api_client(olivia).get(f"/api/v1/pools/{uuid.uuid4()}/commands/"), 404)
    assert_error(api_client(olivia).get(f"/api/v1/commands/{uuid.uuid4()}/"), 404)
    assert_error(api_client(olivia).get("/api/v1/commands/nope/"), 404)


def test_foreign_command_is_404(carol, olivia, online_a):
    response = api_client(olivia).post(
        commands_url(online_a.pool), {"op": "valve", "value": 2}, format="json"
    )
    code = response.json()["code"]
    assert_error(api_client(carol).get(f"/api/v1/commands/{code}/"), 404)


def test_list_filters_and_constant_queries(
    victor, online_a, django_assert_max_num_queries
):
    for i in range(30):
        Command.objects.create(
            tenant=online_a.tenant,
            device=online_a,
            pool=online_a.pool,
            actor=victor.user,
            op="pump",
            value="ON",
            status="done" if i % 2 else "failed",
            expires_at=timezone.now(),
        )
    client = api_client(victor)
    with django_assert_max_num_queries(7):
        body = client.get(commands_url(online_a.pool)).json()
    assert body["count"] == 30
    done = client.get(commands_url(online_a.pool), {"status": "done"}).json()
    assert done["count"] == 15
    assert {c["status"] for c in done["results"]} == {"done"}
    error = assert_error(
        client.get(commands_url(online_a.pool), {"status": "bogus"}), 400
    )
    assert "status" in error["fields"]


def test_commands_detail_does_not_allow_writes(olivia, online_a):
    response = api_client(olivia).post(
        commands_url(online_a.pool), {"op": "pump", "value": "OFF"}, format="json"
    )
    location = response["Location"]
    assert_error(api_client(olivia).delete(location), 405)


# --- events --------------------------------------------------------------------------


def test_events(victor, carol, device_a):
    now = timezone.now()
    for i in range(5):
        DeviceEvent.objects.create(
            tenant=device_a.tenant,
            device=device_a,
            pool=device_a.pool,
            ts=now - dt.timedelta(hours=i),
            kind="online" if i % 2 else "offline",
            message=f"event {i}",
        )
    url = f"/api/v1/pools/{device_a.pool.code}/events/"
    body = api_client(victor).get(url).json()
    assert [e["message"] for e in body["results"]] == [f"event {i}" for i in range(5)]
    online = api_client(victor).get(url, {"kind": "online"}).json()
    assert online["count"] == 2
    recent = api_client(victor).get(
        url, {"since": (now - dt.timedelta(minutes=90)).isoformat()}
    )
    assert recent.json()["count"] == 2
    assert_error(api_client(carol).get(url), 404)
    assert_error(api_client(victor).get(url, {"since": "soon"}), 400)
    assert_error(api_client(victor).post(url, {}, format="json"), 405)
