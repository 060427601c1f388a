from django.contrib import admin

from ota.models import Campaign, DeviceUpdate, Release


@admin.register(Release)
class ReleaseAdmin(admin.ModelAdmin):
    list_display = ("hardware_model", "version", "size", "chunk_count", "retired")
    readonly_fields = ("sha256", "size", "chunk_count")


class DeviceUpdateInline(admin.TabularInline):
    model = DeviceUpdate
    extra = 0
    readonly_fields = ("device", "state", "percent", "reason", "attempts")


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ("pk", "tenant", "release", "state", "rate_per_minute")
    inlines = [DeviceUpdateInline]
    raw_id_fields = ("target_devices",)
