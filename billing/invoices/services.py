"""Issuing: the monthly run, one tenant's invoice, credit notes, the mail, and the
plan history proration is computed from. Immutability is the model's and the
database's (migration 0006); numbers come from the locked per-year sequence."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from decimal import Decimal

from billing.invoices.compute import (
    CREDIT_NOTE_PREFIX,
    INVOICE_PREFIX,
    InvoiceError,
    Line,
    Period,
    PlanTerms,
    invoice_lines,
    invoice_number,
    lines_total,
    money,
    plan_segments,
    previous_month,
)

logger = logging.getLogger(__name__)

# The month's last minutes reach PostgreSQL with the roll-up a few minutes late
# (docs/billing.md); the run waits this long after the month before issuing.
ISSUE_AFTER = dt.timedelta(hours=1)


def plan_terms(plan) -> PlanTerms:
    """A Plan's prices: its monthly fee, and its monthly message allowance as what is
    included (plans set no overage price: usage is metered on the invoice at 0)."""
    return PlanTerms(
        code=plan.code,
        name=plan.name,
        monthly_fee_cents=plan.price_cents,
        included={"messages_in": plan.messages_per_month},
        # No plan has an overage price yet: a Plan field would go here.
        overage_cents_per_1000={},
    )


def plan_history(*, tenant, period: Period):
    """(plan at the period's start, [(day, plan) changes during it]) from PlanChange;
    a tenant without any change has had its current plan all along."""
    from billing.models import PlanChange

    rows = list(
        PlanChange.objects.filter(tenant=tenant)
        .select_related("plan", "previous_plan")
        .order_by("at", "pk")
    )
    before = [r for r in rows if r.at < period.start_at()]
    during = [r for r in rows if period.start_at() <= r.at < period.end_at()]
    if before:
        initial = before[-1].plan
    elif during:
        initial = during[0].previous_plan
    elif rows:
        initial = rows[0].previous_plan
    else:
        initial = tenant.plan
    changes = [
        (r.at.astimezone(dt.UTC).date(), plan_terms(r.plan) if r.plan else None)
        for r in during
    ]
    return (plan_terms(initial) if initial else None), changes


def plan_change_record(*, tenant, previous_plan, plan, at=None) -> None:
    """Note that the tenant's plan changed (billing.apps calls this on every save of
    a Tenant whose plan differs from the one it was loaded with)."""
    from django.utils import timezone

    from billing.models import PlanChange

    PlanChange.objects.create(
        tenant=tenant, previous_plan=previous_plan, plan=plan, at=at or timezone.now()
    )


def invoice_preview(*, tenant, period: Period) -> list[Line]:
    """The lines the tenant's invoice for the period would have (nothing written)."""
    from billing.selectors import usage_totals

    initial, changes = plan_history(tenant=tenant, period=period)
    segments = plan_segments(
        period=period,
        initial=initial,
        changes=changes,
        active_from=tenant.created_at.astimezone(dt.UTC).date(),
    )
    if not segments:
        return []
    usage = usage_totals(tenant, since=period.start_at(), until=period.end_at())
    return invoice_lines(period=period, segments=segments, usage=usage)


def _number_take(*, prefix: str, year: int) -> tuple[int, str]:
    """The next number of the prefix's year. Call inside the issuing transaction:
    the sequence row stays locked until it commits, and a rollback gives the number
    back, so numbers have no gaps."""
    from billing.models import InvoiceSequence

    InvoiceSequence.objects.get_or_create(prefix=prefix, year=year)
    seq = InvoiceSequence.objects.select_for_update().get(prefix=prefix, year=year)
    seq.last += 1
    seq.save(update_fields=["last"])
    return seq.last, invoice_number(prefix=prefix, year=year, seq=seq.last)


def _lines_create(invoice, lines: Sequence[Line]) -> None:
    from billing.models import InvoiceLine

    InvoiceLine.objects.bulk_create(
        InvoiceLine(
            invoice=invoice,
            position=i,
            kind=line.kind,
            description=line.description[:200],
            usage_kind=line.usage_kind,
            quantity=line.quantity.quantize(Decimal("0.000001")),
            unit=line.unit,
            unit_price_cents=line.unit_price_cents.quantize(Decimal("0.0001")),
            amount_cents=line.amount_cents,
            period_start=line.period_start,
            period_end=line.period_end,
        )
        for i, line in enumerate(lines, start=1)
    )


def _issued(invoice, *, actor=None) -> None:
    from django.db import transaction

    from audit.services import audit_record
    from billing import tasks

    audit_record(
        action="invoice.credit_note_issued"
        if invoice.is_credit_note
        else "invoice.issued",
        tenant=invoice.tenant,
        actor=actor,
        target=invoice,
        data={"number": invoice.number, "total_cents": invoice.total_cents},
    )
    pk = invoice.pk
    transaction.on_commit(lambda: tasks.email_invoice.delay(pk))


def invoice_issue(*, tenant, period: Period, now: dt.datetime | None = None):
    """Issue the tenant's invoice for the period, once: (invoice, created). An
    invoice that exists already is returned as it is; a month with nothing to bill
    (no plan, or a total of zero) issues nothing and returns (None, False)."""
    from django.db import transaction
    from django.utils import timezone

    from billing.models import Invoice
    from tenants.models import Tenant

    now = now or timezone.now()
    if now < period.end_at():
        raise InvoiceError("A month is invoiced after it ends.")
    with transaction.atomic():
        # One issuer per tenant at a time; the unique constraint backs this up.
        tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
        existing = Invoice.objects.filter(
            tenant=tenant, kind=Invoice.Kind.INVOICE, period_start=period.start
        ).first()
        if existing is not None:
            return existing, False
        lines = invoice_preview(tenant=tenant, period=period)
        total = lines_total(lines)
        if not lines or total == 0:
            return None, False
        _, number = _number_take(prefix=INVOICE_PREFIX, year=now.year)
        invoice = Invoice.objects.create(
            tenant=tenant,
            kind=Invoice.Kind.INVOICE,
            number=number,
            period_start=period.start,
            period_end=period.end,
            issued_at=now,
            billed_to=tenant.name,
            currency=tenant.plan.currency if tenant.plan else "EUR",
            total_cents=total,
        )
        _lines_create(invoice, lines)
        _issued(invoice)
    logger.info("issued %s to tenant %s: %s", number, tenant.pk, total)
    return invoice, True


def invoices_issue_for_month(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Issue last month's invoice of every tenant that existed then (the beat task).
    Idempotent: a second run, or two at once, issues each invoice once."""
    from django.utils import timezone

    from tenants.models import Tenant

    now = now or timezone.now()
    period = previous_month(now.astimezone(dt.UTC).date())
    if now < period.end_at() + ISSUE_AFTER:
        return {"issued": 0, "existing": 0, "nothing": 0, "waiting": 1}
    counts = {"issued": 0, "existing": 0, "nothing": 0, "waiting": 0}
    tenants = Tenant.objects.filter(created_at__lt=period.end_at()).order_by("pk")
    for tenant in tenants.iterator():
        invoice, created = invoice_issue(tenant=tenant, period=period, now=now)
        key = "issued" if created else ("existing" if invoice else "nothing")
        counts[key] += 1
    return counts


def credit_note_issue(
    *, invoice, reason: str, amount_cents: int | None = None, actor=None, now=None
):
    """A credit note against an issued invoice: all of what is still uncredited
    (every line negated) or `amount_cents` of it (one line). Raises InvoiceError
    with the reason when it cannot be issued; nothing is written then."""
    from django.db import transaction
    from django.db.models import Sum
    from django.utils import timezone

    from billing.models import Invoice

    reason = (reason or "").strip()
    if not reason:
        raise InvoiceError("Say why the invoice is corrected.")
    now = now or timezone.now()
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
        if invoice.is_credit_note:
            raise InvoiceError("A credit note corrects an invoice, not a credit note.")
        credited = -(
            invoice.credit_notes.aggregate(total=Sum("total_cents"))["total"] or 0
        )
        remaining = invoice.total_cents - credited
        if remaining <= 0:
            raise InvoiceError(f"{invoice.number} is fully credited already.")
        if amount_cents is None and credited == 0:
            lines = [
                Line(
                    kind="credit",
                    description=f"Credit: {line.description}"[:200],
                    quantity=line.quantity,
                    unit=line.unit,
                    unit_price_cents=-line.unit_price_cents,
                    amount_cents=-line.amount_cents,
                    usage_kind=line.usage_kind,
                    period_start=line.period_start,
                    period_end=line.period_end,
                )
                for line in invoice.lines.all()
            ]
        else:
            amount = remaining if amount_cents is None else int(amount_cents)
            if not 0 < amount <= remaining:
                raise InvoiceError(
                    f"Credit between 0.01 and {money(remaining, invoice.currency)}."
                )
            lines = [
                Line(
                    kind="credit",
                    description=f"Credit on {invoice.number}: {reason}"[:200],
                    quantity=Decimal(1),
                    unit="credit",
                    unit_price_cents=Decimal(-amount),
                    amount_cents=-amount,
                )
            ]
        _, number = _number_take(prefix=CREDIT_NOTE_PREFIX, year=now.year)
        note = Invoice.objects.create(
            tenant=invoice.tenant,
            kind=Invoice.Kind.CREDIT_NOTE,
            number=number,
            period_start=invoice.period_start,
            period_end=invoice.period_end,
            issued_at=now,
            billed_to=invoice.billed_to,
            currency=invoice.currency,
            total_cents=lines_total(lines),
            corrects=invoice,
            reason=reason[:300],
        )
        _lines_create(note, lines)
        _issued(note, actor=actor)
    return note


def invoice_email(*, invoice) -> int:
    """Mail the document, PDF attached, to the tenant's owners, once. Returns the
    number of recipients (0 when it was sent before or there is no owner)."""
    from django.core.mail import EmailMessage
    from django.db import transaction
    from django.utils import timezone

    from billing.documents import invoice_filename, invoice_pdf
    from billing.models import Invoice
    from tenants.models import Membership
    from tenants.roles import Role

    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
        if invoice.emailed_at is not None:
            return 0
        recipients = sorted(
            Membership.objects.filter(
                tenant_id=invoice.tenant_id, role=Role.OWNER, user__is_active=True
            ).values_list("user__email", flat=True)
        )
        if not recipients:
            return 0
        what = "Credit note" if invoice.is_credit_note else "Invoice"
        body = (
            f"{what} {invoice.number} for {invoice.billed_to}\n"
            f"Period: {Period(invoice.period_start, invoice.period_end).label()}\n"
            f"Total: {money(invoice.total_cents, invoice.currency)}\n\n"
            "The PDF is attached; owners and admins also find it under Billing.\n"
        )
        message = EmailMessage(
            f"[poolsaas] {what} {invoice.number}", body, None, recipients
        )
        message.attach(
            invoice_filename(invoice, "pdf"), invoice_pdf(invoice), "application/pdf"
        )
        message.send()
        invoice.emailed_at = timezone.now()
        invoice.save(update_fields=["emailed_at"])
    return len(recipients)
