"""Payments: one provider interface, Stripe behind it, and the webhook's effects.

`PaymentProvider` is what the rest of billing knows: create a customer, create a
payment intent for an invoice, and turn a signed webhook request into a
`ProviderEventData` (or refuse it). `StripeProvider` does it with the official
`stripe` library: outgoing calls through a `StripeClient` whose API base is
`STRIPE_API_BASE` (tests point it at a loopback fake of Stripe's HTTP API), webhooks
checked by `stripe.Webhook.construct_event` against `STRIPE_WEBHOOK_SECRET`.

`payment_event_handle` applies an event once: the ProviderEvent row (unique per
provider and event id) is written in the same transaction as the effect, so a
replayed or concurrent duplicate delivery finds it and changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Protocol

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

logger = logging.getLogger(__name__)


class ProviderNotConfigured(Exception):
    """No payment provider is set up (no STRIPE_API_KEY / STRIPE_WEBHOOK_SECRET)."""


class BadWebhook(Exception):
    """A webhook request whose signature or body does not check out."""


class ProviderError(Exception):
    """The provider refused or could not be reached; the message says which."""


@dataclasses.dataclass(frozen=True)
class PaymentIntentRef:
    id: str
    client_secret: str
    status: str


@dataclasses.dataclass(frozen=True)
class ProviderEventData:
    """A verified webhook event, in our words."""

    provider: str
    event_id: str
    type: str
    invoice_code: str = ""
    payment_ref: str = ""
    amount_cents: int = 0
    currency: str = ""
    message: str = ""
    created: dt.datetime | None = None


class PaymentProvider(Protocol):
    name: str

    def customer_create(self, *, tenant, email: str) -> str: ...

    def payment_intent_create(
        self, *, invoice, customer_id: str
    ) -> PaymentIntentRef: ...

    def webhook_parse(self, *, payload: bytes, headers) -> ProviderEventData: ...


class StripeProvider:
    """Stripe through its official library."""

    name = "stripe"

    def __init__(self, *, api_key: str, webhook_secret: str, api_base: str):
        import stripe

        self.webhook_secret = webhook_secret
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            max_network_retries=0,
        )

    def _call(self, fn, **kwargs):
        import stripe

        try:
            return fn(**kwargs)
        except stripe.StripeError as exc:
            raise ProviderError(
                f"Stripe: {exc.user_message or exc.__class__.__name__}"
            ) from exc

    def customer_create(self, *, tenant, email: str) -> str:
        customer = self._call(
            self.client.v1.customers.create,
            params={
                "name": tenant.name,
                "email": email,
                "metadata": {"tenant": tenant.code.hex},
            },
            # Stripe answers a retried create with the first customer.
            options={"idempotency_key": f"customer-{tenant.code.hex}"},
        )
        return customer.id

    def payment_intent_create(self, *, invoice, customer_id: str) -> PaymentIntentRef:
        due = invoice.total_cents - invoice.amount_paid_cents
        intent = self._call(
            self.client.v1.payment_intents.create,
            params={
                "amount": due,
                "currency": invoice.currency.lower(),
                "customer": customer_id,
                "description": f"poolsaas {invoice.number}",
                "metadata": {"invoice": invoice.code.hex, "number": invoice.number},
                "automatic_payment_methods": {"enabled": True},
            },
            options={"idempotency_key": f"invoice-{invoice.code.hex}-{due}"},
        )
        return PaymentIntentRef(intent.id, intent.client_secret, intent.status)

    def webhook_parse(self, *, payload: bytes, headers) -> ProviderEventData:
        import stripe

        try:
            event = stripe.Webhook.construct_event(
                payload, headers.get("Stripe-Signature"), self.webhook_secret
            )
        except stripe.SignatureVerificationError:
            raise BadWebhook("The Stripe-Signature header does not match.") from None
        except ValueError:
            raise BadWebhook("The body is not a Stripe event.") from None
        obj = event.data.object.to_dict()
        metadata = obj.get("metadata") or {}
        error = obj.get("last_payment_error") or {}
        return ProviderEventData(
            provider=self.name,
            event_id=event.id,
            type=event.type,
            invoice_code=str(metadata.get("invoice", "")),
            payment_ref=str(obj.get("id", "")),
            amount_cents=int(obj.get("amount_received") or 0),
            currency=str(obj.get("currency", "")).upper(),
            message=str(error.get("message", "")),
            created=dt.datetime.fromtimestamp(event.created, tz=dt.UTC),
        )


def provider() -> PaymentProvider:
    """The configured provider, or ProviderNotConfigured."""
    if not (settings.STRIPE_API_KEY and settings.STRIPE_WEBHOOK_SECRET):
        raise ProviderNotConfigured("Payments are not set up on this installation.")
    return StripeProvider(
        api_key=settings.STRIPE_API_KEY,
        webhook_secret=settings.STRIPE_WEBHOOK_SECRET,
        api_base=settings.STRIPE_API_BASE,
    )


def billing_customer_ensure(*, tenant, provider: PaymentProvider):
    """The tenant's customer at the provider, created there the first time."""
    from billing.models import BillingCustomer
    from tenants.models import Membership
    from tenants.roles import Role

    existing = BillingCustomer.objects.filter(tenant=tenant).first()
    if existing is not None:
        return existing
    owner = (
        Membership.objects.filter(tenant=tenant, role=Role.OWNER)
        .order_by("created_at")
        .values_list("user__email", flat=True)
        .first()
    )
    customer_id = provider.customer_create(tenant=tenant, email=owner or "")
    customer, _ = BillingCustomer.objects.get_or_create(
        tenant=tenant,
        defaults={"provider": provider.name, "customer_id": customer_id},
    )
    return customer


def invoice_payment_start(*, invoice, provider: PaymentProvider) -> PaymentIntentRef:
    """A payment intent for what is still due on the invoice (the page or an app
    confirms it with the client secret)."""
    from billing.invoices import InvoiceError

    if invoice.is_credit_note:
        raise InvoiceError("A credit note is not paid.")
    if invoice.amount_paid_cents >= invoice.total_cents:
        raise InvoiceError(f"{invoice.number} is paid.")
    customer = billing_customer_ensure(tenant=invoice.tenant, provider=provider)
    ref = provider.payment_intent_create(
        invoice=invoice, customer_id=customer.customer_id
    )
    invoice.payment_intent_id = ref.id
    invoice.save(update_fields=["payment_intent_id"])
    return ref


def _invoice_for(data: ProviderEventData):
    import uuid

    from billing.models import Invoice

    try:
        code = uuid.UUID(data.invoice_code)
    except ValueError:
        return None
    return (
        Invoice.objects.select_for_update()
        .filter(code=code, kind=Invoice.Kind.INVOICE)
        .first()
    )


def payment_event_handle(*, data: ProviderEventData) -> tuple[str, bool]:
    """Apply a verified event once: (outcome, applied). A duplicate returns the first
    delivery's outcome with applied False and writes nothing."""
    from audit.services import audit_record
    from billing.models import Invoice, Payment, ProviderEvent

    try:
        with transaction.atomic():
            event, created = ProviderEvent.objects.get_or_create(
                provider=data.provider,
                event_id=data.event_id,
                defaults={"type": data.type},
            )
            if not created:
                return event.outcome, False
            invoice = None
            if data.type == "payment_intent.succeeded":
                invoice = _invoice_for(data)
                if invoice is None:
                    outcome = "ignored: no such invoice"
                elif data.currency != invoice.currency:
                    outcome = (
                        f"ignored: paid in {data.currency}, due in {invoice.currency}"
                    )
                else:
                    Payment.objects.create(
                        invoice=invoice,
                        event=event,
                        provider_ref=data.payment_ref,
                        amount_cents=data.amount_cents,
                        currency=data.currency,
                        received_at=data.created or timezone.now(),
                    )
                    invoice.amount_paid_cents += data.amount_cents
                    fields = ["amount_paid_cents"]
                    if invoice.amount_paid_cents >= invoice.total_cents:
                        invoice.status = Invoice.Status.PAID
                        invoice.paid_at = data.created or timezone.now()
                        fields += ["status", "paid_at"]
                    invoice.save(update_fields=fields)
                    outcome = f"paid {data.amount_cents} {data.currency}"
                    audit_record(
                        action="invoice.paid",
                        tenant=invoice.tenant,
                        target=invoice,
                        data={
                            "amount_cents": data.amount_cents,
                            "provider": data.provider,
                            "event": data.event_id,
                        },
                        actor_label=data.provider,
                    )
            elif data.type == "payment_intent.payment_failed":
                invoice = _invoice_for(data)
                outcome = f"payment failed: {data.message}"[:200]
                if invoice is not None:
                    audit_record(
                        action="invoice.payment_failed",
                        tenant=invoice.tenant,
                        target=invoice,
                        data={"provider": data.provider, "event": data.event_id},
                        actor_label=data.provider,
                    )
            else:
                outcome = "ignored: not an event poolsaas acts on"
            event.invoice = invoice
            event.outcome = outcome
            event.save(update_fields=["invoice", "outcome"])
    except IntegrityError:
        # The same event delivered twice at once: the other delivery applied it.
        event = ProviderEvent.objects.get(
            provider=data.provider, event_id=data.event_id
        )
        return event.outcome, False
    logger.info("%s %s %s: %s", data.provider, data.type, data.event_id, outcome)
    return outcome, True
