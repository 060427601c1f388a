"""TelemetrySample moves from the devices app to this one, in the migration state only:
its table keeps the name devices_telemetrysample (Meta.db_table), so no row moves
and no statement touches it. devices 0007_samples_move_to_telemetry drops the old
model from the devices state after this one.

The content type moves too (its app label is renamed), so that permissions granted
on samples and anything pointing at the content type follow the model."""

import django.db.models.deletion
from django.db import migrations, models


def content_type_to_telemetry(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    if ContentType.objects.using(db).filter(
        app_label="telemetry", model="telemetrysample"
    ).exists():
        return
    ContentType.objects.using(db).filter(
        app_label="devices", model="telemetrysample"
    ).update(app_label="telemetry")


def content_type_to_devices(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    if ContentType.objects.using(db).filter(
        app_label="devices", model="telemetrysample"
    ).exists():
        return
    ContentType.objects.using(db).filter(
        app_label="telemetry", model="telemetrysample"
    ).update(app_label="devices")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("devices", "0006_device_claimed_at_empty_secrets"),
        ("tenants", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="TelemetrySample",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        ("ts", models.DateTimeField()),
                        ("temperature", models.FloatField(blank=True, null=True)),
                        ("pump", models.BooleanField(blank=True, null=True)),
                        (
                            "valve",
                            models.PositiveSmallIntegerField(blank=True, null=True),
                        ),
                        ("rssi", models.SmallIntegerField(blank=True, null=True)),
                        (
                            "device",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="samples",
                                to="devices.device",
                            ),
                        ),
                        (
                            "tenant",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="tenants.tenant",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "devices_telemetrysample",
                        "indexes": [
                            models.Index(
                                fields=["device", "ts"],
                                name="devices_tel_device__dd3164_idx",
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_type_to_telemetry, content_type_to_devices),
    ]
