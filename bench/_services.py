"""Private Mosquitto, Redis and PostgreSQL on free loopback ports, for the benches
that stop and restart them (bench/faults.py). Never the machine's own services: each
runs from a temporary folder of its own and is killed at the end."""

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from glob import glob
from pathlib import Path

from bench._common import free_port, wait_port


class Private:
    """One private server process: `start`, `stop` (SIGTERM, as systemd does),
    `kill` (SIGKILL) and `restart` (stop, then start on the same port)."""

    name = "server"

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> "Private":
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / f"{self.name}.log", "ab"),  # noqa: SIM115
        )
        wait_port(self.port, self.proc, 30)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pid(self) -> int:
        return self.proc.pid


class Mosquitto(Private):
    name = "mosquitto"

    def __init__(self, folder: Path):
        super().__init__(folder)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"user root\nlistener {self.port} 127.0.0.1\nallow_anonymous true\n"
            "persistence false\nmax_queued_messages 100000\n"
        )

    def command(self):
        return [shutil.which("mosquitto") or "mosquitto", "-c", str(self.conf)]


class Redis(Private):
    name = "redis"

    def command(self):
        return [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.folder),
        ]

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


class Postgres(Private):
    """A PostgreSQL cluster of its own (initdb, trust on loopback), run as the
    `postgres` user when this process is root (initdb refuses root)."""

    name = "postgres"

    def __init__(self, folder: Path):
        super().__init__(folder)
        found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise SystemExit("PostgreSQL binaries not found under /usr/lib/postgresql")
        self.bin = Path(found[-1]).parent
        self.data = folder / "pgdata"
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ]
        )

    def _run(self, command: list[str], check=True) -> subprocess.CompletedProcess:
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check)

    def _ctl(self, *args: str) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.folder / "postgres.log"),
                "-o",
                options,
                "-w",
                *args,
            ]
        )

    def start(self):
        self._ctl("start")
        return self

    def stop(self):
        self._ctl("stop", "-m", "fast")

    def kill(self):
        with contextlib.suppress(Exception):
            self._ctl("stop", "-m", "immediate")

    def restart(self):
        self._ctl("restart", "-m", "fast")

    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"


class Services:
    """The three private services in one temporary folder, removed at the end."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="poolsaas-faults-"))
        os.chmod(self.folder, 0o755)  # noqa: S103 - postgres must enter it
        self.mosquitto = Mosquitto(self._sub("mqtt"))
        self.redis = Redis(self._sub("redis"))
        self.postgres = Postgres(self._sub("pg"))

    def _sub(self, name: str) -> Path:
        path = self.folder / name
        path.mkdir()
        return path

    def start(self) -> "Services":
        self.mosquitto.start()
        self.redis.start()
        self.postgres.start()
        return self

    def close(self) -> None:
        for service in (self.mosquitto, self.redis, self.postgres):
            with contextlib.suppress(Exception):
                service.kill()
        time.sleep(0.2)
        shutil.rmtree(self.folder, ignore_errors=True)
