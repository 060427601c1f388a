"""tools/flash.sh writes the claim code (docs/protocol.md 7.1) with tools/claim.py.

No ESP32 here: a stand-in for `mpremote` copies into a folder (the board's flash)
and runs `exec` under the MicroPython unix port with the board stand-ins, so the
device id really is read the way flash.sh reads it from a board (its Wi-Fi MAC).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.tests import board as B

pytestmark = pytest.mark.micropython

TOOLS = Path(__file__).resolve().parents[1] / "tools"

FAKE_MPREMOTE = r"""
import os, shutil, subprocess, sys
args = sys.argv[1:]
assert args[0] == "connect", args
cmd, rest = args[2], args[3:]
flash = os.environ["FAKE_FLASH"]
with open(os.path.join(flash, "..", "mpremote.log"), "a") as log:
    log.write(" ".join([cmd] + [a for a in rest if "\n" not in a]) + "\n")
if cmd == "exec":
    # On the board, exec runs in its root, among the modules just copied.
    env = dict(os.environ, MICROPYPATH=os.environ["FAKE_ROM"] + ":" + flash)
    sys.exit(subprocess.run([os.environ["FAKE_MICROPYTHON"], "-c", rest[0]],
                            env=env, cwd=flash).returncode)
if cmd == "cp":
    shutil.copy(rest[0], os.path.join(flash, rest[1].lstrip(":")))
elif cmd == "rm":
    path = os.path.join(flash, rest[0].lstrip(":"))
    if not os.path.exists(path):
        sys.exit(1)
    os.remove(path)
"""


@pytest.fixture
def station(tmp_path, firmware_build):
    flash = tmp_path / "flash"
    sim = tmp_path / "sim"
    flash.mkdir()
    sim.mkdir()
    fake = tmp_path / "mpremote"
    fake.write_text(f"#!{sys.executable}\n" + FAKE_MPREMOTE)
    fake.chmod(0o755)
    key = tmp_path / "factory.key"
    key.write_text("factory-test-key\n")
    env = dict(os.environ)
    env.update(
        {
            "MPREMOTE": str(fake),
            "FAKE_FLASH": str(flash),
            "FAKE_ROM": str(firmware_build / "rom"),
            "FAKE_MICROPYTHON": B.micropython(),
            "BOARD_SIM": str(sim),
            "PYTHON": sys.executable,
        }
    )

    def run(**extra):
        r = subprocess.run(
            ["bash", str(TOOLS / "flash.sh"), "/dev/ttyFAKE"],
            env=dict(env, **extra),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    return run, flash, sim, key


def test_flash_writes_the_claim_code_of_the_boards_own_id(station):
    run, flash, sim, key = station
    # An update left on the board would shadow the flashed modules: the flash clears it.
    (flash / "fw").mkdir()
    (flash / "fw" / "app.py").write_text("raise SystemExit('the old update')\n")
    out = run(CLAIM_KEY_FILE=str(key))  # the stand-in's MAC ends in a1:b2:c3
    assert not (flash / "fw").exists()
    assert "Device id: ESP-A1B2C3" in out and "Claim code: BBNR-MAGF-JV94" in out
    assert (flash / "claim.txt").read_text() == "BBNRMAGFJV94"
    assert "factory-test-key" not in "".join(p.read_text("latin-1") for p in
                                            flash.iterdir())  # fmt: skip
    assert {"boot.py", "main.py", "creds.mpy", "portal.mpy"} <= set(os.listdir(flash))
    assert "protocol_device.mpy" in os.listdir(flash)
    assert "protocol.mpy" not in os.listdir(flash)  # the cloud side stays off the board
    # Another board, another MAC, another code; DEVICE_ID overrides what is read.
    (sim / "mac").write_text("a4cf12000001")
    run(CLAIM_KEY_FILE=str(key))
    second = (flash / "claim.txt").read_text()
    assert len(second) == 12 and second != "BBNRMAGFJV94"
    run(CLAIM_KEY_FILE=str(key), DEVICE_ID="ESP-A1B2C3")
    assert (flash / "claim.txt").read_text() == "BBNRMAGFJV94"
    # Re-flashed without the key: the code on the board stays.
    run()
    assert (flash / "claim.txt").read_text() == "BBNRMAGFJV94"


def test_claim_tool_matches_the_servers_derivation(settings):
    """tools/claim.py (standard library, for the station) against the server's
    devices.services.claims, which verifies what the label says."""
    sys.path.insert(0, str(TOOLS))
    try:
        import claim
    finally:
        sys.path.remove(str(TOOLS))
    from devices.services.claims import claim_code_for

    settings.DEVICE_CLAIM_KEY = "factory-test-key"
    assert claim.grouped(claim.claim_code(b"factory-test-key", "ESP-A1B2C3")) == (
        "BBNR-MAGF-JV94"
    )
    for device_id in ("ESP-000000", "ESP-FFFFFF", "esp32-pool-01", "x" * 64):
        code = claim.claim_code(b"factory-test-key", device_id)
        assert claim.grouped(code) == claim_code_for(device_id), device_id
    settings.DEVICE_CLAIM_KEY = "another-key"
    assert claim.grouped(claim.claim_code(b"another-key", "ESP-A1B2C3")) == (
        claim_code_for("ESP-A1B2C3")
    )
    from devices.services import claims

    assert claim.ALPHABET == claims.ALPHABET and claim.CONTEXT == claims.CONTEXT
