"""Faults under load (issue 17, point 5): what a dead bridge, or a restarted Mosquitto,
Redis or PostgreSQL, costs while devices report and commands flow.

    .venv/bin/python bench/faults.py [--devices 400] [--rate 500] [--down 2]
    .venv/bin/python bench/faults.py --soak 30        # RSS of every process each minute

Everything runs on PRIVATE services (bench/_services.py: a Mosquitto, a Redis and a
PostgreSQL cluster of its own on free loopback ports, in a temporary folder, removed
at the end), never the machine's. Processes: two bridges (`manage.py mqtt_bridge`,
sharing the broker through `$share`), daphne (the API the commands go through),
a Celery worker, raw MQTT publishers in two processes (--rate telemetry messages/s
from --devices devices, each message stamped with its send second) and a few
simulated controllers (firmware.sim.VirtualDevice, ps1 and v3.1) that take commands.
A command stream (--command-rate a second, POST /api/v1/pools/<code>/commands/ as a
page or script would) runs throughout.

Faults, in turn, each in a window of steady traffic before and after:
  bridge    kill -9 one bridge; the other carries on; the killed one is restarted
            after --down s (as a supervisor would);
  mosquitto stopped, --down s, started again (no persistence: sessions are gone);
  redis     stopped, --down s, started again (no persistence);
  postgres  `pg_ctl stop -m fast`, --down s, started again.
For each: time until telemetry is stored again and until a new command is done,
telemetry sent vs stored over the window (by send second), and what became of every
command the API accepted (202, pending): done, failed, timed out, or still open
(lost: must be zero), and how many of them a live bridge sent again because the
bridge that had claimed them died (re-sent). Bounded: about five minutes.
"""

import argparse
import http.client
import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    DaphneProcess,
    ServerProcess,
    free_port,
    mqtt_connect,
    publish_packet,
    server_environment,
)
from bench._services import Services  # noqa: E402

BASE = int(time.time())  # the publishers count messages per second since BASE
SECONDS = 4 * 3600
OPEN = ("pending", "sent")


# --- telemetry: raw publishers that reconnect ---------------------------------------


def telemetry(seq: int, ts: int) -> bytes:
    return json.dumps(
        {
            "ts": ts,
            "seq": seq,
            "temp": 24.5,
            "pump": True,
            "valve": 1,
            "timer": {"active": False, "remaining": 0, "mode": 1, "duration": 0},
            "rssi": -60,
            "uptime": seq,
            "mem_free": 81234,
            "fw": "ps1-bench",
            "switches": {"pump": 1, "valve": 1},
        },
        separators=(",", ":"),
    ).encode()


def publisher(port, topics, rate, sent, skipped, stop):
    """One process: `rate` msg/s round robin over `topics`; `sent[s]` counts what
    went into the socket in second BASE+s, `skipped[s]` what could not (no broker:
    a device without a connection does not queue telemetry)."""
    sock, done, n = None, 0, len(topics)
    started = time.monotonic()
    while not stop.is_set():
        due = int(rate * (time.monotonic() - started)) - done
        if due <= 0:
            time.sleep(0.005)
            continue
        due = min(due, 500)
        now = int(time.time())
        second = now - BASE
        if sock is None:
            try:
                sock = mqtt_connect("127.0.0.1", port, f"faults-{uuid.uuid4().hex[:8]}")
            except (OSError, RuntimeError):
                sock = None
        if sock is None:
            skipped[second] += due
        else:
            data = b"".join(
                publish_packet(topics[(done + k) % n], telemetry(done + k, now))
                for k in range(due)
            )
            try:
                sock.sendall(data)
                sent[second] += due
            except OSError:
                skipped[second] += due
                sock.close()
                sock = None
        done += due
        if sock is None:
            time.sleep(0.1)


# --- the processes ------------------------------------------------------------------


class Stack:
    def __init__(self, args):
        self.args = args
        self.services = Services().start()
        s = self.services
        self.db_url = s.postgres.url("poolsaas_faults")
        self.env = server_environment(
            self.db_url, s.redis.url(0), cache_prefix="faults"
        )
        self.env.update(
            MQTT_URL=f"mqtt://127.0.0.1:{s.mosquitto.port}",
            LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        self.logs = s.folder
        self.bridges: dict[str, ServerProcess] = {}
        self.daphne = self.celery = None
        self.publishers: list = []
        self.sims: list = []

    def setup_django(self) -> None:
        import psycopg

        with psycopg.connect(self.services.postgres.url("postgres")) as conn:
            conn.autocommit = True
            conn.execute('CREATE DATABASE "poolsaas_faults"')
        os.environ.update(self.env)
        os.environ["DB_CONN_MAX_AGE"] = "0"
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

    def bridge(self, name: str) -> ServerProcess:
        command = [sys.executable, str(ROOT / "manage.py"), "mqtt_bridge"]
        command += ["--name", name, "--sweep-interval", "1", "--refresh-interval", "2"]
        command += ["--flush-interval", "0.5", "--stats-interval", "60"]
        log = open(self.logs / f"bridge-{name}.log", "ab")  # noqa: SIM115
        process = ServerProcess(command, self.env, stderr=log)
        self.bridges[name] = process
        return process

    def start_servers(self) -> None:
        for name in ("faults-a", "faults-b"):
            self.bridge(name)
        port = free_port()
        log = open(self.logs / "daphne.log", "ab")  # noqa: SIM115
        self.daphne = DaphneProcess(self.env, port, stderr=log)
        self.daphne.wait_ready(60)
        celery = [sys.executable, "-m", "celery", "-A", "poolsaas", "worker"]
        celery += ["--pool", "solo", "--loglevel", "WARNING"]
        log = open(self.logs / "celery.log", "ab")  # noqa: SIM115
        self.celery = ServerProcess(celery, self.env, stderr=log)

    def processes(self) -> dict[str, int]:
        """Name -> pid of every process of ours (for the soak's RSS)."""
        out = {f"bridge {n}": p.proc.pid for n, p in self.bridges.items()}
        out["daphne"] = self.daphne.proc.pid
        out["celery"] = self.celery.proc.pid
        for i, proc in enumerate(self.publishers):
            out[f"publisher {i}"] = proc.pid
        out["simulator+driver"] = os.getpid()
        return out

    def close(self) -> None:
        for sim in self.sims:
            sim.stop()
        for proc in self.publishers:
            proc.terminate()
        for process in [*self.bridges.values(), self.daphne, self.celery]:
            if process is not None:
                process.stop()
        if not self.args.keep:
            self.services.close()
        else:
            print(f"kept {self.services.folder}")


def seed(args, stack: Stack) -> dict:
    from django.utils import timezone

    from devices.models import Device, Pool
    from devices.services.brokers import broker_ensure_platform
    from firmware.sim.fleet import make_ids
    from poolsaas.api.testing import tokens_for
    from tenants.models import Membership, Tenant, User

    broker = broker_ensure_platform()
    prefix = f"faults-{uuid.uuid4().hex[:6]}"
    load = Tenant.objects.create(name="Faults load", slug=f"{prefix}-load")
    pools = Pool.objects.bulk_create(
        [Pool(tenant=load, name=f"load {i}") for i in range(args.devices)]
    )
    ids = [f"ESP-{i:06X}" for i in range(args.devices)]
    Device.objects.bulk_create(
        [
            Device(
                tenant=load,
                pool=pool,
                broker=broker,
                device_id=device_id,
                topic_prefix=prefix,
            )
            for pool, device_id in zip(pools, ids, strict=True)
        ]
    )
    tenant = Tenant.objects.create(name="Faults commands", slug=f"{prefix}-cmd")
    user = User.objects.create_user(email=f"{prefix}@faults.test")
    membership = Membership.objects.create(tenant=tenant, user=user, role="owner")
    targets = []
    ps1 = make_ids(args.command_devices, start=0xC00001)
    v31 = make_ids(args.command_devices, legacy=True)
    for device_id, legacy in [(i, False) for i in ps1] + [(i, True) for i in v31]:
        pool = Pool.objects.create(tenant=tenant, name=f"cmd {device_id}")
        Device.objects.create(
            tenant=tenant,
            pool=pool,
            broker=broker,
            device_id=device_id,
            topic_prefix=prefix,
            protocol="v3.1" if legacy else "ps1",
            last_seen_at=timezone.now(),
        )
        targets.append((pool.code.hex, device_id, legacy))
    return {
        "prefix": prefix,
        "load": load.pk,
        "tenant": tenant.pk,
        "topics": [f"{prefix}/{i}/telemetry" for i in ids],
        "targets": targets,
        "membership": membership,
        "token": lambda: str(tokens_for(membership).access_token),
    }


# --- commands through the API ---------------------------------------------------------


class CommandStream:
    """POSTs a command every 1/rate s, round robin over the command pools (valve to
    mode 1 or 2, alternating per pool), and remembers each the API accepted."""

    def __init__(self, port: int, fixture: dict, rate: float):
        self.port, self.fixture, self.rate = port, fixture, rate
        self.accepted: list[tuple[float, str, bool]] = []  # (at, code, v3.1)
        self.refused: dict[str, int] = {}
        self._stop = threading.Event()
        self._token, self._token_at = fixture["token"](), time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "CommandStream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _post(self, pool: str, value: int) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(
                "POST",
                f"/api/v1/pools/{pool}/commands/",
                body=json.dumps({"op": "valve", "value": value}),
                headers={
                    "Authorization": f"Bearer {self._token}",
                    "Content-Type": "application/json",
                },
            )
            response = conn.getresponse()
            body = response.read()
            return response.status, json.loads(body) if body else {}
        finally:
            conn.close()

    def _run(self) -> None:
        targets = self.fixture["targets"]
        turn = 0
        while not self._stop.wait(1 / self.rate):
            if time.monotonic() - self._token_at > 300:
                from django.db import close_old_connections

                close_old_connections()
                try:
                    self._token, self._token_at = (
                        self.fixture["token"](),
                        time.monotonic(),
                    )
                except Exception:  # noqa: BLE001, S110 - the database is away: retry later
                    pass
            pool, _, legacy = targets[turn % len(targets)]
            value = 1 + (turn // len(targets)) % 2
            turn += 1
            at = time.time()
            try:
                status, body = self._post(pool, value)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                key = type(exc).__name__
                self.refused[key] = self.refused.get(key, 0) + 1
                continue
            if status == 202 and body.get("status") == "pending":
                self.accepted.append((at, body["code"], legacy))
            else:
                key = str(status) if status != 202 else f"202 {body.get('status')}"
                self.refused[key] = self.refused.get(key, 0) + 1


# --- measuring ------------------------------------------------------------------------


def db_retry(fn, limit: float = 60.0):
    """fn() once the database answers (the bench's own queries, during a restart)."""
    from django.db import close_old_connections, connection

    deadline = time.monotonic() + limit
    while True:
        try:
            close_old_connections()
            return fn()
        except Exception:  # noqa: BLE001 - away: retry
            connection.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def stored(tenant: int, first: int, last: int) -> int:
    """Samples of `tenant` stored with a send second in [first, last)."""
    import datetime as dt

    from telemetry.models import TelemetrySample

    utc = dt.UTC
    return TelemetrySample.objects.filter(
        tenant_id=tenant,
        ts__gte=dt.datetime.fromtimestamp(BASE + first, utc),
        ts__lt=dt.datetime.fromtimestamp(BASE + last, utc),
    ).count()


def wait_until(predicate, limit: float, step: float = 0.2) -> float | None:
    """Seconds until predicate() (None after `limit`)."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        try:
            if predicate():
                return time.monotonic() - started
        except Exception:  # noqa: BLE001, S110 - a service still away
            pass
        time.sleep(step)
    return None


def telemetry_back(tenant: int, since: float) -> bool:
    """A sample sent after `since` is stored."""
    from django.db import close_old_connections

    close_old_connections()
    second = int(since) + 1 - BASE
    return stored(tenant, second, SECONDS) > 0


def command_back(stream: CommandStream, since: float) -> bool:
    from django.db import close_old_connections

    from devices.models import Command

    close_old_connections()
    codes = [code for at, code, _ in stream.accepted if at >= since]
    return (
        bool(codes) and Command.objects.filter(code__in=codes, status="done").exists()
    )


def settle(stream: CommandStream, since: float, until: float, limit: float) -> dict:
    """Waits until every command accepted in [since, until) is final; their tally."""
    from devices.models import Command

    codes = [code for at, code, _ in stream.accepted if since <= at < until]

    def still_open():
        return Command.objects.filter(code__in=codes, status__in=OPEN).count()

    wait_until(lambda: db_retry(still_open) == 0, limit, 0.5)
    rows = db_retry(
        lambda: list(
            Command.objects.filter(code__in=codes).values_list("status", "claims")
        )
    )
    tally = {
        "accepted": len(codes),
        "done": 0,
        "failed": 0,
        "timed_out": 0,
        "open": 0,
        "resent": 0,
    }
    for state, claims in rows:
        key = "open" if state in OPEN else state
        tally[key] = tally.get(key, 0) + 1
        # Claimed again: its first claimer (a bridge) died before it was answered
        # (sent again by a live bridge, devices.services.commands.commands_reclaim).
        tally["resent"] += claims > 1
    tally["open"] += len(codes) - len(rows)  # accepted, then not in the database
    return tally


# --- the faults -----------------------------------------------------------------------


def fault_bridge(stack: Stack, down: float) -> float:
    """kill -9 bridge a; the other carries on; a restarted after `down`. Returns when
    the fault began (the clock the recovery is measured from)."""
    victim = stack.bridges["faults-a"]
    at = time.time()
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(5)
    time.sleep(down)
    stack.bridge("faults-a")
    return at


def fault_service(service, down: float) -> float:
    at = time.time()
    service.stop()
    time.sleep(down)
    service.start()
    return at


def run_fault(name, inject, stack, fixture, stream, args, sent) -> dict:
    load = fixture["load"]
    first = int(time.time()) - BASE + 1
    time.sleep(args.steady)
    began = inject()
    ended = time.time()
    back_tel = wait_until(lambda: telemetry_back(load, ended), 90)
    back_cmd = wait_until(lambda: command_back(stream, ended), 90)
    time.sleep(args.steady)
    last = int(time.time()) - BASE
    window_end = BASE + last
    # What was sent in the window has landed once the count stops growing.
    previous, still = -1, 0
    while still < 3:
        now = db_retry(lambda: stored(load, first, last))
        still = still + 1 if now == previous else 0
        previous = now
        time.sleep(1)
    offered = sum(sent["sent"][first:last])
    skipped = sum(sent["skipped"][first:last])
    return {
        "window": (BASE + first, window_end),
        "fault": name,
        "outage": ended - began,
        "telemetry back": back_tel,
        "command back": back_cmd,
        "sent": offered,
        "stored": previous,
        "not sent": skipped,
    }


def fmt(value, spec=".1f") -> str:
    return "never" if value is None else format(value, spec)


def print_table(rows: list[dict]) -> None:
    print()
    print(
        "| fault | outage s | telemetry back s | command back s | telemetry sent / "
        "stored (lost) | not sent (broker away) | commands accepted | done | failed "
        "| timed out | open (lost) | of which re-sent |"
    )
    print("| --- " * 12 + "|")
    for r in rows:
        lost = r["sent"] - r["stored"]
        print(
            f"| {r['fault']} | {r['outage']:.1f} | {fmt(r['telemetry back'])} | "
            f"{fmt(r['command back'])} | {r['sent']} / {r['stored']} ({lost}) | "
            f"{r['not sent']} | {r['accepted']} | {r['done']} | {r['failed']} | "
            f"{r['timed_out']} | {r['open']} | {r['resent']} |"
        )


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def soak(stack: Stack, minutes: float) -> None:
    names = list(stack.processes())
    print("minute | load | " + " | ".join(f"{n} MiB" for n in names))
    first = None
    for minute in range(int(minutes) + 1):
        pids = stack.processes()
        row = [rss_kb(pids[n]) / 1024 for n in names]
        first = first or row
        load = os.getloadavg()[0]
        cells = " | ".join(f"{v:.1f}" for v in row)
        print(f"{minute} | {load:.1f} | {cells}", flush=True)
        if minute < int(minutes):
            time.sleep(60)
    growth = ", ".join(
        f"{n} {last - start:+.1f}"
        for n, start, last in zip(names, first, row, strict=True)
    )
    print(f"RSS change over the soak (MiB): {growth}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=400)
    parser.add_argument("--rate", type=int, default=500, help="telemetry msg/s")
    parser.add_argument("--command-devices", type=int, default=5, help="of each kind")
    parser.add_argument("--command-rate", type=float, default=2.0, help="commands/s")
    parser.add_argument(
        "--command-timeout",
        type=int,
        default=15,
        help="the servers' command timeout (settings.COMMAND_TIMEOUT_SECONDS, 15)",
    )
    parser.add_argument("--down", type=float, default=2.0, help="s each service is off")
    parser.add_argument("--steady", type=float, default=5.0, help="s before and after")
    parser.add_argument("--faults", default="bridge,mosquitto,redis,postgres")
    parser.add_argument(
        "--settle", type=float, default=120, help="s after the timeout for the rest"
    )
    parser.add_argument("--soak", type=float, default=0, help="minutes: RSS, no faults")
    parser.add_argument("--keep", action="store_true", help="keep the logs folder")
    args = parser.parse_args()

    stack = Stack(args)
    try:
        stack.setup_django()
        fixture = seed(args, stack)
        stack.start_servers()
        ctx = mp.get_context("fork")
        sent = {"sent": ctx.Array("q", SECONDS), "skipped": ctx.Array("q", SECONDS)}
        stop = ctx.Event()
        topics = fixture["topics"]
        for part in (topics[0::2], topics[1::2]):
            proc = ctx.Process(
                target=publisher,
                args=(
                    stack.services.mosquitto.port,
                    part,
                    args.rate / 2,
                    sent["sent"],
                    sent["skipped"],
                    stop,
                ),
                daemon=True,
            )
            proc.start()
            stack.publishers.append(proc)
        from firmware.sim import VirtualDevice

        url = f"mqtt://127.0.0.1:{stack.services.mosquitto.port}"
        for _, device_id, legacy in fixture["targets"]:
            sim = VirtualDevice(
                device_id,
                broker=url,
                prefix=fixture["prefix"],
                legacy=legacy,
                interval=5,
                clean_session=True,
                reconnect_delay=(1, 2),
            ).start()
            stack.sims.append(sim)
        from devices.models import Device

        ready = wait_until(
            lambda: (
                Device.objects.filter(tenant_id=fixture["tenant"], online=True).count()
                == len(fixture["targets"])
            ),
            120,
            0.5,
        )
        if ready is None or not telemetry_back(fixture["load"], time.time() - 5):
            wait_until(lambda: telemetry_back(fixture["load"], time.time() - 5), 60)
        load = os.getloadavg()
        print(
            f"faults bench: {args.devices} devices at {args.rate} msg/s, "
            f"{len(fixture['targets'])} command devices (ps1 and v3.1), "
            f"{args.command_rate} commands/s through the API; private services in "
            f"{stack.services.folder}; load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
        )
        stream = CommandStream(stack.daphne.port, fixture, args.command_rate).start()
        if args.soak:
            soak(stack, args.soak)
            stream.stop()
            return 0
        s = stack.services
        faults = {
            "kill -9 bridge": lambda: fault_bridge(stack, args.down),
            "restart mosquitto": lambda: fault_service(s.mosquitto, args.down),
            "restart redis": lambda: fault_service(s.redis, args.down),
            "restart postgres": lambda: fault_service(s.postgres, args.down),
        }
        chosen = args.faults.split(",")
        rows = []
        for name, inject in faults.items():
            if name.split()[-1] not in chosen:
                continue
            row = run_fault(name, inject, stack, fixture, stream, args, sent)
            rows.append(row)
            print(row, flush=True)
        stream.stop()
        # Every accepted command must end final: what is still open after the
        # timeout and then --settle s more (a busy machine's sweeps lag) is lost.
        deadline = time.monotonic() + args.command_timeout + args.settle
        for row in rows:
            left = max(1.0, deadline - time.monotonic())
            row.update(settle(stream, *row["window"], left))
        print_table(rows)
        load = os.getloadavg()
        print(f"\nload average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
        print(f"API refusals (not accepted, not counted): {stream.refused}")
        return 1 if any(r["open"] for r in rows) else 0
    finally:
        stack.close()


if __name__ == "__main__":
    sys.exit(main())
