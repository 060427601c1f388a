from django.urls import path

from telemetry import views

urlpatterns = [
    path("pools/<str:code>/history/", views.pool_history, name="pool_history"),
]
