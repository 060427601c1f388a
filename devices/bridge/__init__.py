"""The MQTT bridge: a pure message-handling core (core.py) and the long-running runner
around it (runner.py, connection.py, live.py); `manage.py mqtt_bridge` starts it."""
