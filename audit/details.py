"""Audit events in words, for the audit page: a label per action and one sentence of
details per action, built from the event's stored data.

Plain text only: the template escapes it, so a name or e-mail a user typed can never
become markup. An action without a renderer here (or data in a shape a renderer does
not expect, from an older release) falls back to "key: value" pairs, so a new action
is readable before anyone writes its sentence. The CSV export keeps the raw data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MAX_TEXT = 400

ACTION_LABELS = {
    "login.succeeded": "Logged in",
    "login.failed": "Login failed",
    "logout": "Logged out",
    "password.reset": "Password reset",
    "invitation.created": "Invitation sent",
    "invitation.revoked": "Invitation revoked",
    "invitation.accepted": "Invitation accepted",
    "membership.role_changed": "Role changed",
    "membership.removed": "Member removed",
    "tenant.suspended": "Account suspended",
    "tenant.reactivated": "Account reactivated",
    "encryption_keys.rotated": "Encryption keys rotated",
    "command.sent": "Command",
    "device.added": "Device added",
    "device.removed": "Device removed",
    "device.replaced": "Device replaced",
    "programs.updated": "Programs changed",
    "pool.created": "Pool created",
    "pool.updated": "Pool settings changed",
    "broker.created": "Broker added",
    "broker.updated": "Broker changed",
    "broker.secret_changed": "Broker credentials changed",
    "broker.deleted": "Broker deleted",
    "admin.created": "Staff added (admin)",
    "admin.changed": "Staff changed (admin)",
    "admin.deleted": "Staff deleted (admin)",
}


@dataclass(frozen=True)
class PoolNames:
    name: str
    mode1: str = "Mode 1"
    mode2: str = "Mode 2"

    def mode(self, value: Any) -> str:
        return {1: self.mode1, 2: self.mode2}.get(_int_or_none(value), f"mode {value}")


@dataclass(frozen=True)
class Names:
    """What the sentences may name besides the event itself: the tenant's pools (by
    code, with their valve mode names) and brokers (by code), so that details say
    "Villa Azul" rather than a hexadecimal code."""

    pools: Mapping[str, PoolNames] = field(default_factory=dict)
    brokers: Mapping[str, str] = field(default_factory=dict)

    def pool(self, code: Any) -> PoolNames | None:
        return self.pools.get(_hex(code))


NO_NAMES = Names()


def action_label(action: str) -> str:
    """ "programs.updated" -> "Programs changed"; unknown ones are made readable."""
    if action in ACTION_LABELS:
        return ACTION_LABELS[action]
    words = action.replace(".", " ").replace("_", " ").strip()
    return _cap(words) if words else "—"


def event_details(event, *, names: Names = NO_NAMES) -> str:
    """One sentence about what happened, or "" when the action says it all."""
    data = event.data if isinstance(event.data, dict) else {}
    renderer = RENDERERS.get(event.action)
    if renderer is not None:
        try:
            text = renderer(data, event, names)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            text = _fallback(data)
    else:
        text = _fallback(data)
    return _clip(text)


# --- helpers -------------------------------------------------------------------------


def _hex(code: Any) -> str:
    return str(code or "").replace("-", "").lower()


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _join(items: Iterable[Any]) -> str:
    return ", ".join(str(item) for item in items)


def _words(name: str) -> str:
    return str(name).replace("_", " ")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _role(role: Any) -> str:
    return str(role or "?").capitalize()


def _plain(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return _join(_plain(item) for item in value) or "none"
    if isinstance(value, dict):
        return "(" + _pairs(value) + ")"
    return str(value)


def _pairs(data: Mapping[str, Any]) -> str:
    # Sorted: PostgreSQL's jsonb does not keep the order the keys were written in.
    return "; ".join(
        f"{_words(key)}: {_plain(value)}" for key, value in sorted(data.items())
    )


def _fallback(data: Mapping[str, Any]) -> str:
    return _pairs(data) if data else ""


def _pool_part(names: Names, code: Any) -> str:
    pool = names.pool(code)
    return f" in {pool.name}" if pool else ""


def _sentences(*parts: str) -> str:
    return " ".join(part.rstrip(".") + "." for part in parts if part)


# --- one renderer per action ---------------------------------------------------------


def _login_failed(data, event, names) -> str:
    return f"Reason: {data['reason']}" if data.get("reason") else ""


def _nothing(data, event, names) -> str:
    return _fallback(data)


def _invitation_created(data, event, names) -> str:
    return f"{data['email']} invited as {_role(data['role'])}"


def _invitation_revoked(data, event, names) -> str:
    return f"Invitation for {data['email']} withdrawn"


def _invitation_accepted(data, event, names) -> str:
    joined = f"Joined as {_role(data['role'])}"
    return joined + (" with a new account" if data.get("new_member") else "")


def _role_changed(data, event, names) -> str:
    return f"{data['user']}: {_role(data['from'])} → {_role(data['to'])}"


def _member_removed(data, event, names) -> str:
    left = data["user"] == event.actor_label
    return f"{data['user']} ({_role(data['role'])}) " + (
        "left the team" if left else "removed from the team"
    )


def _tenant_status(data, event, names) -> str:
    return f"Status {data['from']} → {data['to']}"


def _keys_rotated(data, event, names) -> str:
    rows = data["rows"]
    total = sum(int(count) for count in rows.values())
    per_model = _join(
        f"{model.rsplit('.', 1)[-1]} {count}" for model, count in rows.items()
    )
    return f"{total} secret(s) re-encrypted with the newest key" + (
        f" ({per_model})" if per_model else ""
    )


def _duration(seconds: Any) -> str:
    seconds = int(seconds)
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _command_what(op: str, value: Any, pool: PoolNames | None) -> str:
    modes = pool or PoolNames(name="")
    if op == "pump":
        return {"ON": "Pump on", "OFF": "Pump off", "TOGGLE": "Pump toggled"}.get(
            str(value).upper(), f"Pump {value}"
        )
    if op == "valve":
        if value == "TOGGLE":
            return "Valve mode toggled"
        return f"Valve to {modes.mode(value)}"
    if op == "timer":
        if not int(value["duration"]):
            return "Timer stopped"
        return f"Timer {_duration(value['duration'])} in {modes.mode(value['mode'])}"
    return {
        "wifi_clear": "Wi-Fi settings cleared",
        "override_clear": "Programs resumed",
        "reboot": "Reboot",
    }.get(op, _words(op).capitalize())


STATUS_WORDS = {
    "pending": "pending",
    "sent": "sent",
    "done": "done",
    "failed": "failed",
    "timed_out": "timed out",
}


def _command(data, event, names) -> str:
    pool = names.pool(data.get("pool"))
    what = _command_what(data["op"], data.get("value"), pool)
    where = (
        f"{pool.name}, device {data['device']}" if pool else f"device {data['device']}"
    )
    via = f" (via {data['source']})" if data.get("source") else ""
    status = STATUS_WORDS.get(data.get("status"), data.get("status") or "")
    outcome = f": {status}" if status else ""
    error = f" — {data['error']}" if data.get("error") else ""
    return f"{what} on {where}{via}{outcome}{error}"


def _credentials(data) -> str:
    return {"issued": "its own MQTT password issued", "none": "no MQTT password"}.get(
        data.get("credentials"), ""
    )


def _broker_part(names: Names, code: Any) -> str:
    broker = names.brokers.get(_hex(code))
    return f" on broker {broker}" if broker else ""


def _device_added(data, event, names) -> str:
    return _sentences(
        f"{data['device_id']} ({data['protocol']}){_pool_part(names, data.get('pool'))}"
        f"{_broker_part(names, data.get('broker'))}",
        _cap(_credentials(data)),
    )


def _device_removed(data, event, names) -> str:
    pool = names.pool(data.get("pool"))
    return f"{data['device_id']} ({data['protocol']})" + (
        f" removed from {pool.name}" if pool else ""
    )


def _device_replaced(data, event, names) -> str:
    return _sentences(
        f"{data['old_device_id']} replaced by {data['device_id']} ({data['protocol']})"
        f"{_pool_part(names, data.get('pool'))}",
        _cap(_credentials(data)),
    )


def _window(day: Mapping[str, Any], pool: PoolNames) -> str:
    return f"{day['start']}–{day['stop']} {pool.mode(day['mode'])}"


def _program_summary(program: Mapping[str, Any], pool: PoolNames) -> str:
    """Runs of alike days: "Mon–Fri 08:00–10:00 Cascada, Sat 09:00–12:00 Jets"."""
    if not program.get("enabled"):
        return "off"
    days = list(program["days"])
    runs: list[str] = []
    index = 0
    while index < len(days):
        end = index
        while end + 1 < len(days) and days[end + 1] == days[index]:
            end += 1
        if days[index]:
            span = WEEKDAYS[index] + (f"–{WEEKDAYS[end]}" if end > index else "")
            runs.append(f"{span} {_window(days[index], pool)}")
        index = end + 1
    return _join(runs) if runs else "on, no day set"


def _programs(data, event, names) -> str:
    pool = names.pool(event.target_code) or PoolNames(name="")
    before = {p["slot"]: p for p in data.get("before") or []}
    after = {p["slot"]: p for p in data.get("after") or []}
    changes = []
    for slot in sorted(set(before) | set(after)):
        if slot not in after:
            changes.append(f"Program {slot} deleted")
        elif before.get(slot) != after[slot]:
            changes.append(f"Program {slot}: {_program_summary(after[slot], pool)}")
    return _sentences(
        f"Version {data['version']}" if data.get("version") is not None else "",
        *(changes or ["No program changed"]),
    )


POOL_FIELDS = {
    "name": "name",
    "timezone": "time zone",
    "mode1_name": "mode 1 name",
    "mode2_name": "mode 2 name",
}


def _pool_created(data, event, names) -> str:
    return f"Time zone {data['timezone']}" if data.get("timezone") else ""


def _pool_updated(data, event, names) -> str:
    return "; ".join(
        f"{POOL_FIELDS.get(name, _words(name)).capitalize()}: "
        f"{change['from'] or '—'} → {change['to'] or '—'}"
        for name, change in data["changes"].items()
    )


def _broker_created(data, event, names) -> str:
    secrets = data.get("secrets_set") or []
    return _sentences(
        f"{data['host']}:{data['port']}, TLS {'on' if data.get('tls') else 'off'}",
        f"{' and '.join(secrets).capitalize()} set" if secrets else "No credentials",
    )


def _broker_updated(data, event, names) -> str:
    return "Changed: " + _join(_words(name) for name in data["fields"])


def _broker_secret_changed(data, event, names) -> str:
    cleared = set(data.get("cleared") or [])
    parts = [
        f"{name.capitalize()} {'cleared' if name in cleared else 'changed'}"
        for name in data["fields"]
    ]
    return _join(parts)


def _broker_deleted(data, event, names) -> str:
    return f"{data['host']}:{data['port']}"


def _admin(data, event, names) -> str:
    model = str(data.get("model", "")).rsplit(".", 1)[-1]
    fields = data.get("fields") or []
    inlines = data.get("inlines") or []
    parts = [f"{model} in the staff admin" if model else "In the staff admin"]
    if fields:
        parts.append("fields: " + _join(_words(name) for name in fields))
    for inline in inlines:
        label = str(inline.get("model", "")).rsplit(".", 1)[-1]
        changed = inline.get("fields")
        parts.append(
            f"{label} {inline.get('op', 'changed')}"
            + (f" ({_join(_words(n) for n in changed)})" if changed else "")
        )
    return "; ".join(parts)


Renderer = Callable[[Mapping[str, Any], Any, Names], str]

RENDERERS: dict[str, Renderer] = {
    "login.succeeded": _nothing,
    "login.failed": _login_failed,
    "logout": _nothing,
    "password.reset": _nothing,
    "invitation.created": _invitation_created,
    "invitation.revoked": _invitation_revoked,
    "invitation.accepted": _invitation_accepted,
    "membership.role_changed": _role_changed,
    "membership.removed": _member_removed,
    "tenant.suspended": _tenant_status,
    "tenant.reactivated": _tenant_status,
    "encryption_keys.rotated": _keys_rotated,
    "command.sent": _command,
    "device.added": _device_added,
    "device.removed": _device_removed,
    "device.replaced": _device_replaced,
    "programs.updated": _programs,
    "pool.created": _pool_created,
    "pool.updated": _pool_updated,
    "broker.created": _broker_created,
    "broker.updated": _broker_updated,
    "broker.secret_changed": _broker_secret_changed,
    "broker.deleted": _broker_deleted,
    "admin.created": _admin,
    "admin.changed": _admin,
    "admin.deleted": _admin,
}
