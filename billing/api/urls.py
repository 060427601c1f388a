from django.urls import path
from rest_framework.routers import SimpleRouter

from billing.api import views

router = SimpleRouter()
router.register("invoices", views.InvoiceViewSet, basename="invoice")

urlpatterns = [
    path("usage/", views.UsageView.as_view(), name="usage"),
    *router.urls,
]
