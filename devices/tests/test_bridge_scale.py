"""More than one bridge, and the click path, with the real processes (issue 17, points
2 and 4): `manage.py mqtt_bridge` processes on the test database, Redis for the
doorbell, the machine's Mosquitto for the platform broker and a private Mosquitto
(its own loopback port, killed at the end) as a tenant's own broker.

- A command reaches its device by the doorbell alone (the database poll runs once,
  at start), a ring heard twice by two bridges publishes once, a lost ring is still
  delivered by the poll, and the device's answer reaches the page before the write.
- A tenant broker is held by exactly one of two bridges (its lease); kill -9 that
  bridge and the other takes it over within the lease time.
Every wait is on a condition with a bounded timeout.
"""

import ast
import re
import time
import uuid

import pytest

from devices.models import Broker, BrokerLease, Device
from devices.services import commands as command_services
from devices.services.commands import command_send
from devices.tests.test_bridge import (
    HOST,
    PrivateMosquitto,
    Publisher,
    clear_retained,
    esp_id,
    status,
    wait_for,
)
from devices.tests.test_bridge_core import telemetry
from devices.tests.test_config_push import BridgeProcess
from firmware.sim import VirtualDevice
from poolsaas.live.groups import doorbell_ring_bridges, pool_group
from poolsaas.tests.live_listener import GroupListener

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

TIMEOUT = 30.0
LISTENING = "bridge doorbell listening"
SWEPT = "first publish sweep done"
# The database poll of a bridge that must not poll during a test.
NEVER = "600"


@pytest.fixture
def prefix():
    value = f"sc-{uuid.uuid4().hex[:10]}"
    yield value
    clear_retained(value)


@pytest.fixture
def bridges(tmp_path, platform_broker):
    running = []

    def start(*, sweep_interval: float = 0.2, args=()) -> BridgeProcess:
        process = BridgeProcess(tmp_path / f"bridge-{len(running)}.log")
        process.env["BROKER_ALLOW_PRIVATE_HOSTS"] = "true"  # the private Mosquitto
        running.append(process)
        process.start(sweep_interval=sweep_interval, args=tuple(args))
        wait_for(lambda: LISTENING in process.log(), TIMEOUT, "the doorbell")
        # The start-up sweep done: a command sent from now on goes by the ring
        # alone (a sweep still running would claim it first on a busy machine).
        wait_for(lambda: SWEPT in process.log(), TIMEOUT, "the first sweep")
        return process

    yield start
    for process in running:
        process.stop()


@pytest.fixture
def sims():
    running = []

    def start(device: Device, **options) -> VirtualDevice:
        sim = VirtualDevice(
            device.device_id,
            prefix=device.topic_prefix,
            clean_session=True,
            reconnect_delay=(1, 2),
            **options,
        ).start()
        running.append(sim)
        return sim

    yield start
    for sim in running:
        sim.stop()


@pytest.fixture
def device(pool_a, platform_broker, prefix):
    return Device.objects.create(
        tenant=pool_a.tenant,
        pool=pool_a,
        broker=platform_broker,
        device_id=esp_id(),
        topic_prefix=prefix,
    )


def final_stats(process: BridgeProcess) -> dict:
    """The stats the bridge prints when it stops (SIGTERM)."""
    process.stop()
    line = re.findall(r"mqtt bridge stopped: (\{.*\})", process.log())
    assert line, process.log()[-3000:]
    return ast.literal_eval(line[-1])


def done(command) -> bool:
    """Settled (the wait ends), and done (or the assertion says how it ended)."""
    if status(command) in ("pending", "sent"):
        return False
    assert command.status == "done", (command.status, command.error)
    return True


def online(device: Device) -> bool:
    return Device.objects.get(pk=device.pk).online


def commands_received(sim: VirtualDevice) -> list[str]:
    from firmware import protocol

    return [
        protocol.parse_command(payload)["id"]
        for suffix, payload in list(sim.received)
        if suffix == protocol.CMD
    ]


# --- the click path -----------------------------------------------------------------


def test_a_command_reaches_the_device_by_the_doorbell_alone(
    bridges, device, sims, alice, pool_a
):
    # The database poll runs once, at start, and not again for ten minutes.
    bridge = bridges(sweep_interval=NEVER)
    sim = sims(device)
    wait_for(lambda: online(device), TIMEOUT, "the device online")
    command = command_send(membership=alice, pool=pool_a, op="pump", value="ON")
    wait_for(lambda: done(command), TIMEOUT, "the command done")
    assert commands_received(sim) == [command.code.hex]
    stats = final_stats(bridge)
    assert stats["published_rung"] == 1
    assert stats["published"] == 1


def test_a_ring_heard_twice_by_two_bridges_publishes_once(
    bridges, device, sims, alice, pool_a, monkeypatch
):
    one, two = bridges(sweep_interval=NEVER), bridges(sweep_interval=NEVER)
    sim = sims(device)
    wait_for(lambda: online(device), TIMEOUT, "the device online")
    rings = []
    monkeypatch.setattr(command_services, "doorbell_ring_bridges", rings.append)
    first = command_send(membership=alice, pool=pool_a, op="pump", value="ON")
    monkeypatch.undo()
    assert len(rings) == 1
    # Rung twice: each bridge hears it twice, and each tries to claim it.
    assert doorbell_ring_bridges(rings[0]) and doorbell_ring_bridges(rings[0])
    wait_for(lambda: done(first), TIMEOUT, "the first command done")
    # Rung normally, after the duplicates: on the wire behind any copy of the first.
    second = command_send(membership=alice, pool=pool_a, op="valve", value=2)
    wait_for(lambda: done(second), TIMEOUT, "the second command done")
    wait_for(lambda: second.code.hex in commands_received(sim), TIMEOUT, "second")
    assert commands_received(sim) == [first.code.hex, second.code.hex]
    published = [final_stats(one), final_stats(two)]
    assert sum(s["published_rung"] for s in published) == 2
    assert sum(s["published"] for s in published) == 2


def test_a_lost_ring_is_still_delivered_by_the_database_poll(
    bridges, device, sims, alice, pool_a, monkeypatch
):
    bridge = bridges(sweep_interval=0.5)
    sim = sims(device)
    wait_for(lambda: online(device), TIMEOUT, "the device online")
    monkeypatch.setattr(command_services, "doorbell_ring_bridges", lambda m: False)
    command = command_send(membership=alice, pool=pool_a, op="pump", value="ON")
    wait_for(lambda: done(command), TIMEOUT, "the command done")
    assert commands_received(sim) == [command.code.hex]
    stats = final_stats(bridge)
    assert stats["published_rung"] == 0
    assert stats["published"] == 1


def test_the_answer_reaches_the_page_before_it_is_written(
    bridges, device, sims, alice, pool_a
):
    """The bridge writes once every ten minutes here: the page hears the device's
    ack from the bridge at once, while the command is still `sent` in the database."""
    Device.objects.filter(pk=device.pk).update(online=True)  # no write would say so

    def answer(code: str):
        def match(message):
            command = message.get("command") or {}
            return command.get("code") == code and command["status"] != "pending"

        return match

    with GroupListener(pool_group(pool_a.code)) as page:
        bridges(args=("--flush-interval", NEVER))
        sims(device)
        # The page's state: the bridge knows of the page, and the device has spoken
        # on this connection (it is sent nothing before).
        page.wait(lambda m: m["type"] == "pool.state", TIMEOUT)
        command = command_send(membership=alice, pool=pool_a, op="pump", value="ON")
        told = page.wait(answer(command.code.hex), TIMEOUT)["command"]
    assert told == {"code": command.code.hex, "status": "done", "error": ""}
    assert status(command) == "sent"  # the write follows, later


# --- tenant brokers divided by a lease ----------------------------------------------

CONNECTED = re.compile(r"New client connected from \S+ as (\S+) ")
GONE = re.compile(
    r"Client (\S+) (?:disconnected|closed its connection)"
    r"|Socket error on client (\S+), disconnecting"
    r"|Client (\S+) has exceeded timeout"
)


class LoggingMosquitto(PrivateMosquitto):
    """A private Mosquitto whose log names every client that connects and leaves."""

    def __init__(self, tmp_path):
        super().__init__(tmp_path)
        self.log_path = tmp_path / "mosquitto.log"
        self.conf.write_text(
            f"user root\nlistener {self.port} {HOST}\nallow_anonymous true\n"
            "persistence false\n"
            f"log_dest file {self.log_path}\nlog_type notice\nlog_type warning\n"
            "connection_messages true\n"
        )

    def bridges(self) -> tuple[set[str], list[str]]:
        """(bridge client ids connected now, every bridge connect so far)."""
        now, ever = set(), []
        text = (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )
        for line in text.splitlines():
            if m := CONNECTED.search(line):
                if m.group(1).startswith("poolsaas-bridge-"):
                    now.add(m.group(1))
                    ever.append(m.group(1))
            elif m := GONE.search(line):
                now.discard(next(g for g in m.groups() if g))
        return now, ever


@pytest.fixture
def tenant_broker(tmp_path):
    broker = LoggingMosquitto(tmp_path)
    broker.start()
    yield broker
    broker.kill()


def client_id(process: BridgeProcess, broker: Broker) -> str:
    return f"poolsaas-bridge-{process.name}-{broker.pk}"[:64]


def test_a_tenant_broker_is_held_by_one_bridge_and_taken_over_when_it_dies(
    bridges, tenant_broker, pool_a, prefix
):
    broker = Broker.objects.create(
        tenant=pool_a.tenant,
        name="Acme own",
        host=HOST,
        port=tenant_broker.port,
        use_tls=False,
    )
    device = Device.objects.create(
        tenant=pool_a.tenant,
        pool=pool_a,
        broker=broker,
        device_id=esp_id(),
        topic_prefix=prefix,
    )
    lease = ("--lease-ttl", "4")
    processes = [bridges(args=lease), bridges(args=lease)]
    ids = {client_id(p, broker): p for p in processes}
    wait_for(lambda: tenant_broker.bridges()[0], TIMEOUT, "a bridge on the broker")
    pub = Publisher(port=tenant_broker.port)
    topic = f"{prefix}/{device.device_id}/telemetry"

    def lands(temp: float) -> bool:
        pub.pub(topic, telemetry(temp=temp))
        return wait_for(
            lambda: Device.objects.get(pk=device.pk).state.get("temperature") == temp,
            TIMEOUT,
            f"telemetry {temp}",
        )

    try:
        lands(21.5)
        # Both bridges refreshed several times (0.5 s each) since: still one holder.
        time.sleep(2)
        now, ever = tenant_broker.bridges()
        assert len(now) == 1 and set(ever) == now, ever
        holder = ids[now.pop()]
        assert BrokerLease.objects.get(broker=broker).holder == holder.name
        survivor = next(p for p in processes if p is not holder)

        holder.kill()
        killed = time.monotonic()
        wait_for(
            lambda: tenant_broker.bridges()[0] == {client_id(survivor, broker)},
            TIMEOUT,
            "the survivor to take the broker over",
        )
        took = time.monotonic() - killed
        lands(22.5)
    finally:
        pub.close()
    assert BrokerLease.objects.get(broker=broker).holder == survivor.name
    print(f"tenant broker taken over {took:.1f} s after kill -9 (lease 4 s)")
