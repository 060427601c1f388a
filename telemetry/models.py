from django.db import models


class TelemetrySample(models.Model):
    """One point of a device's history, written by the bridge in batches
    (telemetry.services.samples_write).

    The table kept its name from when samples lived in the devices app
    (devices_telemetrysample): moving the model moved no data.
    """

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="+"
    )
    device = models.ForeignKey(
        "devices.Device", on_delete=models.CASCADE, related_name="samples"
    )
    ts = models.DateTimeField()
    temperature = models.FloatField(null=True, blank=True)
    pump = models.BooleanField(null=True, blank=True)
    valve = models.PositiveSmallIntegerField(null=True, blank=True)
    rssi = models.SmallIntegerField(null=True, blank=True)

    class Meta:
        db_table = "devices_telemetrysample"
        indexes = [
            models.Index(fields=["device", "ts"], name="devices_tel_device__dd3164_idx")
        ]

    def __str__(self) -> str:
        return f"{self.device_id} @ {self.ts}"


class DailyRollup(models.Model):
    """One device's history of one local day (its pool's time zone), kept far longer
    than the raw samples (TELEMETRY_ROLLUP_DAYS): the history charts read these for
    the part of a range past the plan's raw retention (telemetry.rollups).

    Counts, not averages, so that days fold into wider buckets exactly: the
    temperature average is temperature_sum / temperature_n, the pump's share
    pump_on_n / pump_n, each valve mode's (while pumping) modeN_n / pump_n."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="+"
    )
    device = models.ForeignKey(
        "devices.Device", on_delete=models.CASCADE, related_name="daily_rollups"
    )
    day = models.DateField()  # local date
    start = models.DateTimeField()  # local midnight, as an instant
    seconds = models.PositiveIntegerField(default=86400)  # 23 or 25 h across DST
    samples = models.PositiveIntegerField(default=0)
    temperature_n = models.PositiveIntegerField(default=0)
    temperature_sum = models.FloatField(null=True, blank=True)
    temperature_min = models.FloatField(null=True, blank=True)
    temperature_max = models.FloatField(null=True, blank=True)
    pump_n = models.PositiveIntegerField(default=0)
    pump_on_n = models.PositiveIntegerField(default=0)
    mode1_n = models.PositiveIntegerField(default=0)
    mode2_n = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["device", "day"], name="telemetry_rollup_once_a_day"
            )
        ]
        indexes = [models.Index(fields=["device", "start"], name="rollup_device_start")]

    def __str__(self) -> str:
        return f"{self.device_id} {self.day}"
