"""/api/v1/pools/{code}/programs/: the pool's weekly programs as one versioned
document."""

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.response import Response

from devices import selectors
from devices.api import serializers as s
from devices.api.views.openapi import (
    IF_MATCH,
    POOL_CODE,
    PROGRAMS_EXAMPLE,
    _ex,
)
from devices.api.views.pools import PoolChildViewSet
from devices.models import Pool
from poolsaas.api.errors import PreconditionFailed
from poolsaas.api.viewsets import require_if_match
from tenants.roles import Action


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
