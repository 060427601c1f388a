from django.db import models


class Plan(models.Model):
    """What a tenant may use; a tenant without a plan gets the field defaults."""

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=80)
    max_pools = models.PositiveIntegerField(default=5)
    max_devices = models.PositiveIntegerField(default=5)
    messages_per_month = models.PositiveBigIntegerField(default=1_000_000)
    history_days = models.PositiveIntegerField(default=90)
    api_requests_per_minute = models.PositiveIntegerField(default=600)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class UsageCounter(models.Model):
    """One tenant's count of one kind in one minute (from billing.metering)."""

    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="usage_counters"
    )
    kind = models.CharField(max_length=40)
    minute = models.DateTimeField()
    value = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "kind", "minute"], name="usage_once_per_minute"
            )
        ]
        indexes = [models.Index(fields=["tenant", "minute"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.minute:%Y-%m-%d %H:%M} = {self.value}"
