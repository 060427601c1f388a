"""Credential rotation, device side (docs/protocol.md 3.2.1): the `credentials` command
in firmware.protocol, the controller's handling of it (deferred ack, ring of executed
ids) and the slot store of firmware.creds.

Plain functions and asserts: runs on CPython (pytest) and under MicroPython
(tools/check.sh).
"""

import json

try:
    from firmware import controller, creds, protocol
    from firmware.tests.helpers import raises, tmpdir
except ImportError:  # MicroPython: flat filesystem
    import controller
    import creds
    import protocol
    from helpers import raises, tmpdir

P = protocol
PE = protocol.ProtocolError
DEV = "ESP-A1B2C3"
PW = "s3cret-Pa55word"
NOW = 1764400000


def cmd(value, cid="k3-1a2b3c4d", exp=NOW + 86400):
    return json.dumps({"id": cid, "exp": exp, "op": "credentials", "value": value})


def test_credentials_round_trip_through_parse_command():
    value = {"username": DEV + "~3", "password": PW}
    raw = P.encode_command("k3-1a2b3c4d", NOW + 86400, "credentials", value)
    assert P.parse_command(raw, DEV) == {
        "id": "k3-1a2b3c4d",
        "exp": NOW + 86400,
        "op": "credentials",
        "value": value,
    }
    # Unknown keys are dropped; the device's own id is a valid username too.
    extra = {"username": DEV, "password": PW, "note": 1}
    assert P.parse_command(cmd(extra), DEV)["value"] == {
        "username": DEV,
        "password": PW,
    }
    # Without a device id (the bridge, the server) only the form is checked.
    assert P.parse_command(cmd({"username": "ESP-FFFFFF~1", "password": PW}))
    P.encode_command("k", 1, "credentials", value, device_id=DEV)
    raises(PE, P.encode_command, "k", 1, "credentials", value, device_id="ESP-000000")


def test_credentials_value_is_checked_and_the_reason_never_holds_the_password():
    secret = "Sup3r-s3cret-but-bad\x7f"
    bad = (
        None,
        "x",
        [DEV, PW],
        {"password": PW},
        {"username": DEV},
        {"username": "", "password": PW},
        {"username": "E" * 65, "password": PW},
        {"username": DEV + "/x", "password": PW},
        {"username": DEV + " ", "password": PW},
        {"username": DEV + "+", "password": PW},
        {"username": 5, "password": PW},
        {"username": DEV, "password": "short7!"},
        {"username": DEV, "password": "p" * 129},
        {"username": DEV, "password": 12345678},
        {"username": DEV, "password": secret},
        {"username": DEV, "password": "pässwört-x"},
        {"username": DEV, "password": "tab\tinside"},
        # Another device's account, or one that only looks like ours.
        {"username": "ESP-000000", "password": PW},
        {"username": "ESP-000000~" + DEV, "password": PW},
        {"username": DEV + "X", "password": PW},
        {"username": DEV + "-1", "password": PW},
    )
    for value in bad:
        e = raises(PE, P.parse_command, cmd(value), DEV)
        assert e.code == "invalid" and e.cmd_id == "k3-1a2b3c4d", value
        assert PW not in e.msg and secret not in e.msg and len(e.msg) <= 200
    for n in (8, 128):
        assert P.parse_command(cmd({"username": DEV, "password": "a" * n}), DEV)
    # v3.1 devices cannot rotate anything.
    e = raises(PE, P.encode_v31_set, "credentials", {"username": DEV, "password": PW})
    assert e.code == "unsupported"


class Hook:
    """The link's side of the controller hook: records calls, answers `answer`."""

    def __init__(self, answer=None):
        self.calls = []
        self.answer = answer

    def __call__(self, cmd_id, value):
        self.calls.append((cmd_id, value))
        return self.answer


def _ctl(path=None):
    store = controller.FileStore(path) if path else None
    c = controller.Controller(lambda: NOW, store)
    c.device_id = DEV
    return c


def test_controller_defers_the_ack_to_the_link_and_keeps_the_result_in_the_ring():
    path = tmpdir() + "/state.json"
    c = _ctl(path)
    hook = c.on_credentials = Hook()
    value = {"username": DEV + "~3", "password": PW}
    assert c.handle_command(cmd(value)) is None  # no ack until the broker decided
    assert hook.calls == [("k3-1a2b3c4d", value)]
    # The link acks once the new pair connected: recorded like any command.
    ack = c.record("k3-1a2b3c4d", True)
    assert ack == {"id": "k3-1a2b3c4d", "ok": True}
    assert P.parse_device_message("ack", P.dumps(ack))[1] == ack
    # A redelivery is answered from the ring, not executed again, even after a boot.
    c2 = _ctl(path)
    hook2 = c2.on_credentials = Hook()
    assert c2.handle_command(cmd(value)) == ack and hook2.calls == []
    with open(path) as f:
        assert PW not in f.read()  # the ring holds results, never the value
    refused = c2.record("k3-2", False, "failed", "new credentials refused")
    assert refused["error"] == "failed" and "reason" in refused
    assert c2.handle_command(cmd(value, "k3-2")) == refused and hook2.calls == []


def test_controller_answers_now_when_the_link_does_and_checks_the_owner():
    c = _ctl()
    c.on_credentials = Hook((False, "busy", "credential switch in progress"))
    ack = c.handle_command(cmd({"username": DEV + "~1", "password": PW}))
    assert ack == {
        "id": "k3-1a2b3c4d",
        "ok": False,
        "error": "busy",
        "reason": "credential switch in progress",
    }
    ack = c.handle_command(cmd({"username": "ESP-000000", "password": PW}, "k3-x"))
    assert ack["error"] == "invalid" and PW not in json.dumps(ack)
    # Expired: not executed, not handed to the link.
    hook = c.on_credentials = Hook()
    ack = c.handle_command(cmd({"username": DEV, "password": PW}, "k3-old", NOW - 1))
    assert ack["error"] == "expired" and hook.calls == []
    # A controller without a link (the simulator's pure uses) cannot rotate.
    bare = controller.Controller(lambda: NOW)
    ack = bare.handle_command(cmd({"username": DEV, "password": PW}))
    assert ack["error"] == "unsupported"


def test_cred_store_slots_survive_a_restart_and_never_lose_the_current_pair():
    path = tmpdir() + "/creds.json"
    s = creds.CredStore(path, DEV, "bundle-password")
    # No rotation yet: the bundle's pair, no file.
    assert s.current == {"username": DEV, "password": "bundle-password"}
    assert s.pending is None
    raises(OSError, open, path)
    s.set_pending("k3-1", DEV + "~1", PW)
    # Power lost here: both slots are in flash, the current one untouched.
    s2 = creds.CredStore(path, DEV, "bundle-password")
    assert s2.current == {"username": DEV, "password": "bundle-password"}
    assert s2.pending == {"username": DEV + "~1", "password": PW, "id": "k3-1"}
    assert s2.end(True) == "k3-1"
    s3 = creds.CredStore(path, DEV, "bundle-password")
    assert s3.current == {"username": DEV + "~1", "password": PW}
    assert s3.pending is None
    s3.set_pending("k3-2", DEV + "~2", "another-password")
    assert s3.end(False) == "k3-2"
    s4 = creds.CredStore(path, DEV, "bundle-password")
    assert s4.current == {"username": DEV + "~1", "password": PW} and s4.pending is None


def test_cred_store_written_atomically_and_a_damaged_file_falls_back_to_the_bundle():
    d = tmpdir()
    path = d + "/creds.json"
    s = creds.CredStore(path, DEV, "bundle-password")
    s.set_pending("k3-1", DEV + "~1", PW)
    import os

    assert "creds.json.tmp" not in os.listdir(d)  # written aside, then renamed
    for text in ("{not json", "[]", '{"current": 1}', '{"current": {"username": 1}}'):
        with open(path, "w") as f:
            f.write(text)
        s = creds.CredStore(path, DEV, "bundle-password")
        assert s.current == {"username": DEV, "password": "bundle-password"}, text
        assert s.pending is None
    with open(path, "w") as f:
        f.write(
            json.dumps(
                {
                    "current": {"username": DEV, "password": PW},
                    "pending": {"username": DEV + "~1", "password": PW, "id": "a/b"},
                }
            )
        )
    s = creds.CredStore(path, DEV, "bundle-password")
    # A damaged pending slot is dropped, the current pair kept.
    assert s.current == {"username": DEV, "password": PW} and s.pending is None
