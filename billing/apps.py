from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Plans and billing"

    def ready(self):
        from django.db.models.signals import post_init, post_save

        from tenants.models import Tenant

        # Every change of a tenant's plan (admin, service, shell) is noted for the
        # proration of the next invoice (billing.invoices.plan_history).
        post_init.connect(_remember_plan, sender=Tenant, dispatch_uid="billing-plan")
        post_save.connect(_plan_changed, sender=Tenant, dispatch_uid="billing-plan")


def _remember_plan(sender, instance, **kwargs):
    instance._billing_plan_id = instance.__dict__.get("plan_id")


def _plan_changed(sender, instance, created, raw=False, update_fields=None, **kw):
    if raw or created or (update_fields is not None and "plan" not in update_fields):
        return
    before = getattr(instance, "_billing_plan_id", None)
    if before == instance.plan_id:
        return
    from billing.invoices import plan_change_record
    from billing.models import Plan

    plan_change_record(
        tenant=instance,
        previous_plan=Plan.objects.filter(pk=before).first() if before else None,
        plan=instance.plan,
    )
    instance._billing_plan_id = instance.plan_id
