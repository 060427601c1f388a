"""The site's URLs plus two views that fail, so that tests see the real 500 and 400
pages through the whole middleware stack."""

from django.core.exceptions import SuspiciousOperation
from django.urls import path

from poolsaas.urls import urlpatterns as site_urlpatterns


def server_error(request):
    raise RuntimeError("a bug, on purpose")


def bad_request(request):
    raise SuspiciousOperation("a forged request, on purpose")


urlpatterns = [
    path("boom/500/", server_error),
    path("boom/400/", bad_request),
    *site_urlpatterns,
]
