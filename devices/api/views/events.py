"""/api/v1/pools/{code}/events/: the pool's event log."""

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins

from devices import selectors
from devices.api import serializers as s
from devices.api.views.openapi import (
    POOL_CODE,
    _paginated,
)
from devices.api.views.pools import PoolChildViewSet
from devices.models import DeviceEvent
from poolsaas.api.filters import UTCDateTimeFilter


class EventFilter(django_filters.FilterSet):
    since = UTCDateTimeFilter(field_name="ts", lookup_expr="gte")
    until = UTCDateTimeFilter(field_name="ts", lookup_expr="lt")

    class Meta:
        model = DeviceEvent
        fields = ["kind", "since", "until"]


@extend_schema_view(
    list=extend_schema(
        summary="The pool's event log, newest first",
        parameters=[POOL_CODE],
        **_paginated(
            s.DeviceEventSerializer,
            {
                "code": "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
                "ts": "2026-06-01T12:00:00Z",
                "kind": "command.done",
                "message": "Pump on by olivia@acme.test",
                "data": {},
                "actor": "olivia@acme.test",
            },
        ),
    )
)
class PoolEventViewSet(mixins.ListModelMixin, PoolChildViewSet):
    queryset = DeviceEvent.objects.none()
    serializer_class = s.DeviceEventSerializer
    filter_backends = [django_filters.rest_framework.DjangoFilterBackend]
    filterset_class = EventFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        return selectors.pool_events(pool=self.get_pool())
