"""Schemathesis against /api/schema/ on a live server, logged in as an owner.

Bounded: at most 20 examples per operation, GETs and POSTs only (the POSTs create
pools, brokers, invitations and commands to an offline device: nothing leaves this
machine). Device creation is left out: it provisions MQTT credentials. Checks: no
server error, and every answer matches the schema (status code, content type, body).
"""

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from django.utils import timezone

from poolsaas.api.testing import tokens_for

pytestmark = [
    pytest.mark.slow,
    # One run is enough: it is about the schema and the views, not the database.
    pytest.mark.postgres_only,
]


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    transactional_db, live_server, alice, device_a, settings, tmp_path
):
    from devices.models import Command, DeviceEvent
    from telemetry.models import TelemetrySample

    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"anon": 100000, "user": 100000, "tenant": 100000},
    }
    now = timezone.now()
    device_a.state = {"pump": True, "valve": 1, "temperature": 25.5}
    device_a.save()
    TelemetrySample.objects.bulk_create(
        TelemetrySample(
            tenant=device_a.tenant,
            device=device_a,
            ts=now - dt.timedelta(minutes=i),
            temperature=25.0,
            pump=True,
            valve=1,
        )
        for i in range(120)
    )
    Command.objects.create(
        tenant=device_a.tenant,
        device=device_a,
        pool=device_a.pool,
        op="pump",
        value="ON",
        expires_at=now,
    )
    DeviceEvent.objects.create(
        tenant=device_a.tenant, pool=device_a.pool, ts=now, kind="online"
    )
    token = str(tokens_for(alice).access_token)
    schemathesis = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{live_server.url}/api/schema/",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance",
            "--include-method",
            "GET",
            "--include-method",
            "POST",
            "--exclude-path",
            "/api/v1/devices/",
            "--max-examples",
            "20",
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "1",
            "--seed",
            "1",
            "--request-timeout",
            "10",
            "--max-time",
            "75",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
