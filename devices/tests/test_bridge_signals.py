"""The bridge process stops cleanly on SIGTERM whichever of its threads the kernel
hands the signal to (a process-directed signal may go to any thread that does not
block it). A main thread blocked in a wait without a timeout never ran the handler
when another thread took the signal: the bridge then ignored SIGTERM until it was
killed (one run in about twenty-five under load, in CI).

Real `manage.py mqtt_bridge` processes on the test database and the machine's
Mosquitto; the signal is sent to one chosen thread with tgkill(2)."""

import ctypes
import os
import re
import signal

import pytest

from devices.tests.test_bridge import wait_for
from devices.tests.test_config_push import BridgeProcess

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

STOPPED = re.compile(r"mqtt bridge stopped: \{")


def tgkill(pid: int, tid: int, signum: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "tgkill"):
        pytest.skip("no tgkill in this C library")
    if libc.tgkill(pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def other_threads(pid: int) -> list[int]:
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)


@pytest.fixture
def bridge(tmp_path, platform_broker):
    process = BridgeProcess(tmp_path / "bridge.log")
    yield process
    process.stop()


@pytest.mark.parametrize("which", ["first", "last"])
def test_sigterm_taken_by_another_thread_stops_the_bridge(bridge, which):
    bridge.start(sweep_interval=0.2)
    proc = bridge.proc
    threads = other_threads(proc.pid)
    assert threads, "the bridge runs threads besides its main one"
    target = threads[0] if which == "first" else threads[-1]
    tgkill(proc.pid, target, signal.SIGTERM)
    wait_for(lambda: proc.poll() is not None, 20, "the bridge to stop")
    assert proc.returncode == 0, bridge.log()[-3000:]
    assert STOPPED.search(bridge.log()), bridge.log()[-3000:]


def test_sigterm_to_the_process_stops_the_bridge(bridge):
    bridge.start(sweep_interval=0.2)
    proc = bridge.proc
    os.kill(proc.pid, signal.SIGTERM)
    wait_for(lambda: proc.poll() is not None, 20, "the bridge to stop")
    assert proc.returncode == 0, bridge.log()[-3000:]
    assert STOPPED.search(bridge.log()), bridge.log()[-3000:]
