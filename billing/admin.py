from django.contrib import admin

from billing.models import Plan


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "max_pools", "max_devices", "history_days"]
    search_fields = ["name", "code"]
