"""/api/v1/pools/{code}/programs/: GET with ETag, PUT with If-Match."""

from audit.models import AuditEvent
from devices.models import Program
from poolsaas.api.testing import api_client, assert_error

WEEKDAYS = [{"mode": 1, "start": "10:00", "stop": "14:00"}] * 5 + [None, None]


def url(pool):
    return f"/api/v1/pools/{pool.code}/programs/"


def put(client, pool, programs, etag=None):
    headers = {"HTTP_IF_MATCH": etag} if etag else {}
    return client.put(url(pool), {"programs": programs}, format="json", **headers)


def test_read_and_replace_programs(olivia, device_a):
    pool = device_a.pool
    client = api_client(olivia)
    response = client.get(url(pool))
    assert response.status_code == 200
    assert response.json() == {"version": 0, "programs": []}
    etag = response["ETag"]
    response = put(client, pool, [{"slot": 1, "enabled": True, "days": WEEKDAYS}], etag)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["version"] == 1
    assert body["programs"][0]["days"][0] == WEEKDAYS[0]
    assert response["ETag"] != etag
    assert Program.objects.get(pool=pool, slot=1).days[5] is None
    assert AuditEvent.objects.filter(action="programs.updated").exists()


def test_stale_or_missing_if_match(olivia, pool_a):
    client = api_client(olivia)
    etag = client.get(url(pool_a))["ETag"]
    programs = [{"slot": 1, "enabled": True, "days": WEEKDAYS}]
    assert_error(put(client, pool_a, programs), 428, "precondition_required")
    assert put(client, pool_a, programs, etag).status_code == 200
    # A second editor who loaded version 0 cannot overwrite version 1 silently.
    response = put(client, pool_a, [], etag)
    assert_error(response, 412, "precondition_failed")
    assert Program.objects.filter(pool=pool_a).count() == 1


def test_field_errors_name_the_day(olivia, pool_a):
    days = list(WEEKDAYS)
    days[2] = {"mode": 1, "start": "14:00", "stop": "10:00"}
    response = put(
        api_client(olivia), pool_a, [{"slot": 1, "enabled": True, "days": days}], "*"
    )
    error = assert_error(response, 400, "invalid")
    assert any(f.startswith("programs[0].days[2]") for f in error["fields"]), error
    response = put(api_client(olivia), pool_a, "nope", "*")
    assert "programs" in assert_error(response, 400)["fields"]
    assert not Program.objects.exists()


def test_viewer_reads_but_cannot_write(victor, pool_a):
    assert api_client(victor).get(url(pool_a)).status_code == 200
    assert_error(put(api_client(victor), pool_a, [], "*"), 403)


def test_foreign_and_made_up(carol, olivia, pool_a):
    assert_error(api_client(carol).get(url(pool_a)), 404)
    assert_error(put(api_client(carol), pool_a, [], "*"), 404)
    assert_error(api_client(olivia).get("/api/v1/pools/nope/programs/"), 404)


def test_post_is_405(olivia, pool_a):
    assert_error(api_client(olivia).post(url(pool_a), {}, format="json"), 405)
