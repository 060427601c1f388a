"""Stand-in for the ESP32 `network` module (see _sim.py).

`air.json` in the sim folder lists the networks on the air, {"ssid": ["password",
rssi]}; the file `wifi_down` drops all of them (the router off). A station that was
associated comes back by itself when its network does, as the ESP32's does.
"""

import json

import _sim
import machine

STA_IF = 0
AP_IF = 1
AUTH_OPEN = 0
AUTH_WPA2_PSK = 3
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202


def _air():
    if _sim.exists("wifi_down"):
        return {}
    try:
        return json.loads(_sim.read("air.json", "{}"))
    except ValueError:
        return {}


class _WLAN:
    def __init__(self, iface):
        self.iface = iface
        self._active = False
        self._ssid = None
        self._status = STAT_IDLE
        self._config = {"essid": "", "authmode": AUTH_OPEN}

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = bool(on)
        return None

    def scan(self):
        return [
            (ssid.encode(), b"\x00" * 6, 6, v[1], AUTH_WPA2_PSK, False)
            for ssid, v in _air().items()
        ]

    def connect(self, ssid=None, key=None):
        net = _air().get(ssid)
        self._ssid = ssid if net is not None and net[0] == (key or "") else None
        if net is None:
            self._status = STAT_NO_AP_FOUND
        elif self._ssid is None:
            self._status = STAT_WRONG_PASSWORD
        else:
            self._status = STAT_GOT_IP

    def disconnect(self):
        self._ssid = None
        self._status = STAT_IDLE

    def isconnected(self):
        if self.iface == AP_IF:
            return self._active
        return self._active and self._ssid is not None and self._ssid in _air()

    def status(self, what=None):
        if what == "rssi":
            net = _air().get(self._ssid)
            if net is None:
                raise OSError("not connected")
            return net[1]
        if self.isconnected():
            return STAT_GOT_IP
        # Associated once but the network is gone: the ESP32 keeps trying.
        return STAT_CONNECTING if self._ssid else self._status

    def ifconfig(self, cfg=None):
        if self.iface == AP_IF:
            return ("192.168.4.1", "255.255.255.0", "192.168.4.1", "192.168.4.1")
        if self.isconnected():
            return ("10.0.0.42", "255.255.255.0", "10.0.0.1", "10.0.0.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def config(self, *args, **kw):
        if kw:
            self._config.update(kw)
            if self.iface == AP_IF:
                _sim.write("ap", json.dumps(self._config))
            return None
        if args[0] == "mac":
            return machine.unique_id()
        return self._config.get(args[0])


_ifaces = {}


def WLAN(iface=STA_IF):  # noqa: N802 - the MicroPython name
    if iface not in _ifaces:
        _ifaces[iface] = _WLAN(iface)
    return _ifaces[iface]
