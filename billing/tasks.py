from celery import shared_task


@shared_task(name="billing.rollup_usage", ignore_result=True)
def rollup_usage() -> int:
    from billing.services import usage_rollup

    return usage_rollup()


@shared_task(name="billing.send_usage_warnings", ignore_result=True)
def send_usage_warnings() -> int:
    from billing.services import usage_warnings_send

    return usage_warnings_send()
