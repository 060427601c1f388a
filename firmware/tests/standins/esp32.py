"""Stand-in for `esp32`: what the firmware may ask of the chip."""


def mcu_temperature():
    return 45
