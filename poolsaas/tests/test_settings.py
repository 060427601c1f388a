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


_ENV_READERS = {"env_str", "env_bool", "env_int", "env_list", "getenv", "get"}
_NOT_SETTINGS = {"DJANGO_SETTINGS_MODULE"}


def _variables_read_by_the_code() -> dict[str, str]:
    """Every environment variable the product code reads, with the file reading it."""
    import ast

    found: dict[str, str] = {}
    skip = {".venv", "bench", "firmware", "node_modules", "tests", "migrations"}
    for path in BASE_DIR.rglob("*.py"):
        parts = set(path.relative_to(BASE_DIR).parts)
        if parts & skip or path.name == "conftest.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            func = node.func
            name = getattr(func, "id", None) or getattr(func, "attr", None)
            if name not in _ENV_READERS:
                continue
            if name == "get" and "environ" not in ast.unparse(func):
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.setdefault(first.value, str(path.relative_to(BASE_DIR)))
    return {k: v for k, v in found.items() if k not in _NOT_SETTINGS}


def _variables_in_env_example() -> set[str]:
    import re

    text = (BASE_DIR / ".env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.M))


def test_every_variable_read_is_in_env_example():
    read = _variables_read_by_the_code()
    # The scan itself must see the settings module, or this test proves nothing.
    assert {"SECRET_KEY", "EMAIL_BACKEND", "FIELD_ENCRYPTION_KEYS"} <= set(read)
    missing = {
        name: where
        for name, where in read.items()
        if name not in _variables_in_env_example()
    }
    assert missing == {}, f"add these to .env.example: {missing}"


def test_env_example_lists_only_variables_that_are_read():
    unused = _variables_in_env_example() - set(_variables_read_by_the_code())
    assert unused == set(), f"nothing reads these from .env.example: {unused}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("debug", "override", "expected"),
    [
        ("false", None, "False"),
        ("false", "", "False"),
        ("true", None, "True"),
        ("true", "", "True"),
        ("false", "true", "True"),
        ("true", "false", "False"),
    ],
)
def test_private_broker_hosts_follow_debug_unless_set(
    tmp_path, debug, override, expected
):
    env = production_env(DEBUG=debug, BROKER_ALLOW_PRIVATE_HOSTS=override)
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.BROKER_ALLOW_PRIVATE_HOSTS)",
        env=env,
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == expected
