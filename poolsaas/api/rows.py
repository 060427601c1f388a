"""Lists read as rows: a read-only ModelSerializer's representation built from
`QuerySet.values()` instead of model instances and DRF's per-field calls.

A list of 50 pools with their devices spent most of its time building 100 model
instances (decrypting their secrets and parsing their JSON on the way) and then
calling three DRF methods per field per row. The serializer stays the one
definition of the representation (and of the OpenAPI schema); a `RowReader` reads
which columns it needs and how each is represented, once per serializer class, and
produces the same JSON from plain rows. `poolsaas/tests/test_rows.py` holds the two
equal on every serializer that is read this way.

Only what can be read from a column qualifies: model fields, a related object's
column by a dotted source (`pool.code`, with allow_null: null when there is no
pool), nested serializers of a related object (null when it is missing), with the
representations DRF gives them. Anything else (method fields, custom formats) is
refused when the reader is built, so a serializer that grows such a field fails
loudly, in tests, instead of answering something different."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from rest_framework import fields as f
from rest_framework import serializers
from rest_framework.settings import api_settings

# Fields whose representation of a database value is the value itself.
_AS_IS = (f.BooleanField, f.CharField, f.ChoiceField, f.IntegerField, f.JSONField)


def _iso(value, tz) -> str:
    # DRF's DateTimeField: in the current time zone, ISO 8601, "Z" for UTC.
    text = value.astimezone(tz).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _converter(field: f.Field) -> Callable | None:
    """How a column's value is represented, or None when it is as it comes."""
    if isinstance(field, f.DateTimeField):
        fmt = getattr(field, "format", api_settings.DATETIME_FORMAT)
        if fmt != api_settings.DATETIME_FORMAT or fmt.lower() != f.ISO_8601:
            raise ImproperlyConfigured(f"{field.field_name}: a custom datetime format")
        if hasattr(field, "timezone"):
            raise ImproperlyConfigured(f"{field.field_name}: a field time zone")
        return _iso
    if isinstance(field, f.UUIDField):
        if field.uuid_format != "hex_verbose":
            return lambda value, tz: getattr(value, field.uuid_format)
        return lambda value, tz: str(value)
    if isinstance(field, _AS_IS) and not isinstance(field, f.MultipleChoiceField):
        if isinstance(field, f.JSONField) and field.binary:
            raise ImproperlyConfigured(f"{field.field_name}: a binary JSON field")
        return None
    raise ImproperlyConfigured(
        f"{field.field_name}: {type(field).__name__} is not read from a column"
    )


class RowReader:
    """The columns a serializer reads (`paths`, for `values()`) and the rows'
    representation (`represent`), equal to `serializer_class(many=True).data`."""

    def __init__(self, serializer_class: type[serializers.ModelSerializer]):
        self.paths: list[str] = []
        # (name, path, converter) for columns; (name, null path, RowReader-like
        # plan) for a nested object.
        self._plan = self._compile(serializer_class(), prefix="")

    def _compile(self, serializer, *, prefix: str) -> list[tuple]:
        if not isinstance(serializer, serializers.ModelSerializer):
            raise ImproperlyConfigured(f"{type(serializer).__name__}: not a model")
        plan = []
        for field in serializer.fields.values():
            if field.write_only:
                continue
            source = field.source
            if source == "*":
                raise ImproperlyConfigured(f"{field.field_name}: source {source!r}")
            if "." in source and not field.allow_null:
                # DRF leaves the key out when the related object is missing.
                raise ImproperlyConfigured(f"{field.field_name}: needs allow_null")
            if isinstance(field, serializers.ListSerializer):
                raise ImproperlyConfigured(f"{field.field_name}: a list")
            if isinstance(field, serializers.BaseSerializer):
                related = type(field).Meta.model._meta.pk.attname
                present = f"{prefix}{source}__{related}"
                self.paths.append(present)
                nested = self._compile(field, prefix=f"{prefix}{source}__")
                plan.append((field.field_name, present, nested))
                continue
            path = prefix + source.replace(".", "__")
            self.paths.append(path)
            plan.append((field.field_name, path, _converter(field)))
        return plan

    def represent(self, rows: Iterable[dict]) -> list[dict]:
        tz = timezone.get_current_timezone()
        return [self._one(self._plan, row, tz) for row in rows]

    def represent_one(self, row: dict) -> dict:
        return self._one(self._plan, row, timezone.get_current_timezone())

    def _one(self, plan, row: dict, tz) -> dict:
        out = {}
        for name, path, how in plan:
            value = row[path]
            if value is None:
                out[name] = None
            elif isinstance(how, list):
                out[name] = self._one(how, row, tz)
            elif how is None:
                out[name] = value
            else:
                out[name] = how(value, tz)
        return out


@functools.cache
def row_reader(serializer_class: type[serializers.ModelSerializer]) -> RowReader:
    return RowReader(serializer_class)
