"""The tenant switcher of users in several tenants."""

import uuid

import pytest
from django.urls import reverse

from tenants.auth import SESSION_KEY

pytestmark = pytest.mark.django_db

SWITCH = "/tenant/switch/"


@pytest.fixture
def alice_in_b(alice, carol, make_member):
    """alice is also a viewer of Globex (tenant B)."""
    return make_member(carol.tenant, "alice@acme.test", "viewer")


def test_switcher_is_shown_to_users_in_several_tenants(login, alice, alice_in_b):
    html = login(alice).get(reverse("team")).content.decode()
    assert 'id="tenant-switch"' in html
    assert str(alice_in_b.tenant.code) in html


def test_switcher_is_hidden_with_one_tenant(login, alice):
    html = login(alice).get(reverse("team")).content.decode()
    assert 'id="tenant-switch"' not in html


def test_switch_to_another_tenant(login, alice, alice_in_b, carol):
    client = login(alice)
    response = client.post(
        SWITCH, {"tenant": str(carol.tenant.code), "next": reverse("team")}
    )
    assert response.status_code == 302
    assert response.url == reverse("team")
    assert client.session[SESSION_KEY] == carol.tenant.code.hex
    html = client.get(reverse("team")).content.decode()
    assert "Team of Globex Residence" in html
    assert "carol@globex.test" in html
    assert "olivia@acme.test" not in html
    # Now a viewer there: read-only.
    assert "Send invitation" not in html


def test_switch_to_a_tenant_you_are_not_in_is_not_found(login, alice, olivia, carol):
    client = login(olivia)
    response = client.post(SWITCH, {"tenant": str(carol.tenant.code)})
    assert response.status_code == 404
    assert client.session[SESSION_KEY] == olivia.tenant.code.hex


@pytest.mark.parametrize("code", [str(uuid.uuid4()), "acme", ""])
def test_switch_to_made_up_tenant_is_not_found(login, alice, code):
    client = login(alice)
    assert client.post(SWITCH, {"tenant": code}).status_code == 404
    assert client.session[SESSION_KEY] == alice.tenant.code.hex


def test_switch_ignores_foreign_redirects(login, alice, alice_in_b, carol):
    response = login(alice).post(
        SWITCH, {"tenant": str(carol.tenant.code), "next": "https://evil.test/x"}
    )
    assert response.url == reverse("pools")


def test_switch_needs_post_and_login(client, alice):
    assert client.post(SWITCH, {"tenant": str(alice.tenant.code)}).status_code == 302
    client.force_login(alice.user)
    assert client.get(SWITCH).status_code == 405


def test_switch_away_from_a_suspended_tenant(login, alice, alice_in_b, carol):
    alice.tenant.status = "suspended"
    alice.tenant.save()
    client = login(alice)
    page = client.get(reverse("team"))
    assert page.status_code == 403
    assert b"Acme Pools is suspended" in page.content
    assert b"switch to another tenant" in page.content
    client.post(SWITCH, {"tenant": str(carol.tenant.code)})
    assert client.get(reverse("team")).status_code == 200


def test_suspended_tenant_notice_for_every_member(login, alice, adam, olivia, victor):
    alice.tenant.status = "suspended"
    alice.tenant.save()
    for member in (alice, adam, olivia, victor):
        response = login(member).get(reverse("pools"))
        assert response.status_code == 403
        assert b"is suspended" in response.content


def test_reactivated_tenant_works_again(login, alice):
    from tenants.services import tenant_set_status

    tenant_set_status(tenant=alice.tenant, status="suspended", actor=None)
    client = login(alice)
    assert client.get(reverse("team")).status_code == 403
    tenant_set_status(tenant=alice.tenant, status="active", actor=None)
    assert client.get(reverse("team")).status_code == 200
