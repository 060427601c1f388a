"""Filter pieces shared by the API's FilterSets."""

import datetime as dt

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField


class UTCDateTimeField(IsoDateTimeField):
    """An ISO 8601 instant, converted to UTC before it reaches the database
    (PostgreSQL refuses offsets such as -20:33, which ISO 8601 parsers accept)."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is None:
            return None
        try:
            if value.tzinfo is None:
                return value.replace(tzinfo=dt.UTC)
            return value.astimezone(dt.UTC)
        except OverflowError:
            raise forms.ValidationError("Date out of range.") from None


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UTCDateTimeField
