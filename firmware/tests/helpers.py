"""Helpers for the firmware tests on CPython (pytest) and MicroPython (tools/mp_run).

No pytest features in the pure-module tests: plain functions, plain asserts, so that the
very same files run under the MicroPython WebAssembly port.
"""

import os

_counter = [0]


def raises(exc, fn, *args, **kwargs):
    """Call fn; return the exception it raised, fail if it raised nothing or another."""
    try:
        fn(*args, **kwargs)
    except exc as e:
        return e
    raise AssertionError("expected " + exc.__name__)


def tmpdir():
    """A fresh empty directory (tempfile does not exist on MicroPython)."""
    try:
        import tempfile

        return tempfile.mkdtemp(prefix="fwtest")
    except ImportError:
        _counter[0] += 1
        base = "/tmp"
        try:
            os.mkdir(base)
        except OSError:
            pass
        path = base + "/fwtest" + str(_counter[0])
        os.mkdir(path)
        return path
