"""What the OTA API reads and writes. Related objects are named by their codes and
resolved within the caller's tenant only (another tenant's code is "no such")."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ota.models import Campaign, DeviceUpdate, Release


class ReleaseSerializer(serializers.ModelSerializer):
    platform = serializers.SerializerMethodField(
        help_text="True for the platform's releases (offered to every tenant), "
        "false for your own."
    )

    class Meta:
        model = Release
        fields = [
            "code",
            "version",
            "hardware_model",
            "min_from_version",
            "notes",
            "sha256",
            "size",
            "chunk_size",
            "chunk_count",
            "retired",
            "platform",
            "created_at",
        ]
        read_only_fields = fields

    def get_platform(self, release) -> bool:
        return release.tenant_id is None


class ReleaseUploadSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="The bundle (multipart/form-data), at most 1 MB."
    )
    version = serializers.RegexField(
        r"^\d+\.\d+\.\d+$", max_length=40, help_text="MAJOR.MINOR.PATCH"
    )
    hardware_model = serializers.CharField(max_length=40)
    min_from_version = serializers.RegexField(
        r"^\d+\.\d+\.\d+$",
        max_length=40,
        required=False,
        default="",
        allow_blank=True,
        help_text="The lowest version it upgrades from; empty: any.",
    )
    notes = serializers.CharField(required=False, default="", allow_blank=True)


class CampaignSerializer(serializers.ModelSerializer):
    release = serializers.SerializerMethodField(help_text="The release's code.")
    release_version = serializers.CharField(source="release.version", read_only=True)
    hardware_model = serializers.CharField(
        source="release.hardware_model", read_only=True
    )

    class Meta:
        model = Campaign
        fields = [
            "code",
            "release",
            "release_version",
            "hardware_model",
            "state",
            "state_reason",
            "target_all",
            "below_version",
            "rate_per_minute",
            "growth_factor",
            "abort_after",
            "abort_ratio",
            "retries",
            "max_attempts_per_day",
            "window_start",
            "window_end",
            "require_consent",
            "started_at",
            "finished_at",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.UUIDField())
    def get_release(self, campaign) -> str:
        return str(campaign.release.code)


class AbortSerializer(serializers.Serializer):
    aborted = serializers.BooleanField()
    failed = serializers.IntegerField(help_text="Failed, rolled back or timed out.")
    done = serializers.IntegerField(help_text="Finished devices (skipped excluded).")
    share_percent = serializers.IntegerField()
    threshold_percent = serializers.IntegerField()
    after = serializers.IntegerField(help_text="The check starts after this many.")
    armed = serializers.BooleanField()


class CampaignDetailSerializer(CampaignSerializer):
    counts = serializers.DictField(
        child=serializers.IntegerField(),
        read_only=True,
        help_text="Devices per state (every state, zeros included) and `total`.",
    )
    abort = AbortSerializer(read_only=True)

    class Meta(CampaignSerializer.Meta):
        fields = [*CampaignSerializer.Meta.fields, "counts", "abort"]
        read_only_fields = fields


class TargetsSerializer(serializers.Serializer):
    release = serializers.UUIDField(help_text="A release's code (not retired).")
    target_all = serializers.BooleanField(
        required=False, default=True, help_text="All your devices (default)."
    )
    pools = serializers.ListField(
        child=serializers.UUIDField(),
        required=False,
        default=list,
        max_length=10000,
        help_text="Pool codes, when target_all is false.",
    )
    devices = serializers.ListField(
        child=serializers.UUIDField(),
        required=False,
        default=list,
        max_length=10000,
        help_text="Device codes, when target_all is false.",
    )
    below_version = serializers.RegexField(
        r"^\d+\.\d+\.\d+$",
        max_length=40,
        required=False,
        default="",
        allow_blank=True,
        help_text="Only devices below this version; empty: every version.",
    )

    def validate(self, data):
        if not data["target_all"] and not (data["pools"] or data["devices"]):
            raise serializers.ValidationError(
                {"target_all": "Give pools or devices when target_all is false."}
            )
        if data["target_all"] and (data["pools"] or data["devices"]):
            raise serializers.ValidationError(
                {"target_all": "Pools and devices are for target_all false."}
            )
        return data


class CampaignCreateSerializer(TargetsSerializer):
    rate_per_minute = serializers.IntegerField(required=False, default=10)
    growth_factor = serializers.FloatField(required=False, default=1.0)
    abort_after = serializers.IntegerField(required=False, default=5)
    abort_ratio = serializers.FloatField(
        required=False, default=0.2, help_text="A share from 0 to 1."
    )
    retries = serializers.IntegerField(required=False, default=2)
    max_attempts_per_day = serializers.IntegerField(required=False, default=3)
    window_start = serializers.TimeField(
        required=False, default=None, allow_null=True, help_text="Pool's local time."
    )
    window_end = serializers.TimeField(required=False, default=None, allow_null=True)
    require_consent = serializers.BooleanField(required=False, default=False)


class SkippedSerializer(serializers.Serializer):
    device = serializers.UUIDField()
    device_id = serializers.CharField()
    reason = serializers.CharField()


class PreviewSerializer(serializers.Serializer):
    matched = serializers.IntegerField(help_text="Devices the campaign would offer.")
    skipped = serializers.IntegerField()
    devices = serializers.ListField(
        child=serializers.CharField(), help_text="The matched devices' ids."
    )
    skipped_devices = SkippedSerializer(many=True)


class UpdateSerializer(serializers.ModelSerializer):
    device = serializers.UUIDField(source="device.code", read_only=True)
    device_id = serializers.CharField(source="device.device_id", read_only=True)

    class Meta:
        model = DeviceUpdate
        fields = [
            "device",
            "device_id",
            "state",
            "percent",
            "reason",
            "corrupted_chunks",
            "attempts",
            "updated_at",
        ]
        read_only_fields = fields


class DeviceHistorySerializer(serializers.ModelSerializer):
    campaign = serializers.UUIDField(source="campaign.code", read_only=True)
    release_version = serializers.CharField(
        source="campaign.release.version", read_only=True
    )
    campaign_state = serializers.CharField(source="campaign.state", read_only=True)

    class Meta:
        model = DeviceUpdate
        fields = [
            "campaign",
            "release_version",
            "campaign_state",
            "state",
            "percent",
            "reason",
            "corrupted_chunks",
            "attempts",
            "updated_at",
        ]
        read_only_fields = fields


class ConsentSerializer(serializers.ModelSerializer):
    """An update waiting for (or just given) the pool's consent."""

    campaign = serializers.UUIDField(source="campaign.code", read_only=True)
    release_version = serializers.CharField(
        source="campaign.release.version", read_only=True
    )
    release_notes = serializers.CharField(
        source="campaign.release.notes", read_only=True
    )
    device = serializers.UUIDField(source="device.code", read_only=True)
    device_id = serializers.CharField(source="device.device_id", read_only=True)

    class Meta:
        model = DeviceUpdate
        fields = [
            "campaign",
            "release_version",
            "release_notes",
            "device",
            "device_id",
            "state",
            "updated_at",
        ]
        read_only_fields = fields


class ConsentAnswerSerializer(serializers.Serializer):
    accept = serializers.BooleanField(
        help_text="true: the update is queued (offered in turn, within the "
        "campaign's window and rate); false: declined (skipped, the device keeps "
        "its version)."
    )
