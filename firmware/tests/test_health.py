"""firmware.health: boot counter and safe mode (CPython and MicroPython)."""

try:
    from firmware import health
    from firmware.tests.helpers import tmpdir
except ImportError:  # MicroPython: flat filesystem
    import health
    from helpers import tmpdir


def test_safe_mode_after_repeated_crashes_and_reset_when_healthy():
    path = tmpdir() + "/boot.json"
    assert not health.BootCounter(path, 3).boot()
    assert not health.BootCounter(path, 3).boot()
    assert not health.BootCounter(path, 3).boot()
    b = health.BootCounter(path, 3)
    assert b.boot() and b.count == 4
    b.healthy()
    assert not health.BootCounter(path, 3).boot()


def test_damaged_counter_file_counts_from_zero():
    path = tmpdir() + "/boot.json"
    with open(path, "w") as f:
        f.write("[1, 2")
    b = health.BootCounter(path, 3)
    assert not b.boot() and b.count == 1
