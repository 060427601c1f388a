"""A simulated pool: water temperature that follows the air and the pump."""

import math
import random


class PoolModel:
    """Water temperature of a pool, good enough for demos and for freeze protection.

    The water drifts towards the daily air temperature with a time constant of about two
    days; circulation (pump on) speeds the exchange up and adds a little pump heat. The
    sensor can be made to fail (reading None) to exercise the invalid-reading path.
    """

    def __init__(self, water=24.0, air_mean=20.0, air_swing=6.0, seed=None):
        self.rng = random.Random(seed)
        self.water = water
        self.air_mean = air_mean
        self.air_swing = air_swing
        self.sensor_ok = True

    def air(self, local_s):
        # Coldest around 05:00 local, warmest around 17:00.
        hour = (local_s % 86400) / 3600.0
        return self.air_mean + self.air_swing * math.sin(
            (hour - 11.0) / 24.0 * 2 * math.pi
        )

    def step(self, dt, local_s, pump_on):
        k = 1.0 / (48 * 3600) * (3.0 if pump_on else 1.0)
        self.water += (self.air(local_s) - self.water) * min(1.0, k * dt)
        if pump_on:
            self.water += 0.3 / 86400 * dt
        return self.reading()

    def reading(self):
        if not self.sensor_ok:
            return None
        return round(self.water + self.rng.uniform(-0.05, 0.05), 1)
