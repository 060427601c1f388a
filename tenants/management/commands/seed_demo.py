import datetime as dt
import math
import os
import random
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from devices.models import Device, Pool
from devices.services.brokers import broker_ensure_platform
from telemetry.models import TelemetrySample
from tenants.models import Membership, Tenant, User

DEMO = {
    ("Acme Pools", "acme"): {
        "members": [
            ("alice@acme.test", "Alice Owner", "owner"),
            ("olivia@acme.test", "Olivia Operator", "operator"),
            ("victor@acme.test", "Victor Viewer", "viewer"),
        ],
        "pools": [
            ("Villa Azul", "ESP-A0A001", "ps1"),
            ("Hotel Sol rooftop", "ESP-A0A002", "ps1"),
            ("Casa Verde", "esp32-pool-01", "v3.1"),
        ],
    },
    ("Globex Residence", "globex"): {
        "members": [("carol@globex.test", "Carol Owner", "owner")],
        "pools": [("Globex Garden Pool", "ESP-B0B001", "ps1")],
    },
}


HISTORY = dt.timedelta(days=7)
STEP = dt.timedelta(minutes=5)
# The demo pools' pump runs: (local start hour, stop hour, valve mode).
RUNS = ((9, 13, 1), (18, 20, 2))


def demo_history(*, device: Device, now: dt.datetime) -> list[TelemetrySample]:
    """A week of plausible samples, one each 5 minutes, up to the device's first
    real sample (or now): water warming by day and cooling by night, the pump on
    from 09:00 to 13:00 in mode 1 and from 18:00 to 20:00 in mode 2 (local time), a
    Wi-Fi signal that wanders a little. Deterministic per device, and nothing is
    added where history already exists, so a second run adds nothing."""
    first = (
        TelemetrySample.objects.filter(device=device)
        .order_by("ts")
        .values_list("ts", flat=True)
        .first()
    )
    end = min(first or now, now)
    # On the 5-minute grid, so that reruns line up with what they left.
    step = int(STEP.total_seconds())
    start = int((now - HISTORY).timestamp()) // step * step
    tz = ZoneInfo(device.pool.timezone if device.pool else "UTC")
    rng = random.Random(device.device_id)
    base = 24.0 + rng.uniform(-1.5, 1.5)
    samples = []
    for ts in range(start, int(end.timestamp()), step):
        when = dt.datetime.fromtimestamp(ts, dt.UTC)
        local = when.astimezone(tz)
        hour = local.hour + local.minute / 60
        mode = next((m for a, b, m in RUNS if a <= hour < b), None)
        # Warmest near 17:00, coolest near 05:00.
        temperature = base + 1.2 * math.sin((hour - 11) / 24 * 2 * math.pi)
        samples.append(
            TelemetrySample(
                tenant_id=device.tenant_id,
                device=device,
                ts=when,
                temperature=round(temperature + rng.uniform(-0.1, 0.1), 2),
                pump=mode is not None,
                valve=mode or 1,
                rssi=rng.randint(-66, -54),
            )
        )
    return samples


class Command(BaseCommand):
    help = "Load the demo tenants, users, pools and devices (idempotent; DEBUG only)."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError(
                "seed_demo only runs with DEBUG on: it creates known logins."
            )
        password = os.environ.get("DEMO_PASSWORD", "poolsaas-demo")
        with transaction.atomic():
            broker = broker_ensure_platform()
            for (name, slug), spec in DEMO.items():
                tenant, _ = Tenant.objects.get_or_create(
                    slug=slug, defaults={"name": name}
                )
                for email, full_name, role in spec["members"]:
                    user, created = User.objects.get_or_create(
                        email=email, defaults={"full_name": full_name}
                    )
                    if created or not user.check_password(password):
                        user.set_password(password)
                        user.save(update_fields=["password"])
                    Membership.objects.update_or_create(
                        tenant=tenant, user=user, defaults={"role": role}
                    )
                for pool_name, device_id, protocol in spec["pools"]:
                    pool, _ = Pool.objects.get_or_create(tenant=tenant, name=pool_name)
                    Device.objects.update_or_create(
                        broker=broker,
                        topic_prefix="devices",
                        device_id=device_id,
                        defaults={"tenant": tenant, "pool": pool, "protocol": protocol},
                    )
            now = timezone.now()
            added = 0
            for device in Device.objects.filter(
                tenant__slug__in=[slug for _, slug in DEMO], pool__isnull=False
            ).select_related("pool"):
                samples = demo_history(device=device, now=now)
                TelemetrySample.objects.bulk_create(samples, batch_size=1000)
                added += len(samples)
            if not User.objects.filter(email="staff@poolsaas.test").exists():
                User.objects.create_superuser(
                    "staff@poolsaas.test", password, full_name="Staff"
                )
        if added:
            self.stdout.write(f"Added {added} history samples (a week per demo pool).")
        self.stdout.write(
            self.style.SUCCESS(f"Demo data ready. Logins (password: {password}):")
        )
        for (name, _), spec in DEMO.items():
            for email, _, role in spec["members"]:
                self.stdout.write(f"  {email:<22} {role:<9} {name}")
        self.stdout.write(f"  {'staff@poolsaas.test':<22} {'staff':<9} /admin/")
