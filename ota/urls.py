from django.urls import path

from ota.views import campaigns, devices, releases

urlpatterns = [
    path("ota/", campaigns.campaigns, name="ota_campaigns"),
    path("ota/campaigns/new/", campaigns.campaign_add, name="ota_campaign_add"),
    path(
        "ota/campaigns/<str:code>/",
        campaigns.campaign_detail,
        name="ota_campaign_detail",
    ),
    path(
        "ota/campaigns/<str:code>/live/",
        campaigns.campaign_live,
        name="ota_campaign_live",
    ),
    path(
        "ota/campaigns/<str:code>/state/",
        campaigns.campaign_state,
        name="ota_campaign_state",
    ),
    path("ota/releases/", releases.releases, name="ota_releases"),
    path("ota/releases/upload/", releases.release_add, name="ota_release_add"),
    path(
        "ota/releases/<str:code>/retire/",
        releases.release_retire,
        name="ota_release_retire",
    ),
    path("devices/<str:code>/updates/", devices.device_updates, name="ota_device"),
    path(
        "pools/<str:code>/updates/<str:campaign>/consent/",
        devices.pool_consent,
        name="ota_consent",
    ),
]
