"""An issued invoice or credit note as a PDF (fpdf2) and as CSV.

Both are rendered from the stored document alone (its lines and the billed-to name
copied at issue), so a document renders the same bytes every time: the PDF's dates
are the issue date.
"""

from __future__ import annotations

import csv
import io

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from audit.views import _cell as csv_cell
from billing.invoices import Period, money

CSV_COLUMNS = [
    "number",
    "kind",
    "issued_at",
    "period_start",
    "period_end",
    "billed_to",
    "position",
    "description",
    "quantity",
    "unit",
    "unit_price_cents",
    "amount_cents",
    "currency",
]


def invoice_filename(invoice, ext: str) -> str:
    return f"{invoice.number}.{ext}"


def _latin1(text: str) -> str:
    # The PDF's built-in Helvetica has Latin-1 glyphs only; anything else (a tenant
    # named in Greek, an emoji) shows as "?" rather than failing the document.
    return str(text).encode("latin-1", "replace").decode("latin-1")


def _quantity(value) -> str:
    text = f"{value:f}".rstrip("0").rstrip(".")
    return text or "0"


def invoice_pdf(invoice) -> bytes:
    """The document as PDF bytes (A4, one page per ~30 lines)."""
    lines = list(invoice.lines.all())
    title = "Credit note" if invoice.is_credit_note else "Invoice"
    pdf = FPDF(format="A4")
    pdf.set_creation_date(invoice.issued_at)
    pdf.set_title(f"{title} {invoice.number}")
    pdf.set_author("poolsaas")
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.add_page()
    pdf.set_font("helvetica", "B", 18)
    pdf.cell(
        0, 10, _latin1(f"{title} {invoice.number}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT
    )
    pdf.set_font("helvetica", "", 10)
    period = Period(invoice.period_start, invoice.period_end)
    facts = [
        ("Billed to", invoice.billed_to),
        ("Issued", f"{invoice.issued_at:%Y-%m-%d}"),
        ("Period", period.label()),
    ]
    if invoice.corrects_id:
        facts.append(("Corrects", invoice.corrects.number))
        facts.append(("Reason", invoice.reason))
    for label, value in facts:
        pdf.cell(30, 6, _latin1(label))
        pdf.cell(0, 6, _latin1(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    widths = (100, 25, 30, 35)
    pdf.set_font("helvetica", "B", 10)
    for width, head, align in zip(
        widths, ("Description", "Quantity", "Unit price", "Amount"), "LRRR", strict=True
    ):
        pdf.cell(width, 7, head, border="B", align=align)
    pdf.ln()
    pdf.set_font("helvetica", "", 9)
    for line in lines:
        unit_price = f"{line.unit_price_cents / 100:,.2f} / {line.unit}"
        pdf.cell(widths[0], 6, _latin1(line.description[:70]))
        pdf.cell(widths[1], 6, _quantity(line.quantity), align="R")
        pdf.cell(widths[2], 6, _latin1(unit_price), align="R")
        pdf.cell(widths[3], 6, money(line.amount_cents, invoice.currency), align="R")
        pdf.ln()
    pdf.set_font("helvetica", "B", 11)
    pdf.cell(sum(widths[:3]), 9, "Total", border="T")
    pdf.cell(
        widths[3],
        9,
        money(invoice.total_cents, invoice.currency),
        border="T",
        align="R",
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    pdf.set_font("helvetica", "", 8)
    pdf.ln(6)
    pdf.multi_cell(
        0,
        4,
        "Usage lines show what the plan meters; usage within the plan is not charged.",
    )
    return bytes(pdf.output())


def invoice_csv(invoice) -> str:
    """One row per line, with the document's facts repeated on each (a spreadsheet
    can sum a year of them). Cells that a spreadsheet would run as a formula are
    quoted (text only: amounts stay numbers, negative on a credit note)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for line in invoice.lines.all():
        writer.writerow(
            [
                invoice.number,
                invoice.kind,
                invoice.issued_at.isoformat(),
                invoice.period_start.isoformat(),
                invoice.period_end.isoformat(),
                csv_cell(invoice.billed_to),
                line.position,
                csv_cell(line.description),
                _quantity(line.quantity),
                line.unit,
                _quantity(line.unit_price_cents),
                line.amount_cents,
                invoice.currency,
            ]
        )
    return out.getvalue()
