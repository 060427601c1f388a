"""`make run`: the whole product on one machine, with nothing but Python required.

Starts, and supervises until Ctrl-C: an MQTT broker (the one at MQTT_URL if it already
answers, else Mosquitto when installed, with dynamic security and per-device
credentials when its plugin is there, else the embedded Python broker), an embedded
Redis-compatible server when REDIS_URL is unset (the web server and the bridge are
separate processes, so they need a shared channel layer), the bridge, a Celery worker
with beat, simulated devices for the demo pools, and the web server.
"""

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from devices.models import Device

WEB_HOST = "127.0.0.1"
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
EMBEDDED_REDIS_PORT = 16379
DYNSEC_SCRIPT = Path(settings.BASE_DIR) / "deploy" / "mosquitto" / "start-dynsec.sh"
DYNSEC_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
DYNSEC_ADMIN = "poolsaas-admin"


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _wait_port(host: str, port: int, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _port_open(host, port):
            return True
        time.sleep(0.2)
    return False


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _take_the_terminal() -> Callable[[], None]:
    """Make our process group (and so our children's) the terminal's foreground group.

    Ctrl-C then reaches run_demo and its children but not a `make run` above it, which
    would otherwise report "make: *** [run] Interrupt" and exit 130 however cleanly
    everything stopped. Returns what gives the terminal back. Without a terminal, or
    in the background, nothing changes.
    """
    try:
        fd = sys.stdin.fileno()
        if not os.isatty(fd) or os.tcgetpgrp(fd) != os.getpgrp():
            return lambda: None
        previous = os.getpgrp()
        os.setpgid(0, 0)
    except (OSError, ValueError):
        return lambda: None
    if not _set_foreground(fd, os.getpgrp()):
        # Never left in a background group, where Ctrl-C would not reach us at all.
        os.setpgid(0, previous)
        return lambda: None
    return lambda: _set_foreground(fd, previous)


def _set_foreground(fd: int, group: int) -> bool:
    # From a background group tcsetpgrp raises SIGTTOU, which would stop us.
    before = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, group)
        return True
    except OSError:
        return False
    finally:
        signal.signal(signal.SIGTTOU, before)


def _reachable_by_others(folder: Path) -> bool:
    """Can a user other than the owner walk down to `folder`?"""
    folder = folder.resolve()
    return all(os.stat(part).st_mode & 0o001 for part in (folder, *folder.parents))


def _dynsec_state_dir(var_dir: Path) -> Path:
    """Where the demo's Mosquitto keeps its dynamic-security state. Started as root,
    Mosquitto drops to the `mosquitto` user, which must reach and rewrite this folder:
    under a private parent (a root home folder, pytest's temporary folders) it cannot,
    so the state goes to a folder of its own under the system's temporary folder."""
    preferred = var_dir / "mosquitto-dynsec"
    var_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or _reachable_by_others(var_dir):
        return preferred
    tag = hashlib.sha256(str(var_dir.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"poolsaas-demo-dynsec-{tag}"


class Command(BaseCommand):
    help = "Run poolsaas: broker, bridge, worker, simulated devices and web server."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000, help="Web port.")
        parser.add_argument("--no-devices", action="store_true", help="No simulator.")
        parser.add_argument(
            "--embedded-broker",
            action="store_true",
            help="Use the embedded Python broker even when Mosquitto is installed.",
        )

    def execute(self, *args, **options):
        give_back = _take_the_terminal()
        try:
            super().execute(*args, **options)
        except KeyboardInterrupt:
            # Ctrl-C while still starting: as clean a stop as one later on.
            self.stdout.write("\nInterrupted while starting.")
        finally:
            give_back()
        self.stdout.write(self.style.SUCCESS("poolsaas stopped."))

    def handle(self, *args, **options):
        self.children: list[tuple[str, subprocess.Popen]] = []
        # SIGTERM stops as cleanly as Ctrl-C, also while starting.
        signal.signal(signal.SIGTERM, _interrupt)
        call_command("migrate", verbosity=0)
        call_command("seed_demo")
        url = urlparse(settings.MQTT_URL)
        mqtt_host, mqtt_port = url.hostname or "127.0.0.1", url.port or 1883
        env = {**os.environ, "DEBUG": "true", "PYTHONUNBUFFERED": "1"}
        python = sys.executable
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        try:
            if not settings.REDIS_URL:
                env["REDIS_URL"] = self._start_redis(env)
            self._start_broker(
                mqtt_host, mqtt_port, env, embedded=options["embedded_broker"]
            )
            self._spawn("bridge", [python, manage, "mqtt_bridge"], env)
            self._spawn(
                "worker",
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "poolsaas",
                    "worker",
                    "--beat",
                    "--pool=solo",
                    "--loglevel=WARNING",
                    "--schedule",
                    str(settings.VAR_DIR / "celerybeat-schedule"),
                ],
                env,
            )
            if not options["no_devices"]:
                self._start_devices(mqtt_host, mqtt_port, env)
            self._spawn(
                "web",
                [
                    python,
                    manage,
                    "runserver",
                    f"{WEB_HOST}:{options['port']}",
                    "--noreload",
                ],
                env,
            )
            if not _wait_port(WEB_HOST, options["port"], 90):
                raise CommandError(
                    "The web server did not start; see its output above."
                )
            self.stdout.write(
                self.style.SUCCESS(
                    f"\npoolsaas is running on http://{WEB_HOST}:{options['port']}/ "
                    f"(MQTT on {mqtt_host}:{mqtt_port}). Ctrl-C stops everything."
                )
            )
            self._supervise()
        finally:
            self._stop_all()

    def _spawn(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        process = subprocess.Popen(argv, env=env, cwd=settings.BASE_DIR)  # noqa: S603
        self.children.append((name, process))
        return process

    def _start_redis(self, env: dict) -> str:
        port = EMBEDDED_REDIS_PORT
        if not _port_open(WEB_HOST, port):
            self._spawn(
                "redis",
                [sys.executable, "-m", "poolsaas.embedded_redis", "--port", str(port)],
                env,
            )
            if not _wait_port(WEB_HOST, port):
                raise CommandError(f"The embedded Redis did not start on port {port}.")
            self.stdout.write(f"Started the embedded Redis on {WEB_HOST}:{port}.")
        return f"redis://{WEB_HOST}:{port}/0"

    def _start_broker(
        self, host: str, port: int, env: dict, *, embedded: bool = False
    ) -> None:
        if _port_open(host, port):
            self.stdout.write(f"Using the MQTT broker already on {host}:{port}.")
            return
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise CommandError(
                f"MQTT_URL points at {host}:{port}, which does not answer."
            )
        mosquitto = None
        if not embedded:
            mosquitto = shutil.which("mosquitto") or (
                "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
            )
        self.sim_credentials = None
        if mosquitto and self._dynsec_available():
            self._start_dynsec_mosquitto(host, port, env)
            return
        if mosquitto:
            conf = Path(tempfile.mkdtemp(prefix="poolsaas-mqtt-")) / "mosquitto.conf"
            conf.write_text(
                f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            )
            self._spawn("mosquitto", [mosquitto, "-c", str(conf)], env)
            label = "Mosquitto"
        else:
            self._spawn(
                "broker",
                [sys.executable, "-m", "poolsaas.embedded_broker", "--port", str(port)],
                env,
            )
            # amqtt has no shared subscriptions; one bridge runs here anyway.
            env["MQTT_SHARED_SUBSCRIPTIONS"] = "false"
            label = "the embedded Python broker"
        if not _wait_port(host, port):
            raise CommandError(f"{label} did not start on {host}:{port}.")
        self.stdout.write(
            f"Started {label} on {host}:{port} (no per-device credentials: "
            "bundles carry no password)."
        )

    @staticmethod
    def _dynsec_available() -> bool:
        return (
            DYNSEC_PLUGIN.exists()
            and shutil.which("mosquitto_ctrl") is not None
            and shutil.which("bash") is not None
        )

    def _start_dynsec_mosquitto(self, host: str, port: int, env: dict) -> None:
        """Mosquitto with the dynamic-security plugin, as production runs it: every
        device gets its own password, bound to its client id."""
        from devices.services.dynsec import DynsecConfig

        state_dir = _dynsec_state_dir(Path(settings.VAR_DIR))
        secret_file = Path(settings.VAR_DIR) / "mosquitto-dynsec.admin"
        if not secret_file.exists():
            # A state file made with a password we no longer know cannot be logged
            # into: start it afresh (the devices get new passwords below anyway).
            shutil.rmtree(state_dir, ignore_errors=True)
            secret_file.parent.mkdir(parents=True, exist_ok=True)
            secret_file.touch(mode=0o600)
            secret_file.write_text(secrets.token_urlsafe(24))
        password = secret_file.read_text().strip()
        self._spawn(
            "mosquitto",
            ["bash", str(DYNSEC_SCRIPT), "foreground"],
            {
                **env,
                "DYNSEC_PORT": str(port),
                "DYNSEC_DIR": str(state_dir),
                "DYNSEC_ADMIN_USER": DYNSEC_ADMIN,
                "DYNSEC_ADMIN_PASSWORD": password,
                "DYNSEC_PLUGIN": str(DYNSEC_PLUGIN),
            },
        )
        if not _wait_port(host, port):
            raise CommandError(
                f"Mosquitto with dynamic security did not start on {host}:{port}; "
                f"see {state_dir / 'mosquitto.log'}."
            )
        env.update(
            MQTT_USERNAME=DYNSEC_ADMIN,
            MQTT_PASSWORD=password,
            MQTT_DYNSEC_ENABLED="true",
            MQTT_DYNSEC_URL=f"mqtt://{host}:{port}",
        )
        config = DynsecConfig(host, port, False, DYNSEC_ADMIN, password)
        self.sim_credentials = self._issue_device_credentials(config)
        self.stdout.write(
            f"Started Mosquitto with dynamic security on {host}:{port}: every device "
            "has its own password."
        )

    def _issue_device_credentials(self, config) -> Path:
        """New passwords for the platform devices, which here are all simulated (the
        broker listens on loopback only); the simulator reads them from a file only
        this user can read."""
        from devices.services.device_credentials import device_credentials_reissue

        credentials = {}
        devices = Device.objects.filter(broker__is_platform=True).select_related(
            "broker", "tenant"
        )
        for device in devices:
            password = device_credentials_reissue(device=device, config=config)
            credentials[device.device_id] = {
                "username": device.device_id,
                "password": password,
            }
        path = Path(settings.VAR_DIR) / "sim-credentials.json"
        path.unlink(missing_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(credentials))
        return path

    def _start_devices(self, host: str, port: int, env: dict) -> None:
        broker = f"mqtt://{host}:{port}"
        devices = list(Device.objects.filter(broker__is_platform=True))
        groups = {
            "ps1": [
                d.device_id for d in devices if d.protocol == Device.Protocol.POOLSAAS
            ],
            "v3.1": [
                d.device_id for d in devices if d.protocol == Device.Protocol.LEGACY
            ],
        }
        for protocol, ids in groups.items():
            if not ids:
                continue
            argv = [
                sys.executable,
                "-m",
                "firmware.sim",
                "--broker",
                broker,
                "--ids",
                ",".join(ids),
                "--interval",
                "10",
            ]
            if protocol == "v3.1":
                argv.append("--legacy")
            if getattr(self, "sim_credentials", None):
                argv += ["--creds", str(self.sim_credentials)]
            self._spawn(f"devices-{protocol}", argv, env)

    def _supervise(self) -> None:
        """Return on Ctrl-C or SIGTERM; raise CommandError when a child dies by itself.

        Ctrl-C reaches the whole process group, so the children stop too, each in its
        own time. The stop signals are blocked and waited for rather than handled: a
        child seen dead while a stop signal is pending here died of that signal (the
        kernel queues it for the whole group before any member can exit), so there is
        no race between "stopped by Ctrl-C" and "crashed".
        """
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        while True:
            # Deaths first, then the signals: a death seen here with a stop signal
            # pending is part of that stop.
            dead = [(n, p) for n, p in self.children if p.poll() is not None]
            received = signal.sigtimedwait(STOP_SIGNALS, 0 if dead else 0.5)
            if received is not None:
                self.stdout.write(
                    f"\n{signal.Signals(received.si_signo).name} received: stopping…"
                )
                return
            if dead:
                name, process = dead[0]
                raise CommandError(
                    f"{name} stopped by itself (exit {process.returncode}); "
                    "stopping the rest."
                )

    def _stop_all(self) -> None:
        # Nothing interrupts the stop itself (it is bounded by the kill below).
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        for _, process in reversed(self.children):
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 10
        for name, process in reversed(self.children):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stdout.write(f"{name} did not stop in time: killed.")
                process.kill()
                process.wait()
        # A second Ctrl-C during the stop changes nothing: drop it, then let signals
        # through again.
        while signal.sigtimedwait(STOP_SIGNALS, 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
