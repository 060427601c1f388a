"""python -m firmware.sim: run N virtual pool controllers against an MQTT broker."""

import argparse
import json
import logging
import signal
import sys
import threading
import time

from firmware import protocol as P
from firmware.sim.fleet import Fleet, make_ids


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m firmware.sim",
        description="Simulated poolsaas pool controllers running the real controller.",
    )
    p.add_argument("--count", type=int, default=1, help="number of devices (default 1)")
    p.add_argument("--ids", help="comma-separated device ids (overrides --count)")
    p.add_argument("--id-prefix", default="ESP-", help="id prefix (default ESP-)")
    p.add_argument("--id-start", type=lambda s: int(s, 0), default=0xA00001)
    p.add_argument(
        "--broker", default="mqtt://127.0.0.1:1883", help="mqtt[s]://host:port"
    )
    p.add_argument("--username", help="MQTT username for every device")
    p.add_argument("--password", help="MQTT password for every device")
    p.add_argument(
        "--creds",
        help='JSON file {"<device id>": {"username": .., "password": ..}, ...}',
    )
    p.add_argument("--ca", help="CA certificate file for mqtts://")
    p.add_argument("--prefix", default=P.DEFAULT_PREFIX, help="topic prefix")
    p.add_argument(
        "--interval",
        type=int,
        help="telemetry interval in s (default: the device config, 60)",
    )
    p.add_argument("--legacy", action="store_true", help="speak only the v3.1 topics")
    p.add_argument("--drop-every", type=int, default=0, help="drop TCP every N s")
    p.add_argument(
        "--garbage-every", type=int, default=0, help="send garbage every N s"
    )
    p.add_argument("--silent-after", type=int, default=0, help="go silent after N s")
    p.add_argument("--keepalive", type=int, default=30)
    p.add_argument(
        "--duration", type=float, default=0, help="stop after N s (0: never)"
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if args.ids:
        ids = [i.strip() for i in args.ids.split(",") if i.strip()]
    else:
        ids = make_ids(args.count, args.id_prefix, args.id_start, args.legacy)
    bad = [i for i in ids if not P.is_valid_id(i)]
    if bad:
        sys.exit(f"invalid device ids: {', '.join(bad)}")
    creds = {}
    if args.creds:
        with open(args.creds) as f:
            creds = json.load(f)
    common = {
        "broker": args.broker,
        "prefix": args.prefix,
        "legacy": args.legacy,
        "interval": args.interval,
        "keepalive": args.keepalive,
        "drop_every": args.drop_every,
        "garbage_every": args.garbage_every,
        "silent_after": args.silent_after,
        "ca_certs": args.ca,
    }
    from firmware.sim.device import VirtualDevice

    devices = []
    for i in ids:
        c = creds.get(i, {})
        devices.append(
            VirtualDevice(
                i,
                username=c.get("username", args.username),
                password=c.get("password", args.password),
                **common,
            )
        )
    fleet = Fleet(devices)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    mode = "v3.1 (legacy)" if args.legacy else "ps1"
    logging.info(
        "starting %d %s device(s) on %s under %s/",
        len(ids),
        mode,
        args.broker,
        args.prefix,
    )
    fleet.start()
    started = time.monotonic()
    try:
        while not done.is_set():
            if args.duration and time.monotonic() - started >= args.duration:
                break
            done.wait(1.0)
    finally:
        fleet.stop()
    online = sum(d.connects > 0 for d in devices)
    logging.info("stopped; %d/%d device(s) had connected", online, len(devices))
    return 0


if __name__ == "__main__":
    sys.exit(main())
