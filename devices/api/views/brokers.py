"""/api/v1/brokers/: a tenant's own brokers, their secrets write-only."""

from django.db import transaction
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.filters import OrderingFilter
from rest_framework.response import Response

from devices import selectors
from devices.api import serializers as s
from devices.api.views.openapi import (
    BROKER_EXAMPLE,
    IF_MATCH,
    _ex,
    _paginated,
)
from devices.models import Broker
from poolsaas.api.viewsets import TenantScopedViewSet, etag_for, require_if_match
from tenants.roles import Action


@extend_schema_view(
    list=extend_schema(
        summary="Your tenant's own brokers",
        **_paginated(s.BrokerSerializer, BROKER_EXAMPLE),
    ),
    retrieve=extend_schema(
        summary="One broker (its ETag header guards updates)",
        examples=[_ex("A broker", BROKER_EXAMPLE, response_only=True)],
    ),
    create=extend_schema(
        summary="Add a broker (admins); secrets are write-only",
        request=s.BrokerWriteSerializer,
        responses={201: s.BrokerSerializer},
        examples=[
            _ex(
                "New broker",
                {
                    "name": "Our broker",
                    "host": "mqtt.example.com",
                    "port": 8883,
                    "use_tls": True,
                    "username": "poolsaas",
                    "password": "s3cret",
                },
                request_only=True,
            ),
            _ex("Created", BROKER_EXAMPLE, response_only=True),
        ],
    ),
    update=extend_schema(
        summary="Change a broker (admins; needs If-Match)",
        request=s.BrokerWriteSerializer,
        parameters=[IF_MATCH],
        examples=[
            _ex(
                "New port, keep secrets",
                {"name": "Our broker", "host": "mqtt.example.com", "port": 1883},
                request_only=True,
            ),
            _ex("Updated", BROKER_EXAMPLE, response_only=True),
        ],
    ),
    destroy=extend_schema(summary="Delete a broker without devices (admins)"),
)
class BrokerViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    TenantScopedViewSet,
):
    queryset = Broker.objects.none()
    serializer_class = s.BrokerSerializer
    list_selector = selectors.brokers_for_member
    get_selector = selectors.broker_get_for_member
    not_found_message = "No such broker."
    filter_backends = [OrderingFilter]
    ordering_fields = ["name", "host", "created_at"]
    http_method_names = ["get", "post", "put", "delete", "head", "options"]
    actions = {"list": Action.VIEW, "retrieve": Action.VIEW}

    @staticmethod
    def etag(broker: Broker) -> str:
        return etag_for(broker.code, broker.updated_at.isoformat())

    def retrieve(self, request, *args, **kwargs):
        broker = self.get_object()
        return Response(
            s.BrokerSerializer(broker).data, headers={"ETag": self.etag(broker)}
        )

    def create(self, request, *args, **kwargs):
        from devices.services.brokers import broker_create

        data = s.BrokerWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        broker = broker_create(membership=self.membership, **data.validated_data)
        return Response(
            s.BrokerSerializer(broker).data,
            status=status.HTTP_201_CREATED,
            headers={"ETag": self.etag(broker)},
        )

    def update(self, request, *args, **kwargs):
        from devices.services.brokers import broker_update

        with transaction.atomic():
            # Compared under the row lock: of two writers holding the same ETag,
            # the second sees the first one's change and gets 412.
            with self.not_found():
                broker = selectors.broker_get_for_member(
                    membership=self.membership,
                    code=self.kwargs[self.lookup_url_kwarg],
                    action=self.required_action(),
                    lock=True,
                )
            require_if_match(request, self.etag(broker))
            data = s.BrokerWriteSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            broker = broker_update(
                membership=self.membership, broker=broker, **data.validated_data
            )
        return Response(
            s.BrokerSerializer(broker).data, headers={"ETag": self.etag(broker)}
        )

    def perform_destroy(self, instance):
        from devices.services.brokers import broker_delete

        broker_delete(membership=self.membership, broker=instance)
