"""What the API views share in their OpenAPI description: path and header
parameters, example bodies, and the shape of a paginated answer."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter

POOL_CODE = OpenApiParameter(
    "pool_code", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Pool code."
)
IF_MATCH = OpenApiParameter(
    "If-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=True,
    description="The ETag you read; 412 if it changed since, 428 if missing.",
)
EXAMPLE_CODE = "5b8f1c1e2d3a4b5c9d8e7f6a5b4c3d2e"


def _ex(name: str, value, **kwargs) -> OpenApiExample:
    return OpenApiExample(name, value=value, **kwargs)


POOL_EXAMPLE = {
    "code": "0e6f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
    "name": "Main pool",
    "timezone": "Europe/Madrid",
    "mode1_name": "Cascada",
    "mode2_name": "Eyectores",
    "override_until": None,
    "config_version": 3,
    "created_at": "2026-05-01T09:00:00Z",
    "device": {
        "code": "7c2d9e4f-1a2b-4c3d-9e8f-0a1b2c3d4e5f",
        "device_id": "ESP-A1B2C3",
        "protocol": "ps1",
        "online": True,
        "last_seen_at": "2026-06-01T12:00:00Z",
        "firmware_version": "1.2.0",
        "hardware_model": "esp32",
    },
}
BROKER_EXAMPLE = {
    "code": "1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a",
    "name": "Our broker",
    "host": "mqtt.example.com",
    "port": 8883,
    "use_tls": True,
    "ca_certificate": "",
    "websocket_url": "",
    "topic_prefix": "devices",
    "credentials_set": True,
    "secrets_changed_at": "2026-05-01T09:00:00Z",
    "created_at": "2026-05-01T09:00:00Z",
    "updated_at": "2026-05-01T09:00:00Z",
}
STATE_EXAMPLE = {
    "device": "7c2d9e4f1a2b4c3d9e8f0a1b2c3d4e5f",
    "pool": "0e6f1a2b3c4d4e5f8a9b0c1d2e3f4a5b",
    "online": True,
    "last_seen_at": "2026-06-01T12:00:00Z",
    "state": {
        "pump": True,
        "valve": 1,
        "temperature": 26.5,
        "timer": {"active": False, "remaining": 0, "mode": 1, "duration": 0},
        "wifi": {"status": "connected", "rssi": -61, "quality": "good"},
        "updated_at": "2026-06-01T12:00:00Z",
    },
    "firmware_version": "1.2.0",
    "hardware_model": "esp32",
    "config_version_applied": 3,
}
COMMAND_EXAMPLE = {
    "code": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
    "pool": "0e6f1a2b3c4d4e5f8a9b0c1d2e3f4a5b",
    "op": "pump",
    "value": "ON",
    "status": "pending",
    "error": "",
    "actor": "olivia@acme.test",
    "source": "api",
    "created_at": "2026-06-01T12:00:00Z",
    "sent_at": None,
    "completed_at": None,
    "expires_at": "2026-06-01T12:00:30Z",
}
PROGRAMS_EXAMPLE = {
    "version": 3,
    "programs": [
        {
            "slot": 1,
            "enabled": True,
            "days": [
                {"mode": 1, "start": "10:00", "stop": "14:00"},
                None,
                {"mode": 1, "start": "10:00", "stop": "14:00"},
                None,
                {"mode": 2, "start": "10:00", "stop": "12:00"},
                None,
                None,
            ],
        }
    ],
}


def _paginated(serializer_class, example: dict) -> dict:
    return {
        "responses": {200: serializer_class(many=True)},
        "examples": [
            _ex(
                "A page",
                {"count": 1, "next": None, "previous": None, "results": [example]},
                response_only=True,
            )
        ],
    }
