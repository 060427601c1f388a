from celery import shared_task


@shared_task(name="telemetry.prune_history", ignore_result=True)
def prune_history() -> dict:
    from telemetry.services import history_prune

    return history_prune()
