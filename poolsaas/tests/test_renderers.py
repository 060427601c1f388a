"""poolsaas.api.renderers.JSONRenderer writes what DRF's JSONRenderer writes, byte
for byte, for every kind of value the API answers with."""

import dataclasses
import datetime as dt
import uuid
from decimal import Decimal

import pytest
from django.utils.translation import gettext_lazy
from rest_framework.exceptions import ErrorDetail
from rest_framework.renderers import JSONRenderer as DRFJSONRenderer
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

from poolsaas.api.renderers import JSONRenderer

UTC = dt.UTC
VALUES = {
    "text": "Piscina Ñandú – “quoted” \\ / \n tab\t",
    "separators": "a\u2028b\u2029c",
    "numbers": [0, -1, 2**62, 1.5, 1e16, 0.1 + 0.2, True, False, None],
    "big": 2**70,
    "decimal": Decimal("12.50"),
    "uuid": uuid.UUID("7c2d9e4f-1a2b-4c3d-9e8f-0a1b2c3d4e5f"),
    "utc": dt.datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=UTC),
    "offset": dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    "naive": dt.datetime(2026, 6, 1, 12, 0, 5),
    "date": dt.date(2026, 6, 1),
    "time": dt.time(7, 30, 0, 5000),
    "duration": dt.timedelta(minutes=90),
    "lazy": gettext_lazy("Not found."),
    "error": ErrorDetail("No such pool.", code="not_found"),
    "nested": ReturnDict(
        {"a": ReturnList([{"b": 1}], serializer=None)}, serializer=None
    ),
    "tuple": (1, 2),
    "int keys": {1: "one"},
}


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize("name", sorted(VALUES))
def test_each_value_renders_as_drf_does(name):
    data = {name: VALUES[name]}
    assert JSONRenderer().render(data) == DRFJSONRenderer().render(data)


def test_a_whole_answer_renders_as_drf_does():
    assert JSONRenderer().render(VALUES) == DRFJSONRenderer().render(VALUES)


def test_pretty_printing_and_nothing_are_drfs():
    media = "application/json; indent=4"
    assert JSONRenderer().render(VALUES, media) == DRFJSONRenderer().render(
        VALUES, media
    )
    assert JSONRenderer().render(None) == b""


def test_what_neither_can_encode_fails_alike():
    for renderer in (JSONRenderer(), DRFJSONRenderer()):
        with pytest.raises(TypeError):
            renderer.render({"point": Point(1)})
