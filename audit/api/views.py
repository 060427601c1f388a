"""The tenant's audit trail for admins."""

import django_filters
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_view
from rest_framework import mixins

from audit.api.serializers import AuditEventSerializer
from audit.models import AuditEvent
from audit.selectors import audit_events_for_tenant
from poolsaas.api.filters import UTCDateTimeFilter
from poolsaas.api.viewsets import TenantScopedViewSet
from tenants.roles import Action


class AuditEventFilter(django_filters.FilterSet):
    action = django_filters.CharFilter(field_name="action")
    actor = django_filters.CharFilter(field_name="actor_label", lookup_expr="icontains")
    since = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["action", "actor", "since", "until"]


def _events_for(*, membership):
    # The role check (admins) is the viewset's, done before this runs.
    return audit_events_for_tenant(tenant=membership.tenant)


@extend_schema_view(
    list=extend_schema(
        tags=["audit"],
        summary="The tenant's audit trail, newest first (admins)",
        examples=[
            OpenApiExample(
                "A page",
                value={
                    "count": 1,
                    "next": None,
                    "previous": None,
                    "results": [
                        {
                            "code": "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f",
                            "seq": 42,
                            "created_at": "2026-06-01T12:00:00Z",
                            "action": "command.sent",
                            "actor": "olivia@acme.test",
                            "target_type": "devices.Command",
                            "target_code": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
                            "target_label": "pump ON → 12",
                            "data": {"op": "pump", "value": "ON"},
                            "ip": "203.0.113.7",
                            "source": "web",
                            "request_id": "5f0c1d2e3f4a5b6c",
                        }
                    ],
                },
                response_only=True,
            )
        ],
    )
)
class AuditEventViewSet(mixins.ListModelMixin, TenantScopedViewSet):
    queryset = AuditEvent.objects.none()
    serializer_class = AuditEventSerializer
    list_selector = _events_for
    filter_backends = [django_filters.rest_framework.DjangoFilterBackend]
    filterset_class = AuditEventFilter
    actions = {"list": Action.MANAGE}
