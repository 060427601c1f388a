from django.urls import path

from alerts import views

urlpatterns = [
    path("alerts/", views.alerts, name="alerts"),
    path("alerts/rules/", views.tenant_rules, name="alert_rules"),
    path("alerts/preferences/", views.alert_preferences, name="alert_preferences"),
    path("alerts/<str:code>/", views.alert_detail, name="alert_detail"),
    path(
        "alerts/<str:code>/acknowledge/",
        views.alert_acknowledge,
        name="alert_acknowledge",
    ),
    path("alerts/<str:code>/resolve/", views.alert_resolve, name="alert_resolve"),
    path("pools/<str:code>/alerts/", views.pool_alerts, name="pool_alerts"),
    path("pools/<str:code>/alerts/rules/", views.pool_rules, name="pool_rules"),
]
