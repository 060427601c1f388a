import uuid

from django.db import models

from tenants.models import Tenant


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
    ota_own_releases = models.BooleanField(
        "own OTA releases",
        default=False,
        help_text="The tenant's admins may upload their own firmware releases.",
    )
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


# --- invoices and payments (billing.invoices, billing.payments) ---


class ImmutableDocument(Exception):
    """An issued invoice or credit note was about to change or go."""


class PlanChange(models.Model):
    """A tenant's plan from a moment on (recorded whenever Tenant.plan changes, see
    billing.apps): what proration on the next invoice is computed from."""

    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="plan_changes"
    )
    plan = models.ForeignKey(
        Plan, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    previous_plan = models.ForeignKey(
        Plan, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    at = models.DateTimeField()

    class Meta:
        ordering = ["at", "pk"]
        indexes = [models.Index(fields=["tenant", "at"])]

    def __str__(self) -> str:
        return f"{self.previous_plan} → {self.plan} at {self.at:%Y-%m-%d %H:%M}"


class InvoiceSequence(models.Model):
    """The last number given per prefix and year. Locked (select_for_update) while a
    document is issued, in the same transaction, so numbers have no gaps."""

    prefix = models.CharField(max_length=8)
    year = models.PositiveIntegerField()
    last = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["prefix", "year"], name="invoice_seq_once")
        ]

    def __str__(self) -> str:
        return f"{self.prefix}-{self.year}: {self.last}"


class Invoice(models.Model):
    """An issued invoice or credit note. Never changes once issued, except for what
    payment and delivery record (MUTABLE_FIELDS); a correction is a credit note whose
    `corrects` is the invoice. The billed-to name is copied at issue."""

    class Kind(models.TextChoices):
        INVOICE = "invoice", "Invoice"
        CREDIT_NOTE = "credit_note", "Credit note"

    class Status(models.TextChoices):
        ISSUED = "issued", "Issued"
        PAID = "paid", "Paid"

    MUTABLE_FIELDS = frozenset(
        {"status", "amount_paid_cents", "paid_at", "payment_intent_id", "emailed_at"}
    )

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.PROTECT, related_name="invoices"
    )
    kind = models.CharField(max_length=12, choices=Kind, default=Kind.INVOICE)
    number = models.CharField(max_length=20, unique=True)
    period_start = models.DateField()
    period_end = models.DateField()
    issued_at = models.DateTimeField()
    billed_to = models.CharField(max_length=120)
    currency = models.CharField(max_length=3)
    total_cents = models.BigIntegerField()
    corrects = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="credit_notes",
    )
    reason = models.CharField(max_length=300, blank=True)
    # Payment and delivery (the only columns that change after issue).
    status = models.CharField(max_length=8, choices=Status, default=Status.ISSUED)
    amount_paid_cents = models.BigIntegerField(default=0)
    paid_at = models.DateTimeField(null=True, blank=True)
    payment_intent_id = models.CharField(max_length=100, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-issued_at", "-pk"]
        constraints = [
            # The monthly run issues once per tenant and month, however often it runs.
            models.UniqueConstraint(
                fields=["tenant", "period_start"],
                condition=models.Q(kind="invoice"),
                name="invoice_once_per_month",
            ),
            models.CheckConstraint(
                condition=models.Q(kind="invoice", corrects__isnull=True)
                | models.Q(kind="credit_note", corrects__isnull=False),
                name="credit_note_corrects_an_invoice",
            ),
        ]

    def __str__(self) -> str:
        return self.number

    def save(self, *args, **kwargs):
        if not self._state.adding:
            fields = kwargs.get("update_fields")
            if fields is None or set(fields) - self.MUTABLE_FIELDS:
                raise ImmutableDocument(
                    f"{self.number} is issued and cannot change; issue a credit note."
                )
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ImmutableDocument(f"{self.number} is issued and cannot be deleted.")

    @property
    def is_credit_note(self) -> bool:
        return self.kind == self.Kind.CREDIT_NOTE


class InvoiceLine(models.Model):
    """One line of an issued document; written once, with the document."""

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="lines")
    position = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=8)  # plan, usage, credit
    description = models.CharField(max_length=200)
    usage_kind = models.CharField(max_length=40, blank=True)
    quantity = models.DecimalField(max_digits=18, decimal_places=6)
    unit = models.CharField(max_length=20)
    unit_price_cents = models.DecimalField(max_digits=18, decimal_places=4)
    amount_cents = models.BigIntegerField()
    period_start = models.DateField(null=True, blank=True)
    period_end = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["invoice", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["invoice", "position"], name="invoice_line_once"
            )
        ]

    def __str__(self) -> str:
        return self.description

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ImmutableDocument("Lines of an issued document cannot change.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ImmutableDocument("Lines of an issued document cannot be deleted.")


class BillingCustomer(models.Model):
    """The tenant's customer at the payment provider."""

    tenant = models.OneToOneField(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="billing_customer"
    )
    provider = models.CharField(max_length=20)
    customer_id = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.provider} {self.customer_id}"


class ProviderEvent(models.Model):
    """A webhook event of the payment provider, stored once per event id: the row is
    written in the same transaction as the event's effect, so a replay changes
    nothing."""

    provider = models.CharField(max_length=20)
    event_id = models.CharField(max_length=100)
    type = models.CharField(max_length=80)
    received_at = models.DateTimeField(auto_now_add=True)
    invoice = models.ForeignKey(
        Invoice, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    outcome = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "event_id"], name="provider_event_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.type} {self.event_id}"


class Payment(models.Model):
    """Money received for an invoice, one row per provider event that reported it."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    invoice = models.ForeignKey(
        Invoice, on_delete=models.PROTECT, related_name="payments"
    )
    event = models.OneToOneField(
        ProviderEvent, on_delete=models.PROTECT, related_name="payment"
    )
    provider_ref = models.CharField(max_length=100)
    amount_cents = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    received_at = models.DateTimeField()

    class Meta:
        ordering = ["received_at"]

    def __str__(self) -> str:
        return f"{self.amount_cents} {self.currency} for {self.invoice_id}"


class TenantBilling(Tenant):
    """A tenant as staff see it in the admin's billing section: usage this period
    and revenue (a proxy: no table of its own)."""

    class Meta:
        proxy = True
        verbose_name = "tenant usage and revenue"
        verbose_name_plural = "tenant usage and revenue"
