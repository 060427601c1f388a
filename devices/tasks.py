"""Celery adapters for devices: each loads nothing itself and calls one service."""

from celery import shared_task

from devices.services.device_credentials import device_credentials_expire_stale
from devices.services.programs import programs_run_due


@shared_task(name="devices.run_programs", ignore_result=True)
def run_programs() -> dict:
    """Run the weekly programs of v3.1 pools (Celery beat, every minute)."""
    report = programs_run_due()
    return {
        "pools": report.pools,
        "started": report.started,
        "stopped": report.stopped,
        "commands": report.commands,
        "skipped": report.skipped,
    }


@shared_task(name="devices.expire_credential_rotations", ignore_result=True)
def expire_credential_rotations() -> int:
    """Expire device credential rotations pending past their 24 h `exp` (Celery
    beat, every 15 minutes)."""
    return device_credentials_expire_stale()
