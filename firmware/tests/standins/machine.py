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
    # From a timer's callback SystemExit would only end the callback: the file tells
    # the emulator to reset the board either way.
    _sim.write("reset", "")
    sys.exit(RESET_EXIT)


class Timer:
    """A one-shot or periodic timer whose callback is scheduled into the main
    thread between bytecodes, like the ESP32's (soft) timer callbacks."""

    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, **kw):
        self._gen = 0
        if kw:
            self.init(**kw)

    def init(self, mode=PERIODIC, period=-1, callback=None, freq=None):
        import _thread

        self._gen += 1
        gen = self._gen
        if freq:
            period = 1000 // freq

        def run():
            import time

            import micropython

            while self._gen == gen:
                time.sleep_ms(period)
                if self._gen != gen:
                    return
                micropython.schedule(callback, self)
                if mode == Timer.ONE_SHOT:
                    return

        _thread.start_new_thread(run, ())

    def deinit(self):
        self._gen += 1


def freq(hz=None):
    return 240000000
