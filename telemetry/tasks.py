from celery import shared_task


@shared_task(name="telemetry.prune_history", ignore_result=True)
def prune_history() -> dict:
    from django.utils import timezone

    from telemetry.rollups import rollups_prune
    from telemetry.services import history_prune

    out = history_prune()
    out["rollups"] = rollups_prune(now=timezone.now())
    return out
