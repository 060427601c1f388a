from django.contrib import admin, messages
from django.db.models import OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.html import format_html_join

from audit.admin_mixins import AuditedModelAdmin, ReadOnlyAdminMixin, admin_context
from billing import metering
from billing.invoices import InvoiceError, credit_note_issue, money
from billing.models import (
    Invoice,
    InvoiceLine,
    Payment,
    Plan,
    ProviderEvent,
    TenantBilling,
    UsageCounter,
)
from billing.selectors import period_bounds, usage_for_period
from poolsaas.request_context import bind_request_context


@admin.register(Plan)
class PlanAdmin(AuditedModelAdmin):
    list_display = ["name", "code", "max_pools", "max_devices", "history_days"]
    search_fields = ["name", "code"]


# --- invoices, payments, and usage and revenue per tenant ---


class _ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class InvoiceLineInline(_ReadOnlyInline):
    model = InvoiceLine
    fields = ["position", "description", "quantity", "unit", "amount_cents"]
    readonly_fields = fields


class PaymentInline(_ReadOnlyInline):
    model = Payment
    fields = ["received_at", "amount_cents", "currency", "provider_ref"]
    readonly_fields = fields


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Issued documents: staff look, and correct by credit note (never by editing)."""

    list_display = ["number", "billed_to", "kind", "period_start", "total", "status"]
    list_filter = ["kind", "status", "period_start"]
    search_fields = ["number", "billed_to", "tenant__name", "tenant__slug"]
    list_select_related = ["tenant"]
    inlines = [InvoiceLineInline, PaymentInline]
    actions = ["credit_in_full"]
    readonly_fields = [f.name for f in Invoice._meta.fields]

    @admin.display(description="Total", ordering="total_cents")
    def total(self, obj):
        return money(obj.total_cents, obj.currency)

    @admin.action(description="Issue a credit note for what is still uncredited")
    def credit_in_full(self, request, queryset):
        for invoice in queryset.filter(kind=Invoice.Kind.INVOICE):
            try:
                with bind_request_context(admin_context()):
                    note = credit_note_issue(
                        invoice=invoice,
                        reason=f"Credited in full by {request.user.email}",
                        actor=request.user,
                    )
            except InvoiceError as exc:
                self.message_user(request, str(exc), messages.WARNING)
            else:
                self.message_user(request, f"{note.number} credits {invoice.number}.")


@admin.register(ProviderEvent)
class ProviderEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["received_at", "provider", "type", "event_id", "outcome"]
    list_filter = ["provider", "type"]
    search_fields = ["event_id"]


@admin.register(TenantBilling)
class TenantBillingAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Per tenant: this period's messages and API calls, what was invoiced (less
    credit notes) and what was paid, all time."""

    list_display = [
        "name",
        "plan",
        "messages_this_period",
        "api_calls_this_period",
        "invoiced",
        "paid",
    ]
    list_select_related = ["plan"]
    search_fields = ["name", "slug"]
    list_filter = ["plan"]
    fields = ["name", "plan", "usage_this_period", "invoiced", "paid"]
    readonly_fields = fields

    def get_queryset(self, request):
        start, _ = period_bounds(timezone.now())

        def used(kind):
            rows = UsageCounter.objects.filter(
                tenant=OuterRef("pk"), kind=kind, minute__gte=start
            )
            return Subquery(
                rows.values("tenant").annotate(n=Sum("value")).values("n")[:1]
            )

        def summed(field):
            rows = Invoice.objects.filter(tenant=OuterRef("pk"))
            return Subquery(
                rows.values("tenant").annotate(n=Sum(field)).values("n")[:1]
            )

        return (
            super()
            .get_queryset(request)
            .annotate(
                messages_used=Coalesce(used(metering.MESSAGES_IN), 0),
                api_used=Coalesce(used(metering.API_CALLS), 0),
                invoiced_cents=Coalesce(summed("total_cents"), 0),
                paid_cents=Coalesce(summed("amount_paid_cents"), 0),
            )
        )

    @admin.display(description="Messages this period", ordering="messages_used")
    def messages_this_period(self, obj):
        return f"{obj.messages_used:,}"

    @admin.display(description="API calls this period", ordering="api_used")
    def api_calls_this_period(self, obj):
        return f"{obj.api_used:,}"

    @admin.display(
        description="Invoiced (net of credit notes)", ordering="invoiced_cents"
    )
    def invoiced(self, obj):
        return money(obj.invoiced_cents, obj.plan.currency if obj.plan else "EUR")

    @admin.display(description="Paid", ordering="paid_cents")
    def paid(self, obj):
        return money(obj.paid_cents, obj.plan.currency if obj.plan else "EUR")

    @admin.display(description="Usage this period")
    def usage_this_period(self, obj):
        rows = usage_for_period(tenant=obj)["rows"]
        return (
            format_html_join(
                "\n",
                "<div>{}: {}{}</div>",
                (
                    (
                        row["label"],
                        f"{row['used']:,}",
                        f" of {row['limit']:,}" if row["limit"] is not None else "",
                    )
                    for row in rows
                ),
            )
            or "—"
        )
