"""The board: two relays, a DS18B20 on OneWire, an optional status LED, the MAC.

Only this module (and link/portal/app) touches `machine`; the controller never does.
"""

import asyncio

import machine

# The board's model, as telemetry reports it (`hw`) and OTA releases name it
# (Release.hardware_model); config.HW_MODEL overrides it (a bench board, the unix port).
MODEL = "esp32"

# DS18B20 power-on value: a read that returns it before any conversion is not a reading.
_POWER_ON_C = 85.0
_MIN_C = -55.0
_MAX_C = 125.0


class Relays:
    """Pump relay and valve relay (released = valve mode 1, energised = mode 2)."""

    def __init__(self, pin_pump, pin_valve, active_low=True):
        self.active_low = active_low
        off = 1 if active_low else 0
        # Drive the pins to "off" before switching them to outputs: no click at boot.
        self.pump = machine.Pin(pin_pump, machine.Pin.OUT, value=off)
        self.valve = machine.Pin(pin_valve, machine.Pin.OUT, value=off)

    def _level(self, on):
        return (0 if on else 1) if self.active_low else (1 if on else 0)

    def set(self, pump_on, valve_mode):
        self.valve.value(self._level(valve_mode == 2))
        self.pump.value(self._level(pump_on))

    def all_off(self):
        self.set(False, 1)


class TempSensor:
    """First DS18B20 on the bus; read() gives °C or None, never a made-up number."""

    def __init__(self, pin):
        self.rom = None
        self.ds = None
        try:
            import ds18x20
            import onewire

            self.ds = ds18x20.DS18X20(onewire.OneWire(machine.Pin(pin)))
        except (ImportError, OSError):
            self.ds = None

    def _find(self):
        try:
            roms = self.ds.scan()
        except OSError:
            roms = []
        self.rom = roms[0] if roms else None
        return self.rom

    async def read(self):
        if self.ds is None or (self.rom is None and self._find() is None):
            return None
        try:
            self.ds.convert_temp()
            await asyncio.sleep_ms(750)  # 12-bit conversion time
            t = self.ds.read_temp(self.rom)
        except Exception:  # noqa: BLE001 - CRC errors and a pulled cable look alike
            self.rom = None
            return None
        if t is None or t != t or not _MIN_C <= t <= _MAX_C or t == _POWER_ON_C:
            return None
        return round(t, 1)


class Led:
    """Status LED: steady = online, slow blink = connecting, fast = portal/safe mode."""

    def __init__(self, pin):
        self.pin = (
            machine.Pin(pin, machine.Pin.OUT, value=0) if pin is not None else None
        )
        self.pattern = 500

    async def run(self):
        while True:
            if self.pin is None:
                await asyncio.sleep(5)
                continue
            if self.pattern == 0:
                self.pin.value(1)
                await asyncio.sleep_ms(500)
            else:
                self.pin.value(not self.pin.value())
                await asyncio.sleep_ms(self.pattern)


def mac():
    import network

    return network.WLAN(network.STA_IF).config("mac")


def unique_suffix():
    """Six upper-case hex digits of the MAC (device id and portal SSID)."""
    m = mac()
    return f"{m[3]:02X}{m[4]:02X}{m[5]:02X}"


def unix_offset():
    """Seconds to add to time.time() for Unix time (some ports count from 2000)."""
    import time

    return 946684800 if time.gmtime(0)[0] == 2000 else 0


def free_memory():
    import gc

    gc.collect()
    return gc.mem_free()


def reset():
    machine.reset()
