"""TelemetrySample now belongs to the telemetry app (telemetry 0001_initial): drop it
from the devices migration state only. Its table, devices_telemetrysample, stays as it
is, with its rows, indexes and foreign keys."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("devices", "0006_device_claimed_at_empty_secrets"),
        ("telemetry", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="TelemetrySample")],
            database_operations=[],
        ),
    ]
