"""Staff admin of OTA: releases hashed on upload (release_create), campaigns started,
paused, resumed and cancelled through campaign_set_state (audited)."""

from django.contrib import admin, messages

from ota.models import Campaign, DeviceUpdate, Release
from ota.services import campaign_set_state, release_create, release_retire


@admin.register(Release)
class ReleaseAdmin(admin.ModelAdmin):
    list_display = (
        "hardware_model",
        "version",
        "tenant",
        "size",
        "chunk_count",
        "retired",
    )
    list_filter = ("hardware_model", "retired")
    readonly_fields = ("sha256", "size", "chunk_count", "chunk_size", "retired")
    raw_id_fields = ("tenant",)
    actions = ["retire"]

    @admin.action(description="Retire the selected releases")
    def retire(self, request, queryset):
        for release in queryset:
            release_retire(actor=request.user, release=release)

    def save_model(self, request, obj, form, change):
        if change:  # the file and what was computed from it never change
            return super().save_model(request, obj, form, change)
        saved = release_create(
            upload=form.cleaned_data["file"],
            version=obj.version,
            hardware_model=obj.hardware_model,
            min_from_version=obj.min_from_version,
            notes=obj.notes,
            tenant=obj.tenant,
            actor=request.user,
        )
        obj.pk, obj.file = saved.pk, saved.file
        obj.sha256, obj.size, obj.chunk_count = (
            saved.sha256,
            saved.size,
            saved.chunk_count,
        )

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        if obj:
            return (*fields, "file", "version", "hardware_model", "tenant")
        return fields


class DeviceUpdateInline(admin.TabularInline):
    model = DeviceUpdate
    extra = 0
    readonly_fields = ("device", "state", "percent", "reason", "attempts", "heard_at")
    exclude = ("tenant", "consent_by")


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
    list_filter = ("state",)
    inlines = [DeviceUpdateInline]
    raw_id_fields = ("target_devices", "target_pools")
    readonly_fields = (
        "state",
        "state_reason",
        "claimed_until",
        "started_at",
        "finished_at",
        "enrolled_at",
        "current_rate",
        "credit",
        "stepped_at",
        "batch",
        "batch_checked",
        "offered_total",
    )
    actions = [_action(a) for a in ("start", "pause", "resume", "cancel")]
