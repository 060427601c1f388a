"""Everything under /api/: authentication, the v1 resources, the schema and its docs."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from poolsaas.api.auth_views import LoginView, LogoutView, RefreshView
from poolsaas.api.errors import api_not_found
from poolsaas.api.health import health, ready
from poolsaas.api.schema import TenantJWTScheme  # noqa: F401 (registers the scheme)

v1 = [
    path("", include("tenants.api.urls")),
    path("", include("devices.api.urls")),
    path("", include("telemetry.api.urls")),
    path("", include("audit.api.urls")),
    path("", include("alerts.api.urls")),
    path("", include("billing.api.urls")),
    path("ota/", include("ota.api.urls")),
]

app_name = "api"
urlpatterns = [
    path("health", health, name="health"),
    path("ready", ready, name="ready"),
    path("login", LoginView.as_view(), name="login"),
    path("token/refresh", RefreshView.as_view(), name="token-refresh"),
    path("logout", LogoutView.as_view(), name="logout"),
    path("v1/", include(v1)),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"
    ),
    re_path(r"^.*$", api_not_found),
]
