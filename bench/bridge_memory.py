"""Bridge memory per device, and where it goes: no timing, so a busy machine will do.

    .venv/bin/python bench/bridge_memory.py [--devices 2000,10000] [--seconds 6]
        [--tracemalloc] [--top 25]

The method of bench/ingest.py's "[memory]" line, without its timing phases: one
`manage.py mqtt_bridge` process; its RSS once ready with no device; then N devices
(one tenant, one pool each) sending telemetry round robin at --rate msg/s (the
bench's sustained 5,000) for --seconds, and at least long enough for every device to
send twice, until the last row has landed; its RSS again. (RSS with devices − RSS
without) ÷ N is the figure. The bench measures it the same way, with more phases
after the sustained one (latency, with watched pools), so its figure is higher.

With --tracemalloc the bridge runs with tracemalloc on (PYTHONTRACEMALLOC, 6 frames)
and dumps a snapshot when the parent sends it SIGUSR2; for two device counts the
difference per allocation site (file:line of the newest frame) ÷ the difference in
devices is printed: bytes per device and site. tracemalloc sees Python's allocators
only (not libpq's, OpenSSL's, nor the allocator's own slack), and adds its own
overhead to the RSS, so the RSS figure comes from runs without it.
"""

import argparse
import linecache
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    BridgeProcess,
    add_service_arguments,
    django_for_bench,
    remove_fleet,
    seed_fleet,
)
from bench.ingest import measure_rows, run_publishers, sample_count  # noqa: E402

FRAMES = 6


def child(snapshot_path: str) -> None:
    """The bridge process: mqtt_bridge, with a snapshot of tracemalloc on SIGUSR2."""

    def dump(signum, frame):
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(snapshot_path + ".part")
            os.replace(snapshot_path + ".part", snapshot_path)

    signal.signal(signal.SIGUSR2, dump)
    from django.core.management import execute_from_command_line

    execute_from_command_line(
        ["manage.py", "mqtt_bridge", "--stats-interval", "1"]  # BridgeProcess's
    )


class ProbedBridge(BridgeProcess):
    """BridgeProcess, but started through `child` (same command line otherwise)."""

    def __init__(self, env, snapshot_path: str):
        import threading

        self.stats, self.log = {}, []
        command = [sys.executable, __file__, "--child", snapshot_path]
        super(BridgeProcess, self).__init__(command, env, None, stderr=subprocess.PIPE)
        threading.Thread(target=self._read, daemon=True).start()

    def snapshot(self, path: str) -> tracemalloc.Snapshot:
        done = Path(path)
        done.unlink(missing_ok=True)
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 300
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        return tracemalloc.Snapshot.load(path)


def one_run(args, env, devices: int, traced: bool) -> dict:
    from devices.services.brokers import broker_ensure_platform
    from tenants.models import Tenant

    Tenant.objects.filter(slug__startswith="bench-").delete()
    broker = broker_ensure_platform()
    snap = os.path.join(tempfile.gettempdir(), f"bridge-mem-{uuid.uuid4().hex}.snap")
    run_env = dict(env)
    if traced:
        run_env["PYTHONTRACEMALLOC"] = str(FRAMES)
    else:
        run_env.pop("PYTHONTRACEMALLOC", None)
    bridge = ProbedBridge(run_env, snap)
    tenant = None
    out = {"devices": devices}
    try:
        bridge.wait_stats(lambda s: True, timeout=180)
        time.sleep(1.5)
        out["rss_empty_kb"] = bridge.rss_kb()
        if traced:
            out["empty"] = bridge.snapshot(snap)
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        ids = [f"ESP-{i:06X}" for i in range(devices)]
        topics = [f"{prefix}/{device_id}/telemetry" for device_id in ids]
        tenant, _ = seed_fleet(name="Bench", prefix=prefix, ids=ids, broker=broker)
        bridge.wait_stats(lambda s: s.get("devices") == devices, timeout=180)
        bridge.wait_stats(lambda s: all(s.get("connections", {0: 0}).values()))
        time.sleep(6.0)  # a refresh of the whole directory at least
        out["rss_directory_kb"] = bridge.rss_kb()
        before = sample_count(tenant.pk)
        # Every device twice at least, at the bench's sustained rate.
        seconds = max(args.seconds, 2 * devices / args.rate)
        if args.trace_rss:
            import threading

            def trace():
                while not out.get("sent"):
                    print(f"  rss {bridge.rss_kb() / 1024:.1f} MiB", flush=True)
                    time.sleep(2)

            threading.Thread(target=trace, daemon=True).start()
        start_at, wait = run_publishers(
            args.host, args.port, topics, rate=args.rate, duration=seconds
        )
        measure_rows(
            tenant.pk,
            until_idle=3.0,
            limit=seconds + 240,
            not_before=start_at + seconds + 1,
        )
        sent, _ = wait()
        # A loaded database may pause the writes longer than measure_rows waits.
        deadline = time.monotonic() + 60
        while (
            sample_count(tenant.pk) - before < bridge.stats.get("accepted", 0)
            and time.monotonic() < deadline
        ):
            time.sleep(0.5)
        out["sent"], out["stored"] = sent, sample_count(tenant.pk) - before
        time.sleep(1.0)
        out["rss_loaded_kb"] = bridge.rss_kb()
        if traced:
            out["loaded"] = bridge.snapshot(snap)
        stats = bridge.stats
        out["malformed"] = stats.get("malformed", 0)
        out["counters"] = {
            k: stats.get(k) for k in ("received", "accepted", "errors", "inbox_full")
        }
        out["problems"] = [
            line for line in bridge.log if " ERROR " in line or "WARNING" in line
        ][-3:]
        return out
    finally:
        bridge.stop()
        Path(snap).unlink(missing_ok=True)
        if tenant is not None:
            remove_fleet(tenant)


def site_sizes(snapshot: tracemalloc.Snapshot) -> dict:
    """file:line of the newest frame inside the project (else the newest frame)
    -> (bytes, blocks)."""
    root = str(ROOT)
    sizes: dict = {}
    for stat in snapshot.statistics("traceback"):
        frames = list(reversed(stat.traceback))  # newest first
        ours = next(
            (
                f
                for f in frames
                if f.filename.startswith(root) and "/.venv/" not in f.filename
            ),
            frames[0],
        )
        newest = frames[0]
        key = (
            f"{short(newest.filename)}:{newest.lineno}"
            if ours is newest
            else f"{short(newest.filename)}:{newest.lineno} <- "
            f"{short(ours.filename)}:{ours.lineno}"
        )
        size, count = sizes.get(key, (0, 0))
        sizes[key] = (size + stat.size, count + stat.count)
    return sizes


def short(filename: str) -> str:
    for marker in ("/site-packages/", "/lib/python3.11/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return os.path.relpath(filename, ROOT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="2000,10000")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rate", type=int, default=5000, help="msg/s (the bench's)")
    parser.add_argument("--trace-rss", action="store_true", help="RSS every 2 s")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    add_service_arguments(parser)
    args = parser.parse_args()
    args.host, port = args.mqtt.split(":")
    args.port = int(port)
    env = django_for_bench(args.database_url, args.redis_url, args.host, args.port)
    runs = []
    for devices in [int(n) for n in args.devices.split(",")]:
        run = one_run(args, env, devices, args.tracemalloc)
        runs.append(run)
        per = (run["rss_loaded_kb"] - run["rss_empty_kb"]) / devices
        idle = (run["rss_directory_kb"] - run["rss_empty_kb"]) / devices
        print(
            f"[rss] {devices} devices: {run['rss_empty_kb'] / 1024:.1f} MiB empty, "
            f"{run['rss_loaded_kb'] / 1024:.1f} MiB loaded: {per:.2f} KiB per device "
            f"({idle:.2f} with the devices before any message) "
            f"(stored {run['stored']} of {run['sent']}, malformed {run['malformed']}"
            f"{', tracemalloc on: inflated' if args.tracemalloc else ''})",
            flush=True,
        )
        print(f"  bridge {run['counters']} {run['problems']}")
        if args.tracemalloc:
            traced = sum(s.size for s in run["loaded"].statistics("filename")) - sum(
                s.size for s in run["empty"].statistics("filename")
            )
            print(f"[traced] {devices} devices: {traced / devices:.0f} B per device")
    if len(runs) >= 2:
        a, b = runs[0], runs[-1]
        dn = b["devices"] - a["devices"]
        rss = (b["rss_loaded_kb"] - a["rss_loaded_kb"]) / dn
        print(f"[rss] marginal, {a['devices']} -> {b['devices']}: {rss:.2f} KiB/device")
        if args.tracemalloc:
            grow_a = diff(site_sizes(a["loaded"]), site_sizes(a["empty"]))
            grow_b = diff(site_sizes(b["loaded"]), site_sizes(b["empty"]))
            per_site = diff(grow_b, grow_a)
            total = sum(v[0] for v in per_site.values())
            print(
                f"[sites] bytes per device by allocation site (growth with "
                f"{b['devices']} minus growth with {a['devices']}, / {dn}): "
                f"total {total / dn:.0f} B"
            )
            ranked = sorted(per_site.items(), key=lambda kv: -abs(kv[1][0]))
            for key, (size, count) in ranked[: args.top]:
                where = key.split(" <- ")[0]
                file, _, line = where.rpartition(":")
                path = file if file.startswith("/") else str(ROOT / file)
                source = linecache.getline(path, int(line)).strip()[:60]
                if not source:
                    for base in sys.path:
                        source = linecache.getline(
                            os.path.join(base, file), int(line)
                        ).strip()[:60]
                        if source:
                            break
                print(f"{size / dn:8.1f} B {count / dn:6.2f} blocks  {key}  | {source}")
    return 0


def diff(new: dict, old: dict) -> dict:
    keys = set(new) | set(old)
    return {
        k: (
            new.get(k, (0, 0))[0] - old.get(k, (0, 0))[0],
            new.get(k, (0, 0))[1] - old.get(k, (0, 0))[1],
        )
        for k in keys
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "poolsaas.settings")
        path = sys.argv[2]
        sys.argv = [str(ROOT / "manage.py")]
        child(path)
    else:
        sys.exit(main())
