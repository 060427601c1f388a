"""Shared by the stand-ins: the control files of the board emulator (../board.py).

BOARD_SIM names a folder the test harness and the stand-ins share: the harness writes
what the world is like (Wi-Fi on the air, water temperature, reset cause), the stand-ins
write what the board does (relay pins, watchdog feeds, the access point).
"""

import os

DIR = (getattr(os, "getenv", lambda k: None)("BOARD_SIM")) or "sim"


def path(name):
    return DIR + "/" + name


def read(name, default=None):
    try:
        with open(path(name)) as f:
            return f.read()
    except OSError:
        return default


def write(name, text):
    tmp = path(name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path(name))


def exists(name):
    try:
        os.stat(path(name))
        return True
    except OSError:
        return False
