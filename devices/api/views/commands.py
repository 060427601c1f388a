"""Commands: sent under a pool (/api/v1/pools/{code}/commands/), polled by code
(/api/v1/commands/{code}/)."""

import django_filters
from django.urls import reverse
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.filters import OrderingFilter
from rest_framework.response import Response

from devices import selectors
from devices.api import serializers as s
from devices.api.views.openapi import (
    COMMAND_EXAMPLE,
    POOL_CODE,
    _ex,
    _paginated,
)
from devices.api.views.pools import PoolChildViewSet
from devices.models import Command
from poolsaas.api.viewsets import TenantScopedViewSet
from tenants.roles import Action


class CommandFilter(django_filters.FilterSet):
    class Meta:
        model = Command
        fields = ["status", "op"]


@extend_schema_view(
    list=extend_schema(
        summary="The pool's commands, newest first",
        parameters=[POOL_CODE],
        **_paginated(s.CommandSerializer, COMMAND_EXAMPLE),
    ),
    create=extend_schema(
        summary="Send a command (operators); answers 202, poll the Location",
        parameters=[POOL_CODE],
        request=s.CommandCreateSerializer,
        responses={202: s.CommandSerializer},
        examples=[
            _ex("Pump on", {"op": "pump", "value": "ON"}, request_only=True),
            _ex("Valve to mode 2", {"op": "valve", "value": 2}, request_only=True),
            _ex(
                "Timer 30 min",
                {"op": "timer", "value": {"mode": 1, "duration": 1800}},
                request_only=True,
            ),
            _ex("Accepted", COMMAND_EXAMPLE, response_only=True, status_codes=[202]),
        ],
    ),
)
class PoolCommandViewSet(mixins.ListModelMixin, PoolChildViewSet):
    queryset = Command.objects.none()
    serializer_class = s.CommandSerializer
    filter_backends = [
        django_filters.rest_framework.DjangoFilterBackend,
        OrderingFilter,
    ]
    filterset_class = CommandFilter
    ordering_fields = ["created_at"]
    actions = {"list": Action.VIEW, "create": Action.CONTROL}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        return selectors.pool_commands(pool=self.get_pool())

    def create(self, request, *args, **kwargs):
        from devices.services.commands import command_send

        pool = self.get_pool()
        data = s.CommandCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        command = command_send(
            membership=self.membership,
            pool=pool,
            op=data.validated_data["op"],
            value=data.validated_data.get("value"),
            source="api",
        )
        location = request.build_absolute_uri(
            reverse("api:command-detail", args=[command.code])
        )
        return Response(
            s.CommandSerializer(command).data,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": location},
        )


@extend_schema_view(
    retrieve=extend_schema(
        summary="One command: poll until status is done, failed or timed_out",
        examples=[
            _ex(
                "Done",
                {**COMMAND_EXAMPLE, "status": "done"},
                response_only=True,
            )
        ],
    )
)
class CommandViewSet(mixins.RetrieveModelMixin, TenantScopedViewSet):
    queryset = Command.objects.none()
    serializer_class = s.CommandSerializer
    get_selector = selectors.command_get_for_member
    not_found_message = "No such command."
