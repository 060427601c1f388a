"""Staff admin of OTA: releases hashed on upload (release_create), campaigns started,
paused, resumed and cancelled through campaign_set_state (audited)."""

from django.contrib import admin, messages

from ota.models import Campaign, DeviceUpdate, Release
from ota.services import campaign_set_state, release_create


@admin.register(Release)
class ReleaseAdmin(admin.ModelAdmin):
    list_display = ("hardware_model", "version", "size", "chunk_count", "retired")
    readonly_fields = ("sha256", "size", "chunk_count", "chunk_size")

    def save_model(self, request, obj, form, change):
        if change:  # the file and what was computed from it never change
            return super().save_model(request, obj, form, change)
        saved = release_create(
            upload=form.cleaned_data["file"],
            version=obj.version,
            hardware_model=obj.hardware_model,
            min_from_version=obj.min_from_version,
            notes=obj.notes,
        )
        obj.pk, obj.file = saved.pk, saved.file
        obj.sha256, obj.size, obj.chunk_count = (
            saved.sha256,
            saved.size,
            saved.chunk_count,
        )

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        return (*fields, "file", "version", "hardware_model") if obj else fields


class DeviceUpdateInline(admin.TabularInline):
    model = DeviceUpdate
    extra = 0
    readonly_fields = ("device", "state", "percent", "reason", "attempts")


def _action(name):
    def act(modeladmin, request, queryset):
        for campaign in queryset:
            try:
                campaign_set_state(campaign, name, actor=request.user)
            except ValueError as e:
                modeladmin.message_user(request, str(e), messages.ERROR)

    act.__name__ = f"campaign_{name}"
    act.short_description = f"{name.capitalize()} the selected campaigns"
    return act


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ("pk", "tenant", "release", "state", "rate_per_minute")
    inlines = [DeviceUpdateInline]
    raw_id_fields = ("target_devices",)
    readonly_fields = ("state", "claimed_until", "started_at", "offered_total")
    actions = [_action(a) for a in ("start", "pause", "resume", "cancel")]
