"""Many virtual devices driven by one loop thread (one paho client each)."""

import threading
import time

from firmware.sim.device import VirtualDevice


def make_ids(count, id_prefix="ESP-", start=0xA00001, legacy=False):
    """Device ids: ESP-XXXXXX for ours, esp32-pool-NN style for legacy prefixes."""
    if legacy and id_prefix == "ESP-":
        id_prefix = "esp32-pool-"
    if id_prefix.startswith("ESP-"):
        return [f"{id_prefix}{start + i:06X}" for i in range(count)]
    return [f"{id_prefix}{i + 1:02d}" for i in range(count)]


class Fleet:
    """Start, tick and stop a set of VirtualDevices with a single 1 s loop thread."""

    def __init__(self, devices):
        self.devices = list(devices)
        self._stop = threading.Event()
        self._thread = None

    @classmethod
    def build(cls, ids, **kwargs):
        return cls(VirtualDevice(i, **kwargs) for i in ids)

    def start(self, connect_rate=200.0):
        # Spread the connects: a broker takes a burst of thousands badly.
        for n, d in enumerate(self.devices):
            d.start(ticker=False)
            if connect_rate and n % 20 == 19:
                time.sleep(20 / connect_rate)
        self._thread = threading.Thread(target=self._run, name="sim-fleet", daemon=True)
        self._thread.start()
        return self

    def wait_connected(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        for d in self.devices:
            d.wait_connected(max(0.1, deadline - time.monotonic()))
        return self

    def _run(self):
        next_t = time.monotonic()
        while not self._stop.is_set():
            for d in self.devices:
                if d._stop.is_set():
                    continue
                try:
                    d.step()
                except Exception:  # noqa: BLE001 - keep the other devices running
                    import logging

                    logging.getLogger("firmware.sim").exception("%s", d.device_id)
            next_t += 1.0
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for d in self.devices:
            d.begin_stop()
        for d in self.devices:
            d.finish_stop()
