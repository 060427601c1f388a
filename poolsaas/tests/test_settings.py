"""Settings from the environment: production start-up is strict and deploy-clean.

Each case runs manage.py in a fresh process with a clean environment, as a
deployment would, because settings are read once at import.
"""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

BASE_DIR = Path(__file__).resolve().parents[2]
DEV_FIELD_KEY = "kYzjXz9Ybrck8T9-BGcC0V7EhDxyDOiBVDzBh6-2wns="


def manage(*args: str, env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    clean = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "POOLSAAS_VAR_DIR": str(tmp_path),
        **env,
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def production_env(**overrides) -> dict[str, str]:
    env = {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "example.com",
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


@pytest.mark.slow
def test_check_deploy_reports_nothing_with_debug_off(tmp_path):
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "DEBUG",
        env=production_env(),
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr


@pytest.mark.slow
def test_debug_off_without_secret_key_fails_naming_it(tmp_path):
    result = manage("check", env=production_env(SECRET_KEY=None), tmp_path=tmp_path)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "Set the environment variable SECRET_KEY." in result.stderr


@pytest.mark.slow
def test_debug_off_without_encryption_keys_fails_naming_them(tmp_path):
    result = manage(
        "check", env=production_env(FIELD_ENCRYPTION_KEYS=None), tmp_path=tmp_path
    )
    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEYS" in result.stderr


@pytest.mark.slow
def test_debug_off_refuses_the_public_development_keys(tmp_path):
    result = manage(
        "check",
        env=production_env(
            FIELD_ENCRYPTION_KEYS=f"{Fernet.generate_key().decode()},{DEV_FIELD_KEY}"
        ),
        tmp_path=tmp_path,
    )
    assert result.returncode != 0
    assert "development keys cannot be used with DEBUG off" in result.stderr


@pytest.mark.slow
def test_debug_off_refuses_a_broken_encryption_key(tmp_path):
    result = manage(
        "check",
        env=production_env(FIELD_ENCRYPTION_KEYS="not-a-fernet-key"),
        tmp_path=tmp_path,
    )
    assert result.returncode != 0, result.stdout
    assert "ImproperlyConfigured: FIELD_ENCRYPTION_KEY" in result.stderr
    assert "Fernet key must be 32 url-safe base64-encoded bytes" in result.stderr
