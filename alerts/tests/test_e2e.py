"""Alerts end to end (issue 16, Done when): a simulated v3.1 device's water freezes.

All real: Mosquitto, the bridge (`manage.py mqtt_bridge` in its own process, the
fixture of devices/tests/test_config_push.py), PostgreSQL and Redis, and TWO Celery
worker processes (`celery -A poolsaas worker`) on the test database. Each worker also
listens on a queue of its own, so the test can make both evaluate the rules at once.

E-mail leaves the workers through Django's SMTP backend to an SMTP sink on loopback
(aiosmtpd, in this process): the locmem outbox lives in the process that sends, and
the real SMTP backend is what production uses. Webhooks go to an HTTP receiver on
loopback that checks the Poolsaas-Signature header exactly as docs/alerts.md tells a
receiver to (it does not call our own webhook_verify).

Every wait is on a condition with a bounded timeout.
"""

import datetime as dt
import email
import email.policy
import hashlib
import hmac
import itertools
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import pytest
import redis
from aiosmtpd.controller import Controller
from django.conf import settings
from django.utils import timezone

from alerts.models import Alert, AlertRule, Delivery, Kind
from alerts.services import alert_preference_set, webhook_create
from devices.models import Device
from devices.tests.test_bridge import wait_for
from devices.tests.test_config_push import (  # noqa: F401 - fixtures
    BridgeProcess,
    bridge,
    prefix,
)
from firmware.sim import VirtualDevice
from poolsaas.celery import app

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.postgres_only,
    pytest.mark.django_db(transaction=True),
]

TIMEOUT = 90.0
SECRET_OK = "whsec-ok-5Kq2"
SECRET_FLAKY = "whsec-flaky-9Zr7"
# The flaky receiver answers 500 to the first attempts of alert.fired.
FLAKY_FAILURES = 2


def verify_signature(*, secret: str, body: bytes, header: str, window: int = 300):
    """docs/alerts.md, "Signature", as a receiver would write it."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    timestamp = int(fields["t"])
    if abs(time.time() - timestamp) > window:
        return False
    mac = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(mac, fields["v1"])


class WebhookReceiver:
    """A loopback HTTP server: /ok answers 200, /flaky answers 500 to the first
    FLAKY_FAILURES attempts of each alert.fired. Records every request."""

    secrets = {"/ok": SECRET_OK, "/flaky": SECRET_FLAKY}

    def __init__(self):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                header = self.headers.get("Poolsaas-Signature", "")
                verified = verify_signature(
                    secret=receiver.secrets.get(self.path, ""),
                    body=body,
                    header=header,
                )
                event = json.loads(body)["event"] if verified else None
                with receiver.lock:
                    earlier = [
                        r
                        for r in receiver.requests
                        if r["path"] == self.path and r["event"] == event
                    ]
                    status = 200 if verified else 401
                    if (
                        self.path == "/flaky"
                        and event == "alert.fired"
                        and len(earlier) < FLAKY_FAILURES
                    ):
                        status = 500
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "event": event,
                            "verified": verified,
                            "status": status,
                            "payload": json.loads(body),
                        }
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def seen(self, path: str, event: str, status: int | None = None) -> list[dict]:
        with self.lock:
            return [
                r
                for r in self.requests
                if r["path"] == path
                and r["event"] == event
                and (status is None or r["status"] == status)
            ]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class SmtpSink:
    """An SMTP server on loopback that keeps what it is given."""

    def __init__(self):
        self.messages: list[EmailMessage] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802
                message = email.message_from_bytes(
                    envelope.content, policy=email.policy.default
                )
                message["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
                sink.messages.append(message)
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def about(self, event: str) -> list[tuple[str, EmailMessage]]:
        return sorted(
            (
                (m["X-Envelope-To"], m)
                for m in list(self.messages)
                if m["Subject"].endswith(f": {event}")
            ),
            key=lambda pair: (pair[0], pair[1]["Subject"]),
        )

    def stop(self):
        self.controller.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WorkerProcess:
    """`celery -A poolsaas worker` on the test database and Redis, consuming the
    default queue and a queue of its own."""

    def __init__(self, log_path, env: dict, name: str):
        self.log_path = log_path
        self.env = env
        self.name = name
        self.queue = f"{name}-{uuid.uuid4().hex[:8]}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "poolsaas", "worker"]
            + ["--pool=solo", "--loglevel=INFO", "-n", f"{self.queue}@%h"]
            + ["-Q", f"celery,{self.queue}"]
            + ["--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=settings.BASE_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def wait_ready(self) -> None:
        wait_for(
            lambda: " ready." in self.log() or self.proc.poll() is not None,
            timeout=120,
            what=f"the worker {self.name} to start",
        )
        assert self.proc.poll() is None, self.log()[-3000:]

    def evaluate(self) -> str:
        """Make this very worker run alerts.evaluate; returns the task id."""
        return app.send_task("alerts.evaluate", queue=self.queue).id

    def finished(self, task_id: str) -> bool:
        return f"[{task_id}] succeeded" in self.log()

    def counts(self, task: str) -> tuple[int, int]:
        """How many `task` runs it received and finished (succeeded or retried)."""
        log = self.log()
        received = len(re.findall(rf"Task {re.escape(task)}\[[^\]]+\] received", log))
        done = len(
            re.findall(
                rf"Task {re.escape(task)}\[[^\]]+\] (succeeded|retry|raised)", log
            )
        )
        return received, done

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def receiver():
    server = WebhookReceiver()
    yield server
    server.stop()


@pytest.fixture
def smtp():
    sink = SmtpSink()
    yield sink
    sink.stop()


@pytest.fixture
def workers(tmp_path, smtp):
    env = {
        **BridgeProcess(tmp_path / "unused.log").env,  # the test database's URL
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp.port),
        "BROKER_ALLOW_PRIVATE_HOSTS": "true",  # the receiver is on loopback
    }
    app.control.purge()  # tasks left in the default queue by an earlier run
    started = [
        WorkerProcess(tmp_path / f"{name}.log", env, name).start()
        for name in ("w1", "w2")
    ]
    try:
        for worker in started:
            worker.wait_ready()
        yield started
    finally:
        for worker in started:
            worker.stop()


@pytest.fixture
def sim_device(pool_a, platform_broker, prefix):  # noqa: F811 - the fixture
    device = Device.objects.create(
        tenant=pool_a.tenant,
        pool=pool_a,
        broker=platform_broker,
        device_id=f"esp32-{uuid.uuid4().hex[:6]}",
        topic_prefix=prefix,
        protocol=Device.Protocol.LEGACY,
    )
    # A v3.1 device (no freeze protection of its own) reporting every second.
    sim = VirtualDevice(
        device.device_id,
        prefix=prefix,
        legacy=True,
        interval=1,
        water=20.0,
        clean_session=True,
        reconnect_delay=(1, 2),
    )
    yield device, sim
    sim.stop()


def set_water(sim: VirtualDevice, device: Device, celsius: float) -> None:
    """Change the simulated pool's water and wait until the bridge has stored a
    reading of it."""
    with sim.lock:
        sim.pool.water = celsius
    wait_for(
        lambda: (
            abs(
                (Device.objects.get(pk=device.pk).state.get("temperature") or -99)
                - celsius
            )
            <= 0.15
        ),
        timeout=TIMEOUT,
        what=f"the bridge to store a reading near {celsius} °C",
    )


def evaluate_on_both(workers, rounds: int) -> None:
    """`rounds` times, both workers evaluate at the same moment."""
    for _ in range(rounds):
        ids = [(worker, worker.evaluate()) for worker in workers]
        wait_for(
            lambda ids=ids: all(w.finished(task_id) for w, task_id in ids),
            timeout=TIMEOUT,
            what="both workers to evaluate",
        )


def settled(workers) -> bool:
    """Nothing queued and every task a worker took has finished."""
    queued = redis.Redis.from_url(settings.REDIS_URL).llen("celery")
    return queued == 0 and all(
        received == done
        for worker in workers
        for task in ("alerts.notify", "alerts.deliver_webhook")
        for received, done in [worker.counts(task)]
    )


def test_freeze_fires_once_notifies_and_resolves_with_hysteresis(
    bridge,  # noqa: F811 - the fixture
    sim_device,
    workers,
    smtp,
    receiver,
    alice,
    adam,
    victor,
):
    device, sim = sim_device
    AlertRule.objects.create(
        tenant=device.tenant, kind=Kind.FREEZE_RISK, threshold=4.0, hysteresis=1.0
    )
    ok = webhook_create(membership=alice, url=f"{receiver.url}/ok", secret=SECRET_OK)
    flaky = webhook_create(
        membership=alice, url=f"{receiver.url}/flaky", secret=SECRET_FLAKY
    )
    bridge.start()
    sim.start().wait_connected()
    set_water(sim, device, 20.0)

    evaluate_on_both(workers, rounds=1)
    assert not Alert.objects.exists()

    # The water freezes while the pump is off: the device keeps reporting every
    # second, both workers evaluate three times; one alert, one notification.
    set_water(sim, device, 2.0)
    assert Device.objects.get(pk=device.pk).state["pump"] is False
    evaluate_on_both(workers, rounds=3)
    wait_for(
        lambda: len(receiver.seen("/flaky", "alert.fired", status=200)) == 1,
        timeout=TIMEOUT,
        what="the flaky webhook to get through on its third attempt",
    )
    wait_for(lambda: settled(workers), timeout=TIMEOUT, what="the workers to settle")

    alert = Alert.objects.get()
    assert (alert.kind, alert.state, alert.pool_id) == (
        "freeze_risk",
        "firing",
        device.pool_id,
    )
    assert alert.value == pytest.approx(2.0, abs=0.15)
    fired_mail = smtp.about("fired")
    assert [to for to, _ in fired_mail] == ["adam@acme.test", "alice@acme.test"]
    message = fired_mail[0][1]
    assert message.get_body(("html",)) is not None
    assert "Freeze risk" in message.get_body(("plain",)).get_content()
    (hook,) = receiver.seen("/ok", "alert.fired")
    assert hook["verified"] and hook["status"] == 200
    assert hook["payload"]["alert"] == str(alert.code)
    assert hook["payload"]["kind"] == "freeze_risk"
    # The failing receiver: retried with backoff, every attempt in the delivery log.
    assert [r["status"] for r in receiver.seen("/flaky", "alert.fired")] == [
        500,
        500,
        200,
    ]
    attempts = list(
        Delivery.objects.filter(alert=alert, webhook=flaky, event="fired").order_by(
            "attempt"
        )
    )
    assert [(d.attempt, d.status_code, d.ok, d.status) for d in attempts] == [
        (1, 500, False, "failed"),
        (2, 500, False, "failed"),
        (3, 200, True, "sent"),
    ]
    gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 4.5 and gaps[1] >= 9.5, gaps  # 5 s, then 10 s
    assert Delivery.objects.filter(webhook=ok, event="fired").count() == 1

    # Warmer, but not past threshold + hysteresis: it stays firing.
    set_water(sim, device, 4.5)
    evaluate_on_both(workers, rounds=2)
    assert Alert.objects.get().state == "firing"

    set_water(sim, device, 6.0)
    evaluate_on_both(workers, rounds=3)
    wait_for(
        lambda: (
            len(receiver.seen("/flaky", "alert.resolved")) == 1
            and len(receiver.seen("/ok", "alert.resolved")) == 1
            and len(smtp.about("resolved")) == 2
        ),
        timeout=TIMEOUT,
        what="the resolution to be delivered",
    )
    wait_for(lambda: settled(workers), timeout=TIMEOUT, what="the workers to settle")

    alert.refresh_from_db()
    assert alert.state == "resolved" and alert.resolved_at is not None
    # Never twice, with two workers evaluating side by side.
    assert Alert.objects.count() == 1
    assert [to for to, _ in smtp.about("resolved")] == [
        "adam@acme.test",
        "alice@acme.test",
    ]
    assert len(smtp.messages) == 4  # victor (viewer) is not e-mailed
    assert all(r["verified"] for r in receiver.requests)
    assert len(receiver.seen("/ok", "alert.fired")) == 1
    assert len(receiver.seen("/ok", "alert.resolved")) == 1
    assert sorted(
        Delivery.objects.filter(channel="email").values_list("event", "recipient")
    ) == [
        ("fired", "adam@acme.test"),
        ("fired", "alice@acme.test"),
        ("resolved", "adam@acme.test"),
        ("resolved", "alice@acme.test"),
    ]
    notified = sum(worker.counts("alerts.notify")[1] for worker in workers)
    assert notified == 2


# Far from UTC, so that quiet hours read in UTC (or the server's zone) would miss.
POOL_ZONE = "Pacific/Kiritimati"  # UTC+14
# How long the quiet hours still last when the water drops: long enough for one
# evaluation and the notify tasks under load, short enough to wait for the end.
QUIET_LEFT = dt.timedelta(seconds=40)


def test_quiet_hours_hold_a_non_safety_alert_and_let_freeze_through(
    bridge,  # noqa: F811 - the fixture
    sim_device,
    workers,
    smtp,
    alice,
    adam,
):
    """Alice is in her quiet hours, read in the pool's zone: the water-below e-mail
    is held and sent when they end, marked as held; the freeze risk (a safety
    alert, safety_ignores_quiet on) reaches her at once. Adam has no preferences
    and gets both at once."""
    device, sim = sim_device
    pool = device.pool
    pool.timezone = POOL_ZONE
    pool.save(update_fields=["timezone"])
    for kind, threshold in ((Kind.FREEZE_RISK, 4.0), (Kind.WATER_BELOW, 10.0)):
        AlertRule.objects.create(
            tenant=device.tenant, kind=kind, threshold=threshold, hysteresis=1.0
        )
    bridge.start()
    sim.start().wait_connected()
    set_water(sim, device, 2.0)
    assert Device.objects.get(pk=device.pk).state["pump"] is False

    local_now = timezone.now().astimezone(ZoneInfo(POOL_ZONE))
    quiet_end = (local_now + QUIET_LEFT).time().replace(microsecond=0)
    alert_preference_set(
        membership=alice,
        quiet_start=(local_now - dt.timedelta(hours=1)).time().replace(microsecond=0),
        quiet_end=quiet_end,
        safety_ignores_quiet=True,
    )
    evaluate_on_both(workers, rounds=1)
    wait_for(
        lambda: Delivery.objects.filter(channel="email").count() == 4,
        timeout=TIMEOUT,
        what="the four e-mail deliveries of the two alerts",
    )
    wait_for(lambda: settled(workers), timeout=TIMEOUT, what="the workers to settle")

    def mails(label: str) -> list[str]:
        return sorted(to for to, m in smtp.about("fired") if label in m["Subject"])

    held = Delivery.objects.get(status="held")
    assert (held.recipient, held.alert.kind, held.event) == (
        "alice@acme.test",
        "water_below",
        "fired",
    )
    assert timezone.now() < held.held_until, "the quiet hours ended too early"
    local_end = held.held_until.astimezone(ZoneInfo(POOL_ZONE))
    assert local_end.time() == quiet_end
    assert mails("Freeze risk") == ["adam@acme.test", "alice@acme.test"]
    assert mails("Water below") == ["adam@acme.test"]

    # After the quiet hours, the next evaluation sends what was held, once.
    def released() -> bool:
        if timezone.now() >= held.held_until:
            evaluate_on_both(workers, rounds=1)
        return mails("Water below") == ["adam@acme.test", "alice@acme.test"]

    wait_for(released, timeout=TIMEOUT, what="the held e-mail after quiet hours")
    evaluate_on_both(workers, rounds=2)
    assert mails("Water below") == ["adam@acme.test", "alice@acme.test"]
    (late,) = [
        m
        for to, m in smtp.about("fired")
        if to == "alice@acme.test" and "Water below" in m["Subject"]
    ]
    assert "Held during your quiet hours" in late.get_body(("plain",)).get_content()
    held.refresh_from_db()
    assert held.status == "sent" and held.at >= held.held_until
    assert Alert.objects.filter(state="firing").count() == 2
