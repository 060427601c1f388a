from rest_framework.routers import SimpleRouter

from audit.api import views

router = SimpleRouter()
router.register("audit-events", views.AuditEventViewSet, basename="audit-event")

urlpatterns = router.urls
