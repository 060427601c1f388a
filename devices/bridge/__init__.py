"""The MQTT bridge: the long-running runner (runner.py and its threads: worker.py,
publisher.py, control.py, live.py, connection.py) around the rooms of the apps that
speak MQTT (rooms.py: the interface and the dispatcher; devices.mqtt for the device
topics); `manage.py mqtt_bridge` starts it."""
