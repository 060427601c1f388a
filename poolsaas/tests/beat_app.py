"""The Celery app of poolsaas (its settings: RedBeat with Redis) with a schedule for
poolsaas/tests/test_beat.py: one entry every second, sent to a queue of the test's
own, under a key prefix of its own, with a short lock."""

import os

from poolsaas.celery import app

app.conf.beat_schedule = {
    "beat-test": {
        "task": "poolsaas.tests.beat_tick",
        "schedule": 1.0,
        "options": {"queue": os.environ["BEAT_TEST_QUEUE"]},
    }
}
app.conf.redbeat_key_prefix = os.environ["BEAT_TEST_PREFIX"]
app.conf.redbeat_lock_timeout = 3
app.conf.beat_max_loop_interval = 1
