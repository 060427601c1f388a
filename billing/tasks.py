from celery import shared_task


@shared_task(name="billing.rollup_usage", ignore_result=True)
def rollup_usage() -> int:
    from billing.services import usage_rollup

    return usage_rollup()


@shared_task(name="billing.compact_usage", ignore_result=True)
def compact_usage() -> int:
    from billing.services import usage_compact

    return usage_compact()


@shared_task(name="billing.send_usage_warnings", ignore_result=True)
def send_usage_warnings() -> int:
    from billing.services import usage_warnings_send

    return usage_warnings_send()


@shared_task(name="billing.issue_invoices", ignore_result=True)
def issue_invoices() -> dict:
    """Last month's invoices (idempotent: runs hourly, issues each invoice once)."""
    from billing.invoices import invoices_issue_for_month

    return invoices_issue_for_month()


@shared_task(
    name="billing.email_invoice",
    ignore_result=True,
    autoretry_for=(OSError,),
    retry_backoff=60,
    max_retries=5,
)
def email_invoice(invoice_pk: int) -> int:
    from billing.invoices import invoice_email
    from billing.models import Invoice

    invoice = Invoice.objects.filter(pk=invoice_pk).first()
    return invoice_email(invoice=invoice) if invoice else 0
