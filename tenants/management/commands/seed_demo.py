import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from devices.models import Device, Pool
from devices.services.brokers import broker_ensure_platform
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
            if not User.objects.filter(email="staff@poolsaas.test").exists():
                User.objects.create_superuser(
                    "staff@poolsaas.test", password, full_name="Staff"
                )
        self.stdout.write(
            self.style.SUCCESS(f"Demo data ready. Logins (password: {password}):")
        )
        for (name, _), spec in DEMO.items():
            for email, _, role in spec["members"]:
                self.stdout.write(f"  {email:<22} {role:<9} {name}")
        self.stdout.write(f"  {'staff@poolsaas.test':<22} {'staff':<9} /admin/")
