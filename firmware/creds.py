"""The device's MQTT credentials in flash: the current pair and, while a rotation is
under way, a pending one (docs/protocol.md 3.2.1).

The cloud sends a new pair with the `credentials` command. It is stored as the pending
slot beside the current one, tried on the next connection, and promoted to current only
once the broker accepted it; refused, it is dropped. A power cut at any moment leaves
one file, old or new (atomic replace), with the current pair in it: the device never
loses a pair that works. Until the first rotation the current pair is the provisioning
bundle's, and the file does not exist.

Pure: no network. The password never leaves this object except to the MQTT client.
"""

try:
    from firmware.controller import FileStore
    from firmware.protocol_device import is_valid_id
except ImportError:  # MicroPython: flat filesystem
    from controller import FileStore
    from protocol_device import is_valid_id


def _pair(d):
    if (
        not isinstance(d, dict)
        or not isinstance(d.get("username"), str)
        or not isinstance(d.get("password"), str)
    ):
        raise ValueError("credentials slot: username and password expected")
    return {"username": d["username"], "password": d["password"]}


class CredStore:
    """`current` {"username", "password"}; `pending` the same plus "id" (the command
    that brought it, acknowledged once the switch is decided), or None."""

    def __init__(self, path, username, password):
        self.file = FileStore(path)
        self.current = {"username": username, "password": password}
        self.pending = None
        data = self.file.load()
        if data:
            try:
                self._load(data)
            except (ValueError, TypeError, KeyError) as e:
                # The bundle's pair is the fallback; the message names no secret.
                print("creds: file ignored:", e)

    def _load(self, data):
        self.current = _pair(data["current"])
        pending = data.get("pending")
        if pending is not None:
            # A damaged pending slot is dropped; the current pair still counts.
            cmd_id = pending.get("id") if isinstance(pending, dict) else None
            if not is_valid_id(cmd_id):
                raise ValueError("pending slot: command id expected")
            self.pending = _pair(pending)
            self.pending["id"] = cmd_id

    def _save(self):
        data = {"current": self.current}
        if self.pending is not None:
            data["pending"] = self.pending
        self.file.save(data)

    def set_pending(self, cmd_id, username, password):
        """Store the new pair beside the current one (OSError if flash fails: then
        nothing changed)."""
        self.pending = {"username": username, "password": password, "id": cmd_id}
        try:
            self._save()
        except OSError:
            self.pending = None
            raise

    def end(self, accepted):
        """The broker decided: the pending pair becomes current (accepted) or is
        forgotten. Returns the id of the command that brought it. In memory even if
        the write fails: the file then still holds it as pending, tried first at the
        next boot."""
        p = self.pending
        if accepted:
            self.current = {"username": p["username"], "password": p["password"]}
        self.pending = None
        self._save()
        return p["id"]
