"""JSON with bounds: every JSON body the API reads, and every WebSocket message.

Python's parser recurses once per nesting level, so a body of a few kilobytes of
brackets raises RecursionError (a 500) in the parser or, just under the limit, in
whatever walks the value next (serializers, jsonschema, the audit trail). Nothing we
accept nests deeper than a handful of levels: the depth is checked on the raw text,
before anything recurses, and so is the size.
"""

import json
import re

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

# Our deepest documented payload (a week of programs) nests 4 levels.
MAX_JSON_DEPTH = 32
MAX_JSON_BYTES = 1024 * 1024

# Strings first (they may hold brackets), then the brackets themselves.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class JSONTooDeep(ValueError):
    pass


def json_depth_check(text: str, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise JSONTooDeep when arrays and objects nest deeper than max_depth."""
    depth = 0
    for match in _TOKENS.finditer(text):
        char = match.group()
        if char in "[{":
            depth += 1
            if depth > max_depth:
                raise JSONTooDeep(
                    f"JSON nested too deeply: at most {max_depth} levels of arrays "
                    "and objects."
                )
        elif char in "]}":
            depth -= 1


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON.")


def json_loads_bounded(text: str, *, max_depth: int = MAX_JSON_DEPTH):
    """json.loads after the depth check (ValueError, or JSONTooDeep, when bad).
    NaN and Infinity are refused, as DRF's strict parser does."""
    json_depth_check(text, max_depth=max_depth)
    return json.loads(text, parse_constant=_no_constants)


class BoundedJSONParser(parsers.JSONParser):
    """DRF's JSON parser with a size and a depth bound; both answer 400."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        limit = MAX_JSON_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise ParseError(
                f"JSON body too large: at most {limit // 1024} KiB.",
                code="too_large",
            )
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            raise ParseError(f"JSON body is not valid {encoding}.") from None
        try:
            return json_loads_bounded(text)
        except JSONTooDeep as exc:
            raise ParseError(str(exc), code="too_deep") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error: {exc}") from None
