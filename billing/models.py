from django.db import models


class Plan(models.Model):
    """What a tenant may use, edited by staff in the admin. Free, Pro and Business
    come with the data migration; a tenant without a plan has no limits (an account
    the platform runs for itself or bills by contract)."""

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=80)
    max_pools = models.PositiveIntegerField(default=5)
    max_devices = models.PositiveIntegerField(default=5)
    max_members = models.PositiveIntegerField(default=5)
    messages_per_month = models.PositiveBigIntegerField(default=1_000_000)
    history_days = models.PositiveIntegerField(
        default=90, help_text="History retention: samples, events and commands."
    )
    api_requests_per_minute = models.PositiveIntegerField(default=600)
    ota_campaigns_per_month = models.PositiveIntegerField(default=5)
    price_cents = models.PositiveIntegerField(
        default=0, help_text="Monthly price in cents (of `currency`)."
    )
    currency = models.CharField(max_length=3, default="EUR")
    # The plan offered next when a limit is hit ("upgrade to Pro").
    upgrade_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["price_cents", "name"]

    def __str__(self) -> str:
        return self.name


class BillingPeriod(models.Model):
    """One tenant's billing period (a calendar month, UTC): what usage, warnings and
    invoices are counted against. `plan` is the plan when the period opened."""

    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="billing_periods"
    )
    start = models.DateTimeField()
    end = models.DateTimeField()
    plan = models.ForeignKey(
        Plan, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-start"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "start"], name="billing_period_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.start:%Y-%m}"


class UsageWarning(models.Model):
    """A limit warning sent to a tenant's owners: once per period, limit and level
    (the unique row is the claim that makes sending idempotent)."""

    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="usage_warnings"
    )
    period_start = models.DateTimeField()
    limit = models.CharField(max_length=40)
    level = models.PositiveSmallIntegerField()  # percent: 80 or 100
    used = models.PositiveBigIntegerField()
    allowed = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "period_start", "limit", "level"],
                name="usage_warning_once",
            )
        ]

    def __str__(self) -> str:
        return f"{self.limit} {self.level}%"


class UsageCounter(models.Model):
    """One tenant's count of one kind in one minute (from billing.metering). Gauges
    (active devices) have one row per day, at midnight UTC."""

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
