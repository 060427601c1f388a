"""Every page answers with the protective headers, and no page carries script the
Content Security Policy would have to allow inline.

Each page of the product (and the admin, the API docs and the error pages) is fetched
the way its user gets it. The HTML must hold no <script> without src (JSON data
islands are data, not script), no on*= handler attribute and no style= attribute, so
that `script-src 'self'` and `style-src 'self'` hold without exceptions. A last test
checks that every page template of ours was among those rendered, so a new page cannot
skip these checks.
"""

import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.contrib.auth.tokens import default_token_generator
from django.test import override_settings
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from devices.models import Pool
from devices.services.claims import claim_code_for
from tenants.services import invitation_create

pytestmark = pytest.mark.django_db

CSP = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "font-src": "'self'",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


def csp_directives(header: str) -> dict[str, str]:
    return dict(
        (part.strip().split(" ", 1) + [""])[:2] for part in header.split(";") if part
    )


class _Inline(HTMLParser):
    """Collects what a strict policy would block: inline scripts, handlers, styles."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        for name, _value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=…> handler")
            if name == "style":
                self.problems.append(f"<{tag} style=…> attribute")
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "script":
            data = (names.get("type") or "").lower() in ("application/json",)
            self._in_script = not names.get("src") and not data
        if tag == "a" and (names.get("href") or "").lower().startswith("javascript:"):
            self.problems.append("javascript: link")

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.problems.append(f"inline <script>: {data.strip()[:60]!r}")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False


def inline_problems(html: str) -> list[str]:
    parser = _Inline()
    parser.feed(html)
    return parser.problems


def assert_protected(response):
    headers = response.headers
    assert csp_directives(headers["Content-Security-Policy"]) == CSP
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    policy = headers["Permissions-Policy"]
    for feature in ("camera=()", "microphone=()", "geolocation=()", "payment=()"):
        assert feature in policy


@pytest.fixture
def site(
    settings,
    tmp_path,
    client,
    alice,
    adam,
    olivia,
    victor,
    carol,
    pool_a,
    pool_b,
    device_a,
):
    """Every object a page needs, for tenant A, with a foreign pool of tenant B."""
    from devices.services.brokers import broker_create

    settings.MEDIA_ROOT = str(tmp_path / "media")  # OTA release files
    spare = Pool.objects.create(tenant=alice.tenant, name="Spare pool")
    broker = broker_create(
        membership=alice,
        name="Acme own",
        host="mqtt.acme.test",
        port=8883,
        use_tls=True,
        topic_prefix="acme",
    )
    invitation, token = invitation_create(
        membership=alice, email="newbie@acme.test", role="viewer"
    )
    staff = alice.user.__class__.objects.create_superuser(
        email="staff@poolsaas.test", password="staff-Pa55-word"
    )
    invoice = _invoice_for(alice.tenant)
    campaign = _running_campaign(alice, device_a)
    alert = _firing_alert(pool_a)
    uid = urlsafe_base64_encode(force_bytes(alice.user.pk))
    reset = f"/password/reset/{uid}/{default_token_generator.make_token(alice.user)}/"
    return SimpleNamespace(
        alice=alice,
        adam=adam,
        olivia=olivia,
        victor=victor,
        carol=carol,
        pool=pool_a,
        spare=spare,
        foreign_pool=pool_b,
        device=device_a,
        broker=broker,
        invitation_token=token,
        staff=staff,
        reset=reset,
        tenant=alice.tenant,
        invoice=invoice,
        campaign=campaign,
        alert=alert,
    )


def _running_campaign(owner, device):
    """An OTA campaign of tenant A, started and stepped once (device offered)."""
    from devices.models import Device
    from ota.services import campaign_set_state, campaign_step, release_create
    from ota.tests.web_fixtures import make_campaign, upload

    Device.objects.filter(pk=device.pk).update(firmware_version="1.3.0")
    if owner.tenant.plan_id:  # the upload page is the plan's to allow
        owner.tenant.plan.ota_own_releases = True
        owner.tenant.plan.save()
    release = release_create(upload=upload(), version="1.4.0", hardware_model="esp32")
    campaign = make_campaign(owner, release)
    campaign_set_state(campaign, "start", actor=owner.user)
    campaign_step(campaign.pk)
    return campaign


def _firing_alert(pool):
    """A firing freeze alert on the pool, with one resolved before it (history)."""
    from alerts.tests.web_fixtures import fire

    fire(pool, state="resolved", minutes_ago=90)
    return fire(pool)


def _invoice_for(tenant):
    """Last month's invoice of the tenant, for the invoice pages."""
    import datetime as dt

    from billing.invoices import invoice_issue, previous_month
    from billing.models import Plan
    from tenants.models import Tenant

    plan, _ = Plan.objects.get_or_create(
        code="pro", defaults={"name": "Pro", "price_cents": 1900}
    )
    period = previous_month(dt.date.today())
    Tenant.objects.filter(pk=tenant.pk).update(
        plan=plan, created_at=period.start_at() - dt.timedelta(days=1)
    )
    tenant.refresh_from_db()
    invoice, _ = invoice_issue(tenant=tenant, period=period)
    return invoice


# (id, persona, method, path or builder, data, expected status)
PAGES = [
    ("login", None, "get", "/login/", None, 200),
    ("password_reset", None, "get", "/password/reset/", None, 200),
    ("password_reset_done", None, "get", "/password/reset/sent/", None, 200),
    ("password_reset_confirm", None, "follow", lambda s: s.reset, None, 200),
    ("password_reset_bad_link", None, "get", "/password/reset/x/y-z/", None, 200),
    ("password_reset_complete", None, "get", "/password/reset/complete/", None, 200),
    (
        "invitation_accept",
        None,
        "get",
        lambda s: f"/invitations/{s.invitation_token}/",
        None,
        200,
    ),
    ("invitation_invalid", None, "get", "/invitations/made-up-token/", None, 404),
    ("not_found", None, "get", "/no/such/page/", None, 404),
    ("pools", "alice", "get", "/pools/", None, 200),
    ("pool_settings", "alice", "get", lambda s: f"/pools/{s.pool.code}/settings/"),
    ("pool_detail", "alice", "get", lambda s: f"/pools/{s.pool.code}/"),
    ("pool_programs", "alice", "get", lambda s: f"/pools/{s.pool.code}/programs/"),
    ("pool_history", "alice", "get", lambda s: f"/pools/{s.pool.code}/history/"),
    (
        "device_replace",
        "alice",
        "get",
        lambda s: f"/pools/{s.pool.code}/device/replace/",
    ),
    ("devices", "alice", "get", "/devices/"),
    ("device_add", "alice", "get", "/devices/add/"),
    (
        "device_bundle",
        "alice",
        "post",
        "/devices/add/",
        lambda s: {
            "pool": s.spare.code.hex,
            "device_id": "ESP-C3C3C3",
            "protocol": "ps1",
            "claim_code": claim_code_for("ESP-C3C3C3"),
        },
        200,
    ),
    (
        "device_remove",
        "alice",
        "get",
        lambda s: f"/devices/{s.device.code}/remove/",
    ),
    ("brokers", "alice", "get", "/brokers/"),
    ("broker_add", "alice", "get", "/brokers/add/"),
    ("broker_edit", "alice", "get", lambda s: f"/brokers/{s.broker.code}/edit/"),
    ("team", "alice", "get", "/team/"),
    ("account", "alice", "get", "/account/"),
    ("account_two_factor", "alice", "get", "/account/two-factor/"),
    ("two_factor_setup", "alice", "post_follow", "/account/two-factor/setup/"),
    ("password_change", "alice", "get", "/account/password/"),
    ("audit", "alice", "get", "/audit/"),
    ("usage", "victor", "get", "/billing/usage/"),
    ("invoices", "alice", "get", "/billing/invoices/"),
    (
        "invoice_detail",
        "alice",
        "get",
        lambda s: f"/billing/invoices/{s.invoice.code}/",
    ),
    ("ota_campaigns", "alice", "get", "/ota/"),
    ("ota_campaign_add", "alice", "get", "/ota/campaigns/new/"),
    ("ota_campaign", "alice", "get", lambda s: f"/ota/campaigns/{s.campaign.code}/"),
    ("ota_releases", "alice", "get", "/ota/releases/"),
    ("ota_release_add", "alice", "get", "/ota/releases/upload/"),
    ("ota_device", "alice", "get", lambda s: f"/devices/{s.device.code}/updates/"),
    ("alerts", "alice", "get", "/alerts/"),
    ("alert_rules", "alice", "get", "/alerts/rules/"),
    ("alert_preferences", "alice", "get", "/alerts/preferences/"),
    ("alert_detail", "alice", "get", lambda s: f"/alerts/{s.alert.code}/"),
    ("pool_alerts", "alice", "get", lambda s: f"/pools/{s.pool.code}/alerts/"),
    (
        "pool_alert_rules",
        "alice",
        "get",
        lambda s: f"/pools/{s.pool.code}/alerts/rules/",
    ),
    ("audit_bad_filter", "alice", "get", "/audit/?until=9999-12-31", None, 400),
    (
        "foreign_pool",
        "alice",
        "get",
        lambda s: f"/pools/{s.foreign_pool.code}/",
        None,
        404,
    ),
    ("forbidden", "olivia", "get", "/audit/", None, 403),
    ("pool_forbidden", "victor", "get", "/devices/add/", None, 403),
    ("no_tenant", "lonely", "get", "/pools/", None, 200),
    ("suspended", "suspended", "get", "/pools/", None, 403),
    ("admin_index", "staff", "get", "/admin/"),
    ("admin_tenants", "staff", "get", "/admin/tenants/tenant/"),
    (
        "admin_tenant_change",
        "staff",
        "get",
        lambda s: f"/admin/tenants/tenant/{s.tenant.pk}/change/",
    ),
    ("admin_devices", "staff", "get", "/admin/devices/device/"),
    ("api_docs", None, "get", "/api/docs/", None, 200),
    ("mqtt_demo", None, "get", "/mqtt-demo/", None, 200),
    ("server_error", None, "get", "/boom/500/", None, 500),
    ("bad_request", None, "get", "/boom/400/", None, 400),
]


def _fetch(client, login, make_user, site, case):
    page_id, who, method, path, *rest = case
    data = rest[0] if rest else None
    status = rest[1] if len(rest) > 1 else 200
    path = path(site) if callable(path) else path
    data = data(site) if callable(data) else data
    if who == "staff":
        client.force_login(site.staff)
    elif who == "lonely":
        client.force_login(make_user("lonely@nowhere.test"))
    elif who == "suspended":
        site.tenant.status = "suspended"
        site.tenant.save()
        login(site.alice)
    elif who is not None:
        login(getattr(site, who))
    if method == "follow":
        response = client.get(path, follow=True)
    elif method == "post_follow":
        response = client.post(path, data or {}, follow=True)
    elif method == "post":
        response = client.post(path, data or {})
    else:
        response = client.get(path)
    assert response.status_code == status, (page_id, response.status_code)
    return response


@pytest.fixture
def boom_urls(settings):
    """The site plus two views that fail, for the 500 and 400 pages."""
    settings.ROOT_URLCONF = "poolsaas.tests.boom_urls"


@pytest.mark.parametrize("case", PAGES, ids=[case[0] for case in PAGES])
def test_page_has_protective_headers_and_no_inline_script(
    client, login, make_user, site, boom_urls, case
):
    client.raise_request_exception = False
    response = _fetch(client, login, make_user, site, case)
    assert_protected(response)
    html = response.content.decode()
    assert "<html" in html.lower()
    assert inline_problems(html) == []


def test_api_docs_script_comes_from_the_site(client):
    page = client.get("/api/docs/").content.decode()
    (url,) = re.findall(r'<script src="(/api/docs/\?[^"]*script=)"', page)
    script = client.get(url.replace("&amp;", "&"))
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.content.decode()


def test_every_page_template_is_checked(client, login, make_user, site, boom_urls):
    client.raise_request_exception = False
    rendered: set[str] = set()
    for case in PAGES:
        client.logout()
        site.tenant.status = "active"
        site.tenant.save()
        response = _fetch(client, login, make_user, site, case)
        rendered |= {t.name for t in response.templates if t.name}
    ours = set()
    base = Path(settings.BASE_DIR)
    for folder in [base / "templates"] + [
        base / app / "templates"
        for app in (
            "tenants",
            "devices",
            "audit",
            "billing",
            "gateway",
            "alerts",
            "ota",
        )
    ]:
        ours |= {
            str(path.relative_to(folder))
            for path in folder.rglob("*.html")
            if folder.exists()
        }
    not_pages = {
        # Shown only inside the 2FA flows (after a password, after enrolment), not
        # reached by a plain GET here yet: covered by the auth helper's tests only.
        "registration/login_two_factor.html",
        "tenants/recovery_codes.html",
        # E-mails, not pages.
        "registration/password_reset_email.html",
        *{name for name in ours if "/email/" in name},
    }
    assert ours - not_pages - rendered == set()


@override_settings(DEBUG=False)
def test_clickjacking_refused_by_both_headers(client):
    response = client.get("/login/")
    assert response["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]


def test_inline_checker_finds_what_it_must():
    assert inline_problems('<script>alert(1)</script><b onclick="x()">') == [
        "inline <script>: 'alert(1)'",
        "<b onclick=…> handler",
    ]
    assert inline_problems('<p style="color:red">') == ["<p style=…> attribute"]
    assert inline_problems('<script type="application/json">{"a": 1}</script>') == []
    assert inline_problems('<script src="/static/x.js"></script>') == []


# --- production: DEBUG off, behind the TLS proxy ---------------------------------

PRODUCTION_PROBE = r"""
import json
from django.conf import settings
from django.core.management import call_command
from django.test import Client, override_settings
from tenants.models import User

# Static files unhashed: production's manifest needs a collectstatic run first.
override_settings(
    STORAGES={**settings.STORAGES, "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
).enable()
call_command("migrate", verbosity=0)
User.objects.create_user(email="probe@acme.test", password="probe-Pa55-word-9")
https = {"X-Forwarded-Proto": "https"}
client = Client()
plain = client.get("/login/")
page = client.get("/login/", headers=https)
login = client.post(
    "/login/",
    {"username": "probe@acme.test", "password": "probe-Pa55-word-9"},
    headers=https,
)
cookies = {
    name: {"secure": bool(m["secure"]), "httponly": bool(m["httponly"]),
           "samesite": m["samesite"]}
    for name, m in client.cookies.items()
}
print(json.dumps({
    "plain": [plain.status_code, plain.get("Location", "")],
    "page": dict(page.headers),
    "login": login.status_code,
    "cookies": cookies,
}))
"""


@pytest.mark.slow
def test_production_adds_hsts_secure_cookies_and_redirects_to_https(tmp_path):
    import json

    from poolsaas.tests.test_settings import manage, production_env

    result = manage(
        "shell",
        "-c",
        PRODUCTION_PROBE,
        env=production_env(ALLOWED_HOSTS="testserver"),
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    # Plain HTTP is sent to HTTPS; the HTTPS answer pins HTTPS for a year.
    assert probe["plain"] == [301, "https://testserver/login/"]
    headers = probe["page"]
    assert headers["Strict-Transport-Security"] == (
        "max-age=31536000; includeSubDomains; preload"
    )
    assert csp_directives(headers["Content-Security-Policy"]) == CSP
    assert headers["X-Frame-Options"] == "DENY"
    assert "camera=()" in headers["Permissions-Policy"]
    assert probe["login"] == 302
    # Session and CSRF cookies never travel over plain HTTP; the session one is not
    # readable from script either.
    assert probe["cookies"]["sessionid"] == {
        "secure": True,
        "httponly": True,
        "samesite": "Lax",
    }
    assert probe["cookies"]["csrftoken"]["secure"] is True
