"""Who/where a change comes from, for the audit trail, without threading `request`.

Web requests bind it in middleware; the bridge, Celery tasks and management commands
bind their own (or get the "system" default).
"""

import contextlib
import contextvars
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
