"""Boot counter and safe mode: pure, so it is tested on the PC and under MicroPython.

The counter goes up at every boot and back to 0 once the firmware has run healthily for
a while; a board that keeps crashing before that point boots into safe mode (relays off,
no programs, but still on MQTT so that it can be told to reboot or be updated).
"""

import json


class BootCounter:
    def __init__(self, path, safe_after=3):
        self.path = path
        self.safe_after = safe_after
        self.count = 0

    def _read(self):
        try:
            with open(self.path) as f:
                n = json.loads(f.read()).get("count", 0)
            return n if isinstance(n, int) and n >= 0 else 0
        except (OSError, ValueError, AttributeError):
            return 0

    def _write(self, n):
        try:
            with open(self.path, "w") as f:
                f.write(json.dumps({"count": n}))
        except OSError:
            pass

    def boot(self):
        """Count this boot; returns True when the board must start in safe mode."""
        self.count = self._read() + 1
        self._write(self.count)
        return self.safe_mode

    @property
    def safe_mode(self):
        return self.count > self.safe_after

    def healthy(self):
        """The firmware ran long enough: crashes from now on are not boot loops."""
        if self.count:
            self.count = 0
            self._write(0)
