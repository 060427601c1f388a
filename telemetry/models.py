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
