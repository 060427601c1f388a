from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("poolsaas.api_urls")),
    path("", include("tenants.urls")),
    path("", include("devices.urls")),
    path("audit/", include("audit.urls")),
]
