"""API views for brokers, pools, devices, commands, programs, events and telemetry.

Each view parses, obtains objects through devices.selectors (the access layer), calls
one service and answers.
"""

import csv
import datetime as dt
import io

import django_filters
from django.db import transaction
from django.http import Http404
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import exceptions, mixins, status
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from devices import selectors
from devices.api import serializers as s
from devices.models import Broker, Command, Device, DeviceEvent, Pool
from poolsaas.api.errors import PreconditionFailed
from poolsaas.api.filters import UTCDateTimeFilter
from poolsaas.api.viewsets import TenantScopedViewSet, etag_for, require_if_match
from tenants.roles import Action

POOL_CODE = OpenApiParameter(
    "pool_code", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Pool code."
)
IF_MATCH = OpenApiParameter(
    "If-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=True,
    description="The ETag you read; 412 if it changed since, 428 if missing.",
)
EXAMPLE_CODE = "5b8f1c1e2d3a4b5c9d8e7f6a5b4c3d2e"


def _ex(name: str, value, **kwargs) -> OpenApiExample:
    return OpenApiExample(name, value=value, **kwargs)


POOL_EXAMPLE = {
    "code": "0e6f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
    "name": "Main pool",
    "timezone": "Europe/Madrid",
    "mode1_name": "Cascada",
    "mode2_name": "Eyectores",
    "override_until": None,
    "config_version": 3,
    "created_at": "2026-05-01T09:00:00Z",
    "device": {
        "code": "7c2d9e4f-1a2b-4c3d-9e8f-0a1b2c3d4e5f",
        "device_id": "ESP-A1B2C3",
        "protocol": "ps1",
        "online": True,
        "last_seen_at": "2026-06-01T12:00:00Z",
        "firmware_version": "1.2.0",
    },
}
BROKER_EXAMPLE = {
    "code": "1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a",
    "name": "Our broker",
    "host": "mqtt.example.com",
    "port": 8883,
    "use_tls": True,
    "ca_certificate": "",
    "websocket_url": "",
    "topic_prefix": "devices",
    "credentials_set": True,
    "secrets_changed_at": "2026-05-01T09:00:00Z",
    "created_at": "2026-05-01T09:00:00Z",
    "updated_at": "2026-05-01T09:00:00Z",
}
STATE_EXAMPLE = {
    "device": "7c2d9e4f1a2b4c3d9e8f0a1b2c3d4e5f",
    "pool": "0e6f1a2b3c4d4e5f8a9b0c1d2e3f4a5b",
    "online": True,
    "last_seen_at": "2026-06-01T12:00:00Z",
    "state": {
        "pump": True,
        "valve": 1,
        "temperature": 26.5,
        "timer": {"active": False, "remaining": 0, "mode": 1, "duration": 0},
        "wifi": {"status": "connected", "rssi": -61, "quality": "good"},
        "updated_at": "2026-06-01T12:00:00Z",
    },
    "firmware_version": "1.2.0",
    "config_version_applied": 3,
}
COMMAND_EXAMPLE = {
    "code": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
    "pool": "0e6f1a2b3c4d4e5f8a9b0c1d2e3f4a5b",
    "op": "pump",
    "value": "ON",
    "status": "pending",
    "error": "",
    "actor": "olivia@acme.test",
    "source": "api",
    "created_at": "2026-06-01T12:00:00Z",
    "sent_at": None,
    "completed_at": None,
    "expires_at": "2026-06-01T12:00:30Z",
}
PROGRAMS_EXAMPLE = {
    "version": 3,
    "programs": [
        {
            "slot": 1,
            "enabled": True,
            "days": [
                {"mode": 1, "start": "10:00", "stop": "14:00"},
                None,
                {"mode": 1, "start": "10:00", "stop": "14:00"},
                None,
                {"mode": 2, "start": "10:00", "stop": "12:00"},
                None,
                None,
            ],
        }
    ],
}


def _paginated(serializer_class, example: dict) -> dict:
    return {
        "responses": {200: serializer_class(many=True)},
        "examples": [
            _ex(
                "A page",
                {"count": 1, "next": None, "previous": None, "results": [example]},
                response_only=True,
            )
        ],
    }


class CSVRenderer(BaseRenderer):
    """Telemetry buckets as CSV (errors stay JSON: see ApiViewMixin)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        out = io.StringIO()
        writer = csv.writer(out)
        if isinstance(data, dict) and "buckets" in data:
            columns = list(s.TelemetryBucketSerializer().fields)
            writer.writerow(columns)
            for bucket in data["buckets"]:
                row = dict(bucket, start=bucket["start"].isoformat())
                writer.writerow(["" if row[c] is None else row[c] for c in columns])
        return out.getvalue().encode(self.charset)


# --- Brokers -----------------------------------------------------------------------


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
    actions = {
        "list": Action.VIEW,
        "retrieve": Action.VIEW,
        "rotate_credentials": Action.MANAGE,
    }

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

    @extend_schema(
        methods=["POST"],
        summary="Stage new credentials; the bridge switches when the broker "
        "accepts them (admins)",
        request=s.BrokerRotateSerializer,
        responses={200: s.BrokerSerializer},
    )
    @extend_schema(
        methods=["DELETE"],
        summary="Discard staged credentials (admins)",
        request=None,
        responses={200: s.BrokerSerializer},
    )
    @action(detail=True, methods=["post", "delete"], url_path="rotate-credentials")
    def rotate_credentials(self, request, code=None):
        from devices.services import brokers

        broker = self.get_object()
        if request.method == "DELETE":
            broker = brokers.broker_credentials_cancel(
                membership=self.membership, broker=broker
            )
        else:
            data = s.BrokerRotateSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            broker = brokers.broker_credentials_stage(
                membership=self.membership, broker=broker, **data.validated_data
            )
        return Response(s.BrokerSerializer(broker).data)


# --- Pools -------------------------------------------------------------------------


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
class PoolViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet
):
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
    actions = {"state": Action.VIEW, "telemetry": Action.VIEW}

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

    @extend_schema(
        summary="Temperature, pump and valve history, downsampled into buckets",
        parameters=[
            s.TelemetryQuerySerializer,
            OpenApiParameter(
                "format",
                OpenApiTypes.STR,
                enum=["json", "csv"],
                description="csv for a CSV file (or send Accept: text/csv).",
            ),
        ],
        responses={
            (200, "application/json"): s.TelemetrySerializer,
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR, description="The same buckets as CSV."
            ),
        },
        examples=[
            _ex(
                "A day at 1 h",
                {
                    "pool": "0e6f1a2b3c4d4e5f8a9b0c1d2e3f4a5b",
                    "start": "2026-06-01T00:00:00Z",
                    "end": "2026-06-02T00:00:00Z",
                    "resolution": 3600,
                    "buckets": [
                        {
                            "start": "2026-06-01T00:00:00Z",
                            "samples": 60,
                            "temperature_avg": 25.8,
                            "temperature_min": 25.6,
                            "temperature_max": 26.0,
                            "pump_on": 0.5,
                            "mode1": 0.5,
                            "mode2": 0.0,
                        }
                    ],
                },
                response_only=True,
            )
        ],
    )
    @action(
        detail=True,
        methods=["get"],
        renderer_classes=[JSONRenderer, CSVRenderer],
    )
    def telemetry(self, request, code=None):
        pool = self.get_object()
        query = s.TelemetryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        end = query.validated_data.get("end") or timezone.now()
        try:
            start = query.validated_data.get("start") or end - dt.timedelta(days=1)
        except OverflowError:
            raise exceptions.ValidationError(
                {"end": ["Out of range: give a start too."]}
            ) from None
        resolution = query.validated_data.get("resolution")
        window = telemetry_window(start=start, end=end, resolution=resolution)
        buckets = selectors.telemetry_history(
            pool=pool, start=start, end=end, size=window
        )
        fields = list(s.TelemetryBucketSerializer().fields)
        return Response(
            {
                "pool": pool.code.hex,
                "start": start,
                "end": end,
                "resolution": window,
                "buckets": [{key: row[key] for key in fields} for row in buckets],
            }
        )


AUTO_RESOLUTIONS = [60, 300, 900, 3600, 21600, 86400]
MAX_BUCKETS = 5000
MAX_SPAN = dt.timedelta(days=400)


def telemetry_window(*, start, end, resolution: int | None) -> int:
    if start >= end:
        raise exceptions.ValidationError({"start": ["Must be before end."]})
    if end - start > MAX_SPAN:
        raise exceptions.ValidationError(
            {"start": [f"Ask for at most {MAX_SPAN.days} days at once."]}
        )
    span = (end - start).total_seconds()
    if resolution is None:
        return next(
            (r for r in AUTO_RESOLUTIONS if span / r <= 1000), AUTO_RESOLUTIONS[-1]
        )
    if span / resolution > MAX_BUCKETS:
        raise exceptions.ValidationError(
            {
                "resolution": [
                    f"That makes more than {MAX_BUCKETS} buckets: use at least "
                    f"{int(span // MAX_BUCKETS) + 1} seconds."
                ]
            }
        )
    return resolution


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


class PoolProgramsViewSet(PoolChildViewSet):
    """GET and PUT of a pool's programs as one document, versioned by the pool's
    configuration version (the ETag)."""

    queryset = Pool.objects.none()
    serializer_class = s.ProgramsSerializer
    pagination_class = None
    actions = {"programs": Action.VIEW, "programs_put": Action.CONTROL}

    @staticmethod
    def etag(pool: Pool) -> str:
        return f'"{pool.config_version}"'

    def _answer(self, pool: Pool) -> Response:
        programs = selectors.pool_programs(pool=pool)
        body = {
            "version": pool.config_version,
            "programs": [
                {"slot": p.slot, "enabled": p.enabled, "days": p.days} for p in programs
            ],
        }
        return Response(body, headers={"ETag": self.etag(pool)})

    @extend_schema(
        summary="The pool's weekly programs (the ETag guards PUT)",
        parameters=[POOL_CODE],
        responses={200: s.ProgramsSerializer},
        examples=[_ex("Programs", PROGRAMS_EXAMPLE, response_only=True)],
    )
    def programs(self, request, pool_code=None):
        return self._answer(self.get_pool())

    @extend_schema(
        summary="Replace the pool's programs (operators; needs If-Match)",
        parameters=[POOL_CODE, IF_MATCH],
        request=s.ProgramsSerializer,
        responses={200: s.ProgramsSerializer},
        examples=[
            _ex(
                "Programs",
                {"programs": PROGRAMS_EXAMPLE["programs"]},
                request_only=True,
            ),
            _ex("Saved", {**PROGRAMS_EXAMPLE, "version": 4}, response_only=True),
        ],
    )
    def programs_put(self, request, pool_code=None):
        from devices.services.programs import ProgramsConflict, programs_save

        programs = (
            request.data.get("programs") if isinstance(request.data, dict) else None
        )
        with transaction.atomic():
            # Compared under the row lock, as for brokers; the service checks the
            # version it is given again under the same lock.
            pool = self.get_pool(lock=True)
            require_if_match(request, self.etag(pool))
            if not isinstance(programs, list):
                raise exceptions.ValidationError(
                    {"programs": ["Send the complete list of programs (up to 3)."]}
                )
            try:
                # The service validates every slot and day and names the field
                # (programs[0].days[2].stop).
                pool = programs_save(
                    membership=self.membership,
                    pool=pool,
                    programs=programs,
                    expected_version=pool.config_version,
                )
            except ProgramsConflict as exc:
                raise PreconditionFailed(" ".join(exc.messages)) from None
        return self._answer(pool)


# --- Devices -----------------------------------------------------------------------


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
        return Response(s.DeviceStateSerializer(self.get_object()).data)

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
