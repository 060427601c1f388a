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
from alerts.models import Alert, AlertRule, Kind, WebhookSubscription
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
    "recipient": "",
    "webhook": WEBHOOK_EXAMPLE["code"],
    "status": "sent",
    "held_until": None,
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


RULE_EXAMPLE = {
    "code": "6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d",
    "kind": "freeze_risk",
    "pool": None,
    "enabled": True,
    "threshold": 4.0,
    "hysteresis": 1.0,
    "renotify_minutes": 60,
}


class RuleFilter(django_filters.FilterSet):
    pool = django_filters.UUIDFilter(
        field_name="pool__code", help_text="Only this pool's overrides."
    )
    default = django_filters.BooleanFilter(
        field_name="pool", lookup_expr="isnull", help_text="Only tenant defaults."
    )
    kind = django_filters.ChoiceFilter(choices=Kind.choices)

    class Meta:
        model = AlertRule
        fields = ["pool", "default", "kind"]


@extend_schema_view(
    list=extend_schema(
        summary="Your tenant's alert rules: defaults (pool null) and pools' overrides",
        responses={200: s.RuleSerializer(many=True)},
        examples=[_page(RULE_EXAMPLE)],
    ),
    retrieve=extend_schema(
        summary="One rule",
        examples=[_ex("A default", RULE_EXAMPLE, response_only=True)],
    ),
    create=extend_schema(
        summary="Add a default or a pool's override (admins)",
        request=s.RuleCreateSerializer,
        responses={201: s.RuleSerializer},
        examples=[
            _ex(
                "Freeze risk default",
                {"kind": "freeze_risk", "threshold": 4, "renotify_minutes": 60},
                request_only=True,
            ),
            _ex(
                "A pool's override",
                {
                    "kind": "water_above",
                    "pool": "0e6f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
                    "threshold": 31,
                },
                request_only=True,
            ),
            _ex("Created", RULE_EXAMPLE, response_only=True, status_codes=[201]),
        ],
    ),
    partial_update=extend_schema(
        summary="Change a rule's numbers or switch it off (admins)",
        request=s.RuleNumbersSerializer(partial=True),
        responses={200: s.RuleSerializer},
        examples=[_ex("Switch off", {"enabled": False}, request_only=True)],
    ),
    destroy=extend_schema(
        summary="Remove a rule (admins): a pool's override falls back to the default"
    ),
)
class RuleViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    TenantScopedViewSet,
):
    queryset = AlertRule.objects.none()
    serializer_class = s.RuleSerializer
    list_selector = selectors.rules_for_member
    get_selector = selectors.rule_get_for_member
    not_found_message = "No such rule."
    filter_backends = [django_filters.rest_framework.DjangoFilterBackend]
    filterset_class = RuleFilter
    http_method_names = ["get", "post", "patch", "delete", "head"]
    actions = {"list": Action.VIEW, "retrieve": Action.VIEW}

    def create(self, request, *args, **kwargs):
        from devices.api.views.devices import _referenced
        from devices.selectors import pool_get_for_member

        data = s.RuleCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        pool_code = values.pop("pool", None)
        pool = (
            _referenced("pool", pool_get_for_member, self.membership, pool_code)
            if pool_code is not None
            else None
        )
        rule = services.alert_rule_create(
            membership=self.membership, pool=pool, **values
        )
        return Response(s.RuleSerializer(rule).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, *args, **kwargs):
        rule = self.get_object()
        data = s.RuleNumbersSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        current = {
            "threshold": rule.threshold,
            "hysteresis": rule.hysteresis,
            "renotify_minutes": rule.renotify_minutes,
            "enabled": rule.enabled,
        }
        rule = services.alert_rule_update(
            membership=self.membership,
            rule=rule,
            **{**current, **data.validated_data},
        )
        return Response(s.RuleSerializer(rule).data)

    def perform_destroy(self, instance):
        services.alert_rule_delete(membership=self.membership, rule=instance)
