"""Login, refresh, logout, token tenancy, lockout, throttling and the error shape."""

import datetime as dt

import pytest
from django.core.management import call_command
from rest_framework_simplejwt.tokens import AccessToken

from audit.models import AuditEvent
from conftest import PASSWORD
from poolsaas.api.testing import api_client, assert_error, tokens_for
from tenants.models import Membership

LOGIN = "/api/login"
REFRESH = "/api/token/refresh"
LOGOUT = "/api/logout"


def login(client, email, password=PASSWORD, **extra):
    return client.post(
        LOGIN, {"email": email, "password": password, **extra}, format="json"
    )


def test_login_answers_the_gateway_contract(alice, settings):
    settings.SITE_URL = "http://testserver"
    response = login(api_client(), "alice@acme.test")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {
        "token",
        "refresh",
        "mqttGateway",
        "brokerUrl",
        "liveUrl",
        "clientId",
        "tenant",
        "role",
        "expiresIn",
    }
    # The contract of issue 13: both name the MQTT gateway; the JSON socket has its
    # own key.
    assert body["mqttGateway"] == "ws://testserver/mqtt"
    assert body["brokerUrl"] == "ws://testserver/mqtt"
    assert body["liveUrl"] == "ws://testserver/ws/"
    assert body["clientId"].startswith(f"dashboard-{alice.user.code.hex}-")
    assert body["tenant"] == alice.tenant.code.hex
    assert body["role"] == "owner"
    assert body["expiresIn"] == 900
    access = AccessToken(body["token"])
    assert access["tenant"] == alice.tenant.code.hex
    assert access["sub"] == str(alice.user.code)
    event = AuditEvent.objects.get(action="login.succeeded", actor=alice.user)
    assert event.tenant == alice.tenant
    assert event.source == "api"


def test_login_client_ids_are_unique_and_never_broker_details(
    alice, platform_broker, settings
):
    settings.SITE_URL = "http://testserver"
    first = login(api_client(), "alice@acme.test").json()
    second = login(api_client(), "alice@acme.test").json()
    assert first["clientId"] != second["clientId"]
    # The per-user prefix is stable, the suffix per login.
    prefix = f"dashboard-{alice.user.code.hex}-"
    assert first["clientId"].startswith(prefix)
    assert second["clientId"].startswith(prefix)
    # The site's gateway, never the broker's address.
    assert first["brokerUrl"] == "ws://testserver/mqtt"
    assert platform_broker.host not in str(first)
    assert str(platform_broker.port) not in first["brokerUrl"]


def test_an_https_site_gives_a_wss_gateway_whatever_the_host_header(alice, settings):
    settings.SITE_URL = "https://poolsaas.example"
    response = api_client().post(
        LOGIN,
        {"email": "alice@acme.test", "password": PASSWORD},
        format="json",
        HTTP_HOST="testserver",
    )
    body = response.json()
    assert body["brokerUrl"] == "wss://poolsaas.example/mqtt"
    assert body["mqttGateway"] == "wss://poolsaas.example/mqtt"
    assert body["liveUrl"] == "wss://poolsaas.example/ws/"


def test_login_picks_the_named_tenant(alice, tenant_b, make_member):
    make_member(tenant_b, "alice@acme.test", "viewer")
    body = login(api_client(), "alice@acme.test", tenant=str(tenant_b.code)).json()
    assert body["tenant"] == tenant_b.code.hex
    assert body["role"] == "viewer"


def test_login_to_a_tenant_one_is_not_in_fails(alice, tenant_b):
    response = login(api_client(), "alice@acme.test", tenant=str(tenant_b.code))
    assert_error(response, 401, "not_a_member")


def test_bad_password_is_401_and_audited(alice):
    response = login(api_client(), "alice@acme.test", "wrong")
    error = assert_error(response, 401, "bad_credentials")
    assert "password" in error["message"]
    event = AuditEvent.objects.get(action="login.failed")
    assert event.actor_label == "alice@acme.test"


def test_login_field_errors(db):
    response = api_client().post(LOGIN, {"email": "not-an-email"}, format="json")
    error = assert_error(response, 400, "invalid")
    assert set(error["fields"]) == {"email", "password"}


def test_login_wrong_content_type_is_415(alice):
    response = api_client().post(
        LOGIN,
        "email=alice@acme.test&password=x",
        content_type="application/x-www-form-urlencoded",
    )
    assert_error(response, 415, "unsupported_media_type")


def test_login_get_is_405(db):
    assert_error(api_client().get(LOGIN), 405, "method_not_allowed")


def test_lockout_after_repeated_failures_answers_429_with_retry_after(alice, settings):
    settings.AXES_FAILURE_LIMIT = 3
    client = api_client()
    for _ in range(2):
        assert login(client, "alice@acme.test", "wrong").status_code == 401
    response = login(client, "alice@acme.test", "wrong")
    error = assert_error(response, 429, "throttled")
    assert error["limit"] == "login"
    assert int(response["Retry-After"]) == 15 * 60
    # Locked out: even the right password is refused now.
    response = login(client, "alice@acme.test")
    assert_error(response, 429, "throttled")
    assert AuditEvent.objects.filter(
        action="login.failed", data__reason="locked out"
    ).exists()


def test_refresh_rotates_and_blacklists(alice):
    body = login(api_client(), "alice@acme.test").json()
    response = api_client().post(REFRESH, {"refresh": body["refresh"]}, format="json")
    assert response.status_code == 200, response.content
    fresh = response.json()
    assert set(fresh) == {"token", "refresh", "expiresIn"}
    assert fresh["refresh"] != body["refresh"]
    assert AccessToken(fresh["token"])["tenant"] == alice.tenant.code.hex
    # The used refresh token is dead; the new one works.
    again = api_client().post(REFRESH, {"refresh": body["refresh"]}, format="json")
    assert_error(again, 401, "token_not_valid")
    ok = api_client().post(REFRESH, {"refresh": fresh["refresh"]}, format="json")
    assert ok.status_code == 200


def test_refresh_after_removal_from_the_tenant_fails(alice, olivia):
    refresh = str(tokens_for(olivia))
    Membership.objects.filter(pk=olivia.pk).delete()
    response = api_client().post(REFRESH, {"refresh": refresh}, format="json")
    assert_error(response, 401, "not_a_member")


def test_refresh_with_garbage_is_401(db):
    response = api_client().post(REFRESH, {"refresh": "garbage"}, format="json")
    assert_error(response, 401, "token_not_valid")


def test_logout_blacklists_the_refresh_token(alice):
    body = login(api_client(), "alice@acme.test").json()
    response = api_client().post(LOGOUT, {"refresh": body["refresh"]}, format="json")
    assert response.status_code == 204
    assert AuditEvent.objects.filter(action="logout", actor=alice.user).exists()
    response = api_client().post(REFRESH, {"refresh": body["refresh"]}, format="json")
    assert_error(response, 401, "token_not_valid")


def test_access_token_works_and_expired_one_does_not(alice, pool_a):
    refresh = tokens_for(alice)
    assert (
        api_client(token=str(refresh.access_token)).get("/api/v1/pools/").status_code
        == 200
    )
    expired = refresh.access_token
    expired.set_exp(lifetime=-dt.timedelta(seconds=1))
    response = api_client(token=str(expired)).get("/api/v1/pools/")
    assert_error(response, 401, "token_not_valid")


def test_refresh_token_is_not_an_access_token(alice):
    response = api_client(token=str(tokens_for(alice))).get("/api/v1/pools/")
    assert_error(response, 401, "token_not_valid")


def test_no_token_is_401(db):
    response = api_client().get("/api/v1/pools/")
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_token_of_tenant_a_cannot_reach_tenant_b(alice, pool_b):
    response = api_client(alice).get(f"/api/v1/pools/{pool_b.code}/")
    assert_error(response, 404, "not_found")


def test_role_claim_is_not_trusted(victor, pool_a):
    # A viewer who forges "role": "owner" in a (validly signed) token is still a
    # viewer: the membership is read on every request.
    refresh = tokens_for(victor)
    refresh["role"] = "owner"
    client = api_client(token=str(refresh.access_token))
    response = client.post("/api/v1/pools/", {"name": "Forged"}, format="json")
    assert_error(response, 403, "permission_denied")


def test_removed_member_loses_access_at_once(olivia, pool_a):
    client = api_client(olivia)
    assert client.get("/api/v1/pools/").status_code == 200
    Membership.objects.filter(pk=olivia.pk).delete()
    assert_error(client.get("/api/v1/pools/"), 401, "not_a_member")


def test_suspended_tenant_is_403_with_a_clear_message(alice, pool_a):
    alice.tenant.status = "suspended"
    alice.tenant.save()
    error = assert_error(
        api_client(alice).get("/api/v1/pools/"), 403, "tenant_suspended"
    )
    assert "suspended" in error["message"]


def test_unknown_api_path_is_404_in_the_api_shape(alice):
    assert_error(api_client(alice).get("/api/v1/nothing-here/"), 404, "not_found")


def test_tenant_throttle_names_its_limit(alice, pool_a, settings):
    from billing.models import Plan

    plan = Plan.objects.create(code="tiny", name="Tiny", api_requests_per_minute=3)
    alice.tenant.plan = plan
    alice.tenant.save()
    client = api_client(alice)
    seen = []
    for _ in range(3):
        response = client.get("/api/v1/pools/")
        assert response.status_code == 200
        seen.append(int(response["X-RateLimit-Remaining"]))
        assert response["X-RateLimit-Limit"] == "3"
        assert int(response["X-RateLimit-Reset"]) >= 1
    assert seen == [2, 1, 0]
    response = client.get("/api/v1/pools/")
    error = assert_error(response, 429, "throttled")
    assert error["limit"] == "tenant"
    # The plan's limit in words, and where to go from here.
    assert error["message"] == (
        "Plan limit reached: the Tiny plan allows 3 API requests per minute. "
        "Contact us for a custom plan."
    )
    assert int(response["Retry-After"]) >= 1
    assert response["X-RateLimit-Remaining"] == "0"


def test_user_throttle(alice, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"anon": 60, "user": 2, "tenant": 600},
    }
    client = api_client(alice)
    assert client.get("/api/v1/tenant/").status_code == 200
    assert client.get("/api/v1/tenant/").status_code == 200
    error = assert_error(client.get("/api/v1/tenant/"), 429, "throttled")
    assert error["limit"] == "user"


def test_anonymous_throttle_covers_bad_tokens_and_logins(db, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"anon": 2, "user": 100, "tenant": 600},
    }
    client = api_client(token="not-a-token")
    assert_error(client.get("/api/v1/pools/"), 401)
    assert client.get("/api/v1/pools/")["X-RateLimit-Remaining"] == "0"
    error = assert_error(client.get("/api/v1/pools/"), 429, "throttled")
    assert error["limit"] == "anon"


def test_rate_headers_on_anonymous_answers(db):
    response = api_client().post(LOGIN, {}, format="json")
    assert response.status_code == 400
    assert response["X-RateLimit-Limit"] == "60"
    assert response["X-RateLimit-Remaining"] == "59"


def test_docs_served_without_a_cdn(client, db):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn" not in html.lower()
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/pools/" in schema.content


def test_schema_generates_without_warnings(tmp_path):
    # --fail-on-warn turns any warning (an endpoint without types, an unknown
    # authenticator) into an error; --validate checks it against the OpenAPI spec.
    call_command(
        "spectacular",
        "--fail-on-warn",
        "--validate",
        "--file",
        str(tmp_path / "schema.yaml"),
    )
    assert "/api/v1/pools/{code}/telemetry/" in (tmp_path / "schema.yaml").read_text()


@pytest.mark.parametrize(
    "path", ["/api/v1/pools/", "/api/v1/devices/", "/api/v1/members/"]
)
def test_every_list_is_paginated(alice, path):
    body = api_client(alice).get(path).json()
    assert set(body) == {"count", "next", "previous", "results"}
