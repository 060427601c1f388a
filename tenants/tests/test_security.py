"""Cross-cutting checks over every page: CSRF on every state change, suspended
tenants fenced off on every page (GET and POST), foreign and made-up codes that
answer alike, and the session key that changes when the tenant does."""

import uuid

import pytest
from django.test import Client
from django.urls import get_resolver, reverse

from devices.models import Broker, Pool
from tenants.auth import SESSION_KEY
from tenants.models import Invitation, Membership
from tenants.services import invitation_create

pytestmark = pytest.mark.django_db

# Pages a member of a suspended tenant still reaches (tenants.middleware).
OPEN = {
    "login",
    "logout",
    "tenant_switch",
    "password_reset",
    "password_reset_done",
    "password_reset_confirm",
    "password_reset_complete",
    "invitation_accept",
    # The user's own account (tenants.middleware).
    "login_two_factor",
    "account",
    "password_change",
    "sessions_end_others",
    "session_end",
    "account_two_factor",
    "two_factor_setup",
    "two_factor_confirm",
    "two_factor_recovery_renew",
    "two_factor_disable",
    # The MQTT gateway's example page: static, no session (it logs in by the API).
    "mqtt_demo",
}
# The redirect "/" -> "/pools/" has no page of its own; Stripe's webhook is a machine
# endpoint checked by its signature (billing/tests/test_payments.py), never a session.
NOT_A_PAGE = {"home", "stripe_webhook"}


@pytest.fixture
def world(alice, olivia, carol, pool_a, pool_b, platform_broker):
    """One object of each kind in tenant A (and B), for the URL arguments."""
    broker_a = Broker.objects.create(
        tenant=alice.tenant, name="Own A", host="mqtt.a.test", port=8883
    )
    invitation, _ = invitation_create(
        membership=alice, email="new@acme.test", role="viewer"
    )
    return {
        "pool": pool_a,
        "broker": broker_a,
        "member": olivia,
        "invitation": invitation,
        "alice": alice,
    }


def page_urls(world) -> dict[str, str]:
    """Every tenant page, by URL name, with arguments from tenant A."""
    code = {
        "pool_settings": world["pool"].code,
        "pool_detail": world["pool"].code,
        "pool_programs": world["pool"].code,
        "pool_history": world["pool"].code,
        "device_replace": world["pool"].code,
        "device_remove": uuid.uuid4(),
        "broker_edit": world["broker"].code,
        "broker_delete": world["broker"].code,
        "broker_test": world["broker"].code,
        "broker_rotate": world["broker"].code,
        "broker_rotate_cancel": world["broker"].code,
        "device_rotate_credentials": uuid.uuid4(),
        "device_rotate_cancel": uuid.uuid4(),
        "member_role": world["member"].code,
        "member_remove": world["member"].code,
        "invitation_revoke": world["invitation"].code,
        "pool_alerts": world["pool"].code,
        "pool_rules": world["pool"].code,
        "alert_detail": uuid.uuid4(),
        "alert_acknowledge": uuid.uuid4(),
        "alert_resolve": uuid.uuid4(),
        "invoice_detail": uuid.uuid4(),
        "invoice_pdf": uuid.uuid4(),
        "invoice_csv": uuid.uuid4(),
        "ota_campaign_detail": uuid.uuid4(),
        "ota_campaign_live": uuid.uuid4(),
        "ota_campaign_state": uuid.uuid4(),
        "ota_release_retire": uuid.uuid4(),
        "ota_device": uuid.uuid4(),
        "ota_consent": (world["pool"].code, uuid.uuid4()),
    }
    names = {
        "pools",
        "pool_add",
        "brokers",
        "broker_add",
        "team",
        "team_invite",
        "tenant_two_factor",
        "audit",
        "audit_export",
        "devices",
        "device_add",
        "usage",
        "invoices",
        "alerts",
        "alert_rules",
        "ota_campaigns",
        "ota_campaign_add",
        "ota_releases",
        "ota_release_add",
        *code,
    }

    def args(name):
        if name not in code:
            return []
        value = code[name]
        return list(value) if isinstance(value, tuple) else [value]

    return {name: reverse(name, args=args(name)) for name in sorted(names)}


def test_every_named_page_is_covered_here(world):
    # A new page must be added to page_urls (and so to the checks below) or to
    # OPEN on purpose.
    named = {
        name
        for name in get_resolver().reverse_dict
        if isinstance(name, str) and not name.startswith("api")
    }
    named -= {n for n in named if ":" in n}
    assert named - set(page_urls(world)) - OPEN - NOT_A_PAGE == set()


def _state():
    return (
        Pool.objects.count(),
        Broker.objects.count(),
        sorted(Membership.objects.values_list("pk", "role")),
        sorted(Invitation.objects.values_list("pk", "revoked_at")),
    )


@pytest.mark.parametrize("method", ["get", "post"])
def test_suspended_tenant_sees_only_the_notice_everywhere(login, world, method):
    alice = world["alice"]
    alice.tenant.status = "suspended"
    alice.tenant.save()
    client = login(alice)
    before = _state()
    for name, url in page_urls(world).items():
        response = getattr(client, method)(
            url, {"name": "x", "email": "x@acme.test", "role": "viewer"}
        )
        assert response.status_code == 403, (name, method, response.status_code)
        assert b"Acme Pools is suspended" in response.content, name
    assert _state() == before


def test_suspended_member_cannot_leave_through_the_service(alice, olivia):
    from django.core.exceptions import PermissionDenied

    from tenants.services import membership_remove

    alice.tenant.status = "suspended"
    alice.tenant.save()
    olivia.tenant.refresh_from_db()
    with pytest.raises(PermissionDenied):
        membership_remove(membership=olivia, target=olivia)
    assert Membership.objects.filter(pk=olivia.pk).exists()


def _csrf_posts(world) -> dict[str, str]:
    urls = page_urls(world)
    state_changing = {
        "pool_add",
        "pool_settings",
        "broker_add",
        "broker_edit",
        "broker_delete",
        "broker_test",
        "team_invite",
        "member_role",
        "member_remove",
        "invitation_revoke",
        "pool_programs",
        "device_add",
        "device_replace",
        "device_remove",
        "alert_rules",
        "pool_rules",
        "alert_acknowledge",
        "alert_resolve",
        "ota_release_add",
        "ota_release_retire",
        "ota_campaign_add",
        "ota_campaign_state",
        "ota_consent",
    }
    posts = {name: urls[name] for name in state_changing}
    posts["tenant_switch"] = reverse("tenant_switch")
    posts["logout"] = reverse("logout")
    posts["tenant_two_factor"] = reverse("tenant_two_factor")
    # The account's own forms.
    for name in (
        "password_change",
        "sessions_end_others",
        "two_factor_setup",
        "two_factor_recovery_renew",
        "two_factor_disable",
    ):
        posts[name] = reverse(name)
    posts["session_end"] = reverse("session_end", args=[uuid.uuid4().hex])
    return posts


def test_every_state_change_needs_the_csrf_token(world):
    alice = world["alice"]
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice.user)
    before = _state()
    for name, url in _csrf_posts(world).items():
        response = client.post(url, {"name": "x", "role": "viewer"})
        assert response.status_code == 403, (name, response.status_code)
        assert b"CSRF" in response.content, name
    assert _state() == before
    # Still logged in: the logout above was refused too.
    assert client.get(reverse("team")).status_code == 200


def test_anonymous_forms_need_the_csrf_token(world):
    client = Client(enforce_csrf_checks=True)
    _, token = invitation_create(
        membership=world["alice"],
        email="csrf@acme.test",
        role="viewer",
    )
    for url in (
        reverse("login"),
        reverse("login_two_factor"),
        reverse("password_reset"),
        reverse("invitation_accept", args=[token]),
    ):
        assert client.post(url, {"username": "a@b.c"}).status_code == 403, url


def _foreign_and_made_up(world, carol, pool_b):
    broker_b = Broker.objects.create(
        tenant=carol.tenant, name="Own B", host="mqtt.b.test", port=8883
    )
    invitation_b, _ = invitation_create(
        membership=carol, email="x@globex.test", role="viewer"
    )
    return [
        ("pool_settings", pool_b.code),
        ("broker_edit", broker_b.code),
        ("broker_test", broker_b.code),
        ("broker_delete", broker_b.code),
        ("member_role", carol.code),
        ("member_remove", carol.code),
        ("invitation_revoke", invitation_b.code),
    ]


@pytest.mark.parametrize("persona", ["alice", "victor"])
def test_foreign_and_made_up_codes_answer_exactly_alike(
    request, login, world, carol, pool_b, persona
):
    client = login(request.getfixturevalue(persona))
    for name, foreign in _foreign_and_made_up(world, carol, pool_b):
        answers = []
        for code in (foreign, uuid.uuid4(), "not-a-code"):
            method = client.get if name in ("pool_settings", "broker_edit") else None
            response = (method or client.post)(reverse(name, args=[code]))
            answers.append((response.status_code, response.content))
        assert answers[0][0] == 404, (name, persona, answers[0][0])
        assert answers[0] == answers[1] == answers[2], (name, persona)


def test_tenant_switch_rotates_the_session_key(login, alice, carol, make_member):
    make_member(carol.tenant, "alice@acme.test", "viewer")
    client = login(alice)
    before = client.session.session_key
    response = client.post(reverse("tenant_switch"), {"tenant": carol.tenant.code})
    assert response.status_code == 302
    assert client.session.session_key != before
    assert client.session[SESSION_KEY] == carol.tenant.code.hex
    assert client.get(reverse("team")).status_code == 200


@pytest.mark.parametrize(
    "target",
    ["//evil.example/", "/\\evil.example", "http:evil.example", "https:/evil.example"],
)
def test_tenant_switch_next_stays_on_the_site(login, alice, target):
    response = login(alice).post(
        reverse("tenant_switch"), {"tenant": alice.tenant.code, "next": target}
    )
    assert response.url == reverse("pools")


def test_tenant_switch_next_over_https_does_not_downgrade(login, alice):
    response = login(alice).post(
        reverse("tenant_switch"),
        {"tenant": alice.tenant.code, "next": "http://testserver/team/"},
        secure=True,
    )
    assert response.url == reverse("pools")


def test_invitation_into_a_suspended_tenant_cannot_be_accepted(client, alice, carol):
    _, token = invitation_create(
        membership=alice, email="late@acme.test", role="viewer"
    )
    alice.tenant.status = "suspended"
    alice.tenant.save()
    path = reverse("invitation_accept", args=[token])
    page = client.get(path)
    assert page.status_code == 403
    assert b"suspended" in page.content
    response = client.post(
        path,
        {
            "full_name": "Late",
            "password1": "tide-lantern-92-copper",
            "password2": "tide-lantern-92-copper",
        },
    )
    assert response.status_code == 403
    assert not Membership.objects.filter(user__email="late@acme.test").exists()
