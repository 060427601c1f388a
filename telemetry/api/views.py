"""/api/v1/pools/{code}/telemetry/: the pool's history in buckets, as JSON or CSV.

The buckets are telemetry.selectors.telemetry_history's, the same as the history
page's; the pool is obtained through its access function like any pool of the API.
"""

import csv
import datetime as dt
import io

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response

from devices import selectors
from devices.api.views.openapi import _ex
from devices.models import Pool
from poolsaas.api.renderers import JSONRenderer
from poolsaas.api.viewsets import TenantScopedViewSet
from telemetry.api import serializers as s
from telemetry.selectors import telemetry_history
from tenants.roles import Action

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


class PoolTelemetryViewSet(TenantScopedViewSet):
    """The pool's samples folded into buckets of `resolution` seconds whose edges
    follow the pool's local clock (a daily bucket starts at local midnight), the
    same buckets as the pool's history page."""

    # (The docstring above is the operation's description in the schema.) The pool
    # comes from its access function: a foreign or made-up code is "No such pool."

    queryset = Pool.objects.none()
    get_selector = selectors.pool_get_for_member
    not_found_message = "No such pool."
    pagination_class = None
    renderer_classes = [JSONRenderer, CSVRenderer]
    actions = {"telemetry": Action.VIEW}

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
        buckets = telemetry_history(pool=pool, start=start, end=end, size=window)
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
