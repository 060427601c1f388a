"""Thin Celery adapters of OTA (beat: ota.advance_campaigns every 15 s)."""

from celery import shared_task

from ota.models import Campaign
from ota.services import campaign_step


@shared_task(name="ota.advance_campaigns")
def advance_campaigns() -> int:
    """One step of each running campaign; a campaign another worker holds is left
    to it (the step's row claim). Returns how many devices were offered."""
    offered = 0
    for pk in Campaign.objects.filter(state="running").values_list("pk", flat=True):
        offered += campaign_step(pk)
    return offered
