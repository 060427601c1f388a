"""Warnings about fixed resources (pools, devices, members) are claimed once when
the level is reached, under FIXED_PERIOD, not once a month: the claims made before
move there (the newest of each tenant, limit and level), so that nobody is mailed
again for a limit they reached before this change."""

import datetime as dt

from django.db import migrations

FIXED_PERIOD = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
FIXED_LIMITS = ("pools", "devices", "members")


def forwards(apps, schema_editor):
    UsageWarning = apps.get_model("billing", "UsageWarning")
    rows = UsageWarning.objects.filter(limit__in=FIXED_LIMITS).order_by(
        "tenant_id", "limit", "level", "-period_start", "-pk"
    )
    keep, seen = [], set()
    for row in rows.values("pk", "tenant_id", "limit", "level").iterator():
        key = (row["tenant_id"], row["limit"], row["level"])
        if key not in seen:
            seen.add(key)
            keep.append(row["pk"])
    UsageWarning.objects.filter(limit__in=FIXED_LIMITS).exclude(pk__in=keep).delete()
    UsageWarning.objects.filter(pk__in=keep).update(period_start=FIXED_PERIOD)


class Migration(migrations.Migration):
    dependencies = [("billing", "0007_tenant_billing_proxy")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
