"""A failed alert e-mail is retried like a webhook: a new Delivery row per attempt,
5 s, 10 s, 20 s ... apart (capped), at most EMAIL_MAX_ATTEMPTS, then it stops;
each attempt is logged. The mail server here is Django's locmem backend wrapped
in one that refuses the first N messages (a third party we cannot run)."""

import logging

import pytest
from django.core import mail
from django.core.mail.backends.locmem import EmailBackend

from alerts import tasks
from alerts.models import Alert, Delivery
from alerts.services import (
    EMAIL_MAX_ATTEMPTS,
    alert_email,
    alert_fire,
    alert_preference_set,
    alerts_release_held,
    delivery_backoff,
    email_retry,
)
from alerts.tests.test_alerts import NOW, freeze_rule  # noqa: F401 - fixture


class FlakyBackend(EmailBackend):
    """Refuses the first `failures` messages (SMTP 451), then delivers."""

    failures = 0

    def send_messages(self, messages):
        if type(self).failures > 0:
            type(self).failures -= 1
            raise ConnectionRefusedError("451 try again later")
        return super().send_messages(messages)


@pytest.fixture
def flaky(settings):
    settings.EMAIL_BACKEND = "alerts.tests.test_email_retries.FlakyBackend"
    yield FlakyBackend
    FlakyBackend.failures = 0


@pytest.fixture
def alert(freeze_rule, device_a, alice):  # noqa: F811 - the fixture
    alert_preference_set(membership=alice)  # alice only: one recipient
    return alert_fire(pool=device_a.pool, rule=freeze_rule, value=2.0, now=NOW).alert


def _attempts(alert):
    return list(
        Delivery.objects.filter(alert=alert, channel="email")
        .order_by("attempt")
        .values_list("attempt", "status", "retried")
    )


def test_a_failed_email_is_retried_with_backoff_until_it_goes_through(
    alert, adam, flaky, django_capture_on_commit_callbacks, monkeypatch, caplog
):
    adam_pref = alert_preference_set(membership=adam, channel="none")
    assert adam_pref.channel == "none"
    flaky.failures = 2
    scheduled = []
    monkeypatch.setattr(
        tasks.retry_email,
        "apply_async",
        lambda args, countdown: scheduled.append((args[0], countdown)),
    )
    caplog.set_level(logging.INFO, logger="alerts.services.deliveries")
    # The first attempt, in alerts.notify; each failure schedules the next.
    with django_capture_on_commit_callbacks(execute=True):
        (first,) = alert_email(alert=alert, event="fired")
    assert (first.attempt, first.status, first.ok) == (1, "failed", False)
    assert "451" in first.error
    while scheduled:
        pk, _ = scheduled[-1]
        with django_capture_on_commit_callbacks(execute=True):
            retry = email_retry(delivery_pk=pk)
        if retry.ok:
            break
    assert [countdown for _, countdown in scheduled] == [5, 10]
    assert _attempts(alert) == [
        (1, "failed", True),
        (2, "failed", True),
        (3, "sent", False),
    ]
    assert [m.to for m in mail.outbox] == [["alice@acme.test"]]
    # One log line per attempt, the failures as warnings.
    lines = [r for r in caplog.records if "e-mail" in r.getMessage()]
    assert [r.levelname for r in lines] == ["WARNING", "WARNING", "INFO"]
    assert "attempt 3: sent" in lines[-1].getMessage()


def test_retries_stop_at_the_cap(alert, flaky, django_capture_on_commit_callbacks):
    """Through the task as a worker runs it (each retry a task of its own)."""
    flaky.failures = 100
    pending = []

    def apply_async(args, countdown):
        pending.append(args[0])

    tasks.retry_email.apply_async, original = apply_async, tasks.retry_email.apply_async
    try:
        with django_capture_on_commit_callbacks(execute=True):
            alert_email(alert=alert, event="fired")
        while pending:
            with django_capture_on_commit_callbacks(execute=True):
                tasks.retry_email.apply(args=(pending.pop(),))
    finally:
        tasks.retry_email.apply_async = original
    attempts = _attempts(alert)
    assert [a for a, _, _ in attempts] == list(range(1, EMAIL_MAX_ATTEMPTS + 1))
    assert {s for _, s, _ in attempts} == {"failed"}
    assert mail.outbox == []
    assert [delivery_backoff(n) for n in range(9)] == [
        5,
        10,
        20,
        40,
        80,
        160,
        320,
        600,
        600,
    ]


def test_a_retry_run_twice_sends_once(alert, flaky, django_capture_on_commit_callbacks):
    flaky.failures = 1
    (first,) = alert_email(alert=alert, event="fired")  # callbacks not run
    assert email_retry(delivery_pk=first.pk).ok
    assert email_retry(delivery_pk=first.pk) is None
    assert len(mail.outbox) == 1 and len(_attempts(alert)) == 2


def test_a_held_email_that_fails_on_release_is_retried(
    alert, alice, flaky, django_capture_on_commit_callbacks, monkeypatch
):
    import datetime as dt

    alert_preference_set(
        membership=alice,
        quiet_start=dt.time(9, 0),
        quiet_end=dt.time(16, 0),
        safety_ignores_quiet=False,
    )
    (held,) = alert_email(alert=alert, event="fired", now=NOW)  # 12:00 UTC
    assert held.status == "held"
    flaky.failures = 1
    scheduled = []
    monkeypatch.setattr(
        tasks.retry_email,
        "apply_async",
        lambda args, countdown: scheduled.append(args[0]),
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert alerts_release_held(now=held.held_until) == 0
    assert scheduled == [held.pk]
    retry = email_retry(delivery_pk=held.pk)
    assert (retry.ok, retry.attempt, retry.held_until) == (True, 2, held.held_until)
    assert "Held during your quiet hours" in mail.outbox[0].body
    assert Alert.objects.count() == 1
