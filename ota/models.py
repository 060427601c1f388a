"""Over-the-air updates: releases (an uploaded bundle), campaigns and each device's
update. See docs/ota.md."""

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

MAX_CHUNK = 4096
SUM_BYTES = 4  # of each chunk's SHA-256 (firmware/updater.py SUM)
validate_semver = RegexValidator(r"^\d+\.\d+\.\d+$", "a version is MAJOR.MINOR.PATCH")


def release_path(release: "Release", filename: str) -> str:
    # The code keeps two tenants' releases of one version apart in storage.
    name = f"{release.hardware_model}-{release.version}-{release.code.hex}"
    return f"ota/releases/{name}.bin"


class Release(models.Model):
    """An application bundle for one hardware model: a platform release (no tenant,
    offered to every tenant) or a tenant's own. Hashed and chunked on upload
    (ota.services.release_create); never changed afterwards, only retired."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="ota_releases",
    )
    version = models.CharField(max_length=40, validators=[validate_semver])
    hardware_model = models.CharField(max_length=40)
    min_from_version = models.CharField(
        max_length=40, blank=True, validators=[validate_semver]
    )
    notes = models.TextField(blank=True)
    file = models.FileField(upload_to=release_path)
    sha256 = models.CharField(max_length=64, editable=False)
    size = models.PositiveBigIntegerField(default=0, editable=False)
    chunk_size = models.PositiveIntegerField(
        default=MAX_CHUNK,
        validators=[MinValueValidator(256), MaxValueValidator(MAX_CHUNK)],
    )
    chunk_count = models.PositiveIntegerField(default=0, editable=False)
    # Each chunk's digest (SUM_BYTES of its SHA-256, hex, in order), offered in the
    # manifest so that a device finds a corrupted chunk and fetches it again. Empty
    # for releases uploaded before it existed (offered without it).
    chunk_sums = models.TextField(blank=True, editable=False)
    retired = models.BooleanField(default=False)
    retired_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["hardware_model", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "hardware_model", "version"],
                name="ota_release_unique",
                nulls_distinct=False,
            ),
            models.CheckConstraint(
                condition=models.Q(chunk_size__lte=MAX_CHUNK), name="ota_chunk_max"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.hardware_model} {self.version}"


class Campaign(models.Model):
    """One release rolled out to a tenant's devices: targets, rate, abort threshold,
    retries, window, consent; advanced by ota.services.campaign_step (Celery beat)."""

    class State(models.TextChoices):
        DRAFT = "draft"
        RUNNING = "running"
        PAUSED = "paused"
        CANCELLED = "cancelled"
        ABORTED = "aborted"
        COMPLETED = "completed"

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="ota_campaigns"
    )
    release = models.ForeignKey(Release, on_delete=models.PROTECT)
    target_all = models.BooleanField(default=True)
    target_pools = models.ManyToManyField("devices.Pool", blank=True, related_name="+")
    target_devices = models.ManyToManyField("devices.Device", blank=True)
    below_version = models.CharField(
        max_length=40, blank=True, validators=[validate_semver]
    )
    rate_per_minute = models.PositiveIntegerField(default=10)
    # After each batch that finished with every device succeeded, the rate grows.
    growth_factor = models.FloatField(
        default=1.0, validators=[MinValueValidator(1.0), MaxValueValidator(10.0)]
    )
    abort_after = models.PositiveIntegerField(default=5)  # at least n devices done
    abort_ratio = models.FloatField(default=0.2)  # share of failures that aborts
    retries = models.PositiveIntegerField(default=2)
    max_attempts_per_day = models.PositiveIntegerField(default=3)
    # Local time of each device's pool (Pool.timezone); none: any time.
    window_start = models.TimeField(null=True, blank=True)
    window_end = models.TimeField(null=True, blank=True)
    require_consent = models.BooleanField(default=False)
    # An offered or downloading device silent this long is timed out.
    device_timeout_s = models.PositiveIntegerField(default=900)
    state = models.CharField(max_length=12, choices=State, default=State.DRAFT)
    state_reason = models.CharField(max_length=200, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    enrolled_at = models.DateTimeField(null=True, blank=True)
    # The rollout's own clock: credit (devices that may be offered now) grows by
    # current_rate a minute; batches are the devices of one step.
    current_rate = models.FloatField(default=0.0)
    credit = models.FloatField(default=0.0)
    stepped_at = models.DateTimeField(null=True, blank=True)
    batch = models.PositiveIntegerField(default=0)
    batch_checked = models.PositiveIntegerField(default=0)
    offered_total = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"campaign {self.pk} ({self.release})"


class DeviceUpdate(models.Model):
    """One device in one campaign: its state as the device reports it."""

    class State(models.TextChoices):
        QUEUED = "queued"
        AWAITING_CONSENT = "awaiting_consent"
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
    # Silent past the campaign's device_timeout_s in these: timed out.
    SILENT = ("offered", "downloading", "downloaded", "verified")
    WAITING = ("queued", "awaiting_consent")
    FINAL = ("succeeded", "failed", "rolled_back", "timed_out", "skipped")
    FAILURES = ("failed", "rolled_back", "timed_out")

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="+"
    )
    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="updates"
    )
    device = models.ForeignKey(
        "devices.Device", on_delete=models.CASCADE, related_name="ota_updates"
    )
    state = models.CharField(max_length=16, choices=State, default=State.QUEUED)
    percent = models.PositiveSmallIntegerField(default=0)
    reason = models.CharField(max_length=200, blank=True)
    # Chunks the device dropped as corrupted (per-chunk digests) in this attempt's
    # download, as it reports them ("corrupted", optional; 0 from older devices).
    corrupted_chunks = models.PositiveSmallIntegerField(default=0)
    version_before = models.CharField(max_length=40, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Attempts that ended failed, rolled back or timed out (the abort threshold
    # counts a device that failed and waits for its retry as failed).
    failures = models.PositiveIntegerField(default=0)
    day_attempts = models.PositiveIntegerField(default=0)
    attempt_day = models.DateField(null=True, blank=True)
    batch = models.PositiveIntegerField(default=0)
    offered_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    consent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    consent_at = models.DateTimeField(null=True, blank=True)
    # Last word from the device (a report) or from us (an offer).
    heard_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "device"], name="ota_update_unique"
            )
        ]
        indexes = [models.Index(fields=["campaign", "state"])]

    def __str__(self) -> str:
        return f"{self.device_id} in campaign {self.campaign_id}: {self.state}"

    def save(self, *args, **kwargs):
        if self.tenant_id is None and self.campaign_id is not None:
            self.tenant_id = self.campaign.tenant_id  # always the campaign's
        super().save(*args, **kwargs)
