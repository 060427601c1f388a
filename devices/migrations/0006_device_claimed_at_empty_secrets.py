"""Device.claimed_at (claim codes, devices/services/claims.py); and empty secrets are stored as an empty string from now on (devices/fields.py), so that
whether one is set can be told without decrypting it. Rewrites the encrypted empty
strings already stored; a token no configured key decrypts is left as it is."""

from django.db import migrations, models
from django.db.models import TextField
from django.db.models.functions import Cast

SECRETS = {"Broker": ("username", "password"), "Device": ("mqtt_password",)}


def empty_tokens_to_empty(apps, schema_editor):
    from devices.fields import SecretDecryptionError, decrypt_secret

    for model_name, names in SECRETS.items():
        model = apps.get_model("devices", model_name)
        raw = {f"raw_{name}": Cast(name, TextField()) for name in names}
        for row in model.objects.annotate(**raw).values("pk", *raw):
            empty = []
            for name in names:
                token = row[f"raw_{name}"]
                if not token:
                    continue
                try:
                    if decrypt_secret(token) == "":
                        empty.append(name)
                except SecretDecryptionError:
                    continue
            if empty:
                model.objects.filter(pk=row["pk"]).update(**dict.fromkeys(empty, ""))


class Migration(migrations.Migration):
    dependencies = [("devices", "0005_bridge_device_fillfactor")]

    operations = [
        migrations.AddField(
            model_name="device",
            name="claimed_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(empty_tokens_to_empty, migrations.RunPython.noop),
    ]
