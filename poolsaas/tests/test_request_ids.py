"""Log lines carry a request id (settings.LOGGING, poolsaas.request_context): a web
request's, a Celery task's id, the command the bridge is publishing."""

import logging

from django.test import override_settings

from poolsaas.request_context import (
    RequestContext,
    RequestIdFilter,
    bind_request_context,
    command_log_context,
    task_bind,
    task_unbind,
)


def record() -> logging.LogRecord:
    line = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    RequestIdFilter().filter(line)
    return line


def test_a_line_outside_any_context_says_dash():
    assert record().request_id == "-"


def test_a_bound_request_names_its_id():
    with bind_request_context(RequestContext(request_id="abc12345")):
        assert record().request_id == "abc12345"
    assert record().request_id == "-"


def test_the_bridge_names_the_command_and_nothing_without_one():
    with command_log_context("0f" * 16):
        assert record().request_id == "cmd-" + "0f" * 16
    with command_log_context(None):
        assert record().request_id == "-"


def test_a_task_names_its_id_until_it_ends():
    task_bind("task-id-1")
    try:
        assert record().request_id == "task-id-1"
    finally:
        task_unbind("task-id-1")
    assert record().request_id == "-"


@override_settings(METRICS_TOKEN="")
def test_the_web_log_format_shows_the_request_id(client, caplog):
    from django.conf import settings

    assert "%(request_id)s" in settings.LOGGING["formatters"]["plain"]["format"]
    response = client.get("/api/health", HTTP_X_REQUEST_ID="req-0123456789")
    assert response["X-Request-ID"] == "req-0123456789"


def test_a_task_run_inline_keeps_the_request_it_runs_in():
    with bind_request_context(RequestContext(request_id="web-req-123")):
        task_bind("task-id-2")
        assert record().request_id == "web-req-123"
        task_unbind("task-id-2")
        assert record().request_id == "web-req-123"
