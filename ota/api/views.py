"""/api/v1/ota/: releases (read; upload and retire your own), campaigns (read,
preview, create, start, pause, resume, cancel, their devices), a device's update
history and a pool's consent to an update. Everyone reads; admins and owners write;
operators and up answer a consent (as on the pool page). Views parse, authorise through
ota.access and call one engine service."""

from django.core.exceptions import PermissionDenied, ValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from devices.models import Device, Pool
from devices.selectors import device_get_for_member, pool_get_for_member
from ota import access
from ota.api import serializers as s
from ota.models import Campaign, DeviceUpdate, Release
from ota.views.shapes import abort_status, counts_for
from poolsaas.api.parsers import BoundedJSONParser
from poolsaas.api.viewsets import TenantScopedViewSet
from tenants.roles import Action

RELEASE_EXAMPLE = {
    "code": "4a1f0c2e-8b7d-4e6f-9a5b-3c2d1e0f9a8b",
    "version": "1.4.0",
    "hardware_model": "esp32",
    "min_from_version": "1.2.0",
    "notes": "Faster reconnects.",
    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "size": 181234,
    "chunk_size": 4096,
    "chunk_count": 45,
    "retired": False,
    "platform": True,
    "created_at": "2026-11-02T09:00:00Z",
}
CAMPAIGN_EXAMPLE = {
    "code": "c0ffee00-1234-4abc-8def-0123456789ab",
    "release": RELEASE_EXAMPLE["code"],
    "release_version": "1.4.0",
    "hardware_model": "esp32",
    "state": "running",
    "state_reason": "",
    "target_all": True,
    "below_version": "",
    "rate_per_minute": 10,
    "growth_factor": 2.0,
    "abort_after": 5,
    "abort_ratio": 0.2,
    "retries": 2,
    "max_attempts_per_day": 3,
    "window_start": "02:00:00",
    "window_end": "05:00:00",
    "require_consent": False,
    "started_at": "2026-11-03T02:00:00Z",
    "finished_at": None,
    "created_at": "2026-11-02T18:00:00Z",
}
CREATE_EXAMPLE = {
    "release": RELEASE_EXAMPLE["code"],
    "target_all": False,
    "pools": ["0e6f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"],
    "below_version": "1.4.0",
    "rate_per_minute": 10,
    "growth_factor": 2.0,
    "abort_after": 5,
    "abort_ratio": 0.2,
    "window_start": "02:00",
    "window_end": "05:00",
}
PREVIEW_EXAMPLE = {
    "matched": 2,
    "skipped": 1,
    "devices": ["ESP-A1B2C3", "ESP-D4E5F6"],
    "skipped_devices": [
        {
            "device": "7c2d9e4f-1a2b-4c3d-9e8f-0a1b2c3d4e5f",
            "device_id": "ESP-0A0B0C",
            "reason": "already current",
        }
    ],
}
UPDATE_EXAMPLE = {
    "device": "7c2d9e4f-1a2b-4c3d-9e8f-0a1b2c3d4e5f",
    "device_id": "ESP-A1B2C3",
    "state": "downloading",
    "percent": 40,
    "reason": "",
    "attempts": 1,
    "updated_at": "2026-11-03T02:03:10Z",
}
HISTORY_EXAMPLE = {
    "campaign": CAMPAIGN_EXAMPLE["code"],
    "release_version": "1.4.0",
    "campaign_state": "completed",
    "state": "rolled_back",
    "percent": 100,
    "reason": "running 1.3.0, not 1.4.0",
    "attempts": 1,
    "updated_at": "2026-11-03T02:09:00Z",
}
CONSENT_EXAMPLE = {
    "campaign": CAMPAIGN_EXAMPLE["code"],
    "release_version": "1.4.0",
    "release_notes": "Faster reconnects.",
    "device": "5b6c7d8e-9f0a-4b1c-8d2e-3f4a5b6c7d8e",
    "device_id": "ESP-A1B2C3",
    "state": "awaiting_consent",
    "updated_at": "2026-11-03T02:00:00Z",
}
POOL_CODE = OpenApiParameter(
    "pool_code", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Pool code."
)
CAMPAIGN_CODE = OpenApiParameter(
    "campaign", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Campaign code."
)
DEVICE_CODE = OpenApiParameter(
    "device_code", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Device code."
)


def _ex(name, value, **kwargs) -> OpenApiExample:
    return OpenApiExample(name, value=value, **kwargs)


def _page(example) -> OpenApiExample:
    return _ex("A page", example, response_only=True)


def _service_error(exc: ValueError) -> ValidationError:
    # The engine says "cannot pause a draft campaign": a 400 with that sentence.
    text = str(exc)
    return ValidationError(text[:1].upper() + text[1:] + ".")


@extend_schema_view(
    list=extend_schema(
        summary="Releases you may roll out: the platform's and, if your plan "
        "allows, your own; newest first",
        responses={200: s.ReleaseSerializer(many=True)},
        examples=[_page(RELEASE_EXAMPLE)],
    ),
    retrieve=extend_schema(
        summary="One release",
        examples=[_ex("A release", RELEASE_EXAMPLE, response_only=True)],
    ),
    create=extend_schema(
        summary="Upload a release of your own (admins; multipart/form-data; if "
        "your plan allows it)",
        request={"multipart/form-data": s.ReleaseUploadSerializer},
        responses={201: s.ReleaseSerializer},
        examples=[
            _ex(
                "Uploaded",
                {**RELEASE_EXAMPLE, "platform": False},
                response_only=True,
                status_codes=[201],
            )
        ],
    ),
)
class ReleaseViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet
):
    queryset = Release.objects.none()
    serializer_class = s.ReleaseSerializer
    list_selector = access.releases_for_member
    get_selector = access.release_get_for_member
    not_found_message = access.NOT_FOUND_RELEASE
    parser_classes = [BoundedJSONParser, MultiPartParser]
    actions = {"create": Action.MANAGE, "retire": Action.MANAGE}

    def create(self, request, *args, **kwargs):
        from ota import services

        if not access.own_releases_allowed(tenant=self.membership.tenant):
            raise PermissionDenied(
                "Your plan does not include releases of your own; the platform's "
                "releases are listed at /api/v1/ota/releases/."
            )
        data = s.ReleaseUploadSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        try:
            release = services.release_create(
                upload=values["file"],
                version=values["version"],
                hardware_model=values["hardware_model"],
                min_from_version=values["min_from_version"],
                notes=values["notes"],
                tenant=self.membership.tenant,
                actor=request.user,
            )
        except ValidationError as exc:
            if hasattr(exc, "error_dict") and "upload" in exc.error_dict:
                exc.error_dict["file"] = exc.error_dict.pop("upload")
            raise
        return Response(s.ReleaseSerializer(release).data, status=201)

    @extend_schema(
        summary="Retire one of your releases (admins): no new campaign uses it",
        request=None,
        responses={200: s.ReleaseSerializer},
        examples=[
            _ex("Retired", {**RELEASE_EXAMPLE, "retired": True}, response_only=True)
        ],
    )
    @action(detail=True, methods=["post"])
    def retire(self, request, code=None):
        from ota import services

        release = services.release_retire(actor=request.user, release=self.get_object())
        return Response(s.ReleaseSerializer(release).data)


def _targets(membership, data) -> dict:
    """The service's target arguments from codes, within the member's tenant (a
    code of another tenant is named as unknown, like a made-up one)."""
    errors = {}
    release = (
        access.releases_usable_for_member(membership=membership)
        .filter(code=data["release"])
        .first()
    )
    if release is None:
        errors["release"] = ["No such release (or it is retired)."]
    found = {}
    for name, model in (("pools", Pool), ("devices", Device)):
        codes = set(data[name])
        rows = dict(
            model.objects.filter(
                tenant_id=membership.tenant_id, code__in=codes
            ).values_list("code", "pk")
        )
        unknown = sorted(str(c) for c in codes - set(rows))
        if unknown:
            errors[name] = [f"No such {name[:-1]}: {', '.join(unknown[:5])}."]
        found[name] = list(rows.values())
    if errors:
        raise ValidationError(errors)
    return {
        "release": release,
        "target_all": data["target_all"],
        "pool_ids": found["pools"],
        "device_ids": found["devices"],
        "below_version": data["below_version"],
    }


def _detail(campaign: Campaign) -> dict:
    counts = counts_for(campaign)
    campaign.counts = counts
    campaign.abort = abort_status(campaign, counts)
    return s.CampaignDetailSerializer(campaign).data


CAMPAIGN_DETAIL_EXAMPLE = {
    **CAMPAIGN_EXAMPLE,
    "counts": {
        "queued": 10,
        "awaiting_consent": 0,
        "offered": 1,
        "downloading": 2,
        "downloaded": 0,
        "verified": 0,
        "applying": 0,
        "succeeded": 5,
        "failed": 1,
        "rolled_back": 0,
        "timed_out": 0,
        "skipped": 1,
        "total": 20,
    },
    "abort": {
        "aborted": False,
        "failed": 1,
        "done": 6,
        "share_percent": 17,
        "threshold_percent": 20,
        "after": 5,
        "armed": True,
    },
}


def _state_action(name: str, summary: str, state: str):
    """One of start/pause/resume/cancel: the same view, named for its action (the
    router maps a method to the function's name, so it is set before decorating)."""

    def handler(self, request, code=None):
        from ota import services

        campaign = self.get_object()
        try:
            campaign = services.campaign_set_state(campaign, name, actor=request.user)
        except ValueError as exc:
            raise _service_error(exc) from None
        return Response(_detail(campaign))

    handler.__name__ = handler.__qualname__ = name
    documented = extend_schema(
        summary=summary,
        request=None,
        responses={200: s.CampaignDetailSerializer},
        examples=[
            _ex(
                name.capitalize(),
                {**CAMPAIGN_DETAIL_EXAMPLE, "state": state},
                response_only=True,
            )
        ],
    )(handler)
    return action(detail=True, methods=["post"])(documented)


@extend_schema_view(
    list=extend_schema(
        summary="Your tenant's campaigns, newest first",
        responses={200: s.CampaignSerializer(many=True)},
        examples=[_page(CAMPAIGN_EXAMPLE)],
    ),
    retrieve=extend_schema(
        summary="One campaign with its counts per state and abort status",
        responses={200: s.CampaignDetailSerializer},
        examples=[_ex("Running", CAMPAIGN_DETAIL_EXAMPLE, response_only=True)],
    ),
    create=extend_schema(
        summary="Create a campaign in draft (admins); start it with start/",
        request=s.CampaignCreateSerializer,
        responses={201: s.CampaignDetailSerializer},
        examples=[
            _ex("Chosen pools, at night", CREATE_EXAMPLE, request_only=True),
            _ex(
                "Created",
                {**CAMPAIGN_DETAIL_EXAMPLE, "state": "draft"},
                response_only=True,
                status_codes=[201],
            ),
        ],
    ),
)
class CampaignViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet
):
    queryset = Campaign.objects.none()
    serializer_class = s.CampaignSerializer
    list_selector = access.campaigns_for_member
    get_selector = access.campaign_get_for_member
    not_found_message = access.NOT_FOUND_CAMPAIGN
    actions = {
        "create": Action.MANAGE,
        "preview": Action.MANAGE,
        "start": Action.MANAGE,
        "pause": Action.MANAGE,
        "resume": Action.MANAGE,
        "cancel": Action.MANAGE,
        "updates": Action.VIEW,
    }

    def retrieve(self, request, *args, **kwargs):
        return Response(_detail(self.get_object()))

    def create(self, request, *args, **kwargs):
        from ota import services

        data = s.CampaignCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        targets = _targets(self.membership, values)
        for key in ("release", "target_all", "pools", "devices", "below_version"):
            values.pop(key)
        campaign = services.campaign_create(
            actor=request.user, tenant=self.membership.tenant, **targets, **values
        )
        return Response(_detail(campaign), status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="How many devices a campaign would offer, and why the others are "
        "skipped (admins); creates nothing",
        request=s.TargetsSerializer,
        responses={200: s.PreviewSerializer},
        examples=[
            _ex("All devices", {"release": RELEASE_EXAMPLE["code"]}, request_only=True),
            _ex("Preview", PREVIEW_EXAMPLE, response_only=True),
        ],
    )
    @action(detail=False, methods=["post"])
    def preview(self, request):
        from ota import services

        data = s.TargetsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        preview = services.campaign_preview(
            tenant=self.membership.tenant,
            **_targets(self.membership, data.validated_data),
        )
        return Response(
            {
                "matched": len(preview.matched),
                "skipped": len(preview.skipped),
                "devices": [d.device_id for d in preview.matched],
                "skipped_devices": [
                    {"device": str(d.code), "device_id": d.device_id, "reason": r}
                    for d, r in preview.skipped
                ],
            }
        )

    start = _state_action("start", "Start a draft campaign (admins)", "running")
    pause = _state_action(
        "pause", "Pause a running campaign: nothing new is offered (admins)", "paused"
    )
    resume = _state_action("resume", "Resume a paused campaign (admins)", "running")
    cancel = _state_action(
        "cancel",
        "Cancel a campaign: devices not yet offered keep their version (admins)",
        "cancelled",
    )

    @extend_schema(
        summary="The campaign's devices and their progress, by device id",
        parameters=[
            OpenApiParameter(
                "state",
                OpenApiTypes.STR,
                enum=DeviceUpdate.State.values,
                description="Only devices in this state.",
            )
        ],
        responses={200: s.UpdateSerializer(many=True)},
        examples=[_page(UPDATE_EXAMPLE)],
    )
    @action(detail=True, methods=["get"])
    def updates(self, request, code=None):
        campaign = self.get_object()
        rows = access.campaign_updates(campaign=campaign)
        state = request.query_params.get("state", "")
        if state:
            if state not in DeviceUpdate.State.values:
                raise ValidationError(
                    {"state": f"One of {', '.join(DeviceUpdate.State.values)}."}
                )
            rows = rows.filter(state=state)
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(s.UpdateSerializer(page, many=True).data)


@extend_schema_view(
    list=extend_schema(
        summary="One device's update history, newest first",
        parameters=[DEVICE_CODE],
        responses={200: s.DeviceHistorySerializer(many=True)},
        examples=[_page(HISTORY_EXAMPLE)],
    ),
)
class DeviceHistoryViewSet(mixins.ListModelMixin, TenantScopedViewSet):
    """Under a device: the device's access function is the check."""

    queryset = DeviceUpdate.objects.none()
    serializer_class = s.DeviceHistorySerializer
    collection_role_check = False
    lookup_url_kwarg = "device_code"
    not_found_message = "No such device."

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        with self.not_found():
            device = device_get_for_member(
                membership=self.membership, code=self.kwargs["device_code"]
            )
        return access.device_updates(device=device)


@extend_schema_view(
    list=extend_schema(
        summary="The pool's updates waiting for its consent (campaigns that ask "
        "for it)",
        parameters=[POOL_CODE],
        responses={200: s.ConsentSerializer(many=True)},
        examples=[_page(CONSENT_EXAMPLE)],
    ),
)
class PoolConsentViewSet(mixins.ListModelMixin, TenantScopedViewSet):
    """Under a pool: the pool's access function is the check (a foreign or made-up
    pool or campaign is 404 for every role)."""

    queryset = DeviceUpdate.objects.none()
    serializer_class = s.ConsentSerializer
    collection_role_check = False
    lookup_url_kwarg = "campaign"
    not_found_message = access.NOT_FOUND_CONSENT

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        with self.not_found():
            pool = pool_get_for_member(
                membership=self.membership, code=self.kwargs["pool_code"]
            )
        return access.pool_consent_pending(pool=pool)

    @extend_schema(
        summary="Accept or decline one update waiting for the pool's consent "
        "(operators and up); audited",
        parameters=[POOL_CODE, CAMPAIGN_CODE],
        request=s.ConsentAnswerSerializer,
        responses={200: s.ConsentSerializer},
        examples=[
            _ex("Accept", {"accept": True}, request_only=True),
            _ex("Accepted", {**CONSENT_EXAMPLE, "state": "queued"}, response_only=True),
        ],
    )
    def answer(self, request, pool_code=None, campaign=None):
        from ota import services

        body = s.ConsentAnswerSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        with self.not_found():
            pool = pool_get_for_member(membership=self.membership, code=pool_code)
            update = access.pool_consent_get(
                membership=self.membership, pool=pool, campaign_code=campaign
            )
        try:
            update = services.update_consent(
                actor=request.user, update=update, accept=body.validated_data["accept"]
            )
        except ValueError as exc:  # answered meanwhile (another member, a tab)
            raise _service_error(exc) from None
        return Response(s.ConsentSerializer(update).data)
