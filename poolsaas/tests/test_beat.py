"""One beat, however many are started (issue 17, point 4): two real `celery beat`
processes with the project's settings (RedBeat, its lock in Redis) schedule a
once-a-second entry once a second, not twice; kill -9 the one holding the lock and
the other takes over. The embedded default (no Redis) keeps Celery's own scheduler.

The entry goes to a queue of the test's own with no worker: what beat sent is the
length of that Redis list, read every 20 ms.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from django.conf import settings

from poolsaas.tests.test_settings import manage

pytestmark = [pytest.mark.redis, pytest.mark.slow]

BASE_DIR = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0


def wait_for(predicate, timeout=TIMEOUT, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def beats(tmp_path):
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    queue = f"beat-test-{uuid.uuid4().hex[:8]}"
    prefix = f"redbeat-test-{uuid.uuid4().hex[:8]}:"
    env = {
        **os.environ,
        "DEBUG": "true",
        "BEAT_TEST_QUEUE": queue,
        "BEAT_TEST_PREFIX": prefix,
        "PYTHONUNBUFFERED": "1",
    }
    running = []

    def start() -> subprocess.Popen:
        log = open(tmp_path / f"beat-{len(running)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "poolsaas.tests.beat_app"]
            + ["beat", "--loglevel=DEBUG"],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        proc.log = tmp_path / f"beat-{len(running)}.log"
        running.append(proc)
        return proc

    client = redis.Redis.from_url(settings.REDIS_URL)
    start.sent = lambda: client.llen(queue)
    yield start
    for proc in running:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    client.delete(queue, *client.keys(f"{prefix}*"))
    client.close()


def arrivals(sent, count: int) -> list[float]:
    """When each of the next `count` sends arrived (monotonic, 20 ms resolution)."""
    seen, times = sent(), []
    deadline = time.monotonic() + TIMEOUT
    while len(times) < count and time.monotonic() < deadline:
        now = sent()
        times += [time.monotonic()] * (now - seen)
        seen = now
        time.sleep(0.02)
    assert len(times) >= count, f"only {len(times)} sends"
    return times[:count]


def test_two_beats_schedule_once_per_period_and_the_second_takes_over(beats):
    first = beats()
    wait_for(lambda: beats.sent() >= 1, what="the first beat to send")
    second = beats()
    # The second is up and waiting for the lock.
    wait_for(lambda: b"Acquiring lock" in second.log.read_bytes(), what="second")
    times = arrivals(beats.sent, 8)
    # Eight sends of a once-a-second entry span seven periods; two beats, each
    # sending it, would fit eight into about three and a half.
    assert times[-1] - times[0] > 5.0, [round(t - times[0], 2) for t in times]

    first.kill()
    first.wait(10)
    wait_for(lambda: b"Sending due task" in second.log.read_bytes(), what="takeover")
    times = arrivals(beats.sent, 4)
    assert times[-1] - times[0] > 2.0


def test_the_embedded_default_keeps_celerys_own_scheduler(tmp_path):
    """Without Redis there is no RedBeat: `make run`'s beat uses its file."""
    out = manage(
        "shell",
        "-c",
        "from poolsaas.celery import app; print(app.conf.beat_scheduler)",
        env={"DEBUG": "true"},
        tmp_path=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "celery.beat:PersistentScheduler"
