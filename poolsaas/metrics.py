"""Every Prometheus metric of poolsaas, in one place (docs/operations.md lists them).

Two kinds:
- process-wide metrics (prometheus-client objects below): observed a few times a
  second at most (once per burst of messages, per batch write, per command status
  change, per socket), never once per device message;
- the bridge's counters, which the bridge already keeps as plain ints and dicts in
  its loops (`Dispatcher.counters`, `LiveChannel.counters`, each connection's
  `counters`): `BridgeCollector` reads them when Prometheus scrapes, so the hot
  path pays nothing for them (bench/metrics_cost.py measures it).

The web process serves /metrics (poolsaas.api.health.metrics); the bridge serves its
own on a loopback port (devices.bridge.probes). With several web processes on one host
behind one address, set PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess
mode: each process writes its values to files there, /metrics adds them up).
"""

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
COMMAND_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

COMMANDS = Counter(
    "poolsaas_commands",
    "Commands reaching a status in this process (created: stored pending; sent: "
    "claimed and published; done, failed, timed_out: final)",
    ["status"],
)
COMMAND_SECONDS = Histogram(
    "poolsaas_command_seconds",
    "Command created -> final status, by that status",
    ["status"],
    buckets=COMMAND_BUCKETS,
)
SOCKETS = Gauge(
    "poolsaas_sockets_open",
    "WebSockets open in this process (live: pool and overview pages; gateway: MQTT "
    "over WebSocket)",
    ["kind"],
    multiprocess_mode="livesum",
)
INGEST_LAG = Histogram(
    "poolsaas_bridge_ingest_lag_seconds",
    "Broker receipt -> the worker handles it, for the first message of each burst "
    "(the oldest waiting)",
    buckets=LATENCY_BUCKETS,
)
WRITE_SECONDS = Histogram(
    "poolsaas_bridge_write_batch_seconds",
    "One batch write of every room (the writer thread), failed ones included",
    buckets=LATENCY_BUCKETS,
)

# Dispatcher and room counters that count a message (or a row) dropped.
DROP_REASONS = (
    "unauthorised",
    "malformed",
    "over_quota",
    "errors",
    "rows_dropped",
    "retry_dropped",
)
BROKER_DROPS = ("oversize", "bad_topic")


def command_reached(status: str, created_at=None) -> None:
    """A command reached `status` (devices.services.commands); final statuses also
    observe the time since it was created."""
    COMMANDS.labels(status).inc()
    if created_at is not None:
        COMMAND_SECONDS.labels(status).observe(
            max(0.0, time.time() - created_at.timestamp())
        )


class SocketCount:
    """Counts a consumer's socket once, from connect to disconnect."""

    def __init__(self, kind: str) -> None:
        self.gauge = SOCKETS.labels(kind)
        self.open = False

    def opened(self) -> None:
        if not self.open:
            self.open = True
            self.gauge.inc()

    def closed(self) -> None:
        if self.open:
            self.open = False
            self.gauge.dec()


class BridgeCollector:
    """The bridge's own counters and queues, read at scrape time."""

    def __init__(self, bridge) -> None:
        self.bridge = bridge

    def collect(self):
        bridge = self.bridge
        counters = dict(bridge.dispatcher.counters)
        connections = list(bridge.connections.items())
        faults = {pk: dict(conn.counters) for pk, conn in connections}

        def counter(name, doc, value):
            yield CounterMetricFamily(f"poolsaas_bridge_{name}", doc, value=value)

        def gauge(name, doc, value):
            yield GaugeMetricFamily(f"poolsaas_bridge_{name}", doc, value=value)

        yield from counter(
            "messages_in",
            "Messages received from every broker",
            counters.get("received", 0),
        )
        yield from counter(
            "messages_accepted",
            "Messages a room took",
            counters.get("accepted", 0),
        )
        dropped = CounterMetricFamily(
            "poolsaas_bridge_messages_dropped",
            "Messages (or rows) dropped, by reason",
            labels=["reason"],
        )
        for reason in DROP_REASONS:
            dropped.add_metric([reason], counters.get(reason, 0))
        for reason in BROKER_DROPS:
            dropped.add_metric([reason], sum(f.get(reason, 0) for f in faults.values()))
        yield dropped
        yield from counter(
            "inbox_full_waits",
            "Times the network thread waited for room in the inbox (backpressure)",
            counters.get("inbox_full", 0),
        )
        yield from counter(
            "write_waits",
            "Times the worker waited for the writer (rows pending past the bound)",
            counters.get("write_waits", 0),
        )
        yield from counter("flushes", "Batch writes that succeeded", bridge.flushes)
        yield from counter(
            "db_errors",
            "Database failures (writes, sweeps, refreshes)",
            bridge.db_errors,
        )
        rooms = bridge.dispatcher.rooms
        published = sum(room.stats().get("published", 0) for room in rooms)
        yield from counter("commands_published", "Commands put on the wire", published)
        yield from gauge(
            "ingest_lag_seconds_now",
            "Age of the oldest message waiting now (0 when the inbox is empty)",
            ingest_lag_now(bridge),
        )
        yield from gauge("inbox", "Messages waiting in the inbox", bridge.inbox.qsize())
        yield from gauge(
            "pending_rows",
            "Rows collected for the next write",
            sum(room.pending() for room in rooms),
        )
        yield from gauge(
            "held_batches",
            "Room batches held for a retry (the database away)",
            len(bridge._retry),
        )
        yield from gauge(
            "devices",
            "Devices in the directory",
            len(bridge.dispatcher.directory.by_pk),
        )
        yield from gauge("leases", "Broker leases held", len(bridge.leased))
        state = GaugeMetricFamily(
            "poolsaas_bridge_broker_connected",
            "1 when the connection to a broker is up (broker: its id)",
            labels=["broker", "platform"],
        )
        for pk, conn in connections:
            platform = "1" if pk == bridge.platform_broker_id else "0"
            state.add_metric([str(pk), platform], 1 if conn.connected.is_set() else 0)
        yield state
        connects = CounterMetricFamily(
            "poolsaas_bridge_broker_connects",
            "Successful connects to a broker (more than one: reconnects)",
            labels=["broker"],
        )
        broker_faults = CounterMetricFamily(
            "poolsaas_bridge_broker_faults",
            "What a broker did wrong, by kind",
            labels=["broker", "kind"],
        )
        for pk, conn in connections:
            connects.add_metric([str(pk)], conn.connects)
            for kind, value in faults[pk].items():
                broker_faults.add_metric([str(pk), kind], value)
        yield connects
        yield broker_faults
        live = bridge.live
        if live is not None:
            sends = CounterMetricFamily(
                "poolsaas_bridge_live_sends",
                "Channel-layer sends, by outcome (sent, skipped: nobody watching, "
                "merged: throttled into a later send, failed)",
                labels=["outcome"],
            )
            for outcome, value in dict(live.counters).items():
                sends.add_metric([outcome], value)
            yield sends
            yield from gauge(
                "live_queue",
                "Broadcast batches waiting for the sender",
                queue.qsize() if (queue := getattr(live, "_queue", None)) else 0,
            )
            delays = live.delays()
            yield from gauge(
                "live_send_p99_seconds",
                "Worker -> group_send done, p99 of the last 2,000 sends",
                delays.get("p99_ms", 0.0) / 1000,
            )


def burst_started(bridge, received_at: float) -> None:
    """The worker took the first message of a burst (received at `received_at`)."""
    bridge.burst_at = now = time.time()
    bridge.burst_lag = lag = max(0.0, now - received_at)
    INGEST_LAG.observe(lag)


def ingest_lag_now(bridge) -> float:
    """How far behind the worker is: 0 with an empty inbox; otherwise the lag of the
    last burst, or the time since it began if longer (a worker stuck on a burst)."""
    if bridge.inbox.empty():
        return 0.0
    burst_at = getattr(bridge, "burst_at", None)
    if burst_at is None:
        return 0.0
    return max(getattr(bridge, "burst_lag", 0.0), time.time() - burst_at)


def bridge_registry(bridge) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(BridgeCollector(bridge))
    return registry


def exposition(*registries) -> tuple[bytes, str]:
    """The text format of the process-wide metrics and of `registries`."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        shared = CollectorRegistry()
        multiprocess.MultiProcessCollector(shared)
        parts = [generate_latest(shared)]
    else:
        parts = [generate_latest(REGISTRY)]
    parts += [generate_latest(r) for r in registries]
    return b"".join(parts), CONTENT_TYPE_LATEST
