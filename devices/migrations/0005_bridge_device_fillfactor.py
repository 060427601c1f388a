"""Leave room in devices_device pages so the bridge's frequent state updates are HOT
updates (no new index entries in the table's six indexes). PostgreSQL only."""

from django.db import migrations


def set_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE devices_device SET (fillfactor = 50)")


def reset_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE devices_device RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("devices", "0004_bridge_command_expected")]

    operations = [migrations.RunPython(set_fillfactor, reset_fillfactor)]
