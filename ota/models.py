"""Over-the-air updates: releases (an uploaded bundle), campaigns and each device's
update. See docs/ota.md."""

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

MAX_CHUNK = 4096
validate_semver = RegexValidator(r"^\d+\.\d+\.\d+$", "a version is MAJOR.MINOR.PATCH")


class Release(models.Model):
    version = models.CharField(max_length=40, validators=[validate_semver])
    hardware_model = models.CharField(max_length=40)
    min_from_version = models.CharField(
        max_length=40, blank=True, validators=[validate_semver]
    )
    notes = models.TextField(blank=True)
    file = models.FileField(upload_to="ota/releases/")
    sha256 = models.CharField(max_length=64, editable=False)
    size = models.PositiveBigIntegerField(default=0, editable=False)
    chunk_size = models.PositiveIntegerField(
        default=MAX_CHUNK,
        validators=[MinValueValidator(256), MaxValueValidator(MAX_CHUNK)],
    )
    chunk_count = models.PositiveIntegerField(default=0, editable=False)
    retired = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["hardware_model", "version"], name="ota_release_unique"
            ),
            models.CheckConstraint(
                condition=models.Q(chunk_size__lte=MAX_CHUNK), name="ota_chunk_max"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.hardware_model} {self.version}"


class Campaign(models.Model):
    class State(models.TextChoices):
        DRAFT = "draft"
        RUNNING = "running"
        PAUSED = "paused"
        CANCELLED = "cancelled"
        ABORTED = "aborted"
        COMPLETED = "completed"

    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="ota_campaigns"
    )
    release = models.ForeignKey(Release, on_delete=models.PROTECT)
    target_all = models.BooleanField(default=True)
    target_devices = models.ManyToManyField("devices.Device", blank=True)
    rate_per_minute = models.PositiveIntegerField(default=10)
    abort_after = models.PositiveIntegerField(default=5)  # at least n devices done
    abort_ratio = models.FloatField(default=0.2)  # share of failures that aborts
    retries = models.PositiveIntegerField(default=2)
    state = models.CharField(max_length=12, choices=State, default=State.DRAFT)
    claimed_until = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    offered_total = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"campaign {self.pk} ({self.release})"


class DeviceUpdate(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued"
        OFFERED = "offered"
        DOWNLOADING = "downloading"
        DOWNLOADED = "downloaded"
        VERIFIED = "verified"
        APPLYING = "applying"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        ROLLED_BACK = "rolled_back"
        TIMED_OUT = "timed_out"
        SKIPPED = "skipped"

    ACTIVE = ("offered", "downloading", "downloaded", "verified", "applying")
    FINAL = ("succeeded", "failed", "rolled_back", "timed_out", "skipped")

    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="updates"
    )
    device = models.ForeignKey(
        "devices.Device", on_delete=models.CASCADE, related_name="ota_updates"
    )
    state = models.CharField(max_length=12, choices=State, default=State.QUEUED)
    percent = models.PositiveSmallIntegerField(default=0)
    reason = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    offered_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "device"], name="ota_update_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.device_id} in campaign {self.campaign_id}: {self.state}"
