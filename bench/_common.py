"""Set-up helpers shared by the bench scripts (imported, never run on its own): the
bench database, free ports, raw MQTT 3.1.1 packets for cheap load generation,
percentiles, and the bridge and daphne processes (optionally under py-spy)."""

import ast
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent


LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Bench-only keys (the bench database holds nothing else); not the dev keys, so the
# server runs with DEBUG off like production.
BENCH_SECRET_KEY = "bench-api-only-secret-key-not-for-anything-else-0123456789abcdef"  # noqa: S105
BENCH_FIELD_KEY = "A62QfPjXWxrRNTT4GCx0YSGaxAh4BYSFT9BqLJL43JQ="


def loopback_url(url: str, what: str) -> str:
    host = urlparse(url).hostname or ""
    if host not in LOOPBACK:
        raise SystemExit(f"{what} must be on this machine (loopback), not {host!r}.")
    return url


def server_environment(db_url: str, redis_url: str, *, cache_prefix: str) -> dict:
    """The environment of a bench's server processes: DEBUG off like production,
    bench-only keys, per-request database connections, the API's rate limits out of
    the way (the figures include the bucket round trips but no 429s)."""
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "poolsaas.settings")
    env.update(
        DATABASE_URL=db_url,
        REDIS_URL=redis_url,
        CACHE_KEY_PREFIX=cache_prefix,
        DEBUG="false",
        SECRET_KEY=BENCH_SECRET_KEY,
        FIELD_ENCRYPTION_KEYS=BENCH_FIELD_KEY,
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="false",
        # Persistent connections leak under ASGI (Django runs each request in its
        # own thread context): connect per request, as Django advises.
        DB_CONN_MAX_AGE="0",
        LOG_LEVEL="WARNING",
        API_ANON_PER_MINUTE="10000000",
        API_USER_PER_MINUTE="10000000",
        API_TENANT_PER_MINUTE="10000000",
        MQTT_DYNSEC_ENABLED="false",
    )
    return env


def add_service_arguments(parser) -> None:
    """--database-url, --redis-url and --mqtt (host:port) of the ingest benches."""
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/poolsaas_bench"
        ),
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/4"),
    )
    parser.add_argument("--mqtt", default="127.0.0.1:1883")


def django_for_bench(database_url: str, redis_url: str, host: str, port: int) -> dict:
    """This process on the bench's database (created when missing, migrated) with
    Django set up; returns the environment its bridge processes get."""
    env = dict(
        os.environ,
        DEBUG="true",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        MQTT_URL=f"mqtt://{host}:{port}",
        DJANGO_SETTINGS_MODULE="poolsaas.settings",
        LOG_LEVEL="INFO",
    )
    os.environ.update(env)
    ensure_database(database_url)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return env


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named in `url` when it does not exist yet."""
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def seed_fleet(*, name: str, prefix: str, ids: list[str], broker):
    """A tenant (slug = the topic prefix) with one pool and one online device per id
    under `prefix` on `broker`, in two bulk inserts; returns the tenant and its pools
    (in the order of `ids`). Django must be set up."""
    from devices.models import Device, Pool
    from tenants.models import Tenant

    tenant = Tenant.objects.create(name=name, slug=prefix)
    pools = Pool.objects.bulk_create(
        [Pool(tenant=tenant, name=f"{name.lower()} pool {i}") for i in range(len(ids))]
    )
    Device.objects.bulk_create(
        [
            Device(
                tenant=tenant,
                pool=pool,
                broker=broker,
                device_id=device_id,
                topic_prefix=prefix,
                online=True,
            )
            for pool, device_id in zip(pools, ids, strict=True)
        ]
    )
    return tenant, pools


def remove_fleet(tenant) -> bool:
    """The rows seed_fleet's tenant gathered: history, events and commands by raw
    DELETE (fast, and the command history is append-only to the ORM), then its OTA
    campaigns, devices and pools, then the tenant itself. Returns False when the
    tenant must stay: audit events of its own protect it (the trail is append-only)."""
    from django.db import connection
    from django.db.models import ProtectedError

    from devices.models import Device, Pool
    from ota.models import Campaign

    with connection.cursor() as cursor:
        for table in (
            "devices_telemetrysample",
            "devices_deviceevent",
            "devices_command",
        ):
            cursor.execute(
                f"DELETE FROM {table} WHERE tenant_id = %s",  # noqa: S608
                [tenant.pk],
            )
    Campaign.objects.filter(tenant=tenant).delete()
    Device.objects.filter(tenant=tenant).delete()
    Pool.objects.filter(tenant=tenant).delete()
    try:
        tenant.delete()
    except ProtectedError:
        return False
    return True


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    """Until something listens on 127.0.0.1:`port`; fails if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def pct(values, q):
    """The q-quantile (0..1) of `values`, nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- raw MQTT 3.1.1 packets (cheap load generation) -----------------------------------


def varint(n: int) -> bytes:
    """MQTT's remaining-length encoding."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(s: str) -> bytes:
    """An MQTT string: two length bytes and the UTF-8."""
    raw = s.encode()
    return len(raw).to_bytes(2, "big") + raw


def mqtt_connect(host: str, port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = utf8("MQTT") + bytes([4, 0x02]) + (60).to_bytes(2, "big") + utf8(client_id)
    sock.sendall(b"\x10" + varint(len(body)) + body)
    ack = sock.recv(4)
    if len(ack) < 4 or ack[0] != 0x20 or ack[3] != 0:
        raise RuntimeError(f"broker refused the publisher: {ack!r}")
    return sock


def publish_packet(topic: str, payload: bytes) -> bytes:
    body = utf8(topic) + payload
    return b"\x30" + varint(len(body)) + body


# --- processes of ours, optionally under py-spy ---------------------------------------


class ServerProcess:
    """A process of the product; with `profile` (a file name) it runs as a child of
    `py-spy record`, which writes its sampled stacks (collapsed, per thread, idle time
    excluded, sampled without pausing it) there when the process exits
    (bench/profile_summary.py reads them); a name ending in `.svg` gets py-spy's
    flame graph instead. `py-spy --pid` cannot attach to this
    machine's Python, hence the child."""

    def __init__(self, command, env, profile: str | None = None, stderr=None):
        if profile:
            spy = str(Path(sys.executable).with_name("py-spy"))
            command = [
                spy,
                "record",
                "--threads",
                "--nonblocking",
                "-f",
                "flamegraph" if profile.endswith(".svg") else "raw",
                "-o",
                profile,
                "--",
                *command,
            ]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if stderr is None else stderr,
            text=True,
        )
        self.profiled = bool(profile)

    @property
    def pid(self) -> int:
        """The product's own process (py-spy's child when profiled)."""
        if self.profiled:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            found = children.read_text().split() if children.exists() else []
            if found:
                return int(found[0])
        return self.proc.pid

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time of the product's process so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        # The process itself, so that a profiling py-spy sees it exit and writes out.
        pid = self.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        try:
            self.proc.wait(60 if self.profiled else 15)
        except subprocess.TimeoutExpired:
            if pid != self.proc.pid:  # never leave the product behind py-spy
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(5)


class BridgeProcess(ServerProcess):
    """One `manage.py mqtt_bridge`, its stats (logged every second) in `stats`."""

    def __init__(self, env, profile: str | None = None, args: tuple = ()):
        self.stats: dict = {}
        bridge = [sys.executable, str(ROOT / "manage.py"), "mqtt_bridge"]
        bridge += ["--stats-interval", "1", *args]
        super().__init__(bridge, env, profile, stderr=subprocess.PIPE)
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            if "bridge stats " in line:
                try:
                    self.stats = ast.literal_eval(line.split("bridge stats ", 1)[1])
                except (ValueError, SyntaxError):
                    pass
            else:
                self.log.append(line.rstrip())

    def wait_stats(self, predicate, timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.stats and predicate(self.stats):
                return self.stats
            time.sleep(0.1)
        raise RuntimeError(f"bridge not ready: {self.stats} {self.log[-5:]}")


ASGI_APPLICATION = "poolsaas.asgi:application"


def asgi_server_command(server: str, port: int) -> list[str]:
    """The command that serves poolsaas.asgi with `server` on 127.0.0.1:`port`, one
    process, no access log. daphne is the product's; the others are measured beside
    it by bench/api.py --server (docs/capacity.md, "Which server for HTTP")."""
    python = [sys.executable, "-m"]
    if server == "daphne":
        return [*python, "daphne", "-b", "127.0.0.1", "-p", str(port), ASGI_APPLICATION]
    if server == "uvicorn":
        # Django answers no lifespan events; uvloop and httptools, as uvicorn[standard].
        return [
            *python,
            "uvicorn",
            "--host=127.0.0.1",
            f"--port={port}",
            "--loop=uvloop",
            "--http=httptools",
            "--lifespan=off",
            "--no-access-log",
            "--log-level=warning",
            ASGI_APPLICATION,
        ]
    if server == "granian":
        # asginl: ASGI without lifespan, which Django does not speak.
        return [
            *python,
            "granian",
            "--interface=asginl",
            "--host=127.0.0.1",
            f"--port={port}",
            "--workers=1",
            "--loop=uvloop",
            "--log-level=warning",
            ASGI_APPLICATION,
        ]
    if server == "hypercorn":
        return [
            *python,
            "hypercorn",
            f"--bind=127.0.0.1:{port}",
            "--worker-class=uvloop",
            "--log-level=warning",
            ASGI_APPLICATION,
        ]
    raise ValueError(f"unknown ASGI server {server!r}")


ASGI_SERVERS = ("daphne", "uvicorn", "granian", "hypercorn")


class AsgiServerProcess(ServerProcess):
    """`server` (one of ASGI_SERVERS) serving poolsaas.asgi on 127.0.0.1:`port`
    (`stderr`: where its log goes, by default nowhere)."""

    def __init__(
        self,
        env,
        port: int,
        server: str = "daphne",
        profile: str | None = None,
        stderr=None,
    ):
        self.port = port
        self.server = server
        command = asgi_server_command(server, port)
        super().__init__(command, env, profile, stderr=stderr)

    def wait_ready(self, timeout: float = 30) -> None:
        wait_port(self.port, self.proc, timeout)


class DaphneProcess(AsgiServerProcess):
    """daphne serving poolsaas.asgi on 127.0.0.1:`port`."""

    def __init__(self, env, port: int, profile: str | None = None, stderr=None):
        super().__init__(env, port, "daphne", profile, stderr)
