"""The audit trail in the staff admin: visible, searchable, never editable."""

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from audit.services import audit_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, db):
    from conftest import PASSWORD
    from tenants.models import User

    staff = User.objects.create_superuser(
        email="staff@poolsaas.test", password=PASSWORD
    )
    client.force_login(staff)
    return client


@pytest.fixture
def two_events(alice, carol):
    return (
        audit_record(action="pool.created", tenant=alice.tenant, actor=alice.user),
        audit_record(action="broker.changed", tenant=carol.tenant, actor=carol.user),
    )


def change_url(event) -> str:
    return reverse("admin:audit_auditevent_change", args=[event.pk])


def test_changelist_filters_and_search(staff_client, alice, two_events):
    ours, theirs = two_events
    url = reverse("admin:audit_auditevent_changelist")
    for query in (
        f"?tenant__id__exact={alice.tenant_id}",
        "?action=pool.created",
        "?q=alice@acme",
        "?source__exact=system",
    ):
        html = staff_client.get(url + query).content.decode()
        assert change_url(ours) in html, query
        if query != "?source__exact=system":
            assert change_url(theirs) not in html, query


def test_events_cannot_be_added_changed_or_deleted(staff_client, two_events):
    event, _ = two_events
    before = (event.action, event.hash)
    assert staff_client.get(reverse("admin:audit_auditevent_add")).status_code == 403
    # The change page is view-only...
    page = staff_client.get(change_url(event))
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    # ...and a forged POST is refused.
    forged = staff_client.post(change_url(event), {"action": "nothing.happened"})
    assert forged.status_code == 403
    delete = reverse("admin:audit_auditevent_delete", args=[event.pk])
    assert staff_client.post(delete, {"post": "yes"}).status_code == 403
    bulk = staff_client.post(
        reverse("admin:audit_auditevent_changelist"),
        {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    event = AuditEvent.objects.get(pk=event.pk)
    assert (event.action, event.hash) == before
    assert AuditEvent.objects.count() == 2


def test_chain_heads_are_read_only(staff_client, two_events):
    url = reverse("admin:audit_auditchain_changelist")
    assert staff_client.get(url).status_code == 200
    assert staff_client.get(reverse("admin:audit_auditchain_add")).status_code == 403


def test_tenant_members_cannot_open_the_admin(login, alice, two_events):
    response = login(alice).get(reverse("admin:audit_auditevent_changelist"))
    assert response.status_code == 302
