"""Simulated devices against a real Mosquitto: what the bridge will see on the wire.

Uses the machine's broker (MQTT_URL, default mqtt://127.0.0.1:1883) under a unique topic
prefix per test, and a private mosquitto on a spare loopback port for the restart test.
"""

import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from firmware import protocol as P
from firmware.sim import VirtualDevice, parse_broker_url

pytestmark = pytest.mark.mqtt

MQTT_URL = os.environ.get("MQTT_URL", "mqtt://127.0.0.1:1883")


class Observer:
    """A cloud-side client that records (device id, kind, value) of every message."""

    def __init__(self, url, prefix):
        self.host, self.port, _, user, pw = parse_broker_url(url)
        self.prefix = prefix
        self.q = queue.Queue()
        self.bad = []
        self.seen = []
        self.connected = threading.Event()
        self.c = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id="obs-" + uuid.uuid4().hex[:8],
        )
        if user:
            self.c.username_pw_set(user, pw)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.reconnect_delay_set(0.2, 1)

    def _on_connect(self, client, userdata, flags, rc, props):
        client.subscribe([(s, 1) for s in P.subscriptions(self.prefix)])
        self.connected.set()

    def _on_message(self, client, userdata, msg):
        if not msg.payload and msg.retain:
            return  # a retained message being cleared
        device_id, suffix = P.parse_topic(msg.topic, self.prefix)
        try:
            kind, value = P.parse_device_message(suffix, msg.payload)
        except P.ProtocolError as e:
            self.bad.append((device_id, suffix, str(e)))
            return
        self.q.put((device_id, kind, value, msg.retain))

    def start(self):
        self.c.connect_async(self.host, self.port, 10)
        self.c.loop_start()
        assert self.connected.wait(5), "observer could not connect"
        return self

    def publish(self, device_id, suffix, payload, retain=False):
        topic = P.topic(self.prefix, device_id, suffix)
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def expect(self, pred, timeout=10.0, what="message", n=1):
        """The n-th message so far (arrival order) that matches pred; waits for it."""
        deadline = time.monotonic() + timeout
        while True:
            while True:
                try:
                    self.seen.append(self.q.get_nowait())
                except queue.Empty:
                    break
            hits = [m for m in self.seen if pred(*m)]
            if len(hits) >= n:
                return hits[n - 1]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out waiting for " + what)
            try:
                self.seen.append(self.q.get(timeout=min(left, 0.2)))
            except queue.Empty:
                pass

    def kinds(self):
        while not self.q.empty():
            self.seen.append(self.q.get())
        return {m[1] for m in self.seen}

    def clear_retained(self, device_ids):
        # Leave the shared broker as we found it.
        for d in device_ids:
            for s in P.DEVICE_TO_CLOUD + (P.CONFIG_SET,):
                self.c.publish(P.topic(self.prefix, d, s), b"", qos=1, retain=True)
        time.sleep(0.2)

    def purge_sessions(self, device_ids):
        """Drop the persistent sessions the devices left in the shared broker."""
        for d in device_ids:
            c = mqtt.Client(
                callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                client_id=d,
                clean_session=True,
            )
            try:
                c.connect(self.host, self.port, 5)
                c.loop(0.2)
                c.disconnect()
            except OSError:
                pass

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def prefix():
    return "fwtest-" + uuid.uuid4().hex[:8]


@pytest.fixture
def observer(prefix):
    obs = Observer(MQTT_URL, prefix).start()
    yield obs
    obs.stop()


@pytest.fixture
def device(prefix, observer):
    devices = []

    def make(device_id=None, **kw):
        # Fresh ids: devices keep persistent sessions, as the firmware does.
        device_id = device_id or "ESP-" + uuid.uuid4().hex[:6].upper()
        kw.setdefault("broker", MQTT_URL)
        kw.setdefault("keepalive", 5)
        kw.setdefault("reconnect_delay", (0.2, 1))
        d = VirtualDevice(device_id, prefix=prefix, **kw)
        devices.append(d)
        d.start().wait_connected(10)
        return d

    yield make
    for d in devices:
        d.stop()
    observer.clear_retained([d.device_id for d in devices])
    observer.purge_sessions([d.device_id for d in devices])


def cmd(observer, device_id, cid, op, value=None, exp=None):
    exp = int(time.time()) + 30 if exp is None else exp
    observer.publish(device_id, P.CMD, P.encode_command(cid, exp, op, value))


def is_(kind, **fields):
    def pred(device_id, k, value, retain):
        if k != kind:
            return False
        return all(value.get(f) == v for f, v in fields.items())

    return pred


def test_connect_publishes_status_state_and_telemetry(observer, device):
    d = device(interval=1)
    observer.expect(lambda i, k, v, r: k == "status" and v is True, what="online")
    observer.expect(lambda i, k, v, r: k == "pump" and v is False, what="pump")
    observer.expect(lambda i, k, v, r: k == "valve" and v == 1, what="valve")
    observer.expect(lambda i, k, v, r: k == "wifi" and v["status"] == "connected")
    tel = [observer.expect(is_("telemetry"), n=n)[2] for n in (1, 2, 3)]
    seqs = [t["seq"] for t in tel]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert tel[-1]["fw"] == "ps1-0.1.0-sim" and tel[-1]["ts"] > 1_700_000_000
    assert 10.0 < tel[-1]["temp"] < 35.0
    observer.expect(is_("event", type="boot"), what="boot event")
    assert d.connects == 1
    assert observer.bad == []


def test_command_ack_duplicate_and_expiry(observer, device):
    d = device()
    observer.expect(lambda i, k, v, r: k == "status" and v)
    cmd(observer, d.device_id, "c-1", "pump", "ON")
    ack = observer.expect(is_("ack", id="c-1"), what="ack")[2]
    assert ack["ok"] and ack["state"]["pump"] is True
    observer.expect(lambda i, k, v, r: k == "pump" and v is True, what="pump ON")
    # The same id again (a retry): same answer, the pump is not switched twice.
    cmd(observer, d.device_id, "c-1", "pump", "ON")
    again = observer.expect(is_("ack", id="c-1"), what="duplicate ack", n=2)[2]
    assert again == ack
    assert d.controller.switches["pump"] == 1
    cmd(observer, d.device_id, "c-2", "valve", 2, exp=int(time.time()) - 5)
    late = observer.expect(is_("ack", id="c-2"), what="expired ack")[2]
    assert late == {"id": "c-2", "ok": False, "error": "expired"}
    assert d.controller.valve == 1
    observer.publish(d.device_id, P.CMD, b'{"id":"c-3","exp":1,"op":"dive"}')
    unk = observer.expect(is_("ack", id="c-3"), what="unsupported ack")[2]
    assert unk["error"] == "unsupported"
    cmd(observer, d.device_id, "c-4", "timer", {"mode": 2, "duration": 30})
    assert observer.expect(is_("ack", id="c-4"))[2]["state"]["timer"]["active"]
    observer.expect(is_("event", type="timer_start"), what="timer event")
    observer.expect(lambda i, k, v, r: k == "timer" and v["active"] and v["mode"] == 2)


def local_noon_tz():
    """A POSIX TZ in which it is about noon right now, so a program window fits."""
    now = int(time.time())
    east = 12 * 3600 - now % 86400
    east -= east % 60
    sign = "-" if east >= 0 else "+"
    a = abs(east)
    return f"<SIM>{sign}{a // 3600}:{a % 3600 // 60:02d}"


def test_config_pushed_retained_is_applied_and_runs_programs(observer, device):
    d = device()
    observer.expect(lambda i, k, v, r: k == "status" and v)
    slot = {"mode": 2, "start": "11:50", "stop": "12:30"}
    config = {
        "version": 3,
        "tz": "Etc/Test",
        "tz_posix": local_noon_tz(),
        "telemetry_interval": 10,
        "thresholds": {
            "freeze_on_c": 2.0,
            "freeze_hysteresis_c": 1.0,
            "pump_max_run_s_day": 0,
            "min_switch_interval_s": 0,
        },
        "programs": [{"slot": 1, "enabled": True, "days": [slot] * 7}],
    }
    observer.publish(d.device_id, P.CONFIG_SET, P.encode_config(config), retain=True)
    applied = observer.expect(is_("config_applied"), what="config/applied")
    assert applied[2] == {"version": 3, "ok": True}
    observer.expect(is_("event", type="program_start"), what="program start")
    observer.expect(lambda i, k, v, r: k == "pump" and v is True, what="pump on")
    assert d.controller.valve == 2
    # A bad config is refused and named; the running one stays.
    bad = dict(config, version=4, telemetry_interval=1)
    observer.publish(d.device_id, P.CONFIG_SET, P.dumps(bad), retain=True)
    refused = observer.expect(is_("config_applied", version=4), what="refusal")[2]
    assert refused["ok"] is False and "telemetry_interval" in refused["error"]
    assert d.controller.config["version"] == 3
    # config/applied is retained: a bridge that starts later still learns the outcome.
    late = Observer(MQTT_URL, observer.prefix).start()
    try:
        late.expect(
            lambda i, k, v, r: k == "config_applied" and v["version"] == 4 and r
        )
    finally:
        late.stop()


def test_reboot_command_restarts_with_saved_state(observer, device):
    d = device()
    observer.expect(lambda i, k, v, r: k == "status" and v)
    cmd(observer, d.device_id, "t-1", "timer", {"mode": 2, "duration": 600})
    assert observer.expect(is_("ack", id="t-1"))[2]["ok"]
    cmd(observer, d.device_id, "r-1", "reboot")
    assert observer.expect(is_("ack", id="r-1"))[2]["ok"]
    observer.expect(is_("event", type="boot"), n=2, what="second boot")
    # seq restarts at 0 after a boot; the timer survived it.
    tel = observer.expect(is_("telemetry", seq=0), n=2, what="seq 0 again")[2]
    assert tel["timer"]["active"] and tel["timer"]["mode"] == 2
    assert d.connects == 2


def test_cli_runs_devices_for_a_bounded_time(observer, prefix):
    import subprocess
    import sys

    ids = ["ESP-" + uuid.uuid4().hex[:6].upper() for _ in range(2)]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "firmware.sim",
            "--ids",
            ",".join(ids),
            "--broker",
            MQTT_URL,
            "--prefix",
            prefix,
            "--interval",
            "1",
            "--duration",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert proc.returncode == 0, proc.stderr
    assert "2/2 device(s) had connected" in proc.stderr
    for device_id in ids:
        observer.expect(lambda i, k, v, r, d=device_id: i == d and k == "telemetry")
        observer.expect(
            lambda i, k, v, r, d=device_id: i == d and k == "status" and not v
        )
    observer.clear_retained(ids)


@pytest.mark.parametrize(
    "signum,legacy", [(signal.SIGTERM, False), (signal.SIGINT, True)]
)
def test_cli_stops_promptly_on_signal_with_a_clean_offline(
    observer, prefix, signum, legacy
):
    # `make run` stops its children with SIGTERM (Ctrl-C sends SIGINT to the group).
    # The handler used to set a multiprocessing Event while the main thread waited on
    # it, which deadlocked: the simulator never stopped and had to be killed.
    import sys

    device_id = ("esp32-" if legacy else "ESP-") + uuid.uuid4().hex[:6].upper()
    argv = [sys.executable, "-m", "firmware.sim", "--ids", device_id]
    argv += ["--broker", MQTT_URL, "--prefix", prefix, "--interval", "10"]
    proc = subprocess.Popen(
        argv + (["--legacy"] if legacy else []),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    try:
        observer.expect(
            lambda i, k, v, r: (
                i == device_id and k == "wifi" and v["status"] == "connected"
            ),
            timeout=15,
            what="connected",
        )
        proc.send_signal(signum)
        started = time.monotonic()
        _, err = proc.communicate(timeout=10)
        assert time.monotonic() - started < 5
        assert proc.returncode == 0, err
        assert "1/1 device(s) had connected" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # A clean goodbye, not the broker's last will on a dropped connection.
    observer.expect(
        lambda i, k, v, r: (
            i == device_id and k == "wifi" and v["status"] == "disconnected"
        ),
        what="wifi disconnected",
    )
    if not legacy:
        observer.expect(
            lambda i, k, v, r: i == device_id and k == "status" and v is False,
            what="status offline",
        )
    observer.clear_retained([device_id])


def test_last_will_on_killed_device(observer, device):
    d = device()
    observer.expect(lambda i, k, v, r: k == "status" and v)
    d.kill()
    observer.expect(
        lambda i, k, v, r: k == "status" and v is False, timeout=15, what="will"
    )
    # A fresh subscriber learns it from the retained will.
    late = Observer(MQTT_URL, observer.prefix).start()
    try:
        late.expect(lambda i, k, v, r: k == "status" and v is False and r, timeout=5)
    finally:
        late.stop()


def test_legacy_device_speaks_v31_only(observer, device):
    d = device("esp32-pool-" + uuid.uuid4().hex[:6], legacy=True)
    observer.expect(lambda i, k, v, r: k == "wifi" and v["status"] == "connected")
    observer.publish(d.device_id, P.PUMP_SET, b"on")
    observer.expect(lambda i, k, v, r: k == "pump" and v is True, what="pump/state")
    observer.publish(d.device_id, P.TIMER_SET, b'{"mode":2,"duration":20}')
    observer.expect(lambda i, k, v, r: k == "timer" and v["active"] and v["mode"] == 2)
    observer.publish(d.device_id, P.VALVE_SET, b"garbage")  # ignored, as on v3.1
    d.kill()
    observer.expect(
        lambda i, k, v, r: k == "wifi" and v["status"] == "disconnected", what="will"
    )
    assert not observer.kinds() & {
        "status",
        "telemetry",
        "ack",
        "event",
        "config_applied",
    }


def test_fault_injection_garbage_and_silence(observer, device):
    d = device(interval=1, garbage_every=1, silent_after=3)
    deadline = time.monotonic() + 6
    while not observer.bad and time.monotonic() < deadline:
        time.sleep(0.1)
    assert observer.bad and observer.bad[0][:2] == (d.device_id, "telemetry")
    time.sleep(3.5)
    observer.kinds()
    before = len(observer.seen) + len(observer.bad)
    time.sleep(2)
    observer.kinds()
    assert len(observer.seen) + len(observer.bad) == before, "silent means silent"
    assert d.connected.is_set()


def test_drop_connection_fires_will_then_reconnects(observer, device):
    d = device(drop_every=2)
    observer.expect(lambda i, k, v, r: k == "status" and v)
    observer.expect(lambda i, k, v, r: k == "status" and v is False, what="will")
    observer.expect(lambda i, k, v, r: k == "status" and v, what="back online", n=2)
    assert d.connects >= 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateBroker:
    """A throw-away mosquitto on a spare loopback port (never the shared one)."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="fwmosq")
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                "persistence false\n"
            )
        self.proc = None

    def start(self):
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen(
            [exe, "-c", self.conf],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private mosquitto did not start")

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    @property
    def url(self):
        return f"mqtt://127.0.0.1:{self.port}"


def test_reconnect_after_broker_restart():
    broker = PrivateBroker().start()
    d = None
    obs = None
    try:
        d = VirtualDevice(
            "ESP-C0FFEE", broker=broker.url, keepalive=5, reconnect_delay=(0.2, 1)
        )
        d.start().wait_connected(10)
        broker.stop()
        deadline = time.monotonic() + 5
        while d.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not d.connected.is_set()
        assert d.local("pump", "ON")[0]  # works offline: the pool keeps running
        broker.start()
        d.wait_connected(15)
        assert d.connects == 2
        # Retained state is republished on reconnect: a new subscriber sees it all.
        obs = Observer(broker.url, "devices").start()
        obs.expect(lambda i, k, v, r: k == "status" and v and r, what="online")
        obs.expect(lambda i, k, v, r: k == "pump" and v is True and r, what="pump")
        # And the command path works again (the subscriptions were renewed).
        cmd(obs, d.device_id, "after-restart", "valve", 2)
        assert obs.expect(is_("ack", id="after-restart"))[2]["ok"]
    finally:
        if obs is not None:
            obs.stop()
        if d is not None:
            d.stop()
        broker.stop()
        shutil.rmtree(broker.dir, ignore_errors=True)


def test_load_mode_publishes_on_every_device_topic(observer, prefix):
    from firmware.sim import make_ids
    from firmware.sim.load import LoadRun

    ids = make_ids(40, start=0xE00001)
    run = LoadRun(
        ids,
        broker=MQTT_URL,
        prefix=prefix,
        interval=0.5,
        duration=3,
        processes=2,
        connections=3,
    )
    assert run.connections == 6
    run.start().join(30)
    assert run.sent.value >= 40 * 4
    for device_id in ids:
        tel = observer.expect(
            lambda i, k, v, r, d=device_id: i == d and k == "telemetry"
        )[2]
        assert tel["hw"] == "esp32"  # the board's model, as full devices say it
        observer.expect(
            lambda i, k, v, r, d=device_id: i == d and k == "status" and not v
        )
    assert observer.bad == []
    observer.clear_retained(ids)


def test_load_mode_names_another_hardware_model_or_none(observer, prefix):
    from firmware.sim import make_ids
    from firmware.sim.load import LoadRun

    for hw_model, start in (("esp32s3", 0xE10001), (None, 0xE20001)):
        ids = make_ids(2, start=start)
        kw = {"interval": 0.5, "duration": 1.5, "processes": 1, "connections": 1}
        LoadRun(
            ids, broker=MQTT_URL, prefix=prefix, hw_model=hw_model, **kw
        ).start().join(30)
        for device_id in ids:
            tel = observer.expect(
                lambda i, k, v, r, d=device_id: i == d and k == "telemetry"
            )[2]
            assert tel["hw"] == hw_model  # None: no "hw" sent, parsed as None
        observer.clear_retained(ids)
