"""The Celery app. Without REDIS_URL tasks run inline (see settings)."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

from poolsaas.request_context import task_bind, task_unbind

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "poolsaas.settings")

app = Celery("poolsaas")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
def _bind_task_id(task_id=None, **_):
    task_bind(task_id)  # log lines and audit events of the task carry its id


@task_postrun.connect
def _unbind_task_id(task_id=None, **_):
    task_unbind(task_id)


# Periodic tasks (`celery -A poolsaas beat`). Each entry expires before the next run so
# that a stalled worker does not pile them up.
app.conf.beat_schedule = {
    # Server-side weekly programs for v3.1 devices; windows have minute resolution.
    "devices.run_programs": {
        "task": "devices.run_programs",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    # Usage counters: closed minute buckets from Redis into PostgreSQL (idempotent).
    "billing.rollup_usage": {
        "task": "billing.rollup_usage",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    # 80 % and 100 % of a plan limit: one e-mail per period and limit (claimed rows).
    "billing.send_usage_warnings": {
        "task": "billing.send_usage_warnings",
        "schedule": 300.0,
        "options": {"expires": 290},
    },
    # History past each plan's retention, in small batches (never long locks).
    "telemetry.prune_history": {
        "task": "telemetry.prune_history",
        "schedule": 3600.0,
        "options": {"expires": 3500},
    },
    # Alert rules, from the state the bridge already stored on each device.
    "alerts.evaluate": {
        "task": "alerts.evaluate",
        "schedule": 20.0,
        "options": {"expires": 18},
    },
    # Device credential rotations pending past their 24 h `exp`.
    "devices.expire_credential_rotations": {
        "task": "devices.expire_credential_rotations",
        "schedule": 900.0,
        "options": {"expires": 840},
    },
    # Last month's invoices, an hour after the month ends (idempotent: issues once).
    "billing.issue_invoices": {
        "task": "billing.issue_invoices",
        "schedule": 3600.0,
        "options": {"expires": 3000},
    },
    "ota.advance_campaigns": {
        "task": "ota.advance_campaigns",
        "schedule": 15.0,
        "options": {"expires": 14},
    },
}
