"""The API's JSON renderer: DRF's JSONRenderer's bytes, encoded by orjson.

A list of 50 pools spent about as long in `json.dumps` as in reading its rows
(issue 17); orjson encodes the same data in a tenth of that. What orjson does not
encode itself (Decimal, lazy strings, datetimes, durations...) goes through DRF's
own encoder, so every value reads as before; what it refuses (integers past 64 bits,
non-string keys) and a pretty-printed answer (`; indent=`) are left to DRF's
renderer whole. `poolsaas/tests/test_renderers.py` holds the two byte-equal.
"""

import orjson
from rest_framework.renderers import JSONRenderer as DRFJSONRenderer

# Datetimes to DRF's encoder: it writes "Z" for UTC and cuts microseconds to
# milliseconds, orjson would not.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_LINE_SEPARATORS = (b"\xe2\x80\xa8", b"\xe2\x80\xa9")


class JSONRenderer(DRFJSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None):
        plain = self.compact and not self.ensure_ascii
        if (
            data is None
            or not plain
            or self.get_indent(accepted_media_type, renderer_context or {})
        ):
            return super().render(data, accepted_media_type, renderer_context)
        try:
            out = orjson.dumps(
                data, default=self.encoder_class().default, option=_OPTIONS
            )
        except TypeError:
            return super().render(data, accepted_media_type, renderer_context)
        if b"\xe2\x80" in out:
            # As DRF: U+2028 and U+2029 escaped, so the JSON is also JavaScript.
            out = out.replace(_LINE_SEPARATORS[0], b"\\u2028")
            out = out.replace(_LINE_SEPARATORS[1], b"\\u2029")
        return out
