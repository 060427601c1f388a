"""Celery adapters for alerts."""

from celery import shared_task

from alerts.models import Alert, WebhookSubscription
from alerts.services import alert_email, alerts_evaluate, webhook_post

MAX_ATTEMPTS = 6


@shared_task(name="alerts.evaluate", ignore_result=True)
def evaluate() -> int:
    """Evaluate the rules (Celery beat, every 20 s)."""
    return len(alerts_evaluate())


@shared_task(name="alerts.notify", ignore_result=True)
def notify(alert_pk: int, event: str) -> None:
    alert = Alert.objects.select_related("pool", "tenant").get(pk=alert_pk)
    alert_email(alert=alert, event=event)
    for pk in WebhookSubscription.objects.filter(
        tenant_id=alert.tenant_id, enabled=True
    ).values_list("pk", flat=True):
        deliver_webhook.delay(alert_pk, pk, event)


@shared_task(name="alerts.deliver_webhook", bind=True, max_retries=MAX_ATTEMPTS - 1)
def deliver_webhook(self, alert_pk: int, webhook_pk: int, event: str) -> None:
    alert = Alert.objects.select_related("pool").get(pk=alert_pk)
    webhook = WebhookSubscription.objects.get(pk=webhook_pk)
    delivery = webhook_post(
        alert=alert, webhook=webhook, event=event, attempt=self.request.retries + 1
    )
    if not delivery.ok and self.request.retries < self.max_retries:
        # Exponential backoff, capped at 10 minutes.
        raise self.retry(countdown=min(600, 5 * 2**self.request.retries))
