"""Staff in the admin: usage and revenue per tenant, invoices they can read but not
edit, and the credit-note action (audited, with the staff user as actor)."""

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from billing import invoices as inv
from billing.models import Invoice, UsageCounter
from billing.tests.test_invoices import (  # noqa: F401 - fixtures
    billed_a,
    billed_b,
    business,
    issue,
    pro,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db):
    from conftest import PASSWORD
    from tenants.models import User

    return User.objects.create_superuser(
        email="billing-staff@poolsaas.test", password=PASSWORD
    )


def test_staff_see_usage_and_revenue_per_tenant(client, staff, billed_a, billed_b):  # noqa: F811
    invoice = issue(billed_a)
    issue(billed_b)
    inv.credit_note_issue(invoice=invoice, reason="Goodwill", amount_cents=400)
    Invoice.objects.filter(pk=invoice.pk).update(amount_paid_cents=1500)
    now = timezone.now()
    for tenant, value in ((billed_a, 1234), (billed_b, 56)):
        UsageCounter.objects.create(
            tenant=tenant, kind="messages_in", value=value, minute=now
        )
    UsageCounter.objects.create(
        tenant=billed_a,
        kind="messages_in",
        value=10**6,
        minute=now - dt.timedelta(days=40),  # an earlier period
    )
    client.force_login(staff)
    page = client.get(reverse("admin:billing_tenantbilling_changelist"))
    assert page.status_code == 200
    rows = {
        r.name: (r.messages_used, r.invoiced_cents, r.paid_cents)
        for r in page.context["cl"].result_list
    }
    assert rows["Acme Pools"] == (1234, 1500, 1500)  # 19.00 less a 4.00 credit
    assert rows["Globex Residence"] == (56, 9900, 0)
    assert b"15.00 EUR" in page.content and b"1,234" in page.content
    detail = client.get(
        reverse("admin:billing_tenantbilling_change", args=[billed_a.pk])
    )
    assert detail.status_code == 200
    assert b"Device messages: 1,234 of 5,000,000" in detail.content


def test_invoices_are_read_only_in_the_admin(client, staff, billed_a):  # noqa: F811
    invoice = issue(billed_a)
    client.force_login(staff)
    url = reverse("admin:billing_invoice_change", args=[invoice.pk])
    assert client.get(url).status_code == 200
    client.post(url, {"billed_to": "Someone else", "total_cents": 1})
    invoice.refresh_from_db()
    assert (invoice.billed_to, invoice.total_cents) == ("Acme Pools", 1900)
    assert client.get(reverse("admin:billing_invoice_add")).status_code == 403
    delete = reverse("admin:billing_invoice_delete", args=[invoice.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert Invoice.objects.filter(pk=invoice.pk).exists()


def test_credit_action_issues_one_credit_note_per_invoice_audited(
    client,
    staff,
    billed_a,  # noqa: F811
):
    invoice = issue(billed_a)
    client.force_login(staff)
    changelist = reverse("admin:billing_invoice_changelist")
    data = {"action": "credit_in_full", "_selected_action": [invoice.pk]}
    client.post(changelist, data)
    note = Invoice.objects.get(kind="credit_note")
    assert note.corrects == invoice and note.total_cents == -1900
    assert note.reason == "Credited in full by billing-staff@poolsaas.test"
    event = AuditEvent.objects.get(action="invoice.credit_note_issued")
    assert event.actor == staff and event.source == "admin"
    # Again: refused with the reason, nothing more issued.
    response = client.post(changelist, data, follow=True)
    assert b"fully credited already" in response.content
    assert Invoice.objects.filter(kind="credit_note").count() == 1
