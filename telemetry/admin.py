"""Staff admin for the telemetry history: look and search, never touch (the bridge
writes samples through telemetry.services.samples_write)."""

from django.contrib import admin

from audit.admin_mixins import AuditedModelAdmin, ReadOnlyAdminMixin
from telemetry.models import TelemetrySample


@admin.register(TelemetrySample)
class TelemetrySampleAdmin(ReadOnlyAdminMixin, AuditedModelAdmin):
    list_display = ("ts", "device", "temperature", "pump", "valve", "rssi")
    list_filter = ("tenant", "pump", "valve")
    search_fields = ("device__device_id",)
    list_select_related = ("device",)
    date_hierarchy = "ts"
    show_full_result_count = False
