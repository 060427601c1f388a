"""WebSocket consumers of the live dashboard.

PoolConsumer (/ws/pools/<pool code>/, pool.py) feeds one pool's page: a snapshot on
connect, then the pool group's deltas; commands sent on it go through command_send like
every other entry point. TenantConsumer (/ws/tenant/, tenant.py) feeds the pools
overview. What both share (the handshake, the rate limit, the access re-checks) is in
base.py.

Authentication: the browser's session cookie, or (integrators) a simplejwt access token
in an `Authorization: Bearer` header or in the first message {"type": "auth", "token"},
both resolved by tenants.auth. Never from the URL, which ends up in logs. Authorisation:
the access layer, on connect and again whenever the user's access changes (user group
"access.changed").

Close codes: 4400 bad message, 4401 not authenticated (or token expired), 4403 not
allowed (or no longer: removed, role lowered, tenant suspended), 4404 no such pool
(missing and foreign alike), 4408 no auth message in time.

Client messages are JSON text of at most MAX_MESSAGE_CHARS, rate-limited per socket;
anything else is answered with an error and never ends the socket. Commands are audited
with source "websocket" and the client's address and user agent.
"""

from devices.consumers.pool import PoolConsumer
from devices.consumers.tenant import TenantConsumer

__all__ = ["PoolConsumer", "TenantConsumer"]
