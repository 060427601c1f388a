"""/api/v1/tenant/, /api/v1/members/ and /api/v1/invitations/."""

import uuid

from django.core import mail

from audit.models import AuditEvent
from poolsaas.api.testing import api_client, assert_error
from tenants.models import Invitation, Membership

MEMBERS = "/api/v1/members/"


def test_tenant_is_the_tokens_tenant(victor, carol):
    body = api_client(victor).get("/api/v1/tenant/").json()
    assert body["code"] == str(victor.tenant.code)
    assert body["role"] == "viewer"
    assert body["plan"] is None
    assert api_client(carol).get("/api/v1/tenant/").json()["name"] == "Globex Residence"


def test_tenant_is_read_only(alice):
    response = api_client(alice).patch("/api/v1/tenant/", {"name": "x"}, format="json")
    assert_error(response, 405)


def test_members_list_own_tenant_only(victor, alice, carol):
    body = api_client(victor).get(MEMBERS).json()
    assert [m["email"] for m in body["results"]] == [
        "alice@acme.test",
        "victor@acme.test",
    ]


def test_members_list_constant_queries(
    alice, make_member, django_assert_max_num_queries
):
    for i in range(25):
        make_member(alice.tenant, f"m{i:02}@acme.test", "viewer")
    with django_assert_max_num_queries(6):
        body = api_client(alice).get(MEMBERS).json()
    assert body["count"] == 26


def test_admin_invites(adam, tenant_b, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client(adam).post(
            MEMBERS,
            {
                "email": "New@Acme.test",
                "role": "operator",
                "tenant": str(tenant_b.code),
            },
            format="json",
        )
    assert response.status_code == 201, response.content
    invitation = Invitation.objects.get(code=response.json()["code"])
    assert invitation.tenant == adam.tenant and invitation.email == "new@acme.test"
    assert "token" not in response.json()
    assert len(mail.outbox) == 1


def test_invite_bad_input_and_roles(adam, olivia, alice):
    error = assert_error(
        api_client(adam).post(
            MEMBERS, {"email": "nope", "role": "king"}, format="json"
        ),
        400,
    )
    assert set(error["fields"]) == {"email", "role"}
    error = assert_error(
        api_client(adam).post(MEMBERS, {"email": "alice@acme.test"}, format="json"), 400
    )
    assert "email" in error["fields"]  # already a member
    assert_error(
        api_client(olivia).post(MEMBERS, {"email": "x@acme.test"}, format="json"), 403
    )
    # An admin cannot hand out a role above their own.
    assert_error(
        api_client(adam).post(
            MEMBERS, {"email": "x@acme.test", "role": "owner"}, format="json"
        ),
        403,
    )
    assert not Invitation.objects.exists()


def test_role_change(adam, olivia):
    response = api_client(adam).patch(
        f"{MEMBERS}{olivia.code}/", {"role": "viewer"}, format="json"
    )
    assert response.status_code == 200, response.content
    olivia.refresh_from_db()
    assert olivia.role == "viewer"
    assert AuditEvent.objects.filter(action="membership.role_changed").exists()


def test_role_change_rules(adam, alice, olivia, victor, carol):
    url = f"{MEMBERS}{olivia.code}/"
    assert_error(api_client(victor).patch(url, {"role": "admin"}, format="json"), 403)
    assert_error(api_client(carol).patch(url, {"role": "admin"}, format="json"), 404)
    error = assert_error(
        api_client(adam).patch(url, {"role": "boss"}, format="json"), 400
    )
    assert "role" in error["fields"]
    # The last owner stays.
    response = api_client(alice).patch(
        f"{MEMBERS}{alice.code}/", {"role": "viewer"}, format="json"
    )
    assert_error(response, 400, "invalid")
    olivia.refresh_from_db()
    alice.refresh_from_db()
    assert (olivia.role, alice.role) == ("operator", "owner")


def test_remove_member_and_access_ends(adam, olivia, pool_a):
    olivia_client = api_client(olivia)
    assert olivia_client.get("/api/v1/pools/").status_code == 200
    assert api_client(adam).delete(f"{MEMBERS}{olivia.code}/").status_code == 204
    assert not Membership.objects.filter(pk=olivia.pk).exists()
    assert_error(olivia_client.get("/api/v1/pools/"), 401, "not_a_member")


def test_remove_rules(victor, olivia, carol):
    assert_error(api_client(victor).delete(f"{MEMBERS}{olivia.code}/"), 403)
    assert_error(api_client(carol).delete(f"{MEMBERS}{olivia.code}/"), 404)
    assert_error(api_client(victor).delete(f"{MEMBERS}{uuid.uuid4()}/"), 404)
    assert_error(api_client(victor).get(f"{MEMBERS}nope/"), 404)
    assert Membership.objects.filter(pk=olivia.pk).exists()
    # Anyone may leave.
    assert api_client(victor).delete(f"{MEMBERS}{victor.code}/").status_code == 204


def test_put_is_405(adam, olivia):
    response = api_client(adam).put(
        f"{MEMBERS}{olivia.code}/", {"role": "viewer"}, format="json"
    )
    assert_error(response, 405)


def test_invitations_list_and_revoke(adam, victor, carol):
    api_client(adam).post(MEMBERS, {"email": "new@acme.test"}, format="json")
    invitation = Invitation.objects.get()
    body = api_client(adam).get("/api/v1/invitations/").json()
    assert [i["email"] for i in body["results"]] == ["new@acme.test"]
    assert_error(api_client(victor).get("/api/v1/invitations/"), 403)
    assert api_client(carol).get("/api/v1/invitations/").json()["count"] == 0
    url = f"/api/v1/invitations/{invitation.code}/"
    assert_error(api_client(carol).delete(url), 404)
    assert_error(api_client(victor).delete(url), 403)
    assert api_client(adam).delete(url).status_code == 204
    invitation.refresh_from_db()
    assert invitation.revoked_at is not None
