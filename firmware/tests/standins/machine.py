"""Stand-in for the ESP32 `machine` module on the unix port (see _sim.py).

The watchdog is real in effect: WDT.feed() stamps a file and the harness kills and
restarts the process (reset cause WDT_RESET) when the stamp is older than the timeout.
machine.reset() ends the process with exit status 86, which the harness restarts as a
soft reset, as the ESP32 does.
"""

import sys

import _sim

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
RESET_EXIT = 86

_pins = {}


def _save_pins():
    _sim.write("pins", "".join(f"{k}={v}\n" for k, v in sorted(_pins.items())))


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 2

    def __init__(self, pin, mode=IN, pull=None, value=None):
        self.id = pin
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            return _pins.get(self.id, 0)
        v = 1 if v else 0
        if _pins.get(self.id) != v:
            _pins[self.id] = v
            _save_pins()
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class WDT:
    _n = 0

    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.feed()

    def feed(self):
        WDT._n += 1
        _sim.write("wdt", f"{self.timeout} {WDT._n}")


def reset_cause():
    try:
        return int(_sim.read("reset_cause", "1"))
    except ValueError:
        return PWRON_RESET


def unique_id():
    return bytes.fromhex(_sim.read("mac", "a4cf12a1b2c3").strip())


def reset():
    print("machine.reset()")
    sys.exit(RESET_EXIT)


def freq(hz=None):
    return 240000000
