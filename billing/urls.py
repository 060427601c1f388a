from django.urls import path

from billing import views

urlpatterns = [
    path("usage/", views.usage, name="usage"),
    path("invoices/", views.invoices, name="invoices"),
    path("invoices/<str:code>/", views.invoice_detail, name="invoice_detail"),
    path("invoices/<str:code>/pdf/", views.invoice_pdf_view, name="invoice_pdf"),
    path("invoices/<str:code>/csv/", views.invoice_csv_view, name="invoice_csv"),
    path("webhooks/stripe/", views.stripe_webhook, name="stripe_webhook"),
]
