"""Invoices: totals from the plan and the usage, proration of a plan change by days,
numbers without gaps, the monthly run issuing once, immutability (model and database
trigger), credit notes, and the mail to the owners with its PDF."""

import datetime as dt
import threading
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, connections, transaction

from billing import invoices as inv
from billing.models import (
    ImmutableDocument,
    Invoice,
    InvoiceLine,
    Plan,
    PlanChange,
    UsageCounter,
)

NOV = inv.Period(dt.date(2026, 11, 1), dt.date(2026, 12, 1))
# The monthly run's "now": an hour and a half into December.
AFTER_NOV = dt.datetime(2026, 12, 1, 1, 30, tzinfo=dt.UTC)
PRO = inv.PlanTerms("pro", "Pro", 1900, {"messages_in": 5_000_000})
BUSINESS = inv.PlanTerms("business", "Business", 9900, {"messages_in": 100_000_000})


# --- fixtures shared by the other invoice, payment and usage-page tests ---


def at(day: int, hour: int = 12, month: int = 11, year: int = 2026) -> dt.datetime:
    return dt.datetime(year, month, day, hour, tzinfo=dt.UTC)


def since_october(tenant):
    """The tenant existed all of November (fixtures are created 'now')."""
    from tenants.models import Tenant

    Tenant.objects.filter(pk=tenant.pk).update(created_at=at(15, month=10))
    tenant.refresh_from_db()
    return tenant


def plan(code: str):
    """A default plan of migration 0004 (made again where a transactional test's
    flush removed it)."""
    defaults = {
        "free": dict(
            name="Free", price_cents=0, messages_per_month=300_000, max_devices=1
        ),
        "pro": dict(name="Pro", price_cents=1900, messages_per_month=5_000_000),
        "business": dict(
            name="Business", price_cents=9900, messages_per_month=100_000_000
        ),
    }[code]
    return Plan.objects.get_or_create(code=code, defaults=defaults)[0]


@pytest.fixture
def pro(db):
    return plan("pro")


@pytest.fixture
def business(db):
    return plan("business")


@pytest.fixture
def billed_a(tenant_a, pro):
    tenant_a.plan = pro
    tenant_a.save(update_fields=["plan"])
    PlanChange.objects.filter(tenant=tenant_a).delete()
    return since_october(tenant_a)


@pytest.fixture
def billed_b(tenant_b, business):
    tenant_b.plan = business
    tenant_b.save(update_fields=["plan"])
    PlanChange.objects.filter(tenant=tenant_b).delete()
    return since_october(tenant_b)


@pytest.fixture
def eager_tasks():
    """Celery tasks run inline (the mail on issue), as without REDIS_URL."""
    from poolsaas.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


def issue(tenant, period=NOV, now=AFTER_NOV):
    invoice, created = inv.invoice_issue(tenant=tenant, period=period, now=now)
    assert created
    return invoice


def count(tenant, kind, value, when):
    UsageCounter.objects.create(tenant=tenant, kind=kind, minute=when, value=value)


# --- the pure half ---


def test_prorate_by_days_rounds_half_up():
    assert inv.prorate(monthly_cents=1900, days=30, period_days=30) == 1900
    assert inv.prorate(monthly_cents=1900, days=14, period_days=30) == 887  # 886.67
    assert inv.prorate(monthly_cents=9900, days=16, period_days=30) == 5280
    assert inv.prorate(monthly_cents=100, days=1, period_days=8) == 13  # 12.5 up
    with pytest.raises(ValueError):
        inv.prorate(monthly_cents=100, days=31, period_days=30)


def test_segments_cut_the_month_at_each_change_and_merge_equal_neighbours():
    segments = inv.plan_segments(
        period=NOV,
        initial=PRO,
        changes=[
            (dt.date(2026, 11, 15), BUSINESS),
            (dt.date(2026, 11, 20), BUSINESS),  # no change: merged
            (dt.date(2026, 12, 3), PRO),  # after the period: ignored
        ],
    )
    assert [(s.terms.code, s.start.day, s.days) for s in segments] == [
        ("pro", 1, 14),
        ("business", 15, 16),
    ]
    # A tenant that started on the 21st pays from the 21st; days without a plan
    # are not billed; of two changes on a day the later wins.
    late = inv.plan_segments(
        period=NOV,
        initial=PRO,
        changes=[(dt.date(2026, 11, 25), None), (dt.date(2026, 11, 28), PRO)],
        active_from=dt.date(2026, 11, 21),
    )
    assert [(s.start.day, s.days) for s in late] == [(21, 4), (28, 3)]
    same_day = inv.plan_segments(
        period=NOV,
        initial=PRO,
        changes=[(dt.date(2026, 11, 10), BUSINESS), (dt.date(2026, 11, 10), PRO)],
    )
    assert [(s.terms.code, s.days) for s in same_day] == [("pro", 30)]


def test_lines_fee_prorated_usage_over_prorated_allowance():
    priced = inv.PlanTerms(
        "metered", "Metered", 3000, {"messages_in": 30_000}, {"messages_in": 50}
    )
    segments = inv.plan_segments(
        period=NOV, initial=PRO, changes=[(dt.date(2026, 11, 21), priced)]
    )
    lines = inv.invoice_lines(
        period=NOV, segments=segments, usage={"messages_in": 3_343_000}
    )
    plan1, plan2, usage = lines
    assert (plan1.amount_cents, plan2.amount_cents) == (1267, 1000)  # 20/30, 10/30
    assert plan1.description == "Pro plan, 01 Nov – 20 Nov 2026 (20 of 30 days)"
    # Included: 20/30 of 5,000,000 plus 10/30 of 30,000 = 3,343,333: nothing over.
    assert usage.amount_cents == 0 and usage.quantity == 0
    over = inv.invoice_lines(
        period=NOV, segments=segments, usage={"messages_in": 3_353_333}
    )[2]
    # 10,000 over at 0.50 per 1,000 (the plan in force at the end).
    assert (over.quantity, over.amount_cents) == (Decimal(10), 500)
    assert inv.lines_total(over for over in [plan1, plan2, over]) == 2767


def test_numbers_and_money_read_the_same_everywhere():
    assert inv.invoice_number(prefix="INV", year=2026, seq=7) == "INV-2026-00007"
    assert inv.money(123456, "EUR") == "1,234.56 EUR"
    assert inv.money(-1900, "EUR") == "-19.00 EUR"
    assert inv.month_of(dt.date(2028, 2, 10)).days == 29
    assert inv.previous_month(dt.date(2027, 1, 1)) == inv.Period(
        dt.date(2026, 12, 1), dt.date(2027, 1, 1)
    )


# --- issuing ---


@pytest.mark.django_db
def test_invoice_total_is_the_plan_fee_plus_metered_usage(billed_a, tenant_b):
    count(billed_a, "messages_in", 1200, at(3))
    count(billed_a, "messages_in", 800, at(30, 23))
    count(billed_a, "api_calls", 40, at(4))
    count(billed_a, "messages_in", 999, at(1, 0, month=12))  # December: not billed
    count(tenant_b, "messages_in", 5000, at(3))  # another tenant's
    invoice = issue(billed_a)
    lines = list(invoice.lines.values_list("kind", "description", "amount_cents"))
    assert lines == [
        ("plan", "Pro plan, 01 Nov – 30 Nov 2026", 1900),
        ("usage", "API calls: 40", 0),
        ("usage", "Device messages: 2,000, 5,000,000 included", 0),
    ]
    assert invoice.total_cents == 1900 and invoice.currency == "EUR"
    assert invoice.billed_to == "Acme Pools"
    assert (invoice.period_start, invoice.period_end) == (NOV.start, NOV.end)


@pytest.mark.django_db
def test_plan_change_mid_month_is_prorated_by_days(billed_a, business):
    billed_a.plan = business
    billed_a.save(update_fields=["plan"])  # noted by billing.apps, dated now
    change = PlanChange.objects.get(tenant=billed_a)
    assert (change.previous_plan.code, change.plan.code) == ("pro", "business")
    PlanChange.objects.filter(pk=change.pk).update(at=at(15, 9))
    invoice = issue(billed_a)
    plan_lines = list(
        invoice.lines.filter(kind="plan").values_list("description", "amount_cents")
    )
    assert plan_lines == [
        ("Pro plan, 01 Nov – 14 Nov 2026 (14 of 30 days)", 887),
        ("Business plan, 15 Nov – 30 Nov 2026 (16 of 30 days)", 5280),
    ]
    assert invoice.total_cents == 887 + 5280
    # December, all on Business: no proration left over.
    december = issue(
        billed_a, inv.month_of(dt.date(2026, 12, 1)), at(1, 2, month=1, year=2027)
    )
    assert december.total_cents == 9900


@pytest.mark.django_db
def test_tenant_created_mid_month_pays_from_its_first_day(tenant_a, pro):
    from tenants.models import Tenant

    tenant_a.plan = pro
    tenant_a.save(update_fields=["plan"])
    PlanChange.objects.filter(tenant=tenant_a).delete()
    Tenant.objects.filter(pk=tenant_a.pk).update(created_at=at(21, 18))
    tenant_a.refresh_from_db()
    invoice = issue(tenant_a)
    assert invoice.total_cents == 633  # 10 of 30 days of 19.00


@pytest.mark.django_db
def test_numbers_run_per_year_without_gaps_and_a_rollback_gives_its_number_back(
    billed_a, billed_b
):
    with pytest.raises(RuntimeError), transaction.atomic():
        issue(billed_a)
        raise RuntimeError("mail server down, say")
    assert not Invoice.objects.exists()
    first = issue(billed_a)
    second = issue(billed_b)
    note = inv.credit_note_issue(invoice=first, reason="Goodwill")
    assert [first.number, second.number, note.number] == [
        "INV-2026-00001",
        "INV-2026-00002",
        "CN-2026-00001",
    ]
    january = issue(
        billed_a, inv.month_of(dt.date(2026, 12, 1)), at(1, 2, month=1, year=2027)
    )
    assert january.number == "INV-2027-00001"  # a new year starts again at 1


@pytest.mark.django_db
def test_monthly_run_waits_for_the_month_then_issues_once(
    billed_a,
    billed_b,
    eager_tasks,
    mailoutbox,
    make_member,
    django_capture_on_commit_callbacks,
):
    from tenants.models import Tenant

    make_member(billed_a, "alice@acme.test", "owner")
    make_member(billed_a, "adam@acme.test", "admin")
    free = Tenant.objects.create(name="Free Pool", slug="free-pool", plan=plan("free"))
    since_october(free)
    Tenant.objects.create(name="Newcomer", slug="newcomer")  # created in December
    early = inv.invoices_issue_for_month(now=AFTER_NOV - dt.timedelta(hours=1))
    assert early["waiting"] == 1 and not Invoice.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        first = inv.invoices_issue_for_month(now=AFTER_NOV)
    with django_capture_on_commit_callbacks(execute=True):
        again = inv.invoices_issue_for_month(now=AFTER_NOV + dt.timedelta(hours=1))
    assert (first["issued"], first["nothing"]) == (2, 1)  # free costs nothing
    assert (again["issued"], again["existing"]) == (0, 2)
    assert Invoice.objects.count() == 2
    # One mail per invoice, to the owners only, with the PDF.
    mine = [m for m in mailoutbox if "INV-2026" in m.subject and "Acme" in m.body]
    assert len(mine) == 1 and mine[0].to == ["alice@acme.test"]
    name, content, mimetype = mine[0].attachments[0]
    assert mimetype == "application/pdf" and content.startswith(b"%PDF-")
    assert Invoice.objects.get(tenant=billed_a).emailed_at is not None


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_monthly_runs_at_once_issue_each_invoice_once_numbered_1_to_n(pro):
    from tenants.models import Tenant

    tenants = [
        since_october(Tenant.objects.create(name=f"Run {i}", slug=f"run-{i}", plan=pro))
        for i in range(6)
    ]
    barrier = threading.Barrier(2)
    errors = []

    def run():
        try:
            barrier.wait(10)
            inv.invoices_issue_for_month(now=AFTER_NOV)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == [f"INV-2026-{i:05d}" for i in range(1, len(tenants) + 1)]


# --- immutability ---


@pytest.mark.django_db
def test_issued_invoice_cannot_change_in_the_model(billed_a):
    invoice = issue(billed_a)
    invoice.total_cents = 1
    with pytest.raises(ImmutableDocument):
        invoice.save()
    with pytest.raises(ImmutableDocument):
        invoice.save(update_fields=["total_cents"])
    with pytest.raises(ImmutableDocument):
        invoice.delete()
    line = invoice.lines.first()
    line.amount_cents = 0
    with pytest.raises(ImmutableDocument):
        line.save()
    with pytest.raises(ImmutableDocument):
        line.delete()
    # What payment and delivery record may change.
    fresh = Invoice.objects.get(pk=invoice.pk)
    fresh.status = Invoice.Status.PAID
    fresh.save(update_fields=["status"])
    assert Invoice.objects.get(pk=invoice.pk).total_cents == 1900


@pytest.mark.django_db
def test_issued_invoice_cannot_change_in_the_database(billed_a):
    invoice = issue(billed_a)
    for change in (
        lambda: Invoice.objects.filter(pk=invoice.pk).update(total_cents=1),
        lambda: Invoice.objects.filter(pk=invoice.pk).update(billed_to="Someone"),
        lambda: InvoiceLine.objects.filter(invoice=invoice).update(amount_cents=0),
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            change()
    if connection.vendor == "postgresql":
        with pytest.raises(IntegrityError), transaction.atomic():
            Invoice.objects.filter(pk=invoice.pk)._raw_delete(connection.alias)
    Invoice.objects.filter(pk=invoice.pk).update(amount_paid_cents=100)
    invoice.refresh_from_db()
    assert (invoice.total_cents, invoice.amount_paid_cents) == (1900, 100)
    assert sum(invoice.lines.values_list("amount_cents", flat=True)) == 1900


# --- credit notes ---


@pytest.mark.django_db
def test_full_credit_note_negates_every_line_and_references_the_invoice(
    billed_a, alice
):
    invoice = issue(billed_a)
    note = inv.credit_note_issue(
        invoice=invoice, reason="Billed twice", actor=alice.user
    )
    assert note.kind == Invoice.Kind.CREDIT_NOTE and note.corrects == invoice
    assert note.total_cents == -1900 and note.reason == "Billed twice"
    assert [line.amount_cents for line in note.lines.all()] == [
        -line.amount_cents for line in invoice.lines.all()
    ]
    assert note.lines.first().description.startswith("Credit: Pro plan")
    invoice.refresh_from_db()
    assert invoice.total_cents == 1900  # the invoice itself is unchanged
    with pytest.raises(inv.InvoiceError, match="fully credited"):
        inv.credit_note_issue(invoice=invoice, reason="Again")
    from audit.models import AuditEvent

    event = AuditEvent.objects.get(action="invoice.credit_note_issued")
    assert event.actor == alice.user and event.data["total_cents"] == -1900


@pytest.mark.django_db
def test_partial_credit_notes_up_to_the_total_and_bad_ones_write_nothing(billed_a):
    invoice = issue(billed_a)
    first = inv.credit_note_issue(invoice=invoice, reason="Outage", amount_cents=500)
    assert first.total_cents == -500
    assert first.lines.get().description == "Credit on INV-2026-00001: Outage"
    for kwargs, message in [
        ({"amount_cents": 1401}, "between 0.01 and 14.00 EUR"),
        ({"amount_cents": 0}, "between"),
        ({"amount_cents": 100, "reason": "  "}, "Say why"),
    ]:
        kwargs.setdefault("reason", "x")
        with pytest.raises(inv.InvoiceError, match=message):
            inv.credit_note_issue(invoice=invoice, **kwargs)
    with pytest.raises(inv.InvoiceError, match="not a credit note"):
        inv.credit_note_issue(invoice=first, reason="x")
    assert Invoice.objects.count() == 2
    rest = inv.credit_note_issue(invoice=invoice, reason="Closing")
    assert rest.total_cents == -1400 and rest.number == "CN-2026-00002"
