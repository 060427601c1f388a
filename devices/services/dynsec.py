"""Per-device credentials on the platform broker, through Mosquitto's dynamic-security
plugin.

Every device on the platform broker gets its own MQTT client (username = device id, a
random password, bound to client id = device id) and a role whose ACL lets it publish
only its own device-to-cloud topics and subscribe only to its own cloud-to-device
topics, all under `<prefix>/<device id>/`. So a device, even with its credentials
extracted, can neither read nor write another device's topics, whichever tenant it
belongs to, nor connect under another device's client id: MQTT gives a client id to
one connection at a time, so without the binding a second login with that id would
kick the owner off and inherit its persistent session (its queued commands).

The plugin is managed over MQTT: JSON commands published to
`$CONTROL/dynamic-security/v1` with a `correlationData`, answers on
`$CONTROL/dynamic-security/v1/response`. We log in
as the plugin's admin (settings.MQTT_USERNAME / MQTT_PASSWORD) at
settings.MQTT_DYNSEC_URL. Enabled by settings.MQTT_DYNSEC_ENABLED; the broker config is
deploy/mosquitto/dynsec.conf.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from django.conf import settings

from firmware import protocol

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"
ROLE_PREFIX = "poolsaas-device-"
TEXTNAME_PREFIX = "poolsaas device "
# Answers the plugin gives for things already gone; deleting is idempotent for us.
_GONE = ("Client not found", "Role not found")


class DynsecError(RuntimeError):
    """The broker refused a dynamic-security command or could not be reached."""


@dataclass(frozen=True)
class DynsecConfig:
    host: str
    port: int
    tls: bool
    username: str
    password: str
    timeout: float = 5.0


def dynsec_enabled() -> bool:
    return bool(settings.MQTT_DYNSEC_ENABLED)


def dynsec_config() -> DynsecConfig:
    url = urlparse(getattr(settings, "MQTT_DYNSEC_URL", "") or settings.MQTT_URL)
    tls = url.scheme in ("mqtts", "ssl")
    return DynsecConfig(
        host=url.hostname or "127.0.0.1",
        port=url.port or (8883 if tls else 1883),
        tls=tls,
        username=settings.MQTT_USERNAME,
        password=settings.MQTT_PASSWORD,
    )


def role_name(device_id: str) -> str:
    return f"{ROLE_PREFIX}{device_id}"


def device_acls(*, prefix: str, device_id: str) -> list[dict[str, Any]]:
    """The ACL of one device: its own topics, in the direction the protocol says.

    Exact topics (no wildcards) so that a device cannot subscribe to `<root>/#` and see
    what it publishes itself, nor reach anything the protocol does not define; the
    plugin's defaults deny every other publish and subscription.
    """
    if not protocol.is_valid_prefix(prefix) or not protocol.is_valid_id(device_id):
        # Validated upstream too; here it also rules out '+' and '#' in an ACL.
        raise ValueError("Invalid topic prefix or device id.")
    from devices.bridge.rooms import room_topics

    # The protocol's topics, then those of the bridge's other rooms (OTA's).
    published, subscribed = room_topics()
    root = f"{prefix}/{device_id}"
    acls = [
        {"acltype": "publishClientSend", "topic": f"{root}/{suffix}", "allow": True}
        for suffix in _union(protocol.DEVICE_TO_CLOUD, published)
    ]
    acls += [
        {"acltype": "subscribeLiteral", "topic": f"{root}/{suffix}", "allow": True}
        for suffix in _union(protocol.DEVICE_SUBSCRIPTIONS, subscribed)
    ]
    return acls


def _union(first, second) -> list[str]:
    return list(first) + [s for s in second if s not in first]


def new_password() -> str:
    """A random device password (192 bits), URL- and QR-safe."""
    return secrets.token_urlsafe(24)


class DynsecClient:
    """One admin connection to the plugin; use as a context manager.

    `execute` sends a batch of commands in one message and returns their responses in
    order, matched by correlationData (the plugin may answer several batches on the
    one response topic, and other admins may be talking to it at the same time).
    """

    def __init__(self, config: DynsecConfig | None = None):
        self.config = config or dynsec_config()
        self._lock = threading.Lock()
        self._responses: dict[str, dict[str, Any]] = {}
        self._arrived = threading.Condition(self._lock)
        self._client = None

    def __enter__(self) -> DynsecClient:
        import paho.mqtt.client as mqtt

        config = self.config
        connected = threading.Event()
        subscribed = threading.Event()
        outcome: dict[str, Any] = {}
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"poolsaas-dynsec-{secrets.token_hex(6)}",
            protocol=mqtt.MQTTv311,
        )
        client.username_pw_set(config.username, config.password or None)
        if config.tls:
            client.tls_set_context(ssl.create_default_context())

        def on_connect(client, userdata, flags, reason_code, properties):
            outcome["connect"] = reason_code
            connected.set()

        def on_subscribe(client, userdata, mid, reason_codes, properties):
            outcome["subscribe"] = reason_codes
            subscribed.set()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = self._on_message
        try:
            client.connect(config.host, config.port, keepalive=30)
        except OSError as exc:
            raise DynsecError(
                f"Cannot reach the platform broker at {config.host}:{config.port}: "
                f"{exc.strerror or exc}."
            ) from None
        # The handshake runs in this thread: a background loop would keep retrying a
        # refused login, and stopping it then takes a second.
        deadline = time.monotonic() + config.timeout
        while not connected.is_set() and time.monotonic() < deadline:
            client.loop(timeout=0.05)
        if not connected.is_set() or outcome["connect"].is_failure:
            client.disconnect()
            if not connected.is_set():
                raise DynsecError("The platform broker did not answer the login.")
            raise DynsecError(
                f"The platform broker refused the admin login: {outcome['connect']}."
            )
        client.loop_start()
        self._client = client
        try:
            client.subscribe(RESPONSE_TOPIC, qos=1)
            if not subscribed.wait(config.timeout) or any(
                code.is_failure for code in outcome["subscribe"]
            ):
                raise DynsecError(
                    "The admin may not read dynamic-security responses; is the "
                    "dynamic-security plugin loaded?"
                )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def _on_message(self, client, userdata, message) -> None:
        try:
            body = json.loads(message.payload)
            responses = body["responses"]
        except (ValueError, KeyError, TypeError):
            return
        with self._arrived:
            for response in responses:
                if isinstance(response, dict) and "correlationData" in response:
                    self._responses[str(response["correlationData"])] = response
            self._arrived.notify_all()

    def execute(self, commands: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run commands in one batch; a list of the plugin's responses, in order."""
        if self._client is None:
            raise RuntimeError("Use DynsecClient as a context manager.")
        batch = []
        for command in commands:
            batch.append({**command, "correlationData": secrets.token_hex(8)})
        ids = [c["correlationData"] for c in batch]
        info = self._client.publish(
            CONTROL_TOPIC, json.dumps({"commands": batch}), qos=1
        )
        info.wait_for_publish(self.config.timeout)
        with self._arrived:
            ok = self._arrived.wait_for(
                lambda: all(i in self._responses for i in ids), self.config.timeout
            )
            if not ok:
                raise DynsecError("The dynamic-security plugin did not answer in time.")
            return [self._responses.pop(i) for i in ids]

    def run(self, commands: Iterable[dict[str, Any]], *, ignore=()) -> list[dict]:
        """execute(), raising DynsecError for any error not listed in `ignore`."""
        responses = self.execute(commands)
        for response in responses:
            error = response.get("error")
            if error and error not in ignore:
                raise DynsecError(f"{response.get('command')}: {error}")
        return responses


class ReservedName(DynsecError):
    """The name belongs to one of the platform's own accounts, not to a device."""


def reserved_usernames() -> frozenset[str]:
    """Accounts of the platform itself: the admin the bridge and this module log in
    as, and whatever the operator lists in MQTT_RESERVED_USERNAMES."""
    names = {settings.MQTT_USERNAME, *getattr(settings, "MQTT_RESERVED_USERNAMES", ())}
    return frozenset(name for name in names if name)


def _guard_username(device_id: str) -> None:
    # A device must never take over (or delete) an account the platform uses.
    if device_id in reserved_usernames():
        raise ReservedName(f"{device_id!r} is reserved on the platform broker.")


def _is_device_client(client: dict[str, Any], device_id: str) -> bool:
    """True for a client this module made for `device_id` (and nothing else)."""
    roles = [r.get("rolename") for r in client.get("roles") or ()]
    return client.get("textname") == f"{TEXTNAME_PREFIX}{device_id}" and roles == [
        role_name(device_id)
    ]


def _guard_existing(
    admin: DynsecClient, device_id: str, username: str | None = None
) -> None:
    """ReservedName when a client of that name (`username`, by default the device
    id) exists that is not one of our clients of `device_id`: an account the operator
    made by hand (a monitoring user, a second bridge) must not be deleted and
    recreated by a tenant typing its name."""
    username = username or device_id
    (response,) = admin.execute([{"command": "getClient", "username": username}])
    if response.get("error") == "Client not found":
        return
    if response.get("error"):
        raise DynsecError(f"getClient: {response['error']}")
    client = (response.get("data") or {}).get("client") or {}
    if not _is_device_client(client, device_id):
        raise ReservedName(f"{username!r} is reserved on the platform broker.")


def _rotated_clients(admin: DynsecClient, device_id: str) -> list[str]:
    """The device's rotation clients (`<device id>~<n>`) the broker holds.

    Mosquitto 2.0.11's plugin frees a deleted role that a client still holds (the
    client keeps a dangling pointer; the next command touching it may crash the
    broker), so every client of a device goes before its role."""
    (response,) = admin.execute(
        [{"command": "listClients", "verbose": False, "count": -1, "offset": 0}]
    )
    if response.get("error"):
        raise DynsecError(f"listClients: {response['error']}")
    names = (response.get("data") or {}).get("clients") or []
    return [
        name
        for name in names
        if isinstance(name, str) and name.startswith(f"{device_id}~")
    ]


def dynsec_device_create(
    *, device_id: str, prefix: str, config: DynsecConfig | None = None
) -> str:
    """Create (or recreate) the device's client and role; returns the new password.

    Any device client or role of that name left over (from a device removed while the
    broker was down, or a failed add) is replaced: the caller has checked in the
    database that no current device owns this id on the platform broker. Any other
    client of that name is one of the platform's accounts: ReservedName, untouched.
    The client id is bound to the username, so these credentials connect only as
    this device and no other device's credentials can connect as it.
    """
    _guard_username(device_id)
    password = new_password()
    role = role_name(device_id)
    with DynsecClient(config) as admin:
        _guard_existing(admin, device_id)
        leftovers = _rotated_clients(admin, device_id)
        for name in leftovers:
            _guard_existing(admin, device_id, name)
        admin.run(
            [
                {"command": "deleteClient", "username": name}
                for name in (device_id, *leftovers)
            ]
            + [{"command": "deleteRole", "rolename": role}],
            ignore=_GONE,
        )
        admin.run(
            [
                {
                    "command": "createRole",
                    "rolename": role,
                    "textname": f"{TEXTNAME_PREFIX}{device_id}",
                    "acls": device_acls(prefix=prefix, device_id=device_id),
                },
                {
                    "command": "createClient",
                    "username": device_id,
                    "password": password,
                    "clientid": device_id,
                    "textname": f"{TEXTNAME_PREFIX}{device_id}",
                    "roles": [{"rolename": role}],
                },
            ]
        )
    return password


def dynsec_device_delete(
    *,
    device_id: str,
    usernames: Iterable[str] = (),
    config: DynsecConfig | None = None,
) -> None:
    """Delete the device's clients (which disconnects it) and its role; idempotent.

    `usernames` are the device's other clients (rotation, `<device id>~<n>`), deleted
    with the one named after the device, as is any other `<device id>~<n>` client
    the broker holds (all before the role: _rotated_clients). ReservedName, and
    nothing deleted, when a client of one of those names is not a device client of
    ours."""
    names = [device_id, *(name for name in usernames if name and name != device_id)]
    for name in names:
        _guard_username(name)
    with DynsecClient(config) as admin:
        names += [n for n in _rotated_clients(admin, device_id) if n not in names]
        for name in names:
            _guard_existing(admin, device_id, name)
        admin.run(
            [{"command": "deleteClient", "username": name} for name in names]
            + [{"command": "deleteRole", "rolename": role_name(device_id)}],
            ignore=_GONE,
        )


def rotation_username(device_id: str, generation: int) -> str:
    """The username of a device's rotated credentials. '~' is never in a device id,
    so no device can register an id that is another device's rotated username."""
    return f"{device_id}~{generation}"


def dynsec_device_client_add(
    *,
    device_id: str,
    username: str,
    prefix: str,
    config: DynsecConfig | None = None,
) -> str:
    """A second client for the device (credential rotation): `username`, a fresh
    password (returned), the device's role and the same bound client id, so both
    pairs connect as this device and only as it. A leftover client of ours of that
    name is replaced; anyone else's is ReservedName."""
    if not username.startswith(f"{device_id}~"):
        raise ValueError("A device's second client is named <device id>~<n>.")
    _guard_username(username)
    password = new_password()
    role = role_name(device_id)
    with DynsecClient(config) as admin:
        _guard_existing(admin, device_id, username)
        admin.run([{"command": "deleteClient", "username": username}], ignore=_GONE)
        # The role normally exists (made with the device); made again if not.
        admin.run(
            [
                {
                    "command": "createRole",
                    "rolename": role,
                    "textname": f"{TEXTNAME_PREFIX}{device_id}",
                    "acls": device_acls(prefix=prefix, device_id=device_id),
                }
            ],
            ignore=("Role already exists",),
        )
        admin.run(
            [
                {
                    "command": "createClient",
                    "username": username,
                    "password": password,
                    "clientid": device_id,
                    "textname": f"{TEXTNAME_PREFIX}{device_id}",
                    "roles": [{"rolename": role}],
                }
            ]
        )
    return password


def dynsec_device_client_delete(
    *, device_id: str, username: str, config: DynsecConfig | None = None
) -> None:
    """Delete one client of the device (its role stays); idempotent. Deleting a
    client disconnects whoever is logged in with it."""
    _guard_username(username)
    with DynsecClient(config) as admin:
        _guard_existing(admin, device_id, username)
        admin.run([{"command": "deleteClient", "username": username}], ignore=_GONE)


def dynsec_device_exists(*, device_id: str, config: DynsecConfig | None = None) -> bool:
    with DynsecClient(config) as admin:
        (response,) = admin.execute([{"command": "getClient", "username": device_id}])
    if response.get("error") == "Client not found":
        return False
    if response.get("error"):
        raise DynsecError(f"getClient: {response['error']}")
    return True


def dynsec_devices_bind_client_ids(
    *, device_ids: Iterable[str], config: DynsecConfig | None = None
) -> list[str]:
    """Bind each existing device client to client id = its username (the upgrade
    step for clients created before the binding); returns the ids bound.

    Ids with no client, or whose client is not a device client of ours, are left
    alone."""
    bound = []
    with DynsecClient(config) as admin:
        for device_id in device_ids:
            if device_id in reserved_usernames():
                continue
            (response,) = admin.execute(
                [{"command": "getClient", "username": device_id}]
            )
            client = (response.get("data") or {}).get("client") or {}
            if response.get("error") or not _is_device_client(client, device_id):
                continue
            admin.run(
                [
                    {
                        "command": "setClientId",
                        "username": device_id,
                        "clientid": device_id,
                    }
                ]
            )
            bound.append(device_id)
    return bound


def _acl_key(acl: dict[str, Any]) -> tuple[str, str, bool]:
    return (acl.get("acltype", ""), acl.get("topic", ""), bool(acl.get("allow")))


def dynsec_devices_sync_acls(
    *, devices: Iterable[tuple[str, str]], config: DynsecConfig | None = None
) -> list[str]:
    """Bring each device role's ACL to what `device_acls` says today (the upgrade
    step when a release adds topics, as OTA's did); `devices` are (device id, topic
    prefix) pairs. Returns the ids whose role changed.

    Only roles this module made are touched (the device client's textname and sole
    role are checked first); stale entries are removed and missing ones added, so
    a device keeps its connection and the topics it already had."""
    changed = []
    with DynsecClient(config) as admin:
        for device_id, prefix in devices:
            if device_id in reserved_usernames():
                continue
            role = role_name(device_id)
            client_answer, role_answer = admin.execute(
                [
                    {"command": "getClient", "username": device_id},
                    {"command": "getRole", "rolename": role},
                ]
            )
            client = (client_answer.get("data") or {}).get("client") or {}
            if client_answer.get("error") or not _is_device_client(client, device_id):
                continue
            if role_answer.get("error"):
                raise DynsecError(f"getRole {role}: {role_answer['error']}")
            have = {
                _acl_key(acl)
                for acl in ((role_answer.get("data") or {}).get("role") or {}).get(
                    "acls"
                )
                or ()
            }
            want = {
                _acl_key(acl) for acl in device_acls(prefix=prefix, device_id=device_id)
            }
            if have == want:
                continue
            commands = [
                {"command": "removeRoleACL", "rolename": role, "acltype": t, "topic": p}
                for t, p, _ in sorted(have - want)
            ] + [
                {
                    "command": "addRoleACL",
                    "rolename": role,
                    "acltype": t,
                    "topic": p,
                    "allow": allow,
                }
                for t, p, allow in sorted(want - have)
            ]
            admin.run(commands)
            changed.append(device_id)
    return changed
