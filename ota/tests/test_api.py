"""/api/v1/ota/: releases (list, upload, retire), campaigns (preview, create,
start/pause/resume/cancel, their devices) and a device's history; viewer and admin
roles, another tenant's objects answering exactly like made-up ones, 400s that say
what is wrong and change nothing, audit events."""

import uuid

import pytest

from audit.models import AuditEvent
from ota.models import Campaign, Release
from ota.tests.web_fixtures import *  # noqa: F403
from ota.tests.web_fixtures import make_campaign, report, upload
from poolsaas.api.testing import api_client, assert_error

pytestmark = pytest.mark.django_db

BASE = "/api/v1/ota"


def test_releases_list_and_detail(victor, platform_release, own_release):
    client = api_client(victor)
    body = client.get(f"{BASE}/releases/").json()
    assert body["count"] == 2
    versions = {r["version"]: r for r in body["results"]}
    assert versions["1.4.0"]["platform"] is True
    assert versions["1.5.0"]["platform"] is False
    one = client.get(f"{BASE}/releases/{platform_release.code}/").json()
    assert one["sha256"] == platform_release.sha256
    assert one["chunk_count"] == 3 and "file" not in one


def test_release_upload_by_admin(adam, media):
    response = api_client(adam).post(
        f"{BASE}/releases/",
        {"file": upload(), "version": "2.0.0", "hardware_model": "esp32"},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["platform"] is False and body["size"] == len(BLOB)  # noqa: F405
    assert Release.objects.get(code=body["code"]).tenant_id == adam.tenant_id
    assert AuditEvent.objects.filter(action="ota.release_create").exists()


@pytest.mark.parametrize(
    "data, field",
    [
        ({"version": "2"}, "version"),
        ({"file": None}, "file"),
        ({"file": b""}, "file"),
        ({"min_from_version": "one"}, "min_from_version"),
    ],
)
def test_release_upload_bad_input(adam, media, data, field):
    form = {"file": upload(), "version": "2.0.0", "hardware_model": "esp32"}
    for key, value in data.items():
        if value is None:
            form.pop(key)
        elif isinstance(value, bytes):
            form[key] = upload(value)
        else:
            form[key] = value
    response = api_client(adam).post(f"{BASE}/releases/", form, format="multipart")
    error = assert_error(response, 400)
    assert field in error["fields"], error
    assert not Release.objects.exists()


def test_release_upload_roles_and_plan(olivia, adam, media):
    from billing.models import Plan

    response = api_client(olivia).post(
        f"{BASE}/releases/",
        {"file": upload(), "version": "2.0.0", "hardware_model": "esp32"},
        format="multipart",
    )
    assert_error(response, 403)
    adam.tenant.plan = Plan.objects.create(code="tiny-ota-api", name="Tiny")
    adam.tenant.save()
    response = api_client(adam).post(
        f"{BASE}/releases/",
        {"file": upload(), "version": "2.0.0", "hardware_model": "esp32"},
        format="multipart",
    )
    assert "plan" in assert_error(response, 403)["message"]
    assert not Release.objects.exists()


def test_release_retire(adam, victor, own_release, platform_release):
    assert_error(
        api_client(victor).post(f"{BASE}/releases/{own_release.code}/retire/"), 403
    )
    client = api_client(adam)
    assert_error(client.post(f"{BASE}/releases/{platform_release.code}/retire/"), 403)
    response = client.post(f"{BASE}/releases/{own_release.code}/retire/")
    assert response.status_code == 200 and response.json()["retired"] is True
    assert AuditEvent.objects.filter(action="ota.release_retire").exists()


def _same_404(client, method, urls):
    answers = [getattr(client, method)(url) for url in urls]
    assert_error(answers[0], 404)
    assert answers[0].content == answers[1].content == answers[2].content


def test_foreign_release_is_like_a_made_up_one(carol, own_release):
    client = api_client(carol)
    codes = (own_release.code, uuid.uuid4(), "not-a-code")
    _same_404(client, "get", [f"{BASE}/releases/{c}/" for c in codes])
    _same_404(client, "post", [f"{BASE}/releases/{c}/retire/" for c in codes])
    own_release.refresh_from_db()
    assert not own_release.retired


# --- campaigns ------------------------------------------------------------------


def test_preview_counts_and_reasons(adam, platform_release, fleet):
    old, current = fleet
    response = api_client(adam).post(
        f"{BASE}/campaigns/preview/",
        {"release": str(platform_release.code)},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["matched"] == 1 and body["devices"] == [old.device_id]
    assert body["skipped"] == 1
    skipped = body["skipped_devices"][0]
    assert skipped["device_id"] == current.device_id and skipped["reason"]
    assert not Campaign.objects.exists()


def test_create_start_pause_resume_cancel_audited(
    adam, victor, platform_release, fleet
):
    client = api_client(adam)
    response = client.post(
        f"{BASE}/campaigns/",
        {
            "release": str(platform_release.code),
            "rate_per_minute": 5,
            "window_start": "02:00",
            "window_end": "05:00",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["state"] == "draft" and body["rate_per_minute"] == 5
    assert body["window_start"] == "02:00:00"
    code = body["code"]
    for action, state in [
        ("start", "running"),
        ("pause", "paused"),
        ("resume", "running"),
        ("cancel", "cancelled"),
    ]:
        assert_error(api_client(victor).post(f"{BASE}/campaigns/{code}/{action}/"), 403)
        response = client.post(f"{BASE}/campaigns/{code}/{action}/")
        assert response.status_code == 200, (action, response.content)
        assert response.json()["state"] == state
        assert AuditEvent.objects.filter(action=f"ota.campaign_{action}").exists()
    error = assert_error(client.post(f"{BASE}/campaigns/{code}/resume/"), 400)
    assert "cancelled" in error["message"]


@pytest.mark.parametrize(
    "data, field",
    [
        ({"release": "not-a-code"}, "release"),
        ({"release": None}, "release"),
        ({"rate_per_minute": -1}, "rate_per_minute"),
        ({"abort_ratio": 2}, "abort_ratio"),
        ({"growth_factor": 0.5}, "growth_factor"),
        ({"window_start": "02:00"}, "window_end"),
        ({"below_version": "x"}, "below_version"),
        ({"target_all": False}, "target_all"),
        ({"target_all": False, "pools": [str(uuid.uuid4())]}, "pools"),
        ({"target_all": False, "devices": ["nope"]}, "devices"),
    ],
)
def test_create_bad_input(adam, platform_release, fleet, data, field):
    payload = {"release": str(platform_release.code), **data}
    if payload["release"] is None:
        payload["release"] = str(uuid.uuid4())
    response = api_client(adam).post(f"{BASE}/campaigns/", payload, format="json")
    error = assert_error(response, 400)
    assert any(key.split(".")[0] == field for key in error["fields"]), error
    assert not Campaign.objects.exists()


def test_foreign_release_pool_and_device_are_unknown(
    adam, carol, platform_release, fleet, pool_b, device_b, media
):
    from ota.services import release_create

    theirs = release_create(
        upload=upload(), version="9.9.9", hardware_model="esp32", tenant=carol.tenant
    )
    client = api_client(adam)
    for payload, field in [
        ({"release": str(theirs.code)}, "release"),
        (
            {
                "release": str(platform_release.code),
                "target_all": False,
                "pools": [str(pool_b.code)],
            },
            "pools",
        ),
        (
            {
                "release": str(platform_release.code),
                "target_all": False,
                "devices": [str(device_b.code)],
            },
            "devices",
        ),
    ]:
        for path in ("campaigns/", "campaigns/preview/"):
            error = assert_error(
                client.post(f"{BASE}/{path}", payload, format="json"), 400
            )
            assert field in error["fields"]
    assert not Campaign.objects.exists()


def test_operator_and_viewer_cannot_create_or_preview(olivia, victor, platform_release):
    for member in (olivia, victor):
        client = api_client(member)
        payload = {"release": str(platform_release.code)}
        assert_error(client.post(f"{BASE}/campaigns/", payload, format="json"), 403)
        assert_error(
            client.post(f"{BASE}/campaigns/preview/", payload, format="json"), 403
        )
    assert not Campaign.objects.exists()


def test_detail_counts_and_updates(victor, running_a, fleet):
    old, current = fleet
    report(running_a, old, "downloading", percent=30, corrupted=1)
    client = api_client(victor)
    body = client.get(f"{BASE}/campaigns/{running_a.code}/").json()
    assert body["counts"]["downloading"] == 1
    assert body["counts"]["skipped"] == 1 and body["counts"]["total"] == 2
    assert body["abort"]["threshold_percent"] == 20
    listed = client.get(f"{BASE}/campaigns/").json()
    assert listed["count"] == 1 and "counts" not in listed["results"][0]
    updates = client.get(f"{BASE}/campaigns/{running_a.code}/updates/").json()
    assert updates["count"] == 2
    row = next(u for u in updates["results"] if u["device_id"] == old.device_id)
    assert row == {
        "device": str(old.code),
        "device_id": old.device_id,
        "state": "downloading",
        "percent": 30,
        "reason": "",
        "corrupted_chunks": 1,
        "attempts": row["attempts"],
        "updated_at": row["updated_at"],
    }
    only = client.get(f"{BASE}/campaigns/{running_a.code}/updates/?state=skipped")
    assert [u["device_id"] for u in only.json()["results"]] == [current.device_id]
    error = assert_error(
        client.get(f"{BASE}/campaigns/{running_a.code}/updates/?state=bogus"), 400
    )
    assert "state" in error["fields"]


def test_foreign_campaign_is_like_a_made_up_one(adam, campaign_b):
    client = api_client(adam)
    codes = (campaign_b.code, uuid.uuid4(), "not-a-code")
    _same_404(client, "get", [f"{BASE}/campaigns/{c}/" for c in codes])
    _same_404(client, "get", [f"{BASE}/campaigns/{c}/updates/" for c in codes])
    for action in ("start", "pause", "resume", "cancel"):
        _same_404(client, "post", [f"{BASE}/campaigns/{c}/{action}/" for c in codes])
    campaign_b.refresh_from_db()
    assert campaign_b.state == "draft"
    assert api_client(adam).get(f"{BASE}/campaigns/").json()["count"] == 0


def test_device_history(victor, running_a, fleet, device_b):
    old, _ = fleet
    report(running_a, old, "failed", reason="hash mismatch", corrupted=4)
    client = api_client(victor)
    body = client.get(f"{BASE}/devices/{old.code}/updates/").json()
    assert body["results"][0]["corrupted_chunks"] == 4
    assert body["count"] == 1
    assert body["results"][0]["state"] == "failed"
    assert body["results"][0]["reason"] == "hash mismatch"
    assert body["results"][0]["campaign"] == str(running_a.code)
    assert body["results"][0]["release_version"] == "1.4.0"
    codes = (device_b.code, uuid.uuid4(), "not-a-code")
    _same_404(client, "get", [f"{BASE}/devices/{c}/updates/" for c in codes])


def test_campaign_list_queries_do_not_grow(
    adam, platform_release, fleet, django_assert_max_num_queries
):
    for _ in range(5):
        make_campaign(adam, platform_release)
    client = api_client(adam)
    client.get(f"{BASE}/campaigns/")
    with django_assert_max_num_queries(12):
        assert client.get(f"{BASE}/campaigns/").json()["count"] == 5


# --- a pool's consent ----------------------------------------------------------------


@pytest.mark.parametrize("accept, state", [(True, "queued"), (False, "skipped")])
def test_operator_answers_a_pools_consent(olivia, consent_a, pool_a, accept, state):
    client = api_client(olivia)
    pending = client.get(f"{BASE}/pools/{pool_a.code}/consent/").json()
    assert pending["count"] == 1
    (row,) = pending["results"]
    assert row["campaign"] == str(consent_a.campaign.code)
    assert row["release_version"] == "1.4.0" and row["state"] == "awaiting_consent"
    url = f"{BASE}/pools/{pool_a.code}/consent/{consent_a.campaign.code}/"
    response = client.post(url, {"accept": accept}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == state
    consent_a.refresh_from_db()
    assert consent_a.state == state
    assert consent_a.consent_by_id == olivia.user_id
    event = AuditEvent.objects.get(
        action="ota.consent_accept" if accept else "ota.consent_decline"
    )
    assert event.actor_id == olivia.user_id
    assert client.get(f"{BASE}/pools/{pool_a.code}/consent/").json()["count"] == 0
    # Answered: nothing waits any more, whatever the answer.
    assert_error(client.post(url, {"accept": True}, format="json"), 404)


def test_viewer_reads_but_cannot_answer_a_consent(victor, consent_a, pool_a):
    client = api_client(victor)
    assert client.get(f"{BASE}/pools/{pool_a.code}/consent/").json()["count"] == 1
    url = f"{BASE}/pools/{pool_a.code}/consent/{consent_a.campaign.code}/"
    assert_error(client.post(url, {"accept": True}, format="json"), 403)
    consent_a.refresh_from_db()
    assert consent_a.state == "awaiting_consent"
    assert not AuditEvent.objects.filter(action__startswith="ota.consent").exists()


@pytest.mark.parametrize("body", [{}, {"accept": "perhaps"}, {"accept": None}])
def test_consent_answer_bad_input(olivia, consent_a, pool_a, body):
    url = f"{BASE}/pools/{pool_a.code}/consent/{consent_a.campaign.code}/"
    error = assert_error(api_client(olivia).post(url, body, format="json"), 400)
    assert "accept" in error["fields"], error
    consent_a.refresh_from_db()
    assert consent_a.state == "awaiting_consent"


def test_foreign_pool_or_campaign_consent_is_like_a_made_up_one(
    carol, olivia, consent_a, pool_a, pool_b
):
    other = api_client(carol)
    answers = [
        other.post(
            f"{BASE}/pools/{pool}/consent/{campaign}/", {"accept": True}, format="json"
        )
        for pool, campaign in (
            (pool_a.code, consent_a.campaign.code),
            (uuid.uuid4(), uuid.uuid4()),
            ("not-a-code", "x"),
        )
    ]
    assert [a.status_code for a in answers] == [404, 404, 404]
    assert answers[0].content == answers[1].content == answers[2].content
    listed = [
        other.get(f"{BASE}/pools/{pool}/consent/")
        for pool in (pool_a.code, uuid.uuid4())
    ]
    assert [a.status_code for a in listed] == [404, 404]
    assert listed[0].content == listed[1].content
    # Tenant A's own member, naming A's campaign under B's pool: not found either.
    mixed = api_client(olivia).post(
        f"{BASE}/pools/{pool_b.code}/consent/{consent_a.campaign.code}/",
        {"accept": True},
        format="json",
    )
    assert_error(mixed, 404)
    consent_a.refresh_from_db()
    assert consent_a.state == "awaiting_consent"


def test_schema_describes_the_ota_endpoints(victor):
    schema = api_client().get("/api/schema/?format=json").json()
    paths = schema["paths"]
    for path in (
        "/api/v1/ota/releases/",
        "/api/v1/ota/releases/{code}/retire/",
        "/api/v1/ota/campaigns/",
        "/api/v1/ota/campaigns/preview/",
        "/api/v1/ota/campaigns/{code}/pause/",
        "/api/v1/ota/campaigns/{code}/updates/",
        "/api/v1/ota/devices/{device_code}/updates/",
        "/api/v1/ota/pools/{pool_code}/consent/",
        "/api/v1/ota/pools/{pool_code}/consent/{campaign}/",
    ):
        assert path in paths, path
