from django.urls import path
from django.views.generic import RedirectView

from devices import views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="pools"), name="home"),
    path("pools/", views.pools, name="pools"),
]
