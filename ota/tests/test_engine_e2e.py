# ruff: noqa: F811 - pytest fixtures imported and used by name
"""The campaign engine end to end (issue 14, Done when): REAL Celery worker processes
(`celery -A poolsaas worker`) run `ota.advance_campaigns`, the real bridge process
serves offers and chunks over Mosquitto, and devices of the test's own (paho clients
that speak docs/protocol.md section 10: they check the manifest's HMAC with their
key, pull chunks by window, verify the SHA-256 and report) take the updates.

The test plays Celery beat: it sends `ota.advance_campaigns` to the workers' own
queues every BEAT seconds (both workers at once, so they race for each campaign).
The whole-board flow (swap, reboot, rollback) is test_ota_e2e.py's, under the
MicroPython unix port; here the subject is the engine: abort threshold, window,
consent, pause/resume, two workers, a worker killed mid-step, tenant isolation,
timeouts. Every wait is on a condition with a bound.
"""

import hashlib
import hmac
import json
import signal
import struct
import threading
import time
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from alerts.tests.test_e2e import WorkerProcess
from devices.models import Device, Pool
from devices.tests.test_bridge import client as mqtt_client
from devices.tests.test_bridge import wait_for
from devices.tests.test_config_push import (  # noqa: F401 - fixtures
    BridgeProcess,
    bridge,
    prefix,
)
from ota.models import Campaign, DeviceUpdate
from ota.services import (
    campaign_create,
    campaign_set_state,
    device_ota_key,
    release_create,
    update_consent,
)
from poolsaas.celery import app

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.postgres_only,
    pytest.mark.django_db(transaction=True),
]

BEAT = 0.5
CLAIM_S = 4  # the workers' OTA_CLAIM_S: a killed worker's claim lapses this fast
HEADER = struct.Struct(">II")
DATA = bytes(range(256)) * 48  # 12 KB: three chunks


class OtaDevice:
    """A device of ours on the wire: takes an offer it can authenticate, asks for
    chunks four at a time from the first it lacks, checks the whole hash, reports.
    `behaviour`: "ok", "fail" (reports a hash mismatch), "silent" (never answers)."""

    def __init__(self, device: Device, behaviour: str = "ok"):
        self.device, self.behaviour = device, behaviour
        self.root = device.topic_root
        self.key = device_ota_key(device.device_id)
        self.offers: list[dict] = []
        self.chunks = 0
        self.m: dict | None = None
        self.data = bytearray()
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.c = mqtt_client(f"otadev-{uuid.uuid4().hex[:8]}")
        self.c.on_message = self._on_message
        self.c.on_connect = self._on_connect
        self.c.connect("127.0.0.1", 1883)
        self.c.loop_start()
        wait_for(lambda: self.c.is_connected(), timeout=20, what="device connect")
        self._asker = threading.Thread(target=self._ask_again, daemon=True)
        self._asker.start()

    def _on_connect(self, client, userdata, flags, reason, properties=None):
        client.subscribe([(f"{self.root}/ota/offer", 1), (f"{self.root}/ota/chunk", 0)])

    def _report(self, state, percent=0, reason="", version=""):
        body = {"c": self.m["c"], "state": state, "percent": percent}
        body.update(reason=reason, version=version)
        self.c.publish(f"{self.root}/ota/status", json.dumps(body), qos=1)

    def _ask(self):
        i = len(self.data) // self.m["chunk"]
        n = min(4, self.m["chunks"] - i)
        if n > 0:
            body = {"c": self.m["c"], "i": i, "n": n}
            self.c.publish(f"{self.root}/ota/get", json.dumps(body), qos=0)

    def _ask_again(self):
        while not self.done.wait(1.0):  # a chunk lost or deferred: ask again
            with self.lock:
                if self.m is not None:
                    self._ask()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            if msg.topic.endswith("/ota/offer"):
                self._offer(json.loads(msg.payload))
            elif self.m is not None:
                self._chunk(msg.payload)

    def _offer(self, m):
        self.offers.append(m)
        if self.behaviour == "silent" or self.m is not None:
            return
        mac = m.pop("hmac")
        # A device that knows no per-chunk sums: "hmac" covers the other fields.
        m.pop("sums", None)
        m.pop("smac", None)
        canonical = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
        good = hmac.new(self.key, canonical, hashlib.sha256).hexdigest()
        self.m, self.data = m, bytearray()
        if not hmac.compare_digest(mac, good):
            self._report("failed", reason="manifest: bad hmac")
            self.m = None
            return
        self._report("downloading", 0)
        self._ask()

    def _chunk(self, payload):
        c, index = HEADER.unpack(payload[:8])
        if c != self.m["c"] or index != len(self.data) // self.m["chunk"]:
            return  # another campaign's, a duplicate, out of order
        self.data += payload[8:]
        self.chunks += 1
        have = len(self.data) // self.m["chunk"]
        if len(self.data) < self.m["size"]:
            if have % 4 == 0:
                self._ask()
            return
        m, self.m = self.m, None
        self.m = m
        if (
            self.behaviour == "fail"
            or hashlib.sha256(self.data).hexdigest() != (m["sha256"])
        ):
            self._report("failed", reason="sha256 mismatch")
        else:
            for state in ("downloaded", "verified", "applying"):
                self._report(state, 100)
            self._report("succeeded", 100, version=m["version"])
        self.m = None

    def stop(self):
        self.done.set()
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture(scope="module")
def worker_env(django_db_setup, django_db_blocker, tmp_path_factory):
    with django_db_blocker.unblock():
        env = BridgeProcess(tmp_path_factory.mktemp("w") / "unused.log").env
    return {**env, "OTA_CLAIM_S": str(CLAIM_S)}


@pytest.fixture(scope="module")
def workers(worker_env, tmp_path_factory):
    """Two Celery workers for the whole module (a start costs seconds)."""
    app.control.purge()
    folder = tmp_path_factory.mktemp("workers")
    started = [
        WorkerProcess(folder / f"{n}.log", worker_env, n).start() for n in ("w1", "w2")
    ]
    try:
        for w in started:
            w.wait_ready()
        yield started
    finally:
        for w in started:
            w.stop()


class Beat:
    """Celery beat, faster: `ota.advance_campaigns` to each worker every BEAT s."""

    def __init__(self, workers):
        self.workers = list(workers)
        self.stop_ = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop_.wait(BEAT):
            for w in self.workers:
                app.send_task("ota.advance_campaigns", queue=w.queue, expires=BEAT * 4)

    def stop(self):
        self.stop_.set()
        self.t.join(5)


@pytest.fixture
def beat(workers):
    made = []

    def start(ws=None):
        b = Beat(ws or workers)
        made.append(b)
        return b

    yield start
    for b in made:
        b.stop()


@pytest.fixture
def media(settings, tmp_path, bridge):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    bridge.env["MEDIA_ROOT"] = settings.MEDIA_ROOT


@pytest.fixture
def fleet(alice, platform_broker, prefix):
    made = []

    def make(n, *, tenant=None, tz="Europe/Madrid", behaviour="ok"):
        tenant = tenant or alice.tenant
        devices = []
        for _ in range(n):
            pool = Pool.objects.create(
                tenant=tenant, name=f"OTA {uuid.uuid4().hex[:6]}", timezone=tz
            )
            devices.append(
                Device.objects.create(
                    tenant=tenant,
                    pool=pool,
                    broker=platform_broker,
                    device_id=f"ESP-{uuid.uuid4().hex[:6].upper()}",
                    topic_prefix=prefix,
                    firmware_version="ps1-0.1.0",
                )
            )
        return devices

    def connect(devices, behaviour="ok"):
        out = [OtaDevice(d, behaviour) for d in devices]
        made.extend(out)
        return out

    make.connect = connect
    yield make
    for d in made:
        d.stop()


def release():
    return release_create(
        upload=SimpleUploadedFile("r.bin", DATA),
        version="1.2.0",
        hardware_model="esp32",
    )


def run(alice, **kw) -> Campaign:
    c = campaign_create(actor=alice.user, tenant=alice.tenant, release=release(), **kw)
    return campaign_set_state(c, "start", actor=alice.user)


def state_of(c):
    return Campaign.objects.get(pk=c.pk).state


def count(c, *states):
    return DeviceUpdate.objects.filter(campaign=c, state__in=states).count()


def test_success_and_two_workers_never_offer_one_device_twice(
    bridge,
    media,
    alice,
    fleet,
    workers,
    beat,
):
    """Both workers step the campaign every half second; the rate (6 a minute) is
    kept across them and each device is offered once and updated once."""
    devices = fleet(8)
    bridge.start()
    sims = fleet.connect(devices)
    c = run(alice, rate_per_minute=6)
    started = time.monotonic()
    beat()
    wait_for(lambda: count(c, "succeeded") >= 6, timeout=60, what="6 succeeded")
    time.sleep(3 * BEAT)  # more steps, from both workers
    minutes = (time.monotonic() - started) / 60
    total = Campaign.objects.get(pk=c.pk).offered_total
    # The first minute's worth at once, then 6 a minute: never more.
    assert 6 <= total <= 6 + 6 * minutes + 1
    offered = [s for s in sims if s.offers]
    assert len(offered) == total and all(len(s.offers) == 1 for s in offered)
    assert all(u.attempts == 1 for u in DeviceUpdate.objects.filter(state="succeeded"))
    assert all(s.chunks == 3 for s in offered)  # each chunk once
    # Both workers took steps (each lost some races for the claim).
    for w in workers:
        assert w.counts("ota.advance_campaigns")[1] > 0


def test_abort_threshold_stops_the_campaign(
    bridge,
    media,
    alice,
    fleet,
    workers,
    beat,
):
    devices = fleet(6)
    bridge.start()
    sims = fleet.connect(devices, behaviour="fail")
    c = run(alice, rate_per_minute=3, abort_after=3, abort_ratio=0.5, retries=0)
    beat()
    wait_for(lambda: state_of(c) == "aborted", timeout=60, what="the abort")
    assert count(c, "failed") == 3 and count(c, "skipped") == 3
    time.sleep(3 * BEAT)
    assert sum(1 for s in sims if s.offers) == 3  # the others never offered
    assert "3 of 3 devices failed" in Campaign.objects.get(pk=c.pk).state_reason


def test_maintenance_window_holds_devices_back(
    bridge,
    media,
    alice,
    fleet,
    workers,
    beat,
):
    """A window of one hour around now in Tokyo: the Tokyo pool is updated, the
    pool in Honolulu (19 hours behind) waits, until its pool moves to Tokyo."""
    import datetime
    import zoneinfo

    from django.utils import timezone

    here = timezone.now().astimezone(zoneinfo.ZoneInfo("Asia/Tokyo"))
    start = (here - datetime.timedelta(minutes=30)).time().replace(tzinfo=None)
    end = (here + datetime.timedelta(minutes=30)).time().replace(tzinfo=None)
    tokyo = fleet(1, tz="Asia/Tokyo")
    honolulu = fleet(1, tz="Pacific/Honolulu")
    bridge.start()
    s_tokyo, s_hnl = fleet.connect(tokyo + honolulu)
    c = run(alice, window_start=start, window_end=end)
    beat()
    wait_for(lambda: count(c, "succeeded") == 1, timeout=60, what="Tokyo updated")
    time.sleep(4 * BEAT)
    assert not s_hnl.offers and count(c, "queued") == 1
    Pool.objects.filter(pk=honolulu[0].pool_id).update(timezone="Asia/Tokyo")
    wait_for(lambda: state_of(c) == "completed", timeout=60, what="completed")
    assert count(c, "succeeded") == 2 and len(s_hnl.offers) == 1


def test_consent_accepted_and_declined(
    bridge,
    media,
    alice,
    fleet,
    workers,
    beat,
):
    devices = fleet(2)
    bridge.start()
    yes, no = fleet.connect(devices)
    c = run(alice, require_consent=True)
    beat()
    wait_for(lambda: count(c, "awaiting_consent") == 2, timeout=30, what="asked")
    time.sleep(3 * BEAT)
    assert not yes.offers and not no.offers  # nothing before the owner answers
    u_yes = DeviceUpdate.objects.get(campaign=c, device=devices[0])
    u_no = DeviceUpdate.objects.get(campaign=c, device=devices[1])
    update_consent(actor=alice.user, update=u_yes, accept=True)
    update_consent(actor=alice.user, update=u_no, accept=False)
    wait_for(lambda: state_of(c) == "completed", timeout=60, what="completed")
    u_no.refresh_from_db()
    assert count(c, "succeeded") == 1 and u_no.state == "skipped"
    assert len(yes.offers) == 1 and not no.offers


def test_pause_and_resume(bridge, media, alice, fleet, workers, beat):
    devices = fleet(4)
    bridge.start()
    sims = fleet.connect(devices)
    c = run(alice, rate_per_minute=2)
    beat()
    wait_for(lambda: count(c, "succeeded") == 2, timeout=60, what="first 2")
    campaign_set_state(c, "pause", actor=alice.user)
    # A minute's credit would offer two more now, but the campaign is paused.
    Campaign.objects.filter(pk=c.pk).update(stepped_at=None)
    time.sleep(4 * BEAT)
    assert count(c, "queued") == 2 and sum(1 for s in sims if s.offers) == 2
    campaign_set_state(Campaign.objects.get(pk=c.pk), "resume", actor=alice.user)
    wait_for(lambda: state_of(c) == "completed", timeout=60, what="completed")
    assert count(c, "succeeded") == 4 and all(len(s.offers) == 1 for s in sims)


def test_a_worker_killed_mid_step_and_another_finishes(
    bridge,
    media,
    alice,
    fleet,
    workers,
    beat,
    worker_env,
    tmp_path,
):
    """A worker whose step is slow (OTA_STEP_OFFER_DELAY_MS) is SIGKILLed after
    it offered two devices, inside its step: that step's offers were never
    committed, its claim lapses after CLAIM_S, and the module's workers take over.
    Every device is offered once and succeeds."""
    devices = fleet(5)
    bridge.start()
    sims = fleet.connect(devices)
    slow = WorkerProcess(
        tmp_path / "slow.log", {**worker_env, "OTA_STEP_OFFER_DELAY_MS": "1500"}, "s"
    ).start()
    try:
        slow.wait_ready()
        c = run(alice, rate_per_minute=60)
        app.send_task("ota.advance_campaigns", queue=slow.queue)
        wait_for(
            lambda: slow.log().count("ota: offering") >= 2, timeout=60, what="2 offers"
        )
        slow.proc.send_signal(signal.SIGKILL)
        slow.proc.wait(10)
        assert count(c, "offered") == 0  # uncommitted: nobody was offered yet
        assert Campaign.objects.get(pk=c.pk).claimed_until is not None
        beat()
        wait_for(lambda: state_of(c) == "completed", timeout=90, what="completed")
    finally:
        slow.stop()
    assert count(c, "succeeded") == 5
    assert all(len(s.offers) == 1 for s in sims)


def test_tenant_b_never_gets_tenant_a_campaign_or_chunks(
    bridge,
    media,
    alice,
    carol,
    fleet,
    workers,
    beat,
):
    a_devices = fleet(1)
    b_devices = fleet(1, tenant=carol.tenant)
    bridge.start()
    sim_a, sim_b = fleet.connect(a_devices + b_devices)
    c = run(alice)  # every device of tenant A
    # B's device asks for A's campaign's chunks and reports on it, from the start.
    stop = threading.Event()

    def pester():
        while not stop.wait(0.3):
            body = json.dumps({"c": c.pk, "i": 0, "n": 4})
            sim_b.c.publish(f"{sim_b.root}/ota/get", body)
            st = json.dumps({"c": c.pk, "state": "failed", "reason": "x"})
            sim_b.c.publish(f"{sim_b.root}/ota/status", st, qos=1)

    got_b = []
    sim_b.c.message_callback_add(
        f"{sim_b.root}/ota/chunk", lambda cl, u, m: got_b.append(m.payload)
    )
    t = threading.Thread(target=pester, daemon=True)
    t.start()
    beat()
    try:
        wait_for(lambda: state_of(c) == "completed", timeout=60, what="completed")
        time.sleep(1)
    finally:
        stop.set()
        t.join(5)
    assert count(c, "succeeded") == 1
    assert not DeviceUpdate.objects.filter(device=b_devices[0]).exists()
    assert not sim_b.offers and not got_b
    assert len(sim_a.offers) == 1 and sim_a.chunks == 3


def test_a_silent_device_times_out(
    bridge,
    media,
    alice,
    fleet,
    workers,
    beat,
):
    devices = fleet(1)
    bridge.start()
    (sim,) = fleet.connect(devices, behaviour="silent")
    c = run(alice, retries=0, device_timeout_s=10)
    Campaign.objects.filter(pk=c.pk).update(device_timeout_s=2)
    beat()
    wait_for(lambda: state_of(c) == "completed", timeout=60, what="completed")
    u = DeviceUpdate.objects.get(campaign=c)
    assert u.state == "timed_out" and u.reason == "no word from the device for 2 s"
    assert sim.offers  # it was offered, and said nothing
