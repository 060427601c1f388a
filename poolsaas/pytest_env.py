"""Loaded by pytest before pytest-django reads the settings (see pyproject.toml).

Tests run in development mode with their own var folder unless the caller says
otherwise; DATABASE_URL, REDIS_URL and MQTT_URL come from the environment (make test).
"""

import os
from pathlib import Path

os.environ.setdefault("DEBUG", "true")
# The bridge's HTTP endpoint is off in tests unless a test asks for a port.
os.environ.setdefault("BRIDGE_HTTP_PORT", "0")
os.environ.setdefault(
    "POOLSAAS_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test")
)
