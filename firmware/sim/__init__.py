"""PC simulator of poolsaas pool controllers: `python -m firmware.sim --help`.

Library use (tests, demos)::

    from firmware.sim import VirtualDevice
    with VirtualDevice("ESP-A1B2C3", broker="mqtt://127.0.0.1:1883") as dev:
        dev.wait_connected()
        ...
"""

from firmware.sim.device import VirtualDevice, parse_broker_url
from firmware.sim.fleet import Fleet, make_ids
from firmware.sim.pool import PoolModel

__all__ = ["Fleet", "PoolModel", "VirtualDevice", "make_ids", "parse_broker_url"]
