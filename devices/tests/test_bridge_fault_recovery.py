"""Faults of the processes and services around the bridge (issue 17, point 5), with the
real processes: `manage.py mqtt_bridge` on the test database, simulated controllers
(firmware.sim, ps1 and v3.1), a private Mosquitto or Redis where one is restarted
(its own loopback port, killed at the end; never the machine's), daphne for the API.

- Commands accepted before a bridge is killed (-9) are delivered by the restarted
  one, the one the dead bridge had claimed (sent, never on the wire) included: it is
  sent again, once, by a live bridge (a v3.1 TOGGLE as the state it meant), and two
  live bridges never both send it again.
- A broker restart under traffic: the bridge reconnects, telemetry resumes, commands
  accepted while the broker was away go out.
- A Redis restart: the bridge and daphne keep running, commands accepted through the
  API during it are delivered (the database is the record), the doorbell rings again.
- A PostgreSQL restart as the bridge sees it (its connections cut, new ones refused
  for a while; the machine's server is shared, so it is not restarted here: the
  bench, bench/faults.py, restarts a private one): nothing it accepted is lost.
bench/faults.py measures the same under load; docs/faults.md has the figures.
Every wait is on a condition with a bounded timeout.
"""

import contextlib
import http.client
import json
import shutil
import socket
import subprocess
import sys
import time
import uuid

import pytest
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models.functions import Now

from devices.models import BridgePresence, Broker, Command, Device, Pool
from devices.services import commands as command_services
from devices.services.commands import command_claim, command_send
from devices.tests.test_bridge import (  # noqa: F401 - make_bridge: a fixture
    HOST,
    PrivateMosquitto,
    Publisher,
    esp_id,
    make_bridge,
)
from devices.tests.test_bridge import wait_for as _wait_for
from devices.tests.test_bridge_core import telemetry
from devices.tests.test_bridge_scale import (  # noqa: F401 - fixtures
    NEVER,
    bridges,
    commands_received,
    final_stats,
    prefix,
    sims,
)
from telemetry.models import TelemetrySample

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.postgres_only,
    pytest.mark.django_db(transaction=True),
]

TIMEOUT = 45.0
FINAL = (Command.Status.DONE, Command.Status.FAILED, Command.Status.TIMED_OUT)


def wait_for(predicate, what, timeout=TIMEOUT):
    return _wait_for(predicate, timeout, what)


def settled(commands) -> bool:
    return all(Command.objects.get(pk=c.pk).status in FINAL for c in commands)


def statuses(commands) -> list[str]:
    return [Command.objects.get(pk=c.pk).status for c in commands]


def online(device) -> bool:
    return Device.objects.get(pk=device.pk).online


def make(pool, broker, topic_prefix, *, legacy=False) -> Device:
    return Device.objects.create(
        tenant=pool.tenant,
        pool=pool,
        broker=broker,
        device_id=f"legacy-{uuid.uuid4().hex[:6]}" if legacy else esp_id(),
        topic_prefix=topic_prefix,
        protocol=Device.Protocol.LEGACY if legacy else Device.Protocol.POOLSAAS,
    )


# What each protocol is sent: switches a v3.1 device shows in its state (done when
# it does); for ps1, commands its controller answers without a switching limit.
OPS = {
    False: [("override_clear", None), ("pump", "ON"), ("override_clear", None)],
    # (none undoes another: a v3.1 device may report only the last of a burst)
    True: [("pump", "ON"), ("valve", 2), ("timer", {"mode": 2, "duration": 600})],
}


# --- kill -9 a bridge ---------------------------------------------------------------


def instance_of(process) -> str:
    """The process start a running bridge beats under (its presence row)."""

    def beating():
        row = BridgePresence.objects.filter(name=process.name).first()
        return row is not None and row.instance

    wait_for(beating, "the bridge's heartbeat")
    return BridgePresence.objects.get(name=process.name).instance


def lapsed(instance: str) -> bool:
    """The heartbeat of that bridge process has run out: it counts as dead."""
    return not BridgePresence.objects.filter(
        instance=instance, beat_until__gt=Now()
    ).exists()


def claimed_by(process, **send) -> Command:
    """A command sent and claimed by `process` in one transaction (as its claim
    leaves the row: sent, its claimer recorded), so that no other bridge claims it
    first; it rings nobody."""
    claimer = instance_of(process)
    with transaction.atomic():
        command = command_send(**send)
        assert command_claim(
            command_id=command.code.hex, device_pk=command.device_id, claimer=claimer
        )
    return command


@pytest.mark.parametrize("legacy", [False, True], ids=["ps1", "v3.1"])
def test_commands_accepted_before_a_bridge_kill_are_delivered_or_failed(
    bridges,  # noqa: F811
    sims,  # noqa: F811
    pool_a,
    platform_broker,
    prefix,  # noqa: F811
    alice,
    monkeypatch,
    settings,
    legacy,
):
    # Time for a bridge to start on a busy machine before a command expires (one
    # that did expire would be reported, but here each must be delivered).
    settings.COMMAND_TIMEOUT_SECONDS = 300
    device = make(pool_a, platform_broker, prefix, legacy=legacy)
    # Its database poll runs once, at start: what it has not published by the
    # kill, it never will.
    doomed = bridges(sweep_interval=NEVER)
    sim = sims(device, legacy=legacy, interval=2)
    wait_for(lambda: online(device), "the device online")
    # Accepted, but the rings are lost (the bridge died before it heard them).
    monkeypatch.setattr(command_services, "doorbell_ring_bridges", lambda m: False)
    accepted = [
        command_send(membership=alice, pool=pool_a, op=op, value=value)
        for op, value in OPS[legacy][:2]
    ]
    # One the dead bridge had claimed (sent) but never got onto the wire.
    if legacy:  # (a v3.1 override_clear is done at once, never sent)
        claimed = command_send(membership=alice, pool=pool_a, op="override_clear")
    else:
        claimed = claimed_by(doomed, membership=alice, pool=pool_a, op="override_clear")
    claimer = instance_of(doomed)
    doomed.kill()
    # Until then it looks alive, and its claim is not taken over: a bridge that
    # sent the newer commands first would then leave it to time out (faults.md).
    wait_for(lambda: lapsed(claimer), "the killed bridge's heartbeat lapsed")
    # Accepted while no bridge runs (the device is online in the record).
    op, value = OPS[legacy][2]
    accepted.append(command_send(membership=alice, pool=pool_a, op=op, value=value))
    monkeypatch.undo()
    assert statuses(accepted) == ["pending"] * 3

    survivor = bridges(sweep_interval=0.2)
    wait_for(lambda: settled([*accepted, claimed]), "every command final")
    assert statuses([*accepted, claimed]) == ["done"] * 4, [
        (c.status, c.error)
        for c in Command.objects.filter(pk__in=[a.pk for a in [*accepted, claimed]])
    ]
    if not legacy:
        # Delivered once each, in order, the dead bridge's claim in its place.
        codes = [c.code.hex for c in [*accepted[:2], claimed, accepted[2]]]
        assert [c for c in commands_received(sim) if c in codes] == codes
        assert Command.objects.get(pk=claimed.pk).claims == 2
    assert survivor.proc.poll() is None


@pytest.mark.parametrize("legacy", [False, True], ids=["ps1", "v3.1"])
def test_a_command_a_killed_bridge_had_claimed_is_sent_again_by_a_live_one(
    bridges,  # noqa: F811
    sims,  # noqa: F811
    pool_a,
    platform_broker,
    prefix,  # noqa: F811
    alice,
    monkeypatch,
    settings,
    legacy,
):
    settings.COMMAND_TIMEOUT_SECONDS = 120  # a busy machine's start-up
    device = make(pool_a, platform_broker, prefix, legacy=legacy)
    # Its database poll runs once, at start: it never publishes the claim below.
    doomed = bridges(sweep_interval=NEVER)
    survivor = bridges(sweep_interval=0.2)
    sim = sims(device, legacy=legacy, interval=2)
    wait_for(
        lambda: online(device) and "pump" in Device.objects.get(pk=device.pk).state,
        "the device online, its pump known",
    )
    monkeypatch.setattr(command_services, "doorbell_ring_bridges", lambda m: False)
    # Off now: a TOGGLE means on (its `expected`).
    command = claimed_by(
        doomed, membership=alice, pool=pool_a, op="pump", value="TOGGLE"
    )
    monkeypatch.undo()
    assert command.expected is None or command.expected["value"] is True
    doomed.kill()
    wait_for(lambda: settled([command]), "the command final")
    command.refresh_from_db()
    assert (command.status, command.error) == ("done", "")
    assert (command.claims, command.claimed_by) == (2, instance_of(survivor))
    if legacy:
        # Sent again as the state it meant, which a second copy cannot undo.
        assert [p for s, p in sim.received if s == "pump/set"] == [b"ON"]
    else:
        # Sent again once, with its id (the device would answer a copy unexecuted).
        assert commands_received(sim) == [command.code.hex]
    assert Device.objects.get(pk=device.pk).state["pump"] is True
    assert final_stats(survivor)["resent"] == 1


def test_a_v31_claim_the_device_already_shows_is_done_not_set_twice(
    bridges,  # noqa: F811
    sims,  # noqa: F811
    pool_a,
    platform_broker,
    prefix,  # noqa: F811
    alice,
    monkeypatch,
    settings,
):
    """As when the dead bridge's publish did reach the device: its state shows the
    command's effect (a v3.1 device does not report a state it already has)."""
    settings.COMMAND_TIMEOUT_SECONDS = 120
    device = make(pool_a, platform_broker, prefix, legacy=True)
    doomed = bridges(sweep_interval=NEVER)
    survivor = bridges(sweep_interval=0.2)
    # Its temperature once a minute: no report after the claim says "pump on" anew
    # (the stored state's time is any report's).
    sim = sims(device, legacy=True)
    wait_for(lambda: online(device), "the device online")
    first = command_send(membership=alice, pool=pool_a, op="pump", value="ON")
    wait_for(lambda: settled([first]), "the pump on")
    assert Device.objects.get(pk=device.pk).state["pump"] is True
    monkeypatch.setattr(command_services, "doorbell_ring_bridges", lambda m: False)
    command = claimed_by(doomed, membership=alice, pool=pool_a, op="pump", value="ON")
    monkeypatch.undo()
    doomed.kill()
    wait_for(lambda: settled([command]), "the command final")
    command.refresh_from_db()
    assert (command.status, command.claims) == ("done", 2)
    assert [p for s, p in sim.received if s == "pump/set"] == [b"ON"]  # the first
    assert final_stats(survivor)["resent"] == 0


def test_two_live_bridges_never_both_send_a_dead_bridges_claim_again(
    bridges,  # noqa: F811
    sims,  # noqa: F811
    pool_a,
    pool_b,
    platform_broker,
    prefix,  # noqa: F811
    alice,
    carol,
    monkeypatch,
    settings,
):
    settings.COMMAND_TIMEOUT_SECONDS = 120
    devices = [make(pool, platform_broker, prefix) for pool in (pool_a, pool_b)]
    doomed = bridges(sweep_interval=NEVER)
    one, two = bridges(sweep_interval=0.2), bridges(sweep_interval=0.2)
    running = [sims(device, interval=2) for device in devices]
    wait_for(lambda: all(online(d) for d in devices), "the devices online")
    monkeypatch.setattr(command_services, "doorbell_ring_bridges", lambda m: False)
    commands = [
        claimed_by(doomed, membership=member, pool=pool, op=op, value=value)
        for member, pool in ((alice, pool_a), (carol, pool_b))
        for op, value in OPS[False]
    ]
    monkeypatch.undo()
    doomed.kill()
    wait_for(lambda: settled(commands), "every command final")
    assert statuses(commands) == ["done"] * 6
    assert {Command.objects.get(pk=c.pk).claims for c in commands} == {2}
    received = [code for sim in running for code in commands_received(sim)]
    assert sorted(received) == sorted(c.code.hex for c in commands)
    stats = [final_stats(one), final_stats(two)]
    assert sum(s["resent"] for s in stats) == 6
    assert sum(s["published"] for s in stats) == 6


# --- restart Mosquitto ----------------------------------------------------------------


@pytest.fixture
def tenant_broker(tmp_path):
    if not shutil.which("mosquitto"):
        pytest.skip("mosquitto is not installed")
    broker = PrivateMosquitto(tmp_path)
    broker.start()
    yield broker
    with contextlib.suppress(Exception):
        broker.kill()


@pytest.mark.parametrize("legacy", [False, True], ids=["ps1", "v3.1"])
def test_a_broker_restart_under_traffic_the_bridge_reconnects_and_commands_go_out(
    bridges,  # noqa: F811
    sims,  # noqa: F811
    tenant_broker,
    pool_a,
    prefix,  # noqa: F811
    alice,
    settings,
    legacy,
):
    settings.COMMAND_TIMEOUT_SECONDS = 300  # a busy machine: delivered, not expired
    broker = Broker.objects.create(
        tenant=pool_a.tenant,
        name="Acme own",
        host=HOST,
        port=tenant_broker.port,
        use_tls=False,
    )
    device = make(pool_a, broker, prefix, legacy=legacy)
    second = Pool.objects.create(tenant=pool_a.tenant, name="Acme second pool")
    other = make(second, broker, prefix)
    bridge = bridges()
    url = f"mqtt://{HOST}:{tenant_broker.port}"
    sims(device, legacy=legacy, interval=2, broker=url)
    wait_for(lambda: online(device), "the device online")
    first = command_send(
        membership=alice, pool=pool_a, op=OPS[legacy][0][0], value=OPS[legacy][0][1]
    )
    wait_for(lambda: settled([first]), "a command before the restart")

    tenant_broker.kill()
    # Accepted while the broker is away (the device is still online in the record:
    # a broker that vanished sends no will), and queued in the database.
    op, value = OPS[legacy][1]
    queued = command_send(membership=alice, pool=pool_a, op=op, value=value)
    assert queued.status == Command.Status.PENDING
    time.sleep(1)  # the bridge's first reconnect attempts are refused
    tenant_broker.start()

    pub = Publisher(port=tenant_broker.port)
    topic = f"{prefix}/{other.device_id}/telemetry"
    try:
        # Telemetry resumes (another device of the broker, a plain publisher).
        def landed():
            pub.pub(topic, telemetry(temp=31.5))
            time.sleep(0.2)
            return TelemetrySample.objects.filter(
                device=other, temperature=31.5
            ).exists()

        wait_for(landed, "telemetry after the restart")
    finally:
        pub.close()
    wait_for(lambda: settled([queued]), "the queued command final")
    queued.refresh_from_db()
    assert statuses([first, queued]) == ["done", "done"], (
        queued.error,
        bridge.log()[-4000:],
    )
    assert bridge.proc.poll() is None


# --- restart Redis --------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of this test on a free loopback port, no persistence."""

    def __init__(self):
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            self.port = sock.getsockname()[1]
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port)]
            + ["--bind", HOST, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def listening():
            try:
                socket.create_connection((HOST, self.port), 0.2).close()
                return True
            except OSError:
                return False

        wait_for(listening, "private redis", 10)

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)

    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"


@pytest.fixture
def private_redis():
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    redis = PrivateRedis()
    redis.start()
    yield redis
    redis.kill()


@pytest.fixture
def daphne(tmp_path):
    """daphne on the test database, in its own process; `start(env)`."""
    from devices.tests.test_browser import _wait_healthy

    running = []

    def start(env: dict) -> tuple[subprocess.Popen, int]:
        db = connection.settings_dict
        auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
        env = {
            **env,
            "DEBUG": "true",
            "DATABASE_URL": f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:"
            f"{db['PORT'] or 5432}/{db['NAME']}",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
        }
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        listener = socket.socket()
        listener.bind((HOST, 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        log = open(tmp_path / "daphne.log", "ab")  # noqa: SIM115 - the child's
        proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "--fd", str(listener.fileno())]
            + ["poolsaas.asgi:application"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=[listener.fileno()],
        )
        listener.close()
        log.close()
        running.append(proc)
        _wait_healthy(port, proc, 120)
        return proc, port

    yield start
    for proc in running:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def api(port: int, token: str, method: str, path: str, body=None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request(
            method,
            path,
            body=json.dumps(body) if body is not None else None,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
            },
        )
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else {}
    finally:
        conn.close()


def test_a_redis_restart_the_bridge_and_daphne_recover_and_commands_are_delivered(
    bridges,  # noqa: F811
    sims,  # noqa: F811
    daphne,
    private_redis,
    pool_a,
    platform_broker,
    prefix,  # noqa: F811
    alice,
    monkeypatch,
):
    from poolsaas.api.testing import tokens_for

    monkeypatch.setenv("REDIS_URL", private_redis.url())
    device = make(pool_a, platform_broker, prefix)
    # A sweep every 2 s: a ring (about a millisecond) publishes first when it rings.
    bridge = bridges(sweep_interval=2)
    web, port = daphne(dict(__import__("os").environ))
    sims(device, interval=2)
    wait_for(lambda: online(device), "the device online")
    token = str(tokens_for(alice).access_token)
    path = f"/api/v1/pools/{pool_a.code.hex}/commands/"

    def send() -> Command:
        status, body = api(port, token, "POST", path, {"op": "override_clear"})
        assert status == 202 and body["status"] == "pending", (status, body)
        return Command.objects.get(code=uuid.UUID(body["code"]))

    before = send()
    wait_for(lambda: settled([before]), "a command before the restart")

    private_redis.kill()
    # Accepted through the API while Redis is away (no ring: the sweep has it).
    during = [send(), send()]
    wait_for(lambda: settled(during), "the commands accepted during the outage")
    private_redis.start()

    after = []
    for _ in range(3):
        after.append(send())
        wait_for(lambda: settled(after), "a command after the restart")
    assert statuses([before, *during, *after]) == ["done"] * 6
    assert web.poll() is None and bridge.proc.poll() is None
    status, _ = api(port, token, "GET", "/api/health")
    assert status == 200
    stats = final_stats(bridge)
    # The doorbell rang again after the restart: some of `after` went by the ring.
    assert stats["published_rung"] >= 2, stats
    assert stats["published"] == 6


# --- a PostgreSQL restart, as the bridge sees it ------------------------------------


@contextlib.contextmanager
def database_restarting():
    """Every connection to the test database but this test's own is cut, and new
    ones are refused until the block ends: what a restart looks like from the
    bridge (the machine's server is shared, so it is not restarted itself)."""
    import psycopg

    params = connection.settings_dict
    name = params["NAME"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        mine = cursor.fetchone()[0]
    admin = psycopg.connect(
        host=params["HOST"] or "127.0.0.1",
        port=params["PORT"] or 5432,
        user=params["USER"],
        password=params["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )
    try:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> %s",
            [name, mine],
        )
        yield
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.close()


def test_a_database_restart_the_bridge_writes_everything_it_accepted(
    bridges,  # noqa: F811
    sims,  # noqa: F811
    pool_a,
    platform_broker,
    prefix,  # noqa: F811
    alice,
    settings,
):
    settings.COMMAND_TIMEOUT_SECONDS = 300  # a busy machine: delivered, not expired
    device = make(pool_a, platform_broker, prefix)
    second = Pool.objects.create(tenant=pool_a.tenant, name="Acme second pool")
    other = make(second, platform_broker, prefix)
    bridge = bridges(sweep_interval=0.5)
    sims(device, interval=1)
    wait_for(lambda: online(device), "the device online")
    pub = Publisher()
    topic = f"{prefix}/{other.device_id}/telemetry"
    sent = 0

    def report(n: int) -> None:
        nonlocal sent
        for _ in range(n):
            sent += 1
            pub.pub(topic, telemetry(temp=10 + sent / 100, ts=int(time.time())))
            time.sleep(0.05)

    try:
        report(10)
        command = command_send(membership=alice, pool=pool_a, op="override_clear")
        with database_restarting():
            # Telemetry, and the device's ack of `command`, while the database is
            # away: held by the bridge.
            report(40)
        report(10)
    finally:
        pub.close()
    wait_for(
        lambda: TelemetrySample.objects.filter(device=other).count() >= sent,
        "every sample written",
    )
    wait_for(lambda: settled([command]), "the command final")
    assert statuses([command]) == ["done"], Command.objects.get(pk=command.pk).error
    assert TelemetrySample.objects.filter(device=other).count() == sent
    assert bridge.proc.poll() is None
    stats = final_stats(bridge)
    assert stats["db_errors"] >= 1, stats  # it did see the database go


# --- the write path: an ack the database refused after the rows went in --------------


def test_an_ack_the_database_refused_after_the_rows_is_retried_not_dropped(
    make_bridge,  # noqa: F811
    sims,  # noqa: F811
    pool_a,
    platform_broker,
    prefix,  # noqa: F811
    alice,
    monkeypatch,
    settings,
):
    """The database goes away between a batch's rows and its acks (the in-process
    bridge, its command_ack refusing once as a dropped connection does): the ack is
    kept and settled at the next try, and the rows are not written again."""
    import devices.mqtt as room

    real, refused = room.command_ack, []

    def once_away(**kwargs):
        if not refused:
            refused.append(kwargs["command_id"])
            raise OperationalError("server closed the connection unexpectedly")
        return real(**kwargs)

    monkeypatch.setattr(room, "command_ack", once_away)
    real_write, written = room.ingest_write, []

    def recording(**kwargs):
        written.extend(kwargs["samples"])
        return real_write(**kwargs)

    monkeypatch.setattr(room, "ingest_write", recording)
    settings.COMMAND_TIMEOUT_SECONDS = 300  # a busy machine: delivered, not expired
    device = make(pool_a, platform_broker, prefix)
    bridge = make_bridge()
    assert bridge.wait_ready()
    sims(device, interval=5)
    wait_for(lambda: online(device), "the device online")
    command = command_send(membership=alice, pool=pool_a, op="override_clear")
    wait_for(lambda: settled([command]), "the command final")
    assert refused == [command.code.hex]
    assert statuses([command]) == ["done"]
    assert bridge.write_failures >= 1
    # No row went to the database twice (the same sample, by identity: each is
    # kept alive in `written`, so no two share an id).
    assert written and len({id(row) for row in written}) == len(written)
