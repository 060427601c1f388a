from django.contrib import admin
from django.http import HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path

from poolsaas.api.health import metrics


def favicon(request):
    # Pages link the SVG icon; browsers still ask for /favicon.ico on the others
    # (the admin, a downloaded file), which would otherwise be a 404 each time.
    return HttpResponsePermanentRedirect(static("img/favicon.svg"))


urlpatterns = [
    path("favicon.ico", favicon),
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/", include("poolsaas.api_urls")),
    path("", include("tenants.urls")),
    path("", include("devices.urls")),
    path("", include("telemetry.urls")),
    path("", include("alerts.urls")),
    path("", include("ota.urls")),
    path("audit/", include("audit.urls")),
    path("billing/", include("billing.urls")),
    path("", include("gateway.urls")),
]
