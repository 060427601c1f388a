"""Free, Pro and Business, and a plan for every tenant that had none: the smallest of
the three that already holds what it has (none, when even Business does not)."""

from django.db import migrations

PLANS = [
    dict(
        code="free",
        name="Free",
        max_pools=1,
        max_devices=1,
        max_members=2,
        messages_per_month=300_000,
        history_days=7,
        api_requests_per_minute=60,
        ota_campaigns_per_month=1,
        price_cents=0,
    ),
    dict(
        code="pro",
        name="Pro",
        max_pools=10,
        max_devices=10,
        max_members=10,
        messages_per_month=5_000_000,
        history_days=90,
        api_requests_per_minute=600,
        ota_campaigns_per_month=10,
        price_cents=1900,
    ),
    dict(
        code="business",
        name="Business",
        max_pools=200,
        max_devices=200,
        max_members=50,
        messages_per_month=100_000_000,
        history_days=730,
        api_requests_per_minute=3000,
        ota_campaigns_per_month=100,
        price_cents=9900,
    ),
]


def create(apps, schema_editor):
    Plan = apps.get_model("billing", "Plan")
    Tenant = apps.get_model("tenants", "Tenant")
    Pool = apps.get_model("devices", "Pool")
    Device = apps.get_model("devices", "Device")
    Membership = apps.get_model("tenants", "Membership")
    made = []
    for fields in PLANS:
        plan, _ = Plan.objects.get_or_create(code=fields["code"], defaults=fields)
        made.append(plan)
    for lower, higher in zip(made, made[1:], strict=False):
        if lower.upgrade_to_id is None:
            lower.upgrade_to = higher
            lower.save(update_fields=["upgrade_to"])
    for tenant in Tenant.objects.filter(plan__isnull=True):
        pools = Pool.objects.filter(tenant=tenant).count()
        devices = Device.objects.filter(tenant=tenant).count()
        members = Membership.objects.filter(tenant=tenant).count()
        for plan in made:
            if (
                pools <= plan.max_pools
                and devices <= plan.max_devices
                and members <= plan.max_members
            ):
                tenant.plan = plan
                tenant.save(update_fields=["plan"])
                break


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0003_plans_periods_warnings"),
        ("devices", "0001_initial"),
        ("tenants", "0002_sessions_two_factor"),
    ]

    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
