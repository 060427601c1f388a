from celery import shared_task


@shared_task(name="billing.rollup_usage", ignore_result=True)
def rollup_usage() -> int:
    from billing.services import rollup

    return rollup()
