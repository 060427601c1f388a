"""/api/v1/devices/: the tenant's devices; adding one answers its provisioning
bundle once."""

import django_filters
from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, status
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter
from rest_framework.response import Response

from devices import selectors
from devices.api import serializers as s
from devices.api.views.openapi import (
    STATE_EXAMPLE,
    _ex,
    _paginated,
)
from devices.models import Device
from poolsaas.api.rows import row_reader
from poolsaas.api.viewsets import TenantScopedViewSet
from tenants.roles import Action


class DeviceFilter(django_filters.FilterSet):
    pool = django_filters.UUIDFilter(field_name="pool__code")

    class Meta:
        model = Device
        fields = ["online", "protocol", "pool"]


DEVICE_EXAMPLE = {
    "code": "7c2d9e4f-1a2b-4c3d-9e8f-0a1b2c3d4e5f",
    "device_id": "ESP-A1B2C3",
    "pool": "0e6f1a2b3c4d4e5f8a9b0c1d2e3f4a5b",
    "broker": None,
    "topic_prefix": "devices",
    "protocol": "ps1",
    "online": True,
    "last_seen_at": "2026-06-01T12:00:00Z",
    "firmware_version": "1.2.0",
    "hardware_model": "esp32",
    "config_version_applied": 3,
    "created_at": "2026-05-01T09:00:00Z",
}


@extend_schema_view(
    list=extend_schema(
        summary="Your tenant's devices",
        **_paginated(s.DeviceSerializer, DEVICE_EXAMPLE),
    ),
    retrieve=extend_schema(
        summary="One device",
        examples=[_ex("A device", DEVICE_EXAMPLE, response_only=True)],
    ),
    create=extend_schema(
        summary="Add a device to a pool (admins); the bundle is shown this once",
        request=s.DeviceCreateSerializer,
        responses={201: s.DeviceCreatedSerializer},
        examples=[
            _ex(
                "Add",
                {
                    "pool": "0e6f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
                    "device_id": "ESP-A1B2C3",
                },
                request_only=True,
            ),
            _ex(
                "Added",
                {
                    **DEVICE_EXAMPLE,
                    "online": False,
                    "last_seen_at": None,
                    "bundle": {
                        "v": 1,
                        "device_id": "ESP-A1B2C3",
                        "mqtt": {
                            "host": "mqtt.poolsaas.example",
                            "port": 8883,
                            "tls": True,
                            "username": "ESP-A1B2C3",
                            "password": "shown-once",
                            "prefix": "devices",
                        },
                    },
                },
                response_only=True,
            ),
        ],
    ),
    destroy=extend_schema(summary="Remove a device (admins); its pool stays"),
)
class DeviceViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    TenantScopedViewSet,
):
    queryset = Device.objects.none()
    serializer_class = s.DeviceSerializer
    list_selector = selectors.devices_for_member
    get_selector = selectors.device_get_for_member
    not_found_message = "No such device."
    filter_backends = [
        django_filters.rest_framework.DjangoFilterBackend,
        OrderingFilter,
    ]
    filterset_class = DeviceFilter
    ordering_fields = ["device_id", "last_seen_at", "created_at"]
    actions = {"state": Action.VIEW, "rotate_credentials": Action.MANAGE}

    def get_queryset(self):
        # Never shown here: skip loading (and decrypting) the secrets of each row.
        return (
            super()
            .get_queryset()
            .defer(
                "mqtt_password",
                "pending_mqtt_username",
                "pending_mqtt_password",
                "state",
                "broker__username",
                "broker__password",
            )
        )

    def create(self, request, *args, **kwargs):
        from devices.services.onboarding import device_add, device_broker_choose

        data = s.DeviceCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        pool = _referenced(
            "pool", selectors.pool_get_for_member, self.membership, values["pool"]
        )
        broker = device_broker_choose(
            membership=self.membership, code=values.get("broker")
        )
        device, bundle = device_add(
            membership=self.membership,
            pool=pool,
            device_id=values["device_id"],
            broker=broker,
            protocol=values["protocol"],
            claim_code=values["claim_code"],
        )
        return Response(
            s.DeviceCreatedSerializer(device, context={"bundle": bundle}).data,
            status=status.HTTP_201_CREATED,
            # The bundle's password is in this answer only: no cache may keep it.
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    def perform_destroy(self, instance):
        from devices.services.onboarding import device_remove

        device_remove(membership=self.membership, device=instance)

    @extend_schema(
        summary="The device's live state",
        responses={200: s.DeviceStateSerializer},
        examples=[_ex("State", STATE_EXAMPLE, response_only=True)],
    )
    @action(detail=True, methods=["get"])
    def state(self, request, code=None):
        reader = row_reader(s.DeviceStateSerializer)
        with self.not_found():
            row = selectors.device_row_for_member(
                membership=self.membership, code=code, fields=reader.paths
            )
        return Response(reader.represent_one(row))

    @extend_schema(
        methods=["POST"],
        summary="Rotate the device's platform credentials (admins): the device "
        "learns the new pair over MQTT and confirms",
        request=None,
        responses={200: s.DeviceSerializer},
    )
    @extend_schema(
        methods=["DELETE"],
        summary="Cancel a pending rotation (admins)",
        request=None,
        responses={200: s.DeviceSerializer},
    )
    @action(detail=True, methods=["post", "delete"], url_path="rotate-credentials")
    def rotate_credentials(self, request, code=None):
        from devices.services import device_credentials

        device = self.get_object()
        if request.method == "DELETE":
            device = device_credentials.device_credentials_cancel(
                membership=self.membership, device=device
            )
        else:
            device = device_credentials.device_credentials_rotate(
                membership=self.membership, device=device
            )
        return Response(s.DeviceSerializer(device).data)


def _referenced(field: str, getter, membership, code):
    """An object named in a payload: another tenant's is a field error."""
    try:
        return getter(membership=membership, code=code, action=Action.MANAGE)
    except Http404:
        raise exceptions.ValidationError(
            {field: [f"No such {field} in your tenant."]}
        ) from None
