"""What an operator watches, on the web process (docs/operations.md): /api/ready
over daphne in its own process, against a private redis-server this test stops and a
database address nothing listens on; /metrics refused without its token.

Real processes: daphne, redis-server (private, on a free loopback port, so that the
machine's shared Redis is never stopped), PostgreSQL (or the SQLite file).
Every wait is on a condition with a bounded timeout.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from django.conf import settings
from django.db import connection

from devices.tests.test_bridge import wait_for

pytestmark = pytest.mark.slow

SECRET = "ready-test-password-0e1f"
# Long: a stopped service refuses the connection at once, so the test never waits
# for it; a loaded machine must not make a live service look timed out.
READY_TIMEOUT = "15"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class RedisServer:
    """A redis-server of this test's own, stopped and started at will."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout=20, what="the private redis-server")
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait(10)


class Daphne:
    """daphne in its own process with the environment given (as deployed)."""

    def __init__(self, log_path, **env) -> None:
        self.env = {
            **os.environ,
            "DEBUG": "true",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            **env,
        }
        self.env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        self.log_path = log_path

    def __enter__(self) -> "Daphne":
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daphne", "--fd", str(listener.fileno())]
                + ["poolsaas.asgi:application"],
                cwd=settings.BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=[listener.fileno()],
            )
        listener.close()
        wait_for(
            lambda: self.proc.poll() is not None or self._healthy(),
            timeout=120,
            what="daphne to answer /api/health",
        )
        assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
        return self

    def _healthy(self) -> bool:
        try:
            return get(self.url + "/api/health")[0] == 200
        except OSError:
            return False

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    return f"postgres://{auth}@{host}/{db['NAME']}"


@pytest.fixture
def redis_server():
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer().start()
    yield server
    server.stop()


def ready(daphne: Daphne) -> tuple[int, dict, bytes]:
    status, body = get(daphne.url + "/api/ready")
    return status, json.loads(body), body


@pytest.mark.django_db
def test_ready_answers_503_naming_redis_once_it_stops(tmp_path, redis_server):
    with Daphne(
        tmp_path / "daphne.log",
        DATABASE_URL=database_url(),
        REDIS_URL=redis_server.url,
        READY_TIMEOUT=READY_TIMEOUT,
    ) as web:
        answers = []
        # The first answers may time out on a loaded machine (connections opening).
        wait_for(
            lambda: answers.append(ready(web)) or answers[-1][0] == 200,
            timeout=60,
            what="/api/ready to answer 200",
        )
        status, body, _ = answers[-1]
        assert body["checks"] == {
            "database": "ok",
            "redis": "ok",
            "channel_layer": "ok",
        }

        redis_server.stop()

        status, body, raw = ready(web)
        assert status == 503, body
        assert body["status"] == "unavailable"
        assert body["failed"] == ["channel_layer", "redis"]
        assert body["checks"]["database"] == "ok"
        # What failed, never where: no address or port of the service.
        assert str(redis_server.port).encode() not in raw
        assert b"127.0.0.1" not in raw
        # Liveness does not depend on Redis.
        assert get(web.url + "/api/health")[0] == 200


def test_ready_answers_503_naming_the_database_when_unreachable(tmp_path, redis_server):
    dead_port = _free_port()  # nothing listens there
    with Daphne(
        tmp_path / "daphne.log",
        DATABASE_URL=f"postgres://postgres:{SECRET}@127.0.0.1:{dead_port}/nowhere",
        REDIS_URL=redis_server.url,
        READY_TIMEOUT=READY_TIMEOUT,
    ) as web:
        status, body, raw = ready(web)
    assert status == 503, body
    assert body["failed"] == ["database"]
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["database"].startswith(("unreachable", "timeout"))
    assert SECRET.encode() not in raw and str(dead_port).encode() not in raw


@pytest.mark.django_db
def test_metrics_need_the_token(tmp_path, redis_server):
    token = "metrics-test-token-5d2c"
    with Daphne(
        tmp_path / "daphne.log",
        DATABASE_URL=database_url(),
        REDIS_URL=redis_server.url,
        METRICS_TOKEN=token,
    ) as web:
        refused = get(web.url + "/metrics")
        wrong = get(web.url + "/metrics", {"Authorization": "Bearer nope"})
        status, body = get(web.url + "/metrics", {"Authorization": f"Bearer {token}"})
    assert refused[0] == 401 and b"poolsaas_" not in refused[1]
    assert wrong[0] == 401 and b"poolsaas_" not in wrong[1]
    assert status == 200
    text = body.decode()
    assert "# TYPE poolsaas_commands_total counter" in text
    assert "# TYPE poolsaas_sockets_open gauge" in text


def test_metrics_without_a_token_are_for_this_host_only(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.7").status_code == 403
    # Through a proxy on this host: the proxy's address is loopback, the caller not.
    forwarded = client.get(
        "/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.7"
    )
    assert forwarded.status_code == 403


def test_ready_refuses_other_methods(client):
    assert client.post("/api/ready").status_code == 405


def manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env={**os.environ, "DEBUG": "true", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_celery_check_needs_the_broker_and_a_worker(tmp_path, redis_server):
    env = {"REDIS_URL": redis_server.url}
    alone = manage("celery_check", "--timeout", "1", env=env)
    assert alone.returncode == 1
    assert "no answer to the ping from any worker" in alone.stderr

    name = f"opscheck-{os.getpid()}@localhost"
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "poolsaas", "worker"]
            + ["--pool", "solo", "-n", name, "--without-gossip", "--without-mingle"],
            cwd=settings.BASE_DIR,
            env={**os.environ, "DEBUG": "true", **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        checks = []

        def answers() -> bool:
            checks.append(manage("celery_check", "--worker", name, env=env))
            return checks[-1].returncode == 0 or worker.poll() is not None

        wait_for(answers, timeout=90, what="the worker to answer the ping")
        assert checks[-1].returncode == 0, (tmp_path / "worker.log").read_text()
        assert f"celery ok: {name}" in checks[-1].stdout
        other = manage(
            "celery_check", "--worker", "nobody@nowhere", "--timeout", "1", env=env
        )
        assert other.returncode == 1
    finally:
        worker.terminate()
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)

    redis_server.stop()
    down = manage("celery_check", "--timeout", "1", env=env)
    assert down.returncode == 1
    assert "celery broker unreachable" in down.stderr
    assert str(redis_server.port) not in down.stderr
