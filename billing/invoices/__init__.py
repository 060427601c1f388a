"""Invoices: what a month costs (pure), and issuing it (services).

The pure half takes plain values and returns plain values, so totals, proration and
numbering are tested without a database:

- `month_of(day)` is the billing period, a calendar month in UTC (end exclusive).
- `plan_segments` cuts the period into the days each plan was in force.
- `invoice_lines` prices them: the plan fee prorated by days, then one metered line
  per usage kind (the usage over what the plan includes, at the plan's overage price;
  at zero where the plan sets none).
- `invoice_number` formats the per-year sequence: INV-2026-00001, CN-2026-00001.

The services (`invoice_issue`, `invoices_issue_for_month`, `credit_note_issue`,
`invoice_email`) write. An issued document never changes: the model refuses it and,
on PostgreSQL and SQLite, so does a trigger (migration 0006); a correction is a credit
note that references the invoice.
"""

from billing.invoices.compute import (  # noqa: F401 - the package's interface
    CREDIT_NOTE_PREFIX,
    INVOICE_PREFIX,
    USAGE_LABELS,
    InvoiceError,
    Line,
    Period,
    PlanTerms,
    Segment,
    cents,
    invoice_lines,
    invoice_number,
    lines_total,
    money,
    month_of,
    plan_segments,
    previous_month,
    prorate,
    usage_label,
)
from billing.invoices.services import (  # noqa: F401
    ISSUE_AFTER,
    credit_note_issue,
    invoice_email,
    invoice_issue,
    invoice_preview,
    invoices_issue_for_month,
    plan_change_record,
    plan_history,
    plan_terms,
)
