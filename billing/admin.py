from django.contrib import admin

from audit.admin_mixins import AuditedModelAdmin
from billing.models import Plan


@admin.register(Plan)
class PlanAdmin(AuditedModelAdmin):
    list_display = ["name", "code", "max_pools", "max_devices", "history_days"]
    search_fields = ["name", "code"]
