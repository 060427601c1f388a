"""The audit trail in the staff admin: look, search and filter; never add, change or
delete (the models refuse that too)."""

from django.contrib import admin

from audit.admin_mixins import ReadOnlyAdminMixin
from audit.models import AuditChain, AuditEvent


class ReadOnlyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    pass


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "action",
        "tenant",
        "actor_label",
        "target_label",
        "source",
        "ip",
    )
    list_filter = ("tenant", "action", "source")
    search_fields = (
        "action",
        "actor_label",
        "target_label",
        "target_code",
        "request_id",
        "code",
    )
    list_select_related = ("tenant",)
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-seq")
    show_full_result_count = False
    fields = (
        "code",
        "chain",
        "seq",
        "created_at",
        "tenant",
        "actor",
        "actor_label",
        "action",
        "target_type",
        "target_code",
        "target_label",
        "data",
        "ip",
        "user_agent",
        "request_id",
        "source",
        "prev_hash",
        "hash",
    )
    readonly_fields = fields


@admin.register(AuditChain)
class AuditChainAdmin(ReadOnlyAdmin):
    list_display = ("key", "last_seq", "last_hash")
    search_fields = ("key",)
