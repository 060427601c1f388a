"""/api/v1/alerts/ (read, acknowledge, resolve, the delivery log) and
/api/v1/webhooks/ (subscriptions; the secret is write-only)."""

import django_filters
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter
from rest_framework.response import Response

from alerts import selectors, services
from alerts.api import serializers as s
from alerts.models import Alert, Kind, WebhookSubscription
from poolsaas.api.viewsets import TenantScopedViewSet
from tenants.roles import Action

ALERT_EXAMPLE = {
    "code": "3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c",
    "pool": "0e6f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
    "pool_name": "Main pool",
    "kind": "freeze_risk",
    "label": "Freeze risk (cold water, pump off)",
    "state": "firing",
    "value": 2.5,
    "threshold": 4.0,
    "fired_at": "2026-01-10T05:40:00Z",
    "resolved_at": None,
    "acknowledged_by": "olivia@acme.test",
    "acknowledged_at": "2026-01-10T05:52:10Z",
}
WEBHOOK_EXAMPLE = {
    "code": "8d7c6b5a-4f3e-4d2c-9b1a-0f9e8d7c6b5a",
    "url": "https://hooks.example.com/poolsaas",
    "enabled": True,
    "created_at": "2026-01-02T09:00:00Z",
}
DELIVERY_EXAMPLE = {
    "event": "fired",
    "channel": "webhook",
    "webhook": WEBHOOK_EXAMPLE["code"],
    "attempt": 2,
    "status_code": 200,
    "ok": True,
    "error": "",
    "at": "2026-01-10T05:40:12Z",
}


def _ex(name, value, **kwargs) -> OpenApiExample:
    return OpenApiExample(name, value=value, **kwargs)


def _page(example) -> OpenApiExample:
    # One item: drf-spectacular wraps a list's example in the page envelope itself.
    return _ex("A page", example, response_only=True)


class AlertFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=Alert.State.choices)
    pool = django_filters.UUIDFilter(field_name="pool__code", help_text="Pool code.")
    kind = django_filters.ChoiceFilter(choices=Kind.choices)

    class Meta:
        model = Alert
        fields = ["state", "pool", "kind"]


@extend_schema_view(
    list=extend_schema(
        summary="Your tenant's alerts, newest first (filters: state, pool, kind)",
        responses={200: s.AlertSerializer(many=True)},
        examples=[_page(ALERT_EXAMPLE)],
    ),
    retrieve=extend_schema(
        summary="One alert",
        examples=[_ex("Firing, acknowledged", ALERT_EXAMPLE, response_only=True)],
    ),
)
class AlertViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet
):
    queryset = Alert.objects.none()
    serializer_class = s.AlertSerializer
    list_selector = selectors.alerts_for_member
    get_selector = selectors.alert_get_for_member
    not_found_message = "No such alert."
    filter_backends = [
        django_filters.rest_framework.DjangoFilterBackend,
        OrderingFilter,
    ]
    filterset_class = AlertFilter
    ordering_fields = ["fired_at", "resolved_at"]
    actions = {
        "list": Action.VIEW,
        "retrieve": Action.VIEW,
        "acknowledge": Action.CONTROL,
        "resolve": Action.CONTROL,
        "deliveries": Action.MANAGE,
    }

    @extend_schema(
        summary="Acknowledge a firing alert (operators); the first one is kept",
        request=None,
        responses={200: s.AlertSerializer},
        examples=[_ex("Acknowledged", ALERT_EXAMPLE, response_only=True)],
    )
    @action(detail=True, methods=["post"])
    def acknowledge(self, request, code=None):
        alert = services.alert_acknowledge_by_member(
            membership=self.membership, alert=self.get_object()
        )
        return Response(s.AlertSerializer(alert).data)

    @extend_schema(
        summary="Resolve a firing alert by hand (operators)",
        request=None,
        responses={200: s.AlertSerializer},
        examples=[
            _ex(
                "Resolved",
                {
                    **ALERT_EXAMPLE,
                    "state": "resolved",
                    "resolved_at": "2026-01-10T06:15:00Z",
                },
                response_only=True,
            )
        ],
    )
    @action(detail=True, methods=["post"])
    def resolve(self, request, code=None):
        alert = services.alert_resolve_by_member(
            membership=self.membership, alert=self.get_object()
        )
        return Response(s.AlertSerializer(alert).data)

    @extend_schema(
        summary="The alert's delivery log, oldest first (admins)",
        responses={200: s.DeliverySerializer(many=True)},
        examples=[_page(DELIVERY_EXAMPLE)],
        filters=False,
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def deliveries(self, request, code=None):
        rows = selectors.alert_deliveries(alert=self.get_object())
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(s.DeliverySerializer(page, many=True).data)


@extend_schema_view(
    list=extend_schema(
        summary="Your tenant's webhook subscriptions (admins)",
        responses={200: s.WebhookSerializer(many=True)},
        examples=[_page(WEBHOOK_EXAMPLE)],
    ),
    retrieve=extend_schema(
        summary="One subscription (admins); the secret is never returned",
        examples=[_ex("A subscription", WEBHOOK_EXAMPLE, response_only=True)],
    ),
    create=extend_schema(
        summary="Subscribe a URL (admins); the secret is write-only",
        request=s.WebhookWriteSerializer,
        responses={201: s.WebhookSerializer},
        examples=[
            _ex(
                "New subscription",
                {
                    "url": "https://hooks.example.com/poolsaas",
                    "secret": "whsec-use-a-long-random-string",
                },
                request_only=True,
            ),
            _ex("Created", WEBHOOK_EXAMPLE, response_only=True, status_codes=[201]),
        ],
    ),
    partial_update=extend_schema(
        summary="Change the URL, pause it or replace the secret (admins)",
        request=s.WebhookUpdateSerializer,
        responses={200: s.WebhookSerializer},
        examples=[
            _ex("Pause", {"enabled": False}, request_only=True),
            _ex("Paused", {**WEBHOOK_EXAMPLE, "enabled": False}, response_only=True),
        ],
    ),
    destroy=extend_schema(
        summary="Unsubscribe (admins); its deliveries stay in the log"
    ),
)
class WebhookViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    TenantScopedViewSet,
):
    queryset = WebhookSubscription.objects.none()
    serializer_class = s.WebhookSerializer
    list_selector = selectors.webhooks_for_member
    get_selector = selectors.webhook_get_for_member
    not_found_message = "No such webhook."
    http_method_names = ["get", "post", "patch", "delete", "head"]
    # Reading subscriptions needs the admin role too: their URLs may carry tokens.
    actions = {"list": Action.MANAGE, "retrieve": Action.MANAGE}

    def create(self, request, *args, **kwargs):
        data = s.WebhookWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        webhook = services.webhook_subscribe(
            membership=self.membership, **data.validated_data
        )
        return Response(
            s.WebhookSerializer(webhook).data, status=status.HTTP_201_CREATED
        )

    def partial_update(self, request, *args, **kwargs):
        webhook = self.get_object()
        data = s.WebhookUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        webhook = services.webhook_update(
            membership=self.membership, webhook=webhook, **data.validated_data
        )
        return Response(s.WebhookSerializer(webhook).data)

    def perform_destroy(self, instance):
        services.webhook_delete(membership=self.membership, webhook=instance)
