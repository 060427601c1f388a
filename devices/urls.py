from django.urls import path
from django.views.generic import RedirectView

from devices.views import pools as pool_views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="pools"), name="home"),
    path("pools/", pool_views.pools, name="pools"),
]
