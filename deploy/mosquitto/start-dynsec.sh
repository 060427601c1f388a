#!/usr/bin/env bash
# Start a Mosquitto with the dynamic-security plugin on a loopback port (default 18883),
# for the tests that create per-device clients and for local runs. Idempotent: when the
# port already answers it does nothing; the dynamic-security file is created once.
#
#   deploy/mosquitto/start-dynsec.sh            # start (or leave running)
#   deploy/mosquitto/start-dynsec.sh stop       # stop the one this script started
#   deploy/mosquitto/start-dynsec.sh foreground # run it as this process's child until
#                                               # TERM/INT (`make run` supervises it)
#
# Environment (defaults in brackets):
#   DYNSEC_PORT [18883]  DYNSEC_DIR [/tmp/poolsaas-dynsec-<port>]
#   DYNSEC_ADMIN_USER [poolsaas-admin]  DYNSEC_ADMIN_PASSWORD [poolsaas-dynsec-dev]
#   DYNSEC_PLUGIN [/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so]
# The admin is what the app uses as MQTT_USERNAME / MQTT_PASSWORD with
# MQTT_DYNSEC_URL=mqtt://127.0.0.1:<port>. The default password is for loopback
# development only.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
port="${DYNSEC_PORT:-18883}"
dir="${DYNSEC_DIR:-/tmp/poolsaas-dynsec-$port}"
admin="${DYNSEC_ADMIN_USER:-poolsaas-admin}"
password="${DYNSEC_ADMIN_PASSWORD:-poolsaas-dynsec-dev}"
plugin="${DYNSEC_PLUGIN:-/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so}"
state="$dir/dynamic-security.json"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [[ "${1:-start}" == stop ]]; then
  if [[ -s "$dir/mosquitto.pid" ]]; then
    kill "$(cat "$dir/mosquitto.pid")" 2>/dev/null || true
  fi
  exit 0
fi

for tool in mosquitto mosquitto_ctrl; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
[[ -f "$plugin" ]] || { echo "no dynamic-security plugin at $plugin" >&2; exit 1; }

foreground=0
[[ "${1:-start}" == foreground ]] && foreground=1

if port_open "$port"; then
  if ((foreground)); then
    echo "127.0.0.1:$port is already in use" >&2
    exit 1
  fi
  exit 0
fi

# Several test runs may call this at once: one starts the broker, the others wait.
mkdir -p "$dir"
exec 9>"$dir.lock"
flock -w 30 9 || { echo "timed out waiting for $dir.lock" >&2; exit 1; }
if port_open "$port"; then
  exit 0
fi

if [[ ! -s "$state" ]]; then
  rm -f "$state"
  mosquitto_ctrl dynsec init "$state" "$admin" "$password" >/dev/null
  # `dynsec init` lets the admin only manage the plugin and read every topic; the
  # bridge logs in as this admin and must also publish commands and configuration.
  # Written into the file before the first start: changing the admin's role on a
  # running broker kicks the admin off, and mosquitto_ctrl's reconnect can hang.
  python3 - "$state" <<'PY'
import json, sys
path = sys.argv[1]
with open(path) as f:
    state = json.load(f)
for role in state["roles"]:
    if role["rolename"] == "admin":
        role.setdefault("acls", []).insert(0, {
            "acltype": "publishClientSend", "topic": "#", "priority": 10, "allow": True
        })
with open(path, "w") as f:
    json.dump(state, f, indent=2)
PY
fi
sed -e "s|@PORT@|$port|g" -e "s|@DIR@|$dir|g" -e "s|@PLUGIN@|$plugin|g" \
  "$here/dynsec.conf" >"$dir/mosquitto.conf"
chmod 700 "$dir"
chmod 600 "$state"
# Mosquitto started as root drops to the `mosquitto` user, which must be able to
# rewrite the dynamic-security file (the plugin saves it after every change).
if [[ "$(id -u)" == 0 ]] && id mosquitto >/dev/null 2>&1; then
  chown -R mosquitto: "$dir"
fi

# Not inheriting the lock: the daemon would hold it for as long as it runs.
if ((foreground)); then
  mosquitto -c "$dir/mosquitto.conf" 9>&- &
  child=$!
  # Whichever way this script ends (a signal, a failed start-up), Mosquitto goes too.
  trap 'kill "$child" 2>/dev/null; wait "$child" 2>/dev/null' EXIT
  trap 'exit 0' TERM INT
else
  mosquitto -d -c "$dir/mosquitto.conf" 9>&-
fi
for _ in $(seq 1 50); do
  port_open "$port" && break
  sleep 0.1
done
if ! port_open "$port"; then
  echo "mosquitto did not start on 127.0.0.1:$port; see $dir/mosquitto.log" >&2
  exit 1
fi

echo "dynamic-security mosquitto on 127.0.0.1:$port (state in $dir)"
if ((foreground)); then
  exec 9>&-
  # `wait` returns early when a trapped signal arrives; the trap then stops Mosquitto.
  wait "$child"
fi
