"""What one gateway socket uses, for billing.metering. Pure.

Counted per tenant: socket minutes (every started minute of an accepted connection,
the first one at CONNACK) and messages (PUBLISH packets in either direction: from
the client, its will included, and to it, retained ones included). The consumer
drains the counts into billing.metering every heartbeat and at the close, so a web
process that dies loses at most one heartbeat of messages and no started minute
(docs/gateway.md).

The dashboard's JSON sockets (devices/consumers) count their minutes with the same
class, under their own kind (`minutes_kind=DASHBOARD_SOCKET_MINUTES`).
"""

from __future__ import annotations

import math

from billing.metering import GATEWAY_MESSAGES, GATEWAY_SOCKET_MINUTES


class SocketUsage:
    """The usage of one socket not yet handed to metering."""

    def __init__(
        self,
        tenant_id: int,
        opened: float,
        *,
        minutes_kind: str = GATEWAY_SOCKET_MINUTES,
        messages_kind: str = GATEWAY_MESSAGES,
    ):
        self.tenant_id = tenant_id
        self.minutes_kind, self.messages_kind = minutes_kind, messages_kind
        self.opened = opened
        self.minutes_counted = 0
        self.messages = 0

    def message(self, n: int = 1) -> None:
        self.messages += n

    def drain(self, now: float) -> dict[tuple[int, str], int]:
        """{(tenant id, kind): n} used since the last drain (for metering.add_many),
        `now` on the clock of `opened` (monotonic)."""
        started = max(
            self.minutes_counted, math.floor(max(0.0, now - self.opened) / 60) + 1
        )
        out = {
            (self.tenant_id, self.minutes_kind): started - self.minutes_counted,
            (self.tenant_id, self.messages_kind): self.messages,
        }
        self.minutes_counted, self.messages = started, 0
        return {key: n for key, n in out.items() if n}
