"""/api/v1/pools/: the tenant's pools and their device's live state; the base of
the collections under one pool (commands, events, programs)."""

import django_filters
from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter
from rest_framework.response import Response

from devices import selectors
from devices.api import serializers as s
from devices.api.views.openapi import (
    POOL_EXAMPLE,
    STATE_EXAMPLE,
    _ex,
    _paginated,
)
from devices.models import Pool
from poolsaas.api.viewsets import ListAsRowsMixin, TenantScopedViewSet
from tenants.roles import Action


class PoolFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Name or device id contains")
    online = django_filters.BooleanFilter(field_name="device__online")

    class Meta:
        model = Pool
        fields = ["q", "online"]

    def search(self, queryset, name, value):
        from django.db.models import Q

        return queryset.filter(
            Q(name__icontains=value) | Q(device__device_id__icontains=value)
        )


@extend_schema_view(
    list=extend_schema(
        summary="Your tenant's pools", **_paginated(s.PoolSerializer, POOL_EXAMPLE)
    ),
    retrieve=extend_schema(
        summary="One pool",
        examples=[_ex("A pool", POOL_EXAMPLE, response_only=True)],
    ),
    create=extend_schema(
        summary="Add a pool (admins)",
        request=s.PoolWriteSerializer,
        responses={201: s.PoolSerializer},
        examples=[
            _ex(
                "New pool",
                {"name": "Main pool", "timezone": "Europe/Madrid"},
                request_only=True,
            ),
            _ex("Created", {**POOL_EXAMPLE, "device": None}, response_only=True),
        ],
    ),
    partial_update=extend_schema(
        summary="Rename a pool or change its time zone or mode names (admins)",
        request=s.PoolWriteSerializer(partial=True),
        examples=[
            _ex("Rename", {"name": "Garden pool"}, request_only=True),
            _ex("Renamed", {**POOL_EXAMPLE, "name": "Garden pool"}, response_only=True),
        ],
    ),
)
class PoolViewSet(ListAsRowsMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    queryset = Pool.objects.none()
    serializer_class = s.PoolSerializer
    list_selector = selectors.pools_for_member
    get_selector = selectors.pool_get_for_member
    not_found_message = "No such pool."
    filter_backends = [
        django_filters.rest_framework.DjangoFilterBackend,
        OrderingFilter,
    ]
    filterset_class = PoolFilter
    ordering_fields = ["name", "created_at"]
    http_method_names = ["get", "post", "patch", "head", "options"]
    actions = {"state": Action.VIEW}

    def get_queryset(self):
        # The list shows neither secrets nor state: skip loading (and decrypting)
        # them for every row.
        return super().get_queryset().defer("device__mqtt_password", "device__state")

    def create(self, request, *args, **kwargs):
        from devices.services.pools import pool_create

        data = s.PoolWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        pool = pool_create(membership=self.membership, **data.service_kwargs())
        return Response(s.PoolSerializer(pool).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, *args, **kwargs):
        from devices.services.pools import pool_update

        pool = self.get_object()
        data = s.PoolWriteSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        pool = pool_update(
            membership=self.membership, pool=pool, **data.service_kwargs()
        )
        pool = selectors.pool_get_for_member(membership=self.membership, code=pool.code)
        return Response(s.PoolSerializer(pool).data)

    @extend_schema(
        summary="The live state of the pool's device",
        responses={200: s.DeviceStateSerializer},
        examples=[_ex("State", STATE_EXAMPLE, response_only=True)],
    )
    @action(detail=True, methods=["get"])
    def state(self, request, code=None):
        device = selectors.pool_device(self.get_object())
        if device is None:
            raise Http404("This pool has no device.")
        return Response(s.DeviceStateSerializer(device).data)


# --- Pool children: commands, programs, events ---------------------------------------


class PoolChildViewSet(TenantScopedViewSet):
    """Collections under one pool: the pool's access function is the check."""

    collection_role_check = False
    lookup_url_kwarg = "pool_code"
    not_found_message = "No such pool."

    def get_pool(self, *, lock: bool = False) -> Pool:
        with self.not_found():
            return selectors.pool_get_for_member(
                membership=self.membership,
                code=self.kwargs["pool_code"],
                action=self.required_action(),
                lock=lock,
            )
