"""Weekly programs reach a ps1 device, end to end (issue 9, point 1), and a v3.1 device
is online right after a bridge restart (point 12).

The way it runs in production: the programs are saved through the page (the Django
test client posting the editor's form) or the REST API; the bridge is
`manage.py mqtt_bridge` in its own process on the test database (PostgreSQL with
Redis for the doorbell, or the SQLite file of the embedded default, where the
bridge's sweep alone delivers); Mosquitto; a simulated device
(firmware.sim.VirtualDevice, which runs the real controller code and so switches its
pump when a program window opens).
Every wait is on a condition with a bounded timeout.
"""

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from devices.models import Command, Device, DeviceEvent, Pool
from devices.services.commands import command_send
from devices.tests.test_bridge import V31Device, clear_retained, wait_for
from firmware.sim import VirtualDevice
from poolsaas.api.testing import api_client
from poolsaas.live.groups import DOORBELL

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

# Time zones to pick from so that "now" is well inside a day there: a program window
# around now must not cross midnight.
ZONES = (
    "Europe/Madrid",
    "America/New_York",
    "Asia/Tokyo",
    "America/Los_Angeles",
    "Asia/Kolkata",
    "Pacific/Auckland",
    "America/Sao_Paulo",
)
TIMEOUT = 30.0
READY = "connected to broker"


def daytime_zone(*, exclude: tuple[str, ...] = ()) -> str:
    now = timezone.now()
    for name in ZONES:
        if name not in exclude and 1 <= now.astimezone(ZoneInfo(name)).hour <= 21:
            return name
    raise AssertionError("no daytime zone in the list")  # cannot happen: 24 h spread


def program_around_now(zone: str, mode: int = 2) -> dict:
    """Slot 1, enabled, today (in `zone`) from 2 minutes ago to 90 minutes ahead."""
    local = timezone.now().astimezone(ZoneInfo(zone))
    start = local - dt.timedelta(minutes=2)
    stop = min(
        local + dt.timedelta(minutes=90), local.replace(hour=23, minute=59, second=0)
    )
    days = [None] * 7
    days[local.weekday()] = {
        "mode": mode,
        "start": start.strftime("%H:%M"),
        "stop": stop.strftime("%H:%M"),
    }
    return {"slot": 1, "enabled": True, "days": days}


def programs_form(pool: Pool, programs: list[dict]) -> dict:
    """The programs editor's POST (devices/views/programs.py _programs_from_post)."""
    data = {"config_version": str(pool.config_version)}
    by_slot = {p["slot"]: p for p in programs}
    for slot in (1, 2, 3):
        program = by_slot.get(slot)
        if program and program["enabled"]:
            data[f"s{slot}_enabled"] = "on"
        for day in range(7):
            window = program["days"][day] if program else None
            prefix = f"s{slot}_d{day}_"
            data[prefix + "mode"] = str(window["mode"]) if window else "1"
            data[prefix + "start"] = window["start"] if window else ""
            data[prefix + "stop"] = window["stop"] if window else ""
    return data


def save_on_the_page(client, pool: Pool, programs: list[dict]) -> None:
    pool.refresh_from_db()
    response = client.post(
        reverse("pool_programs", args=[pool.code]), programs_form(pool, programs)
    )
    assert response.status_code == 302, response.content.decode()[:2000]


def config_line(client, pool: Pool) -> str:
    """The pool page's configuration line, as the server renders it."""
    html = client.get(reverse("pool_detail", args=[pool.code])).content.decode()
    start = html.index('id="config-status"')
    return html[start : html.index("</p>", start)]


def applied(device: Device) -> int | None:
    return Device.objects.get(pk=device.pk).config_version_applied


class BridgeProcess:
    """`manage.py mqtt_bridge` on the test database, as deployed (short intervals)."""

    def __init__(self, log_path):
        db = connection.settings_dict
        if connection.vendor == "sqlite":
            url = f"sqlite:///{db['NAME']}"  # a WAL file database (the test settings)
        else:
            auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
            url = (
                f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:"
                f"{db['PORT'] or 5432}/{db['NAME']}"
            )
        self.env = {
            **os.environ,
            "DATABASE_URL": url,
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "INFO",
        }
        self.env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def start(
        self,
        *,
        refresh_interval: float = 0.5,
        sweep_interval: float = 0.2,
        args: tuple[str, ...] = (),
    ) -> "BridgeProcess":
        assert self.proc is None
        self.runs += 1
        before = self.log().count(READY) if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.name = f"cfgtest-{uuid.uuid4().hex[:6]}-{self.runs}"
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "mqtt_bridge", "--name", self.name]
            + ["--flush-interval", "0.1", "--sweep-interval", str(sweep_interval)]
            + ["--refresh-interval", str(refresh_interval)]
            + ["--broadcast-window", "0.05"]
            + ["--stats-interval", "3600", *args],
            cwd=settings.BASE_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        # Ready when it has connected to the broker (a busy machine may take long
        # to start Django); the conditions the tests then wait for are about the
        # bridge's work, not its start-up.
        wait_for(
            lambda: self.log().count(READY) > before or self.proc.poll() is not None,
            timeout=120,
            what="the bridge process to connect",
        )
        assert self.proc.poll() is None, self.log()[-3000:]
        return self

    def stop(self) -> None:
        """SIGTERM, as systemd or Docker stop it; the bridge exits cleanly."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            # Hung: every thread's stack into the log (faulthandler), then kill.
            proc.send_signal(signal.SIGUSR1)
            time.sleep(1)
            proc.kill()
            proc.wait(5)

    def kill(self) -> None:
        """kill -9: no clean stop, no lease given back."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def bridge(tmp_path, platform_broker):
    process = BridgeProcess(tmp_path / "bridge.log")
    yield process
    process.stop()


@pytest.fixture
def prefix():
    value = f"cfg-{uuid.uuid4().hex[:10]}"
    yield value
    clear_retained(value)


@pytest.fixture
def ps1_pool(pool_a, platform_broker, prefix):
    """pool_a in a time zone where it is daytime, with a ps1 device on the platform
    broker (not yet running)."""
    pool_a.timezone = daytime_zone()
    pool_a.save(update_fields=["timezone"])
    device = Device.objects.create(
        tenant=pool_a.tenant,
        pool=pool_a,
        broker=platform_broker,
        device_id=f"ESP-{uuid.uuid4().hex[:6].upper()}",
        topic_prefix=prefix,
    )
    return pool_a, device


@pytest.fixture
def sims():
    running = []

    def make(device: Device) -> VirtualDevice:
        sim = VirtualDevice(
            device.device_id,
            prefix=device.topic_prefix,
            clean_session=True,
            reconnect_delay=(1, 2),
        ).start()
        running.append(sim)
        return sim

    yield make
    for sim in running:
        sim.stop()


def drain_doorbell() -> int:
    """Take every doorbell message nobody listened to, as if Redis had lost them:
    what reaches the device after this comes from the bridge's sweep alone."""
    from channels.layers import channel_layers

    layer = channel_layers.make_backend("default")

    async def drain():
        count = 0
        while True:
            try:
                await asyncio.wait_for(layer.receive(DOORBELL), 1.0)
            except TimeoutError:
                return count
            count += 1

    try:
        return async_to_sync(drain)()
    finally:
        close = getattr(layer, "close_pools", None)
        if close is not None:
            async_to_sync(close)()


def config_versions_received(sim: VirtualDevice) -> list[int]:
    return [
        json.loads(payload)["version"]
        for suffix, payload in list(sim.received)
        if suffix == "config/set" and payload
    ]


def wait_pump_follows(sim: VirtualDevice, mode: int = 2) -> None:
    wait_for(
        lambda: sim.controller.pump is True and sim.controller.valve == mode,
        timeout=TIMEOUT,
        what="the device to run the program (pump on, valve in its mode)",
    )


def wait_online(device: Device) -> None:
    wait_for(
        lambda: Device.objects.get(pk=device.pk).online,
        timeout=TIMEOUT,
        what="device online",
    )


# --- point 1: programs reach the device ---------------------------------------------


def test_programs_saved_on_the_page_run_on_the_device(
    bridge, ps1_pool, sims, olivia, login
):
    pool, device = ps1_pool
    bridge.start()
    sim = sims(device)
    sim.wait_connected()
    wait_online(device)
    assert sim.controller.pump is False
    client = login(olivia)

    save_on_the_page(client, pool, [program_around_now(pool.timezone)])

    wait_for(lambda: applied(device) == 1, timeout=TIMEOUT, what="config/applied 1")
    assert sim.controller.config["version"] == 1
    assert sim.controller.config["programs"][0]["enabled"] is True
    wait_pump_follows(sim)
    line = config_line(client, pool)
    assert 'data-status="applied"' in line and "applied (version 1)" in line, line
    events = list(
        DeviceEvent.objects.filter(device=device, kind="config.applied").values(
            "data", "ts", "message"
        )
    )
    # Once (the device answers again on reconnects; only news is logged). Version 0,
    # the pool's configuration before the save, may come first: a new device is sent
    # its pool's time zone and thresholds too.
    assert [e["data"] for e in events if e["data"]["version"] == 1] == [
        {"version": 1, "ok": True}
    ], events
    # The bridge also recorded what the device reported after switching.
    wait_for(
        lambda: Device.objects.get(pk=device.pk).state.get("pump") is True,
        timeout=TIMEOUT,
        what="pump on stored",
    )
    programs_page = client.get(reverse("pool_programs", args=[pool.code]))
    assert "On the device: applied (version 1)." in programs_page.content.decode()


def test_programs_put_through_the_api_run_on_the_device(
    bridge, ps1_pool, sims, olivia, login
):
    pool, device = ps1_pool
    bridge.start()
    sim = sims(device)
    sim.wait_connected()
    wait_online(device)
    api = api_client(olivia)
    url = f"/api/v1/pools/{pool.code}/programs/"
    etag = api.get(url)["ETag"]

    response = api.put(
        url,
        {"programs": [program_around_now(pool.timezone, mode=2)]},
        format="json",
        HTTP_IF_MATCH=etag,
    )

    assert response.status_code == 200, response.content
    assert response.json()["version"] == 1
    wait_for(lambda: applied(device) == 1, timeout=TIMEOUT, what="config/applied 1")
    wait_pump_follows(sim)
    body = api.get(f"/api/v1/devices/{device.code}/").json()
    assert body["config_version_applied"] == 1
    assert "applied (version 1)" in config_line(login(olivia), pool)


@pytest.mark.redis  # the doorbell crosses processes through Redis
def test_the_doorbell_publishes_without_waiting_for_the_sweep(
    bridge, ps1_pool, sims, olivia, login
):
    pool, device = ps1_pool
    # The full sweep runs at start, then only every 120 s: within the wait below,
    # only the doorbell rung by the save can have the new version published.
    bridge.start(refresh_interval=120)
    sim = sims(device)
    sim.wait_connected()
    wait_online(device)

    save_on_the_page(login(olivia), pool, [program_around_now(pool.timezone)])

    wait_for(lambda: applied(device) == 1, timeout=TIMEOUT, what="config/applied 1")
    wait_pump_follows(sim)


def test_a_device_offline_at_save_gets_the_programs_when_it_comes_online(
    bridge, ps1_pool, sims, olivia, login
):
    pool, device = ps1_pool
    bridge.start()
    client = login(olivia)
    save_on_the_page(client, pool, [program_around_now(pool.timezone)])
    line = config_line(client, pool)
    assert 'data-status="pending"' in line, line
    assert "pending (version 1 not confirmed yet)" in line

    sim = sims(device)  # the device comes online later

    wait_for(lambda: applied(device) == 1, timeout=TIMEOUT, what="config/applied 1")
    wait_pump_follows(sim)
    assert "applied (version 1)" in config_line(client, pool)


def test_an_outdated_device_is_republished_after_a_bridge_restart(
    bridge, ps1_pool, sims, olivia, login
):
    pool, device = ps1_pool
    bridge.start()
    sim = sims(device)
    sim.wait_connected()
    wait_online(device)
    bridge.stop()

    # Saved while no bridge runs; the doorbell's message (with Redis) is lost.
    save_on_the_page(login(olivia), pool, [program_around_now(pool.timezone)])
    drained = drain_doorbell()
    assert drained >= 1 or not os.environ.get("REDIS_URL")
    assert 1 not in config_versions_received(sim)

    bridge.start()

    wait_for(lambda: applied(device) == 1, timeout=TIMEOUT, what="config/applied 1")
    wait_pump_follows(sim)
    assert 1 in config_versions_received(sim)


def test_a_time_zone_change_is_republished(
    bridge, ps1_pool, sims, olivia, alice, login
):
    pool, device = ps1_pool
    bridge.start()
    sim = sims(device)
    sim.wait_connected()
    wait_online(device)
    save_on_the_page(login(olivia), pool, [program_around_now(pool.timezone)])
    wait_for(lambda: applied(device) == 1, timeout=TIMEOUT, what="config/applied 1")
    new_zone = daytime_zone(exclude=(pool.timezone,))

    client = login(alice)
    response = client.post(
        reverse("pool_settings", args=[pool.code]),
        {
            "name": pool.name,
            "timezone_name": new_zone,
            "mode1_name": pool.mode1_name,
            "mode2_name": pool.mode2_name,
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    assert Pool.objects.get(pk=pool.pk).config_version == 2
    wait_for(lambda: applied(device) == 2, timeout=TIMEOUT, what="config/applied 2")
    assert sim.controller.config["tz"] == new_zone
    assert "applied (version 2)" in config_line(client, pool)


def test_a_rejected_configuration_shows_the_device_reason(
    bridge, ps1_pool, sims, olivia, login
):
    pool, device = ps1_pool
    bridge.start()
    sim = sims(device)
    sim.wait_connected()
    wait_online(device)
    reason = "tz_posix: rule not supported by this firmware"

    def older_firmware(payload):
        # A firmware that refuses what this server sends: it keeps its old config.
        version = json.loads(payload)["version"]
        return {"version": version, "ok": False, "error": reason}

    sim.controller.handle_config = older_firmware
    client = login(olivia)

    save_on_the_page(client, pool, [program_around_now(pool.timezone)])

    event = wait_for(
        lambda: DeviceEvent.objects.filter(
            device=device, kind="config.rejected", data__version=1
        ).first(),
        timeout=TIMEOUT,
        what="config.rejected",
    )
    assert event.message == f"Configuration 1 rejected: {reason}"
    wait_for(
        lambda: Device.objects.get(pk=device.pk).state.get("config"),
        timeout=TIMEOUT,
        what="the answer stored",
    )
    line = config_line(client, pool)
    assert 'data-status="rejected"' in line, line
    assert f"rejected by the device: {reason}" in line
    # It keeps what it ran before (the pool's version 0, if that came before the
    # firmware was swapped): the program does not run.
    assert applied(device) in (None, 0)
    assert sim.controller.config["version"] == 0 and sim.controller.pump is False


# --- point 12: v3.1 online after a bridge restart -----------------------------------


@pytest.fixture
def v31_device(pool_a, platform_broker, prefix):
    device = Device.objects.create(
        tenant=pool_a.tenant,
        pool=pool_a,
        broker=platform_broker,
        device_id=f"esp32-{uuid.uuid4().hex[:6]}",
        topic_prefix=prefix,
        protocol=Device.Protocol.LEGACY,
    )
    scripted = V31Device(prefix, device.device_id)
    yield device, scripted
    scripted.stop()


def test_a_v31_device_is_online_and_switchable_right_after_a_bridge_restart(
    bridge, v31_device, alice, pool_a
):
    device, v31 = v31_device
    bridge.start()
    # A v3.1 device publishes its retained state on connect, then only every 60 s
    # (temperature): within this test, after the restart, the bridge hears nothing
    # live from it; only the broker's retained messages.
    v31.start()
    wait_online(device)
    bridge.stop()
    # The bridge was away longer than the silence window (3 x 60 s).
    away = timezone.now() - dt.timedelta(minutes=10)
    Device.objects.filter(pk=device.pk).update(last_seen_at=away)
    restarted = timezone.now()

    bridge.start()

    wait_for(
        lambda: Device.objects.filter(
            pk=device.pk, online=True, last_seen_at__gte=restarted
        ).exists(),
        timeout=TIMEOUT,
        what="online from the retained wifi/state",
    )
    command = command_send(membership=alice, pool=pool_a, op="pump", value="ON")
    wait_for(
        lambda: Command.objects.get(pk=command.pk).status == "done",
        timeout=TIMEOUT,
        what="command done",
    )
    assert ("pump/set", b"ON") in v31.sets
    assert Device.objects.get(pk=device.pk).online


def test_a_v31_device_that_died_while_the_bridge_was_away_is_offline(
    bridge, v31_device
):
    device, v31 = v31_device
    bridge.start()
    v31.start()
    wait_online(device)
    bridge.stop()
    v31.kill()  # the broker publishes its retained last will: disconnected

    bridge.start()

    wait_for(
        lambda: not Device.objects.get(pk=device.pk).online,
        timeout=TIMEOUT,
        what="offline from the retained last will",
    )
    assert DeviceEvent.objects.filter(device=device, kind="offline").exists()
