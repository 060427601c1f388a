"""Who/where a change comes from, for the audit trail, without threading `request`.

Web requests bind it in middleware; the bridge, Celery tasks and management commands
bind their own (or get the "system" default). Log lines carry the request id
(RequestIdFilter): a web request's, a Celery task's id, or `cmd-<id>` for the bridge's
work on a command.
"""

import contextlib
import contextvars
import logging
import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestContext:
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    ip: str | None = None
    user_agent: str = ""
    source: str = "web"


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "poolsaas_request_context", default=None
)


def current_request_context() -> RequestContext:
    context = _current.get()
    return context if context is not None else RequestContext(source="system")


@contextlib.contextmanager
def bind_request_context(context: RequestContext):
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def command_log_context(command_id: object) -> contextlib.AbstractContextManager:
    """The bridge's work on one command: its log lines (and audit events) carry the
    command's id as their request id. Nothing bound when there is no id."""
    if not isinstance(command_id, str) or not command_id:
        return contextlib.nullcontext()
    return bind_request_context(
        RequestContext(request_id=f"cmd-{command_id[:40]}", source="bridge")
    )


class RequestIdFilter(logging.Filter):
    """Puts the request id (or "-") on every log record, for the log format's
    `%(request_id)s` (settings.LOGGING): a web request's, a Celery task's id, or the
    command the bridge is publishing."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _current.get()
        record.request_id = context.request_id if context is not None else "-"
        return True


_task_tokens: dict[str, contextvars.Token] = {}


def task_bind(task_id: str | None) -> None:
    """Celery's task_prerun (poolsaas.celery): the task's id is the request id, in a
    worker. A task run inline (no Redis) keeps the request's context it runs in."""
    if task_id and _current.get() is None:
        _task_tokens[task_id] = _current.set(
            RequestContext(request_id=task_id, source="celery")
        )


def task_unbind(task_id: str | None) -> None:
    token = _task_tokens.pop(task_id, None) if task_id else None
    if token is not None:
        try:
            _current.reset(token)
        except ValueError:  # set in another context (an eager task): let it be
            _current.set(None)
