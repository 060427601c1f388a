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
