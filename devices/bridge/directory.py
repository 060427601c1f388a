"""The bridge's directory: which device each topic speaks for, rebuilt every
`refresh_interval` from the access layer's `devices_for_bridge` rows and never
queried per message. Every room gets its messages with the device resolved here, so
no room can be spoken to for a device of another broker or tenant.
"""

import datetime as dt
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

from poolsaas.live.groups import pool_group, tenant_group

LEGACY = "v3.1"
DEFAULT_INTERVAL_S = 60
# New devices whose stored state one query reads (a start-up reads them all).
STATE_PAGE = 2000

# The whole second last formatted and its text without the offset: the worker formats
# a time per telemetry message, mostly within the same second (the profile in
# docs/capacity.md: a tenth of its time went to datetime here).
_iso_second: tuple[int, str] = (-1, "")


def iso(ts: float) -> str:
    """`datetime.fromtimestamp(ts, UTC).isoformat()`, the same text (microseconds
    rounded half to even, none shown when zero), without building a datetime."""
    global _iso_second
    whole = math.floor(ts)
    micro = round((ts - whole) * 1e6)
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    cached = _iso_second  # one read: another thread may replace it meanwhile
    if cached[0] != whole:
        text = dt.datetime.fromtimestamp(whole, dt.UTC).isoformat()
        cached = _iso_second = (whole, text.removesuffix("+00:00"))
    if micro:
        return f"{cached[1]}.{micro:06d}+00:00"
    return f"{cached[1]}+00:00"


@dataclass(slots=True)
class DeviceInfo:
    """What the bridge knows about one device; `state` is its last known state."""

    pk: int
    broker_id: int
    device_id: str
    tenant_id: int
    tenant_hex: str
    pool_id: int | None
    pool_hex: str | None
    protocol: str
    silence_s: float
    online: bool = False
    last_seen: float = 0.0
    # Last message that was not a retained replay: the device spoke on the connection.
    last_live: float = 0.0
    # When the bridge last saw it come online (the config sweep republishes then).
    online_since: float = 0.0
    state: dict = field(default_factory=dict)
    # Its live groups (poolsaas.live.groups), named once rather than per message;
    # derived from the hex codes when not given (the directory shares a tenant's).
    pool_group: str | None = None
    tenant_group: str | None = None

    def __post_init__(self) -> None:
        if self.pool_group is None and self.pool_hex:
            self.pool_group = pool_group(self.pool_hex)
        if self.tenant_group is None and self.tenant_hex:
            self.tenant_group = tenant_group(self.tenant_hex)


def silence_seconds(
    *, protocol_name: str, settings: dict | None, factor: float
) -> float:
    """No message for this long means offline: `factor` telemetry intervals."""
    interval = DEFAULT_INTERVAL_S
    if protocol_name != LEGACY and isinstance(settings, dict):
        value = settings.get("telemetry_interval")
        if type(value) is int and 10 <= value <= 3600:
            interval = value
    return interval * factor


class Directory:
    """topic -> device for every broker the bridge serves; rebuilt, never queried."""

    def __init__(self) -> None:
        # broker id -> [(prefix + "/", {device id: DeviceInfo})], longest prefix first
        self.routes: dict[int, list[tuple[str, dict[str, DeviceInfo]]]] = {}
        self.by_pk: dict[int, DeviceInfo] = {}

    def prefixes(self, broker_id: int) -> list[str]:
        return [head[:-1] for head, _ in self.routes.get(broker_id, [])]

    def lookup(self, broker_id: int, topic: str) -> tuple[DeviceInfo | None, str]:
        """(device, suffix); device None when the topic names no device of ours."""
        for head, devices in self.routes.get(broker_id, ()):
            if topic.startswith(head):
                rest = topic[len(head) :]
                i = rest.find("/")
                if i <= 0:
                    return None, ""
                return devices.get(rest[:i]), rest[i + 1 :]
        return None, ""

    @classmethod
    def build(
        cls,
        rows,
        *,
        previous: "Directory | None" = None,
        silence_factor: float = 3.0,
        states=None,
    ) -> "Directory":
        """From devices_for_bridge() rows. A known device (same pk, tenant and pool)
        is the same DeviceInfo, updated in place: it keeps the bridge's own state,
        which is fresher than the database between two writes, and a rebuild
        allocates nothing for it. A new device's state is the row's "state" if the
        row has one, else read with `states(pks=...)` (devices.selectors.
        device_states), in pages. A tenant's hex and group name are one string for
        all its devices."""
        new = cls()
        now = time.time()
        grouped: dict[int, dict[str, dict[str, DeviceInfo]]] = defaultdict(dict)
        old = previous.by_pk if previous is not None else {}
        tenants: dict[int, tuple[str, str]] = {}
        unread: list[DeviceInfo] = []
        for row in rows:
            tenant_id, pool_code = row["tenant_id"], row["pool__code"]
            pool_hex = pool_code.hex if pool_code else None
            silence_s = silence_seconds(
                protocol_name=row["protocol"],
                settings=row["pool__settings"],
                factor=silence_factor,
            )
            info = old.get(row["pk"])
            if (
                info is not None
                and info.tenant_id == tenant_id
                and info.pool_hex == pool_hex
            ):
                info.broker_id, info.device_id = row["broker_id"], row["device_id"]
                info.pool_id, info.protocol = row["pool_id"], row["protocol"]
                info.silence_s = silence_s
                # What this bridge saw recently beats the database; otherwise take
                # the database's flag (another bridge or the silence sweep set it).
                if not now - info.last_seen < silence_s:
                    info.online = row["online"]
                tenants.setdefault(tenant_id, (info.tenant_hex, info.tenant_group))
            else:
                known = info
                shared = tenants.get(tenant_id)
                if shared is None:
                    hex_ = row["tenant__code"].hex
                    shared = tenants[tenant_id] = (hex_, tenant_group(hex_))
                info = DeviceInfo(
                    pk=row["pk"],
                    broker_id=row["broker_id"],
                    device_id=row["device_id"],
                    tenant_id=tenant_id,
                    tenant_hex=shared[0],
                    tenant_group=shared[1],
                    pool_id=row["pool_id"],
                    pool_hex=pool_hex,
                    protocol=row["protocol"],
                    silence_s=silence_s,
                    online=row["online"],
                )
                if known is not None:
                    # Moved to another pool or tenant: a new entry, the same device.
                    info.state, info.last_seen = known.state, known.last_seen
                    info.last_live = known.last_live
                    info.online_since = known.online_since
                    if now - known.last_seen < info.silence_s:
                        info.online = known.online
                elif "state" in row:
                    info.state = dict(row["state"] or {})
                else:
                    unread.append(info)
            grouped[row["broker_id"]].setdefault(row["topic_prefix"], {})[
                row["device_id"]
            ] = info
            new.by_pk[info.pk] = info
        if unread:
            if states is None:
                from devices.selectors import device_states as states
            for at in range(0, len(unread), STATE_PAGE):
                page = unread[at : at + STATE_PAGE]
                found = states(pks=[info.pk for info in page])
                for info in page:
                    info.state = dict(found.get(info.pk) or {})
        for broker_id, prefixes in grouped.items():
            new.routes[broker_id] = sorted(
                ((prefix + "/", devices) for prefix, devices in prefixes.items()),
                key=lambda item: -len(item[0]),
            )
        return new
