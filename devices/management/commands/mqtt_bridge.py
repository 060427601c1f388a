"""`python manage.py mqtt_bridge`: the long-running MQTT bridge (devices.bridge).

Several may run side by side: on the platform broker they share the subscriptions
(MQTT shared subscriptions); each other broker (a tenant's own) is held by one of them
under a lease in the database, taken over within --lease-ttl when its bridge dies;
commands are claimed with a conditional UPDATE.
"""

import faulthandler
import signal
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connections

from devices.bridge import probes
from devices.bridge.runner import Bridge
from poolsaas.request_context import RequestContext, bind_request_context

# Seconds between two looks at whether a stop signal came.
STOP_POLL = 0.2


def wait_for_stop(stopping: list, run_for: float | None) -> None:
    """Until a signal is recorded in `stopping`, or `run_for` seconds passed."""
    deadline = None if run_for is None else time.monotonic() + run_for
    while not stopping and (deadline is None or time.monotonic() < deadline):
        time.sleep(STOP_POLL)


def keep_connections() -> None:
    """Each bridge thread keeps its database connection (BRIDGE_DB_CONN_MAX_AGE)
    instead of opening one per flush and per sweep (at DB_CONN_MAX_AGE=0 the
    writer connected twice a second); `close_old_connections` still drops a
    connection that failed, and checks a kept one before its thread uses it.
    PostgreSQL lists them as `poolsaas-bridge`."""
    for alias in connections:
        db = connections.settings[alias]
        if db["CONN_MAX_AGE"] == 0 and "pool" not in db.get("OPTIONS", {}):
            db["CONN_MAX_AGE"] = settings.BRIDGE_DB_CONN_MAX_AGE
            # A kept connection a database restart broke is found before it is
            # used (one round trip per flush or sweep), not by a failed write.
            db["CONN_HEALTH_CHECKS"] = True
        if db["ENGINE"].endswith("postgresql"):
            db.setdefault("OPTIONS", {}).setdefault(
                "application_name", "poolsaas-bridge"
            )


class Command(BaseCommand):
    help = "Run the MQTT bridge: devices <-> database, channel layer and commands."

    def add_arguments(self, parser):
        parser.add_argument("--name", default=None, help="bridge name (client ids)")
        parser.add_argument("--flush-interval", type=float, default=0.5)
        parser.add_argument("--sweep-interval", type=float, default=1.0)
        parser.add_argument("--refresh-interval", type=float, default=5.0)
        parser.add_argument("--silence-factor", type=float, default=3.0)
        parser.add_argument("--broadcast-window", type=float, default=0.25)
        parser.add_argument("--stats-interval", type=float, default=60.0)
        parser.add_argument(
            "--lease-ttl",
            type=float,
            default=None,
            help="seconds a broker lease lasts unrenewed (3 refresh intervals, >= 10)",
        )
        parser.add_argument(
            "--http-port",
            type=int,
            default=None,
            help="port of /health, /ready, /metrics (BRIDGE_HTTP_PORT; 0: off)",
        )
        parser.add_argument(
            "--run-for", type=float, default=None, help="stop after N seconds"
        )

    def handle(self, *args, **options):
        # The channel-layer loop waits on Redis round trips; each wake-up must retake
        # the GIL from the worker. The default 5 ms switch interval then adds tens of
        # milliseconds to every broadcast; 1 ms keeps live updates prompt.
        sys.setswitchinterval(0.001)
        keep_connections()
        # SIGUSR1 prints every thread's stack (a stop that hangs, a stuck worker).
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        # The handler only records the signal; the main thread looks every
        # STOP_POLL seconds. A wait without a timeout could sleep through SIGTERM:
        # the kernel may hand a process's signal to any thread, and the handler then
        # waits for the main thread to run Python again (CPython), which a blocked
        # wait never does. (Setting an Event from the handler can also deadlock on
        # the Event's own lock, held by the wait it interrupted.)
        stopping: list[int] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, _frame: stopping.append(signum))
        with bind_request_context(RequestContext(source="bridge")):
            bridge = Bridge(
                name=options["name"],
                flush_interval=options["flush_interval"],
                sweep_interval=options["sweep_interval"],
                refresh_interval=options["refresh_interval"],
                silence_factor=options["silence_factor"],
                broadcast_window=options["broadcast_window"],
                stats_interval=options["stats_interval"],
                lease_ttl=options["lease_ttl"],
            ).start()
            endpoint = probes.serve(bridge, port=options["http_port"])
            self.stdout.write(f"mqtt bridge {bridge.name} running")
            wait_for_stop(stopping, options["run_for"])
            bridge.stop()
            if endpoint is not None:
                endpoint.stop()
            self.stdout.write(f"mqtt bridge stopped: {bridge.stats()}")
