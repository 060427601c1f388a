"""Soak: the firmware (precompiled, MicroPython unix port) through a storm of outages.

Rounds of four outages, in a random order, 4 to 10 random seconds apart (about one
round a minute): the broker is killed (SIGKILL, sessions lost), frozen (SIGSTOP, sockets
open, nothing answered), restarted (SIGTERM, sessions saved), and the Wi-Fi is dropped;
each lasts a random few seconds.
Meanwhile a cloud-side client sends a command every few seconds while the board is
online and well clear of the next outage, and sends it again (same id) when no ack came
within 8 s, as the server does. Printed: the reconnect time after each
recovery (recovery -> the board's next live "online", or its connection survived),
gc.mem_free() from the telemetry every minute, watchdog resets, and sent/acked
commands. Exit status 1 when a command went unacked, the watchdog fired, or a
reconnect took longer than 10 s.

    .venv/bin/python bench/firmware_soak.py [--minutes 10] [--heap-kb 128] [--seed 1]
"""

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from firmware import protocol as P  # noqa: E402
from firmware.tests import board as B  # noqa: E402
from firmware.tests.test_sim_mqtt import Observer  # noqa: E402

LIMIT_S = 10.0
QUIET_BEFORE_OUTAGE_S = 4.0  # no command this close to an outage (it may be lost)
RESEND_AFTER_S = 8.0


class Soak:
    def __init__(self, args):
        self.a = args
        self.rng = random.Random(args.seed)
        root = tempfile.mkdtemp(prefix="fwsoak")
        self.broker = B.Broker(root + "/broker").start()
        self.prefix = "soak-" + uuid.uuid4().hex[:6]
        self.obs = Observer(self.broker.url, self.prefix).start()
        self.raw_telemetry = None  # the parser drops "dropped": keep the raw one
        parsed = self.obs.c.on_message

        def on_message(client, userdata, msg):
            if msg.topic.endswith("/" + P.TELEMETRY):
                self.raw_telemetry = msg.payload
            parsed(client, userdata, msg)

        self.obs.c.on_message = on_message
        self.obs_since = time.monotonic()
        subscribe = self.obs.c.on_connect

        def on_connect(*args):
            subscribe(*args)
            self.obs_since = time.monotonic()

        self.obs.c.on_connect = on_connect
        self.board = B.Board(
            root + "/board",
            self.broker.port,
            self.prefix,
            heap_kb=args.heap_kb,
            config=f"KEEPALIVE_S = {args.keepalive}\nWDT_TIMEOUT_MS = 30000",
        )
        self.board.set_temp(24.0)
        self.t0 = None
        self.current = None  # the outage in progress
        self.next_outage_at = float("inf")
        self.recoveries = []  # (kind, seconds to online or None if it survived)
        self.sent = {}
        self.cmds = {}  # id -> (last sent, payload)
        self.resent = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def now(self):
        return time.monotonic() - self.t0

    # --- what the cloud sees ------------------------------------------------------

    def _drain(self):
        obs = self.obs
        while not obs.q.empty():
            obs.seen.append(obs.q.get())

    def live(self, kind, pred=lambda v: True):
        self._drain()
        return [m for m in self.obs.seen if m[1] == kind and not m[3] and pred(m[2])]

    def online_count(self):
        return len(self.live("status", lambda v: v is True))

    def last_status(self):
        s = self.live("status")
        return s[-1][2] if s else None

    def acked(self):
        return {m[2]["id"] for m in self.live("ack")}

    # --- the command sender -------------------------------------------------------

    def sender(self):
        n = 0
        while not self.stop.is_set():
            time.sleep(self.a.command_every)
            with self.lock:
                clear = (
                    self.current is None
                    and self.next_outage_at - self.now() > QUIET_BEFORE_OUTAGE_S
                    and self.last_status() is True
                    and self.board.proc is not None
                    and self.obs.c.is_connected()
                    # (its subscriptions must be in place to see the ack)
                    and time.monotonic() - self.obs_since > 1.0
                )
                if not clear:
                    continue
                # As the server does: a command without an ack after a while is sent
                # again with the same id (the board answers a duplicate from its cache
                # and does not execute it twice).
                done = self.acked()
                for old, (at, payload) in list(self.cmds.items()):
                    if old not in done and self.now() - at > RESEND_AFTER_S:
                        self.obs.publish(self.board.device_id, P.CMD, payload)
                        self.cmds[old] = (self.now(), payload)
                        self.resent[old] = self.resent.get(old, 0) + 1
                        print(
                            f"  [{self.now():6.1f} s] no ack for {old} yet: sent again"
                        )
                n += 1
                cid = f"soak-{n}"
                value = "ON" if n % 2 else "OFF"
                exp = int(time.time()) + 120
                try:
                    cmd = P.encode_command(cid, exp, "pump", value)
                    self.obs.publish(self.board.device_id, P.CMD, cmd)
                    self.sent[cid] = self.now()
                    self.cmds[cid] = (self.now(), cmd)
                except (OSError, RuntimeError, ValueError) as e:
                    print(f"  (command {cid} not sent: {e})")

    # --- outages ------------------------------------------------------------------

    def _begin(self, kind):
        b, br = self.board, self.broker
        if kind == "kill":
            br.kill()
        elif kind == "freeze":
            br.freeze()
        elif kind == "restart":
            br.stop()
        elif kind == "wifi":
            b.wifi(False)

    def _end(self, kind):
        b, br = self.board, self.broker
        if kind in ("kill", "restart"):
            br.start()
        elif kind == "freeze":
            br.thaw()
        elif kind == "wifi":
            b.wifi(True)

    def outage(self, kind):
        dur = {
            "kill": self.rng.uniform(2, 6),
            "restart": self.rng.uniform(0, 3),
            # Some shorter than the keepalive (the connection may survive), some longer.
            "freeze": self.rng.uniform(3, 2 * self.a.keepalive),
            "wifi": self.rng.uniform(2, 8),
        }[kind]
        at = self.now() + self.rng.uniform(4, 10)
        with self.lock:
            self.next_outage_at = at
        while self.now() < at:
            time.sleep(0.05)
        before = self.online_count()
        with self.lock:
            self.current = kind
        self._begin(kind)
        time.sleep(dur)
        self._end(kind)
        recovered = time.monotonic()
        with self.lock:
            self.current = None
            self.next_outage_at = float("inf")
        # Reconnected: a new live "online" after this outage began. A freeze or a
        # restart the connection survived shows none (None below).
        took = None
        deadline = recovered + 2 * LIMIT_S
        while time.monotonic() < deadline:
            if self.online_count() > before:
                took = time.monotonic() - recovered
                break
            time.sleep(0.05)
        self.recoveries.append((kind, dur, took))
        shown = "none needed (connection survived)" if took is None else f"{took:.2f} s"
        print(
            f"  [{self.now():6.1f} s] {kind:7s} for {dur:4.1f} s -> reconnect {shown}",
            flush=True,
        )

    def mem_free(self):
        tel = self.live("telemetry")
        return tel[-1][2]["mem_free"] if tel else None

    def reporter(self, mem):
        minute = 0
        while not self.stop.wait(max(0.0, (minute + 1) * 60 - self.now())):
            minute += 1
            m = self.mem_free()
            mem.append(m)
            print(
                f"minute {minute}: gc.mem_free() {m} bytes, watchdog resets"
                f" {self.board.watchdog_resets}, commands sent {len(self.sent)},"
                f" acked {len(set(self.sent) & self.acked())}",
                flush=True,
            )

    def run(self):
        a = self.a
        self.board.start()
        self.obs.expect(lambda i, k, v, r: k == "status" and v, timeout=30)
        self.t0 = time.monotonic()
        mem = []
        print(f"soak: {a.minutes} min, heap {a.heap_kb} KB, keepalive {a.keepalive} s")
        threading.Thread(target=self.sender, daemon=True).start()
        rep = threading.Thread(target=self.reporter, args=(mem,), daemon=True)
        rep.start()
        try:
            while self.now() < a.minutes * 60 - 40:
                kinds = ["kill", "freeze", "restart", "wifi"]
                self.rng.shuffle(kinds)
                for kind in kinds:
                    if self.now() >= a.minutes * 60 - 40:
                        break
                    self.outage(kind)
            while self.now() < a.minutes * 60 + 0.5:
                time.sleep(0.1)
        finally:
            self.stop.set()
            rep.join(2)
        # The last commands: give them time to be acked.
        deadline = time.monotonic() + 30
        while set(self.sent) - self.acked() and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.report(mem)

    def report(self, mem):
        b = self.board
        missing = sorted(set(self.sent) - self.acked())
        took = [t for _, _, t in self.recoveries if t is not None]
        survived = sum(1 for _, _, t in self.recoveries if t is None)
        print("--- soak result")
        print(
            f"outages {len(self.recoveries)}: reconnects {len(took)}, connection"
            f" survived {survived}"
        )
        if took:
            took.sort()
            print(
                f"reconnect time after recovery: min {took[0]:.2f} s, median"
                f" {took[len(took) // 2]:.2f} s, max {took[-1]:.2f} s"
            )
        print("gc.mem_free() each minute:", mem)
        print(f"watchdog resets: {b.watchdog_resets}; boots: {b.boots}")
        print(f"commands sent while online: {len(self.sent)}, acked: "
              f"{len(self.sent) - len(missing)}, unacked: {missing}")  # fmt: skip
        again = sorted(self.resent)
        when = [round(self.sent[c], 1) for c in again]
        print(f"commands sent again for want of an ack: {len(again)} {again} {when}")
        raw = json.loads(self.raw_telemetry) if self.raw_telemetry else {}
        print("outbox messages dropped (telemetry):", raw.get("dropped"))
        print(f"MemoryError in the log: {b.saw('MemoryError')}")
        bad = (
            missing
            or b.watchdog_resets
            or b.saw("MemoryError")
            or any(t > LIMIT_S for t in took)
            or any(t is None for _, d, t in self.recoveries if d > 2 * self.a.keepalive)
        )
        b.stop()
        self.obs.stop()
        self.broker.kill()
        if bad:
            print("SOAK FAILED; last board log lines:\n" + b.log(60))
            return 1
        print("soak passed")
        return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=int, default=10)
    p.add_argument("--heap-kb", type=int, default=128, help="micropython -X heapsize")
    p.add_argument("--keepalive", type=int, default=10, help="the board's, seconds")
    p.add_argument("--command-every", type=float, default=2.0, help="seconds")
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args(argv)
    if a.seed is None:
        a.seed = random.randrange(1 << 30)
    print(f"seed {a.seed}")
    soak = Soak(a)
    try:
        return soak.run()
    finally:
        # Never leave a board or a broker running behind (report() stops them too).
        soak.board.stop()
        soak.broker.kill()


if __name__ == "__main__":
    sys.exit(main())
