"""/api/v1/usage/ and /api/v1/invoices/: this period's usage (every member) and the
tenant's invoices and credit notes with their PDF (owners and admins). Documents come
from billing.selectors' access functions, like the pages'."""

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import exceptions, mixins, serializers
from rest_framework.decorators import action
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response

from billing import payments
from billing.api import serializers as s
from billing.documents import invoice_filename, invoice_pdf
from billing.invoices import InvoiceError
from billing.models import Invoice
from billing.selectors import (
    invoice_get_for_member,
    invoices_for_member,
    usage_for_period,
)
from poolsaas.api.renderers import JSONRenderer
from poolsaas.api.viewsets import ApiView, TenantScopedViewSet
from tenants.roles import Action
from tenants.selectors import membership_require

INVOICE_EXAMPLE = {
    "code": "8d7c6b5a-4f3e-4d2c-9b1a-0f9e8d7c6b5a",
    "number": "INV-2026-00042",
    "kind": "invoice",
    "status": "issued",
    "period_start": "2026-11-01",
    "period_end": "2026-12-01",
    "issued_at": "2026-12-01T01:00:04Z",
    "billed_to": "Acme Pools",
    "currency": "EUR",
    "total_cents": 6167,
    "amount_paid_cents": 0,
    "paid_at": None,
    "corrects": None,
    "reason": "",
}


class PDFRenderer(BaseRenderer):
    """Lets a client ask for application/pdf (errors stay JSON: ApiViewMixin)."""

    media_type = "application/pdf"
    format = "pdf"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data


class PaymentIntentSerializer(serializers.Serializer):
    payment_intent = serializers.CharField()
    client_secret = serializers.CharField()


class ProviderUnavailable(exceptions.APIException):
    status_code = 503
    default_code = "payments_unavailable"


class ProviderFailed(exceptions.APIException):
    status_code = 502
    default_code = "payment_provider_error"


class UsageView(ApiView):
    """Usage of the current billing period (a calendar month, UTC) by kind, each
    against its plan limit."""

    @extend_schema(
        tags=["billing"],
        summary="This period's usage by kind, against the plan's limits",
        responses={200: s.UsageSerializer},
        examples=[
            OpenApiExample(
                "Usage",
                value={
                    "period_start": "2026-12-01",
                    "period_end": "2027-01-01",
                    "plan": "pro",
                    "limits": [
                        {
                            "limit": "devices",
                            "name": "devices",
                            "used": 3,
                            "allowed": 10,
                            "percent": 30,
                        }
                    ],
                    "kinds": [
                        {
                            "kind": "messages_in",
                            "label": "Device messages",
                            "used": 120400,
                            "limit": 5000000,
                            "percent": 2.4,
                        }
                    ],
                },
                response_only=True,
            )
        ],
    )
    def get(self, request):
        membership = membership_require(
            membership=request.membership, action=Action.VIEW
        )
        data = usage_for_period(tenant=membership.tenant)
        return Response(
            {
                "period_start": data["period_start"],
                "period_end": data["period_end"],
                "plan": data["plan"].code if data["plan"] else None,
                "limits": data["limits"],
                "kinds": [
                    {
                        key: row[key]
                        for key in ("kind", "label", "used", "limit", "percent")
                    }
                    for row in data["rows"]
                ],
            }
        )


@extend_schema_view(
    list=extend_schema(
        tags=["billing"],
        summary="The tenant's invoices and credit notes, newest first (admins)",
        examples=[
            OpenApiExample(
                "A page",
                value={
                    "count": 1,
                    "next": None,
                    "previous": None,
                    "results": [INVOICE_EXAMPLE],
                },
                response_only=True,
            )
        ],
    ),
    retrieve=extend_schema(
        tags=["billing"],
        summary="One invoice or credit note with its lines (admins)",
    ),
)
class InvoiceViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet
):
    queryset = Invoice.objects.none()
    serializer_class = s.InvoiceSerializer
    list_selector = invoices_for_member
    get_selector = invoice_get_for_member
    not_found_message = "No such invoice."
    actions = {
        "list": Action.MANAGE,
        "retrieve": Action.MANAGE,
        "pdf": Action.MANAGE,
        "payment_intent": Action.MANAGE,
    }

    def get_serializer_class(self):
        if self.action == "retrieve":
            return s.InvoiceDetailSerializer
        return s.InvoiceSerializer

    @extend_schema(
        tags=["billing"],
        summary="The document as PDF (admins)",
        responses={
            (200, "application/pdf"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The PDF, as mailed to the owners."
            )
        },
    )
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer, PDFRenderer])
    def pdf(self, request, code=None):
        invoice = self.get_object()
        response = HttpResponse(invoice_pdf(invoice), content_type="application/pdf")
        filename = invoice_filename(invoice, "pdf")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

    @extend_schema(
        tags=["billing"],
        summary="Start paying the invoice: a payment intent at the provider (admins)",
        description="Answers the intent's id and client secret for Stripe.js or "
        "a mobile SDK to confirm. 400 when the invoice is paid or is a credit note, "
        "503 when payments are not set up, 502 when the provider refuses.",
        request=None,
        responses={
            201: PaymentIntentSerializer,
            502: OpenApiResponse(
                OpenApiTypes.OBJECT, description="The provider refused or is away."
            ),
            503: OpenApiResponse(
                OpenApiTypes.OBJECT, description="Payments are not set up."
            ),
        },
    )
    @action(detail=True, methods=["post"], url_path="payment-intent")
    def payment_intent(self, request, code=None):
        invoice = self.get_object()
        try:
            ref = payments.invoice_payment_start(
                invoice=invoice, provider=payments.provider()
            )
        except InvoiceError as exc:
            raise exceptions.ValidationError({"invoice": [str(exc)]}) from None
        except payments.ProviderNotConfigured as exc:
            raise ProviderUnavailable(str(exc)) from None
        except payments.ProviderError as exc:
            raise ProviderFailed(str(exc)) from None
        return Response(
            {"payment_intent": ref.id, "client_secret": ref.client_secret},
            status=201,
        )
