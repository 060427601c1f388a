"""The smallest MicroPython heap the firmware runs in: bisection of `micropython -X
heapsize=` on the unix port, with everything precompiled as on the board.

A heap size passes when, within the window, the board boots, connects to a Mosquitto of
its own, publishes its state, acks commands (pump on and off) and prints no
MemoryError, with no crash or watchdog reset.

    .venv/bin/python firmware/tools/heap_bisect.py [--tls] [--window 20]

64-bit unix port: pointers and object headers are twice the ESP32's, so the board needs
less than this figure (firmware/README.md).
"""

import argparse
import os
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(__file__))))

from firmware import protocol as P  # noqa: E402
from firmware.tests import board as B  # noqa: E402
from firmware.tests.test_sim_mqtt import Observer  # noqa: E402


def trial(heap_kb, tls, window):
    root = tempfile.mkdtemp(prefix="fwheap")
    certs = B.make_ca(root + "/pki", "ca") if tls else None
    broker = B.Broker(root + "/broker", tls=certs).start()
    prefix = "heap-" + uuid.uuid4().hex[:6]
    obs = Observer(broker.url, prefix).start()
    b = B.Board(
        root + "/board",
        broker.tls_port if tls else broker.port,
        prefix,
        heap_kb=heap_kb,
        tls=tls,
        ca_pem=open(certs["cafile"]).read() if tls else None,
    )
    b.set_temp(21.5)
    ok = False
    try:
        b.start()
        obs.expect(lambda i, k, v, r: k == "status" and v, timeout=window)
        deadline = time.monotonic() + window
        n = 0
        while time.monotonic() < deadline:
            n += 1
            cid = "h" + str(n)
            value = "ON" if n % 2 else "OFF"
            exp = int(time.time()) + 30
            obs.publish(b.device_id, P.CMD, P.encode_command(cid, exp, "pump", value))
            obs.expect(lambda i, k, v, r, c=cid: k == "ack" and v["id"] == c, 10)
            time.sleep(1)
        ok = (
            not b.saw("MemoryError")
            and b.watchdog_resets == 0
            and not b.crashes
            and b.proc is not None
            and b.proc.poll() is None
        )
    except AssertionError:
        ok = False
    finally:
        b.stop()
        obs.stop()
        broker.kill()
    return ok, b


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tls", action="store_true")
    p.add_argument("--window", type=float, default=20)
    p.add_argument("--low", type=int, default=16)
    p.add_argument("--high", type=int, default=256)
    p.add_argument("--step", type=int, default=2)
    a = p.parse_args(argv)
    B.build_firmware()
    lo, hi = a.low, a.high  # lo fails (assumed), hi must pass
    ok, b = trial(hi, a.tls, a.window)
    if not ok:
        print(f"fails even with {hi} KB:\n" + b.log(40))
        return 1
    while hi - lo > a.step:
        mid = (lo + hi) // 2
        ok, b = trial(mid, a.tls, a.window)
        print(f"heap {mid:4d} KB: {'ok' if ok else 'FAILS'}", flush=True)
        if ok:
            hi = mid
        else:
            lo = mid
            print("   " + "\n   ".join(b.log(6).splitlines()), flush=True)
    print(f"smallest heap that works ({'TLS' if a.tls else 'plain MQTT'}): {hi} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
