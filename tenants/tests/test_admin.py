"""Staff admin for tenancy: searchable lists, the suspend action, and every admin
change written to the audit trail (field names only, never values)."""

import json

import pytest
from django.urls import reverse

from conftest import PASSWORD
from tenants.models import Invitation, Membership, Tenant, User
from tenants.services import invitation_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, staff):
    client.force_login(staff)
    return client


def changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def change(obj) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])


def test_changelists_search(admin_client, alice, carol):
    invitation_create(membership=alice, email="invitee@acme.test", role="viewer")
    invitation_create(membership=carol, email="other@globex.test", role="viewer")
    cases = [
        (User, "alice", alice.user, carol.user),
        (Tenant, "acme", alice.tenant, carol.tenant),
        (Membership, "acme", alice, carol),
        (
            Invitation,
            "invitee",
            Invitation.objects.get(email="invitee@acme.test"),
            Invitation.objects.get(email="other@globex.test"),
        ),
    ]
    for model, query, found, not_found in cases:
        response = admin_client.get(changelist(model) + f"?q={query}")
        assert response.status_code == 200
        html = response.content.decode()
        assert f'href="{change(found)}' in html, model
        assert f'href="{change(not_found)}' not in html, model


def test_tenant_filters_by_plan_and_status(admin_client, tenant_a, tenant_b):
    tenant_b.status = "suspended"
    tenant_b.save()
    html = admin_client.get(
        changelist(Tenant) + "?status__exact=suspended"
    ).content.decode()
    assert "Globex Residence" in html
    assert f'href="{change(tenant_a)}' not in html


def test_membership_filters_by_tenant(admin_client, alice, olivia, carol):
    html = admin_client.get(
        changelist(Membership) + f"?tenant__id__exact={carol.tenant_id}"
    ).content.decode()
    assert f'href="{change(carol)}' in html
    assert f'href="{change(alice)}' not in html


def test_admin_needs_staff(login, alice):
    response = login(alice).get(changelist(Tenant))
    assert response.status_code == 302
    assert "/admin/login/" in response.url


# --- suspend / reactivate actions ---------------------------------------------------


def test_suspend_action_goes_through_the_service(
    admin_client, staff, alice, carol, events
):
    response = admin_client.post(
        changelist(Tenant),
        {"action": "suspend_tenants", "_selected_action": [alice.tenant.pk]},
    )
    assert response.status_code == 302
    alice.tenant.refresh_from_db()
    carol.tenant.refresh_from_db()
    assert alice.tenant.status == "suspended"
    assert carol.tenant.status == "active"
    (event,) = events("tenant.suspended")
    assert event.tenant == alice.tenant
    assert event.actor == staff
    assert event.data == {"from": "active", "to": "suspended"}
    # The suspended tenant's members now see the notice.
    admin_client.force_login(alice.user)
    assert admin_client.get(reverse("team")).status_code == 403


def test_reactivate_action(admin_client, staff, alice, events):
    alice.tenant.status = "suspended"
    alice.tenant.save()
    admin_client.post(
        changelist(Tenant),
        {"action": "reactivate_tenants", "_selected_action": [alice.tenant.pk]},
    )
    alice.tenant.refresh_from_db()
    assert alice.tenant.status == "active"
    (event,) = events("tenant.reactivated")
    assert event.actor == staff


def test_suspending_twice_records_once(admin_client, alice, events):
    for _ in range(2):
        admin_client.post(
            changelist(Tenant),
            {"action": "suspend_tenants", "_selected_action": [alice.tenant.pk]},
        )
    assert len(events("tenant.suspended")) == 1


def test_status_is_not_editable_in_the_form(admin_client, alice):
    html = admin_client.get(change(alice.tenant)).content.decode()
    assert 'name="status"' not in html


# --- admin changes in the audit trail -----------------------------------------------


def test_tenant_change_is_audited_with_field_names_only(
    admin_client, staff, alice, events
):
    tenant = alice.tenant
    response = admin_client.post(
        change(tenant),
        {"name": "Renamed Secret Corp", "slug": tenant.slug, "plan": ""},
    )
    assert response.status_code == 302
    tenant.refresh_from_db()
    assert tenant.name == "Renamed Secret Corp"
    (event,) = events("admin.changed")
    assert event.tenant == tenant
    assert event.actor == staff
    assert event.source == "admin"
    assert event.data == {"model": "tenants.Tenant", "fields": ["name"]}
    assert "Renamed Secret Corp" not in json.dumps(event.data)


def test_unchanged_save_records_nothing(admin_client, alice, events):
    tenant = alice.tenant
    admin_client.post(change(tenant), {"name": tenant.name, "slug": tenant.slug})
    assert events("admin.changed") == []


def test_tenant_add_is_audited_in_its_own_chain(admin_client, staff, events):
    response = admin_client.post(
        reverse("admin:tenants_tenant_add"),
        {"name": "Initech Pools", "slug": "initech"},
    )
    assert response.status_code == 302
    tenant = Tenant.objects.get(slug="initech")
    (event,) = events("admin.created")
    assert event.tenant == tenant
    assert event.target_code == str(tenant.code)
    assert sorted(event.data["fields"]) == ["name", "slug"]


def test_bad_admin_input_changes_nothing(admin_client, alice, carol, events):
    response = admin_client.post(
        change(alice.tenant), {"name": "", "slug": carol.tenant.slug}
    )
    assert response.status_code == 200
    assert b"This field is required." in response.content
    alice.tenant.refresh_from_db()
    assert alice.tenant.name == "Acme Pools"
    assert events("admin.changed") == []


def test_membership_role_change_is_audited_to_its_tenant(
    admin_client, staff, olivia, events
):
    response = admin_client.post(
        change(olivia),
        {"tenant": olivia.tenant_id, "user": olivia.user_id, "role": "admin"},
    )
    assert response.status_code == 302
    olivia.refresh_from_db()
    assert olivia.role == "admin"
    # Through the team's service: its own event, not a generic admin.changed.
    assert events("admin.changed") == []
    (event,) = events("membership.role_changed")
    assert event.tenant == olivia.tenant
    assert event.actor == staff
    assert event.source == "admin"
    assert event.data == {"user": olivia.user.email, "from": "operator", "to": "admin"}
    assert event.target_code == str(olivia.code)


def test_membership_delete_is_audited(admin_client, staff, victor, events):
    url = reverse("admin:tenants_membership_delete", args=[victor.pk])
    response = admin_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not Membership.objects.filter(pk=victor.pk).exists()
    (event,) = events("membership.removed")
    assert event.source == "admin"
    assert event.tenant == victor.tenant
    assert event.target_code == str(victor.code)
    assert event.actor == staff


def test_bulk_delete_is_audited_per_object(admin_client, olivia, victor, events):
    response = admin_client.post(
        changelist(Membership),
        {
            "action": "delete_selected",
            "_selected_action": [olivia.pk, victor.pk],
            "post": "yes",
        },
    )
    assert response.status_code == 302
    assert not Membership.objects.filter(pk__in=[olivia.pk, victor.pk]).exists()
    deleted = events("membership.removed")
    assert sorted(e.target_code for e in deleted) == sorted(
        [str(olivia.code), str(victor.code)]
    )


def test_user_add_records_no_password(admin_client, events):
    response = admin_client.post(
        reverse("admin:tenants_user_add"),
        {
            "email": "hired@poolsaas.test",
            "full_name": "New Hire",
            "usable_password": "true",
            "password1": "marlin-sunset-8812",
            "password2": "marlin-sunset-8812",
            # The memberships inline, left empty.
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    user = User.objects.get(email="hired@poolsaas.test")
    assert user.check_password("marlin-sunset-8812")
    (event,) = events("admin.created")
    assert event.tenant is None
    assert event.target_code == str(user.code)
    assert "marlin-sunset-8812" not in json.dumps(event.data)
    assert "email" in event.data["fields"]


def test_user_password_change_is_audited(admin_client, alice, events):
    url = reverse("admin:auth_user_password_change", args=[alice.user.pk])
    response = admin_client.post(
        url,
        {
            "password1": "reef-anchor-5531",
            "password2": "reef-anchor-5531",
            "usable_password": "true",
        },
    )
    assert response.status_code == 302
    alice.user.refresh_from_db()
    assert alice.user.check_password("reef-anchor-5531")
    (event,) = events("password.changed")
    assert event.source == "admin"
    assert event.data["how"] == "admin"
    assert "reef-anchor-5531" not in json.dumps(event.data)


def test_refused_password_change_records_nothing(admin_client, alice, events):
    url = reverse("admin:auth_user_password_change", args=[alice.user.pk])
    admin_client.post(
        url, {"password1": "a", "password2": "b", "usable_password": "true"}
    )
    alice.user.refresh_from_db()
    assert alice.user.check_password(PASSWORD)
    assert events("admin.changed") == [] and events("password.changed") == []


# --- invitations are read-only -------------------------------------------------------


def test_invitation_admin_is_read_only_and_hides_the_token_hash(admin_client, alice):
    invitation, token = invitation_create(
        membership=alice, email="invitee@acme.test", role="viewer"
    )
    assert admin_client.get(reverse("admin:tenants_invitation_add")).status_code == 403
    page = admin_client.get(change(invitation))
    assert page.status_code == 200
    html = page.content.decode()
    assert "invitee@acme.test" in html
    assert invitation.token_hash not in html
    assert token not in html
    assert (
        admin_client.post(change(invitation), {"email": "x@y.test"}).status_code == 403
    )
    delete = reverse("admin:tenants_invitation_delete", args=[invitation.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    invitation.refresh_from_db()
    assert invitation.email == "invitee@acme.test"
    listing = admin_client.get(changelist(Invitation)).content.decode()
    assert invitation.token_hash not in listing
    assert "pending" in listing


def test_user_page_lists_memberships_read_only(admin_client, alice, carol):
    """Roles and removals are changed on the membership's own page (through the
    services): the inline under a user adds, changes and deletes nothing."""
    user = alice.user
    page = admin_client.get(change(user)).content.decode()
    assert 'name="memberships-0-role"' not in page
    assert change(alice) in page  # the link to the membership's own page
    response = admin_client.post(
        change(user),
        {
            "email": user.email,
            "full_name": user.full_name,
            "is_active": "on",
            "memberships-TOTAL_FORMS": "2",
            "memberships-INITIAL_FORMS": "1",
            "memberships-0-id": alice.pk,
            "memberships-0-user": user.pk,
            "memberships-0-tenant": alice.tenant_id,
            "memberships-0-role": "viewer",
            "memberships-0-DELETE": "on",
            "memberships-1-user": user.pk,
            "memberships-1-tenant": carol.tenant_id,
            "memberships-1-role": "viewer",
        },
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.role == "owner"
    assert not Membership.objects.filter(user=user, tenant=carol.tenant).exists()


def test_staff_log_in_on_the_product_login_page(client, staff):
    """/admin/login/ has neither the login throttle's page nor the second factor:
    it hands over to /login/ and comes back."""
    response = client.get("/admin/login/?next=/admin/tenants/")
    assert response.status_code == 302
    assert response.url == "/login/?next=/admin/tenants/"
    assert client.post("/admin/login/", {"username": staff.email}).status_code == 302
    logged = client.post(
        "/login/?next=/admin/tenants/",
        {"username": staff.email, "password": PASSWORD, "next": "/admin/tenants/"},
    )
    assert logged.url == "/admin/tenants/"
    assert client.get("/admin/tenants/").status_code == 200
