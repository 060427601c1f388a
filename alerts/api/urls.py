from rest_framework.routers import SimpleRouter

from alerts.api import views

router = SimpleRouter()
router.register("alerts", views.AlertViewSet, basename="alert")
router.register("alert-rules", views.RuleViewSet, basename="alert-rule")
router.register("webhooks", views.WebhookViewSet, basename="webhook")

urlpatterns = router.urls
