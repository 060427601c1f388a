"""State changes of OTA, one service per change (STYLE.md): releases, campaigns,
consent, the beat step and device reports. Import them from here."""

from ota.services.campaigns import (
    campaign_create,
    campaign_enrol,
    campaign_set_state,
    update_consent,
    updates_close,
)
from ota.services.releases import (
    device_ota_key,
    manifest,
    release_create,
    release_retire,
)
from ota.services.reports import REPORTABLE, device_update_report
from ota.services.steps import _claim, campaign_step
from ota.services.targeting import Preview, campaign_preview

__all__ = [
    "REPORTABLE",
    "Preview",
    "_claim",
    "campaign_create",
    "campaign_enrol",
    "campaign_preview",
    "campaign_set_state",
    "campaign_step",
    "device_ota_key",
    "device_update_report",
    "manifest",
    "release_create",
    "release_retire",
    "update_consent",
    "updates_close",
]
