#!/bin/sh
# docker-compose's Mosquitto: on the first start, the dynamic-security file with the
# admin the app logs in as (MQTT_USERNAME / MQTT_PASSWORD), then Mosquitto itself.
# `dynsec init` lets the admin manage the plugin and read every topic; the bridges
# log in as this admin and must also publish (commands, configuration), so that ACL
# is written into the file before the first start (as start-dynsec.sh does): changed
# on a running broker, it would kick the admin off.
set -eu
state="${DYNSEC_STATE:-/mosquitto/data/dynamic-security.json}"
: "${MQTT_USERNAME:?set MQTT_USERNAME}" "${MQTT_PASSWORD:?set MQTT_PASSWORD in .env}"
if [ ! -s "$state" ]; then
  rm -f "$state"
  mosquitto_ctrl dynsec init "$state" "$MQTT_USERNAME" "$MQTT_PASSWORD" >/dev/null
  # The file has one role (the admin's): its ACL list gets the publish rule first.
  tab="$(printf '\t')"
  sed -i "s|\"acls\":${tab}\[{|\"acls\":${tab}[{\"acltype\": \"publishClientSend\", \"topic\": \"#\", \"priority\": 10, \"allow\": true}, {|" "$state"
  chmod 600 "$state"
fi
[ -n "${DYNSEC_INIT_ONLY:-}" ] && exit 0
exec mosquitto -c /mosquitto/config/mosquitto.conf
