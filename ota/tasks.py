from celery import shared_task

from ota.models import Campaign
from ota.services import campaign_step


@shared_task(name="ota.advance_campaigns")
def advance_campaigns() -> int:
    offered = 0
    for pk in Campaign.objects.filter(state="running").values_list("pk", flat=True):
        offered += campaign_step(pk)
    return offered
