"""Stand-in for `onewire`: the bus itself does nothing, ds18x20 reads the sim folder."""


class OneWireError(Exception):
    pass


class OneWire:
    def __init__(self, pin):
        self.pin = pin
