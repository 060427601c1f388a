"""Staff admin for alert rules, alerts, webhook subscriptions and their delivery log.

Alerts and deliveries are read-only (the evaluator, the tasks and the members'
services write them). A webhook's signing secret is write-only, as the brokers' are
in devices/admin.py: never loaded into the form, never rendered, a blank input keeps
it. Rule and webhook changes go to the audit trail through AuditedModelAdmin.
"""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from alerts.models import Alert, AlertRule, Delivery, WebhookSubscription
from alerts.services import alert_rule_validate, webhook_url_validate
from audit.admin_mixins import AuditedModelAdmin
from devices.admin import (
    ReadOnlyAdmin,
    SecretsAdminMixin,
    WriteOnlySecretsForm,
    _password_widget,
    _secret_input,
    _secret_status,
)


class AlertRuleAdminForm(forms.ModelForm):
    class Meta:
        model = AlertRule
        fields = [
            "tenant",
            "pool",
            "kind",
            "enabled",
            "threshold",
            "hysteresis",
            "renotify_minutes",
        ]

    def clean(self):
        cleaned = super().clean()
        tenant, pool = cleaned.get("tenant"), cleaned.get("pool")
        if tenant and pool and pool.tenant_id != tenant.pk:
            self.add_error("pool", "This pool belongs to another tenant.")
        if cleaned.get("kind") and cleaned.get("threshold") is not None:
            try:
                alert_rule_validate(
                    kind=cleaned["kind"],
                    threshold=cleaned["threshold"],
                    hysteresis=cleaned.get("hysteresis", 0),
                    renotify_minutes=cleaned.get("renotify_minutes", 0),
                )
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    self.add_error(field if field in self.fields else None, errors)
        return cleaned


@admin.register(AlertRule)
class AlertRuleAdmin(AuditedModelAdmin):
    form = AlertRuleAdminForm
    list_display = (
        "kind",
        "tenant",
        "pool",
        "enabled",
        "threshold",
        "hysteresis",
        "renotify_minutes",
    )
    list_filter = ("kind", "enabled", "tenant")
    search_fields = ("code", "tenant__name", "tenant__slug", "pool__name")
    list_select_related = ("tenant", "pool")
    readonly_fields = ("code",)


class DeliveryInline(admin.TabularInline):
    model = Delivery
    fields = (
        "at",
        "event",
        "channel",
        "recipient",
        "webhook",
        "status",
        "attempt",
        "status_code",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("webhook")
            .defer("webhook__secret")
        )


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = (
        "fired_at",
        "kind",
        "pool",
        "tenant",
        "state",
        "value",
        "threshold",
        "acknowledged_by",
        "acknowledged_at",
        "resolved_at",
    )
    list_filter = ("state", "kind", "tenant")
    search_fields = ("code", "pool__name", "pool__code", "acknowledged_by__email")
    list_select_related = ("pool", "tenant", "acknowledged_by")
    date_hierarchy = "fired_at"
    inlines = [DeliveryInline]


class WebhookAdminForm(WriteOnlySecretsForm):
    SECRETS = (("secret", "Signing secret"),)
    new_secret = _secret_input("Signing secret", _password_widget())

    class Meta:
        model = WebhookSubscription
        # The secret is replaced by the write-only field.
        fields = ["tenant", "url", "enabled"]

    def clean_url(self):
        url = self.cleaned_data["url"].strip()
        # The same address guard as the members' API: no internal addresses.
        webhook_url_validate(url)
        return url

    def clean(self):
        cleaned = super().clean()
        if not self.instance.pk and not cleaned.get("new_secret"):
            self.add_error("new_secret", "A new subscription needs a signing secret.")
        return cleaned


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(SecretsAdminMixin, AuditedModelAdmin):
    form = WebhookAdminForm
    secret_fields = ("secret",)
    list_display = ("url", "tenant", "enabled", "secret_status", "created_at")
    list_filter = ("enabled", "tenant")
    search_fields = ("code", "url", "tenant__name", "tenant__slug")
    list_select_related = ("tenant",)
    readonly_fields = ("code", "created_at")

    @admin.display(description="Signing secret")
    def secret_status(self, obj):
        return _secret_status(getattr(obj, "raw_secret", None))


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "at",
        "alert",
        "tenant",
        "event",
        "channel",
        "webhook",
        "attempt",
        "status_code",
        "ok",
        "error",
    )
    list_filter = (
        "channel",
        "ok",
        "event",
        ("alert__tenant", admin.RelatedFieldListFilter),
    )
    search_fields = ("alert__code", "recipient", "webhook__url", "error")
    date_hierarchy = "at"

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("alert__pool", "alert__tenant", "webhook")
            .defer("webhook__secret")
        )

    @admin.display(description="Tenant", ordering="alert__tenant__name")
    def tenant(self, obj):
        return obj.alert.tenant

    def get_audit_tenant(self, obj, *, deleting=False):
        return obj.alert.tenant
