"""Billing pages: the tenant's usage this period (every member), its invoices and
credit notes with their PDF and CSV (owners and admins), and the payment provider's
webhook."""

from __future__ import annotations

from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing import payments
from billing.documents import invoice_csv, invoice_filename, invoice_pdf
from billing.invoices import Period, money
from billing.selectors import (
    invoice_get_for_member,
    invoices_for_member,
    usage_for_period,
)
from devices.views.member_page import member_page
from tenants.roles import Action
from tenants.selectors import membership_require


@member_page
def usage(request):
    membership = membership_require(membership=request.membership, action=Action.VIEW)
    data = usage_for_period(tenant=membership.tenant)
    for row in data["rows"]:
        row["used_text"] = f"{row['used']:,}"
        row["limit_text"] = "" if row["limit"] is None else f"{row['limit']:,}"
    for row in data["limits"]:
        row["used_text"], row["allowed_text"] = (
            f"{row['used']:,}",
            f"{row['allowed']:,}",
        )
    chart = {
        "start": data["period_start"].isoformat(),
        "end": data["period_end"].isoformat(),
        "series": [
            {
                "kind": row["kind"],
                "label": row["label"],
                "limit": row["limit"],
                "gauge": row["gauge"],
                "points": row["series"],
            }
            for row in data["rows"]
            if row["used"]
        ],
    }
    return render(
        request,
        "billing/usage.html",
        {
            **data,
            "period": Period(data["period_start"], data["period_end"]),
            "chart": chart,
        },
    )


@member_page
def invoices(request):
    rows = invoices_for_member(membership=request.membership)
    return render(
        request,
        "billing/invoices.html",
        {
            "rows": [
                {"invoice": i, "total": money(i.total_cents, i.currency)} for i in rows
            ]
        },
    )


@member_page
def invoice_detail(request, code):
    invoice = invoice_get_for_member(membership=request.membership, code=code)
    lines = [
        {"line": line, "amount": money(line.amount_cents, invoice.currency)}
        for line in invoice.lines.all()
    ]
    return render(
        request,
        "billing/invoice_detail.html",
        {
            "invoice": invoice,
            "lines": lines,
            "period": Period(invoice.period_start, invoice.period_end),
            "total": money(invoice.total_cents, invoice.currency),
            "paid": money(invoice.amount_paid_cents, invoice.currency),
            "credit_notes": list(invoice.credit_notes.all()),
        },
    )


def _download(body, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@member_page
def invoice_pdf_view(request, code):
    invoice = invoice_get_for_member(membership=request.membership, code=code)
    return _download(
        invoice_pdf(invoice), "application/pdf", invoice_filename(invoice, "pdf")
    )


@member_page
def invoice_csv_view(request, code):
    invoice = invoice_get_for_member(membership=request.membership, code=code)
    return _download(
        invoice_csv(invoice),
        "text/csv; charset=utf-8",
        invoice_filename(invoice, "csv"),
    )


@csrf_exempt
@require_POST
def stripe_webhook(request):
    """Stripe's events, signature-checked; each event id applied once."""
    try:
        provider = payments.provider()
    except payments.ProviderNotConfigured as exc:
        return JsonResponse({"error": str(exc)}, status=404)
    try:
        data = provider.webhook_parse(payload=request.body, headers=request.headers)
    except payments.BadWebhook as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    _outcome, applied = payments.payment_event_handle(data=data)
    return JsonResponse({"received": True, "duplicate": not applied})
