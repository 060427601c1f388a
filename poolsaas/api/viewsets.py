"""The shared base of every API view: authentication, throttling with rate headers,
and THE scoping mixin through which all tenant objects are reached.

Tenant scoping lives here once (as in NetBox's BaseViewSet): a viewset names its list
and get access functions from the app's selectors, and never builds a queryset of its
own. Collections are checked for the role in `initial`; single objects through the
access function, so a foreign code is "not found" before any role is considered.
"""

import contextlib
import dataclasses
import hashlib
from collections.abc import Callable

from django.db.models import Model, QuerySet
from django.http import Http404
from rest_framework import mixins, viewsets
from rest_framework.permissions import IsAuthenticated
from rest_framework.views import APIView

from billing import metering
from poolsaas.api.authentication import TenantJWTAuthentication
from poolsaas.api.errors import PreconditionFailed, PreconditionRequired, Throttled
from poolsaas.api.pagination import Pagination
from poolsaas.api.renderers import JSONRenderer
from poolsaas.api.rows import row_reader
from poolsaas.api.throttling import (
    AnonThrottle,
    TenantThrottle,
    UserThrottle,
    rate_headers,
    throttles_pass,
)
from poolsaas.request_context import bind_request_context, current_request_context
from tenants.roles import Action
from tenants.selectors import membership_require


class ApiViewMixin:
    """Authentication, throttles that run for every request (even failed logins and
    bad tokens), the 429 that names its limit, and rate headers on every answer."""

    authentication_classes = [TenantJWTAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes = [AnonThrottle, UserThrottle, TenantThrottle]
    # No OPTIONS metadata (it would build objects outside the access layer): the
    # schema at /api/schema/ describes every operation. OPTIONS answers 405.
    metadata_class = None

    def dispatch(self, request, *args, **kwargs):
        # Audit events written while serving the API say so.
        context = dataclasses.replace(current_request_context(), source="api")
        with bind_request_context(context):
            return super().dispatch(request, *args, **kwargs)

    def initial(self, request, *args, **kwargs):
        self.format_kwarg = self.get_format_suffix(**kwargs)
        neg = self.perform_content_negotiation(request)
        request.accepted_renderer, request.accepted_media_type = neg
        version, scheme = self.determine_version(request, *args, **kwargs)
        request.version, request.versioning_scheme = version, scheme
        # Throttle before permissions, and even when the token is bad, so that
        # guessing tokens costs the anonymous bucket.
        try:
            self.perform_authentication(request)
        finally:
            self.check_throttles(request)
        self.check_permissions(request)

    def check_throttles(self, request):
        throttle = throttles_pass(self.get_throttles(), request)
        if throttle is not None:
            raise Throttled(
                wait=throttle.wait(),
                limit=throttle.scope,
                message=throttle.message(),
            )

    def handle_exception(self, exc):
        response = super().handle_exception(exc)
        # Errors are JSON in the one shape, even when CSV was asked for.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        membership = getattr(request, "membership", None)
        if membership is not None:
            # Every call of a tenant, throttled ones too (batched, one Redis round
            # trip a second per process).
            metering.api_call(membership.tenant_id)
        for name, value in rate_headers(getattr(request, "rate_buckets", [])).items():
            response[name] = value
        return response


class ApiView(ApiViewMixin, APIView):
    pass


class ListAsRowsMixin(mixins.ListModelMixin):
    """The list action, read as rows (poolsaas.api.rows) for a serializer that
    reads only columns: the same JSON as ListModelMixin's, without building a
    model instance per row. Filters, ordering and pagination apply as usual."""

    def list(self, request, *args, **kwargs):
        reader = row_reader(self.get_serializer_class())
        rows = self.filter_queryset(self.get_queryset()).values(*reader.paths)
        return self.get_paginated_response(
            reader.represent(self.paginate_queryset(rows))
        )


class TenantScopedViewSet(ApiViewMixin, viewsets.GenericViewSet):
    """Every tenant resource's viewset.

    list_selector(membership=...) -> QuerySet and
    get_selector(membership=..., code=..., action=...) -> object
    come from the app's selectors (the access layer). `actions` maps a viewset action
    to the role-bearing Action it needs.
    """

    lookup_field = "code"
    lookup_url_kwarg = "code"
    # Any text up to the next slash reaches the access function, which answers 404
    # for what is not a code (the router's default stops at a dot, and a POST to
    # an unrouted path would meet the CSRF check instead).
    lookup_value_regex = "[^/]+"
    pagination_class = Pagination
    list_selector: Callable[..., QuerySet] | None = None
    get_selector: Callable[..., Model] | None = None
    actions: dict[str, str] = {}
    # False for collections under a parent object (a pool's commands): the parent's
    # access function decides, so a foreign parent is "not found" for every role.
    collection_role_check = True
    # The one answer for a code that is foreign, unknown or not even a code: the
    # same body whatever the access function found (or failed to parse).
    not_found_message = "Not found."
    default_actions = {
        "list": Action.VIEW,
        "retrieve": Action.VIEW,
        "create": Action.MANAGE,
        "update": Action.MANAGE,
        "partial_update": Action.MANAGE,
        "destroy": Action.MANAGE,
    }

    @property
    def membership(self):
        return self.request.membership

    def required_action(self) -> str:
        """The Action this request needs: `actions` may name "action" or
        "action:METHOD" (for extra actions answering several methods)."""
        name = self.action or ""
        method = self.request.method.upper() if self.request else "GET"
        return (
            self.actions.get(f"{name}:{method}")
            or self.actions.get(name)
            or self.default_actions.get(name, Action.VIEW)
        )

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if self.collection_role_check and self.lookup_url_kwarg not in kwargs:
            # Collections: the role check here; objects: in get_object.
            membership_require(
                membership=request.membership, action=self.required_action()
            )

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        return type(self).list_selector(membership=self.membership)

    def get_object(self):
        with self.not_found():
            obj = type(self).get_selector(
                membership=self.membership,
                code=self.kwargs[self.lookup_url_kwarg],
                action=self.required_action(),
            )
        self.check_object_permissions(self.request, obj)
        return obj

    @contextlib.contextmanager
    def not_found(self):
        """Http404 raised inside, whatever its text, answers not_found_message."""
        try:
            yield
        except Http404:
            raise Http404(self.not_found_message) from None


def etag_for(*parts) -> str:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()
    return f'"{digest[:32]}"'


def require_if_match(request, current: str) -> None:
    """412 when If-Match names another version, 428 when it is missing."""
    header = request.headers.get("If-Match", "").strip()
    if not header:
        raise PreconditionRequired()
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    if "*" not in tags and current not in tags:
        raise PreconditionFailed()
