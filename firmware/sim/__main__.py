"""python -m firmware.sim: run N virtual pool controllers against an MQTT broker."""

import argparse
import json
import logging
import multiprocessing as mp
import os
import signal
import sys
import time

from firmware import protocol as P
from firmware.sim.device import SIM_HW
from firmware.sim.fleet import Fleet, make_ids

# paho waits on select(), which cannot watch file descriptors >= 1024, and each client
# uses three: one process holds at most ~300 full devices, so larger fleets are split.
DEVICES_PER_PROCESS = 250


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
        help='JSON file {"<device id>": {"username": .., "password": .., '
        '"ota_key": ..}, ...}',
    )
    p.add_argument("--ca", help="CA certificate file for mqtts://")
    p.add_argument("--prefix", default=P.DEFAULT_PREFIX, help="topic prefix")
    p.add_argument(
        "--interval",
        type=float,
        help="telemetry interval in s (default: the device config, 60)",
    )
    p.add_argument("--legacy", action="store_true", help="speak only the v3.1 topics")
    p.add_argument(
        "--hw-model",
        default=SIM_HW,
        type=lambda v: None if v.lower() == "none" else v,
        help=f"hardware model the telemetry reports and the updater accepts (default "
        f"{SIM_HW}; 'none': no hw, as firmware from before the model)",
    )
    p.add_argument("--drop-every", type=int, default=0, help="drop TCP every N s")
    p.add_argument(
        "--garbage-every", type=int, default=0, help="send garbage every N s"
    )
    p.add_argument("--silent-after", type=int, default=0, help="go silent after N s")
    p.add_argument("--keepalive", type=int, default=30)
    p.add_argument(
        "--duration", type=float, default=0, help="stop after N s (0: never)"
    )
    p.add_argument(
        "--load",
        action="store_true",
        help="load mode: telemetry and status only, many devices per MQTT connection",
    )
    p.add_argument("--processes", type=int, default=2, help="load mode processes")
    p.add_argument(
        "--connections", type=int, default=25, help="load mode connections per process"
    )
    p.add_argument(
        "--ota-dir",
        help="take OTA updates (devices whose --creds entry has an ota_key): each "
        "device's board folder goes under this folder",
    )
    p.add_argument(
        "--ota-fail-verify",
        action="store_true",
        help="OTA: corrupt one chunk on its way to flash (the verification fails)",
    )
    p.add_argument(
        "--ota-corrupt-at",
        type=float,
        default=None,
        help="OTA: corrupt the chunk at this share of the transfer once in transit "
        "(0..1; dropped and fetched again)",
    )
    p.add_argument(
        "--ota-crash-new",
        action="store_true",
        help="OTA: the new version crashes at start (rolled back)",
    )
    p.add_argument(
        "--ota-drop-at",
        type=float,
        default=0.0,
        help="OTA: drop the link once at this share of the transfer (0..1)",
    )
    p.add_argument(
        "--ota-reboot-at",
        type=float,
        default=0.0,
        help="OTA: lose power once at this share of the transfer (0..1; resumed)",
    )
    p.add_argument(
        "--ota-damage-on-reboot",
        action="store_true",
        help="OTA: with --ota-reboot-at, damage the last chunk on flash meanwhile "
        "(found at the resume and fetched again)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _ota_switches(args):
    return {
        "fail_verify": args.ota_fail_verify,
        "corrupt_at": args.ota_corrupt_at,
        "crash_new": args.ota_crash_new,
        "drop_at": args.ota_drop_at,
        "reboot_at": args.ota_reboot_at,
        "damage_on_reboot": args.ota_damage_on_reboot,
    }


def _ota_load(ids, args, creds):
    """Load mode's OTA devices: those with an ota_key in the creds file."""
    out = {}
    for i in ids:
        key = creds.get(i, {}).get("ota_key")
        if args.ota_dir and key:
            out[i] = _ota_switches(args)
            out[i]["key"] = key
    return out


def _run_fleet(ids, args, creds, wait):
    """One process: a Fleet of full devices (own connection each) until wait()
    returns."""
    from firmware.sim.device import VirtualDevice

    interval = int(args.interval) if args.interval else None
    devices = []
    for i in ids:
        c = creds.get(i, {})
        devices.append(
            VirtualDevice(
                i,
                broker=args.broker,
                username=c.get("username", args.username),
                password=c.get("password", args.password),
                prefix=args.prefix,
                legacy=args.legacy,
                interval=interval,
                keepalive=args.keepalive,
                drop_every=args.drop_every,
                garbage_every=args.garbage_every,
                silent_after=args.silent_after,
                ca_certs=args.ca,
                ota_key=c.get("ota_key") if args.ota_dir else None,
                ota_root=os.path.join(args.ota_dir, i) if args.ota_dir else None,
                ota_opts=_ota_switches(args),
                hw_model=args.hw_model,
            )
        )
    fleet = Fleet(devices).start()
    try:
        wait()
    finally:
        fleet.stop()
    return sum(d.connects > 0 for d in devices)


def _child(ids, args, creds, done, result, parent):
    # The parent decides when to stop (Ctrl-C and `kill` of the process group reach
    # every process); a child whose parent died stops by itself instead of lingering.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def wait():
        while not done.wait(1.0):
            if os.getppid() != parent:
                return

    result.put(_run_fleet(ids, args, creds, wait))


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
    if not P.is_valid_prefix(args.prefix):
        sys.exit(f"invalid prefix: {args.prefix}")
    creds = {}
    if args.creds:
        with open(args.creds) as f:
            creds = json.load(f)

    ctx = mp.get_context("fork")
    done = ctx.Event()
    # The handlers only record the signal. Setting a multiprocessing Event from a
    # handler deadlocks when the handler interrupts a wait() on that same Event in the
    # main thread (Condition.notify waits for the sleeper, which is the handler's own
    # thread): SIGTERM then never stopped the simulator.
    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()

    def wait():
        """Return on SIGTERM/SIGINT or after --duration (main thread only)."""
        while not stopping:
            if args.duration and time.monotonic() - started >= args.duration:
                break
            time.sleep(0.1)
        done.set()

    if args.load:
        from firmware.sim.load import LoadRun

        run = LoadRun(
            ids,
            broker=args.broker,
            prefix=args.prefix,
            interval=args.interval or 60,
            processes=args.processes,
            connections=args.connections,
            username=args.username,
            password=args.password,
            ota=_ota_load(ids, args, creds),
            ota_dir=args.ota_dir,
            hw_model=args.hw_model,
        ).start()
        logging.info(
            "load mode: %d virtual devices (own topics) over %d MQTT connections in "
            "%d processes, one telemetry every %g s each, under %s/",
            len(ids),
            run.connections,
            len(run.procs),
            args.interval or 60,
            args.prefix,
        )
        try:
            wait()
        finally:
            run.stop()
        logging.info("stopped; %d telemetry messages sent", run.sent.value)
        return 0

    mode = "v3.1 (legacy)" if args.legacy else "ps1"
    slices = [
        ids[i : i + DEVICES_PER_PROCESS]
        for i in range(0, len(ids), DEVICES_PER_PROCESS)
    ]
    logging.info(
        "starting %d %s device(s) on %s under %s/ (%d process(es))",
        len(ids),
        mode,
        args.broker,
        args.prefix,
        len(slices),
    )
    if len(slices) == 1:
        online = _run_fleet(ids, args, creds, wait)
    else:
        result = ctx.Queue()
        procs = [
            ctx.Process(target=_child, args=(s, args, creds, done, result, os.getpid()))
            for s in slices
        ]
        for p in procs:
            p.start()
        try:
            wait()
        finally:
            done.set()
            online = sum(result.get(timeout=120) for _ in procs)
            for p in procs:
                p.join(30)
    logging.info("stopped; %d/%d device(s) had connected", online, len(ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
