import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from devices.fields import StrictEncryptedCharField


class Kind(models.TextChoices):
    WATER_ABOVE = "water_above", "Water above"
    WATER_BELOW = "water_below", "Water below"
    FREEZE_RISK = "freeze_risk", "Freeze risk (cold water, pump off)"
    DEVICE_OFFLINE = "device_offline", "Device offline"
    PUMP_RUNTIME = "pump_runtime", "Pump running too long today"
    RELAY_SWITCHES = "relay_switches", "Too many relay switches today"
    COMMAND_FAILED = "command_failed", "A command failed"
    OTA_FAILED = "ota_failed", "A firmware update failed or rolled back"
    QUOTA_WARNING = "quota_warning", "Usage quota warning"


# Alerts that a user can let through their quiet hours (AlertPreference).
SAFETY_KINDS = frozenset({Kind.FREEZE_RISK, Kind.DEVICE_OFFLINE})

# What `AlertRule.threshold` means for each kind (shown next to the field).
THRESHOLD_UNITS = {
    Kind.WATER_ABOVE: "°C",
    Kind.WATER_BELOW: "°C",
    Kind.FREEZE_RISK: "°C",
    Kind.DEVICE_OFFLINE: "minutes",
    Kind.PUMP_RUNTIME: "hours a day",
    Kind.RELAY_SWITCHES: "switches a day",
    Kind.COMMAND_FAILED: "minutes looked back",
    Kind.OTA_FAILED: "minutes looked back",
    Kind.QUOTA_WARNING: "% of a plan limit",
}


class AlertRule(models.Model):
    """A rule of a tenant: a default (no pool) or a pool's override of that kind."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="alert_rules"
    )
    pool = models.ForeignKey(
        "devices.Pool",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="alert_rules",
    )
    kind = models.CharField(max_length=20, choices=Kind)
    enabled = models.BooleanField(default=True)
    # Its unit depends on the kind: THRESHOLD_UNITS.
    threshold = models.FloatField()
    # How far back past the threshold a value must go before the alert resolves.
    hysteresis = models.FloatField(default=1.0)
    renotify_minutes = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "pool", "kind"], name="alert_rule_unique"
            ),
            models.UniqueConstraint(
                fields=["tenant", "kind"],
                condition=Q(pool__isnull=True),
                name="alert_rule_unique_default",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.threshold}"


class Alert(models.Model):
    """One firing episode of a rule kind on a pool (at most one firing per kind)."""

    class State(models.TextChoices):
        FIRING = "firing"
        RESOLVED = "resolved"

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="alerts"
    )
    # None for an alert about the whole tenant (quota_warning: TENANT_KINDS).
    pool = models.ForeignKey(
        "devices.Pool",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="alerts",
    )
    kind = models.CharField(max_length=20, choices=Kind)
    state = models.CharField(max_length=10, choices=State, default=State.FIRING)
    value = models.FloatField(null=True, blank=True)
    threshold = models.FloatField()
    fired_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    last_notified_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    # Since when the evaluator has seen the condition clear while it is firing,
    # for kinds whose hysteresis is a time (device_offline: back online for
    # `hysteresis` minutes before it resolves). None while the condition holds.
    clear_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-fired_at"]
        constraints = [
            # The claim of ok -> firing: a second worker's insert fails here.
            models.UniqueConstraint(
                fields=["pool", "kind"],
                condition=Q(state="firing"),
                name="alert_one_firing_per_pool_kind",
            ),
            # The same claim for the tenant-wide kinds (no pool).
            models.UniqueConstraint(
                fields=["tenant", "kind"],
                condition=Q(state="firing", pool__isnull=True),
                name="alert_one_firing_per_tenant_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} on pool {self.pool_id} ({self.state})"

    @property
    def where(self) -> str:
        """What it is about, for people: the pool's name, or the tenant's."""
        return self.pool.name if self.pool_id else self.tenant.name

    @property
    def zone_name(self) -> str:
        return self.pool.timezone if self.pool_id else "UTC"


class WebhookSubscription(models.Model):
    """A tenant's HTTPS endpoint; its signing secret is never shown after save."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="webhooks"
    )
    url = models.URLField(max_length=500)
    secret = StrictEncryptedCharField(max_length=200)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.url


class Delivery(models.Model):
    """One attempt to tell someone about an alert event."""

    class Channel(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook"

    class Status(models.TextChoices):
        SENT = "sent"
        FAILED = "failed"
        # In the recipient's quiet hours: sent at held_until (alerts_release_held).
        HELD = "held"

    alert = models.ForeignKey(
        Alert, on_delete=models.CASCADE, related_name="deliveries"
    )
    webhook = models.ForeignKey(
        WebhookSubscription, null=True, blank=True, on_delete=models.SET_NULL
    )
    event = models.CharField(max_length=20)
    channel = models.CharField(max_length=10, choices=Channel)
    recipient = models.EmailField(blank=True)
    status = models.CharField(max_length=10, choices=Status, default=Status.FAILED)
    held_until = models.DateTimeField(null=True, blank=True)
    attempt = models.PositiveIntegerField(default=1)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    ok = models.BooleanField(default=False)
    error = models.CharField(max_length=300, blank=True)
    at = models.DateTimeField(auto_now_add=True)
    # A failed e-mail whose next attempt was taken (alerts.services.email_retry).
    retried = models.BooleanField(default=False)

    class Meta:
        ordering = ["at"]
        indexes = [
            models.Index(
                fields=["held_until"],
                condition=Q(status="held"),
                name="delivery_held_until",
            )
        ]

    def __str__(self) -> str:
        return f"{self.channel} #{self.attempt} of alert {self.alert_id}"


class AlertPreference(models.Model):
    """What one member of a tenant wants to be told, and when not.

    Without a row, owners and admins get every alert by e-mail at any hour and the
    other roles get none (alerts_recipients)."""

    class Channel(models.TextChoices):
        EMAIL = "email", "E-mail"
        NONE = "none", "Dashboard only"

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="alert_preferences"
    )
    membership = models.OneToOneField(
        "tenants.Membership", on_delete=models.CASCADE, related_name="alert_preference"
    )
    # Kinds to be told about; empty means every kind.
    kinds = models.JSONField(default=list, blank=True)
    channel = models.CharField(max_length=10, choices=Channel, default=Channel.EMAIL)
    # Local times in each pool's own time zone; start > end spans midnight.
    quiet_start = models.TimeField(null=True, blank=True)
    quiet_end = models.TimeField(null=True, blank=True)
    safety_ignores_quiet = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"alert preferences of membership {self.membership_id}"


class DeviceDay(models.Model):
    """What the evaluator keeps per device for the per-day rules: pump running time
    and the relay switch counter at the start of the day (in the pool's zone)."""

    device = models.OneToOneField(
        "devices.Device", on_delete=models.CASCADE, related_name="alert_day"
    )
    day = models.DateField()
    pump_on_s = models.FloatField(default=0.0)
    # When the evaluator first saw the pump on (None while it is off).
    pump_since = models.DateTimeField(null=True, blank=True)
    # The device's lifetime switch counter (pump + valve) when the day began.
    switches_base = models.PositiveIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"device {self.device_id} on {self.day}"
