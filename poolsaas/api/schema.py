"""drf-spectacular extensions: the bearer scheme of our tenant-bound JWT, and the one
error shape documented on every operation."""

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme


class TenantJWTScheme(SimpleJWTScheme):
    target_class = "poolsaas.api.authentication.TenantJWTAuthentication"
    name = "jwtAuth"


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "fields"],
            "properties": {
                "code": {"type": "string", "example": "not_found"},
                "message": {"type": "string", "example": "No such pool."},
                "fields": {
                    "type": "object",
                    "description": "Field name (or path) -> messages.",
                    "additionalProperties": {
                        "type": "array",
                        "items": {"type": "string"},
                    },
                },
                "limit": {
                    "type": "string",
                    "description": "On 429: the limit hit (anon, user, tenant, login).",
                },
            },
        }
    },
}

_DESCRIPTIONS = {
    "400": "Bad input; `fields` names each field's problem.",
    "401": "No token, or an expired, blacklisted or invalid one.",
    "403": "Your role is too low, or the tenant is suspended.",
    "404": "No such object in your tenant (another tenant's looks the same).",
    "412": "If-Match names an old version: read again and retry.",
    "415": "Send JSON (Content-Type: application/json).",
    "428": "If-Match is required for this update.",
    "429": "A rate limit was hit; see Retry-After and `limit`.",
}


def add_error_responses(result, generator, request, public):
    """POSTPROCESSING_HOOK: every operation documents the error answers it can give,
    in the one shape, so clients (and Schemathesis) know what to expect."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = (
        ERROR_SCHEMA
    )
    ref = {"$ref": "#/components/schemas/Error"}
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            codes = ["400", "401", "403", "404", "429"]
            if "requestBody" in operation:
                codes.append("415")
            headers = [
                p["name"]
                for p in operation.get("parameters", [])
                if p["in"] == "header"
            ]
            if "If-Match" in headers:
                codes += ["412", "428"]
            responses = operation.setdefault("responses", {})
            for code in sorted(set(codes)):
                responses.setdefault(
                    code,
                    {
                        "description": _DESCRIPTIONS[code],
                        "content": {"application/json": {"schema": ref}},
                    },
                )
    return result
