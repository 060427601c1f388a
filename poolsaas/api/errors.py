"""One error shape for every API error, whatever raised it.

    {"error": {"code": "not_found", "message": "No such pool.", "fields": {}}}

Services raise Django's ValidationError, PermissionDenied and Http404; DRF raises
its own exceptions. All of them end up here, so a client parses one format.
"""

import logging
import math

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

from tenants.selectors import TenantSuspended

NON_FIELD = "non_field_errors"

logger = logging.getLogger("poolsaas.api")


class PreconditionFailed(exceptions.APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = (
        "The resource changed since you read it: fetch it again and retry with the "
        "new ETag."
    )
    default_code = "precondition_failed"


class PreconditionRequired(exceptions.APIException):
    status_code = 428
    default_detail = (
        "Send an If-Match header with the ETag you read, so that concurrent "
        "changes are not overwritten."
    )
    default_code = "precondition_required"


class Throttled(exceptions.Throttled):
    """A 429 that names the limit hit (anonymous, user or tenant)."""

    def __init__(self, *, wait: float, limit: str, message: str):
        # Not DRF's __init__, which appends "Expected available in N seconds.":
        # Retry-After says that.
        exceptions.APIException.__init__(self, detail=message)
        self.wait = wait
        self.limit = limit


class Suspended(exceptions.PermissionDenied):
    default_code = "tenant_suspended"


def set_rollback() -> None:
    # rest_framework.views.set_rollback, imported late: this module is loaded while
    # DRF's settings import the authentication class, before rest_framework.views.
    from rest_framework.views import set_rollback as drf_set_rollback

    drf_set_rollback()


def _strings(value) -> list[str]:
    if isinstance(value, list | tuple):
        out: list[str] = []
        for item in value:
            out.extend(_strings(item))
        return out
    if isinstance(value, dict):
        return [f"{k}: {m}" for k, v in value.items() for m in _strings(v)]
    return [str(value)]


def _fields_from_drf(detail) -> tuple[str, dict]:
    """Split a DRF ValidationError detail into a message and per-field messages."""
    if isinstance(detail, dict):
        fields = {}
        general: list[str] = []
        for name, value in detail.items():
            if name in (NON_FIELD, "__all__"):
                general.extend(_strings(value))
            elif isinstance(value, dict):
                # Nested serializer: flatten to "parent.child".
                for sub, msgs in _fields_from_drf(value)[1].items():
                    fields[f"{name}.{sub}"] = msgs
            else:
                fields[name] = _strings(value)
        message = " ".join(general) or "Some fields are invalid."
        return message, fields
    return " ".join(_strings(detail)) or "Invalid input.", {}


def _fields_from_django(exc: DjangoValidationError) -> tuple[str, dict]:
    if hasattr(exc, "error_dict"):
        fields = {}
        general: list[str] = []
        for name, errors in exc.message_dict.items():
            if name in ("__all__", NON_FIELD):
                general.extend(errors)
            else:
                fields[name] = list(errors)
        return " ".join(general) or "Some fields are invalid.", fields
    return " ".join(exc.messages) or "Invalid input.", {}


def error_body(code: str, message: str, fields: dict | None = None, **extra) -> dict:
    return {
        "error": {"code": code, "message": message, "fields": fields or {}, **extra}
    }


def api_exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every error in the one shape."""
    headers: dict[str, str] = {}
    extra: dict = {}
    if isinstance(exc, DjangoValidationError):
        message, fields = _fields_from_django(exc)
        set_rollback()
        # billing.services.PlanLimitReached names the limit it hit.
        limit = getattr(exc, "limit", None)
        return Response(
            error_body("plan_limit", message, fields, limit=limit)
            if limit
            else error_body("invalid", message, fields),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(*(exc.args or ("Not found.",)))
    elif isinstance(exc, TenantSuspended):
        exc = Suspended(*exc.args)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    if not isinstance(exc, exceptions.APIException):
        # A real bug: logged with its traceback here (Django only logs what it
        # handles itself), answered as a 500 in the one shape, without details.
        request = context.get("request")
        logger.error(
            "API error on %s %s",
            getattr(request, "method", "?"),
            getattr(request, "path", "?"),
            exc_info=exc,
        )
        set_rollback()
        return Response(
            error_body(
                "server_error",
                "Something went wrong on our side. It was logged; please try again.",
            ),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None) is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.wait)))
    if isinstance(exc, exceptions.ValidationError):
        message, fields = _fields_from_drf(exc.detail)
        code = "invalid"
    else:
        fields = {}
        detail = exc.detail
        if isinstance(detail, dict):
            # simplejwt's InvalidToken carries {"detail", "code", "messages"}.
            message = str(detail.get("detail", "")) or str(exc.default_detail)
            code = str(detail.get("code", "")) or exc.default_code
        else:
            message = " ".join(_strings(detail))
            code = getattr(detail, "code", None) or exc.default_code
        if isinstance(exc, exceptions.NotFound):
            code = "not_found"
        elif isinstance(exc, Throttled):
            code = "throttled"
            extra["limit"] = exc.limit
        elif isinstance(exc, exceptions.Throttled):
            code = "throttled"
            message = "Too many requests."
    set_rollback()
    return Response(
        error_body(str(code), message, fields, **extra),
        status=exc.status_code,
        headers=headers,
    )


def api_not_found(request, *args, **kwargs):
    """Unknown paths under /api/ answer in the API's shape, not an HTML page."""
    return JsonResponse(
        error_body("not_found", "There is no such API endpoint."), status=404
    )
