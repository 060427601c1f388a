"""Celery adapters for alerts."""

from celery import shared_task

from alerts.models import Alert, WebhookSubscription
from alerts.services import (
    alert_email,
    alerts_evaluate,
    alerts_release_held,
    email_retry,
    webhook_backoff,
    webhook_post,
)

MAX_ATTEMPTS = 6


@shared_task(name="alerts.evaluate", ignore_result=True)
def evaluate() -> int:
    """Evaluate the rules and send e-mails held past quiet hours (beat, every 20 s)."""
    changes = len(alerts_evaluate())
    alerts_release_held()
    return changes


@shared_task(name="alerts.notify", ignore_result=True)
def notify(alert_pk: int, event: str) -> None:
    alert = Alert.objects.select_related("pool", "tenant").filter(pk=alert_pk).first()
    if alert is None:
        return  # deleted with its pool since
    alert_email(alert=alert, event=event)
    for pk in WebhookSubscription.objects.filter(
        tenant_id=alert.tenant_id, enabled=True
    ).values_list("pk", flat=True):
        deliver_webhook.delay(alert_pk, pk, event)


@shared_task(name="alerts.deliver_webhook", bind=True, max_retries=MAX_ATTEMPTS - 1)
def deliver_webhook(self, alert_pk: int, webhook_pk: int, event: str) -> None:
    alert = Alert.objects.select_related("pool").filter(pk=alert_pk).first()
    webhook = WebhookSubscription.objects.filter(pk=webhook_pk, enabled=True).first()
    if alert is None or webhook is None:
        return
    delivery = webhook_post(
        alert=alert, webhook=webhook, event=event, attempt=self.request.retries + 1
    )
    if not delivery.ok and self.request.retries < self.max_retries:
        raise self.retry(countdown=webhook_backoff(self.request.retries))


@shared_task(name="alerts.retry_email", ignore_result=True)
def retry_email(delivery_pk: int) -> None:
    """The next attempt of a failed e-mail (scheduled with its backoff by the
    service, which schedules the one after if this fails too)."""
    email_retry(delivery_pk=delivery_pk)
