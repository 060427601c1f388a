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
    # °C for the water rules, minutes for device_offline.
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
    pool = models.ForeignKey(
        "devices.Pool", on_delete=models.CASCADE, related_name="alerts"
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

    class Meta:
        ordering = ["-fired_at"]
        constraints = [
            # The claim of ok -> firing: a second worker's insert fails here.
            models.UniqueConstraint(
                fields=["pool", "kind"],
                condition=Q(state="firing"),
                name="alert_one_firing_per_pool_kind",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} on pool {self.pool_id} ({self.state})"


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

    alert = models.ForeignKey(
        Alert, on_delete=models.CASCADE, related_name="deliveries"
    )
    webhook = models.ForeignKey(
        WebhookSubscription, null=True, blank=True, on_delete=models.SET_NULL
    )
    event = models.CharField(max_length=20)
    channel = models.CharField(max_length=10, choices=Channel)
    attempt = models.PositiveIntegerField(default=1)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    ok = models.BooleanField(default=False)
    error = models.CharField(max_length=300, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at"]

    def __str__(self) -> str:
        return f"{self.channel} #{self.attempt} of alert {self.alert_id}"
