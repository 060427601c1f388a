"""Who sees invoices, on the pages and in the API: owners and admins of the tenant;
operators and viewers get 403; another tenant's invoice answers 404 byte for byte
like a made-up code, on the page, the PDF, the CSV and the API."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing import invoices as inv
from billing.models import Invoice
from billing.tests.test_invoices import (  # noqa: F401 - fixtures
    NOV,
    billed_a,
    billed_b,
    business,
    issue,
    pro,
)
from poolsaas.api.testing import api_client, assert_error

pytestmark = pytest.mark.django_db

PAGES = [
    "/billing/invoices/{}/",
    "/billing/invoices/{}/pdf/",
    "/billing/invoices/{}/csv/",
]
API = ["/api/v1/invoices/{}/", "/api/v1/invoices/{}/pdf/"]


@pytest.fixture
def invoice_a(billed_a):  # noqa: F811
    return issue(billed_a)


@pytest.fixture
def invoice_b(billed_b):  # noqa: F811
    return issue(billed_b)


def test_owner_and_admin_see_the_list_the_page_the_pdf_and_the_csv(
    login, alice, adam, invoice_a, invoice_b
):
    for member in (alice, adam):
        client = login(member)
        listing = client.get("/billing/invoices/")
        assert listing.status_code == 200
        assert invoice_a.number.encode() in listing.content
        assert invoice_b.number.encode() not in listing.content
        page = client.get(f"/billing/invoices/{invoice_a.code}/")
        assert page.status_code == 200
        assert b"Pro plan, 01 Nov" in page.content and b"19.00 EUR" in page.content
        pdf = client.get(f"/billing/invoices/{invoice_a.code}/pdf/")
        assert pdf["Content-Type"] == "application/pdf"
        assert pdf.content.startswith(b"%PDF-")
        assert 'filename="INV-2026-00001.pdf"' in pdf["Content-Disposition"]
        csv = client.get(f"/billing/invoices/{invoice_a.code}/csv/")
        rows = csv.content.decode().splitlines()
        assert rows[0].startswith("number,kind,issued_at")
        assert rows[1].startswith("INV-2026-00001,invoice,")
        assert rows[1].endswith(",1900,EUR")


def test_operator_and_viewer_are_refused_with_the_role_named(
    login, olivia, victor, invoice_a
):
    for member in (olivia, victor):
        client = login(member)
        for path in ["/billing/invoices/", *(p.format(invoice_a.code) for p in PAGES)]:
            response = client.get(path)
            assert response.status_code == 403, path
            assert b"admin role or higher" in response.content
        api = api_client(member)
        assert_error(api.get("/api/v1/invoices/"), 403, "permission_denied")
        for path in API:
            assert_error(api.get(path.format(invoice_a.code)), 403)


@pytest.mark.parametrize("path", PAGES)
def test_another_tenants_invoice_is_404_like_a_made_up_one_on_pages(
    login, alice, invoice_b, path
):
    client = login(alice)
    foreign = client.get(path.format(invoice_b.code))
    made_up = client.get(path.format(uuid.uuid4()))
    malformed = client.get(path.format("not-a-code"))
    assert foreign.status_code == made_up.status_code == malformed.status_code == 404
    assert foreign.content == made_up.content == malformed.content
    # The same for a role that could not see even its own tenant's invoices.


@pytest.mark.parametrize("path", API)
def test_another_tenants_invoice_is_404_like_a_made_up_one_in_the_api(
    alice, victor, invoice_b, path
):
    for member in (alice, victor):
        api = api_client(member)
        foreign = api.get(path.format(invoice_b.code))
        made_up = api.get(path.format(uuid.uuid4()))
        assert foreign.status_code == made_up.status_code == 404
        assert foreign.content == made_up.content
        assert assert_error(foreign, 404)["message"] == "No such invoice."


def test_api_lists_and_details_own_invoices_with_lines(adam, invoice_a, invoice_b):
    note = inv.credit_note_issue(invoice=invoice_a, reason="Goodwill", amount_cents=100)
    api = api_client(adam)
    listing = api.get("/api/v1/invoices/")
    assert listing.status_code == 200
    body = listing.json()
    assert [r["number"] for r in body["results"]] == [note.number, invoice_a.number]
    assert body["results"][0]["corrects"] == str(invoice_a.code)
    detail = api.get(f"/api/v1/invoices/{invoice_a.code}/").json()
    assert detail["total_cents"] == 1900 and detail["status"] == "issued"
    assert [line["kind"] for line in detail["lines"]] == ["plan", "usage"]
    pdf = api.get(f"/api/v1/invoices/{invoice_a.code}/pdf/")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
    # Read-only: nothing to post, put or delete.
    assert api.delete(f"/api/v1/invoices/{invoice_a.code}/").status_code == 405
    assert Invoice.objects.filter(pk=invoice_a.pk).exists()


def test_invoice_list_queries_do_not_grow_with_invoices(login, adam, billed_a):  # noqa: F811
    import datetime as dt

    client = login(adam)
    issue(billed_a)

    def queries():
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/billing/invoices/").status_code == 200
            assert api_client(adam).get("/api/v1/invoices/").status_code == 200
        return len(ctx.captured_queries)

    one = queries()
    for month in (12, 1, 2):
        year = 2026 if month == 12 else 2027
        period = inv.month_of(dt.date(year, month, 1))
        issue(billed_a, period, period.end_at() + dt.timedelta(hours=2))
    assert queries() == one


def test_pdf_holds_the_number_lines_and_total(invoice_a):
    import re
    import zlib

    from billing.documents import invoice_pdf

    data = invoice_pdf(invoice_a)
    text = b"".join(
        zlib.decompress(m)
        for m in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S)
        if m[:1] == b"x"
    )
    for expected in (
        b"Invoice INV-2026-00001",
        b"Acme Pools",
        b"19.00 EUR",
        b"Pro plan",
    ):
        assert expected in text, expected
    assert invoice_pdf(invoice_a) == data  # the same document, the same bytes
