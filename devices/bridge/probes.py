"""The bridge's own small HTTP endpoint, for probes and Prometheus
(docs/operations.md): on a loopback port by default (BRIDGE_HTTP_HOST,
BRIDGE_HTTP_PORT; 0 turns it off).

- GET /health: the process answers and its worker and writer threads run;
- GET /ready: and it is connected to the platform broker (when it serves it), its
  write loop is neither stuck nor holding batches for a database that is away, and
  its ingest lags less than BRIDGE_READY_MAX_LAG seconds; 503 naming what failed;
- GET /metrics: Prometheus text (poolsaas.metrics: the process-wide metrics and the
  bridge's counters, read now).

A thread of its own (the standard library's server): a scrape reads the bridge's
counters, it never takes a lock the bridge's loops take.
"""

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.conf import settings

from poolsaas import metrics

logger = logging.getLogger(__name__)

# A write running longer than this is taken as stuck.
MAX_WRITE_SECONDS = 60.0


def liveness(bridge) -> dict[str, str]:
    return {
        thread.name: "ok" if thread.is_alive() else "stopped"
        for thread in bridge._threads
        if thread.name in ("bridge-worker", "bridge-writer")
    }


def readiness(bridge) -> dict[str, str]:
    checks = liveness(bridge)
    if bridge._stop.is_set():
        checks["bridge"] = "stopping"
    elif not bridge._refreshed.is_set():
        checks["bridge"] = "starting"
    platform = bridge.platform_broker_id
    conn = bridge.connections.get(platform) if platform is not None else None
    if conn is not None:
        checks["platform_broker"] = "ok" if conn.connected.is_set() else "down"
    elif platform is None or settings.MQTT_SHARED_SUBSCRIPTIONS:
        checks["platform_broker"] = "not connected"
    else:
        checks["platform_broker"] = "ok"  # leased to another bridge
    started = getattr(bridge, "write_started", None)
    if started is not None and time.monotonic() - started > MAX_WRITE_SECONDS:
        checks["writer"] = "stuck"
    elif bridge._retry:
        checks["writer"] = "holding batches (database away)"
    else:
        checks["writer"] = "ok"
    lag = metrics.ingest_lag_now(bridge)
    checks["ingest_lag"] = (
        "ok" if lag <= settings.BRIDGE_READY_MAX_LAG else f"{lag:.1f} s behind"
    )
    return checks


class _Handler(BaseHTTPRequestHandler):
    bridge = None
    registry = None

    def do_GET(self):  # noqa: N802 - the standard library's name
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                body, content_type = metrics.exposition(self.registry)
                self._answer(200, body, content_type)
            elif path in ("/health", "/ready"):
                probe = liveness if path == "/health" else readiness
                checks = probe(self.bridge)
                failed = sorted(k for k, v in checks.items() if v != "ok")
                answer = {"status": "unavailable" if failed else "ok", "checks": checks}
                if failed:
                    answer["failed"] = failed
                self._answer(
                    503 if failed else 200,
                    json.dumps(answer).encode(),
                    "application/json",
                )
            else:
                self._answer(404, b'{"detail": "Not found."}', "application/json")
        except Exception:  # noqa: BLE001 - a probe must not take the server down
            logger.exception("bridge http: %s failed", path)
            self._answer(500, b'{"detail": "Server error."}', "application/json")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 - probes every few seconds
        pass


class BridgeHTTP:
    """Serves `bridge` on host:port until stop()."""

    def __init__(self, bridge, *, host: str, port: int) -> None:
        handler = type(
            "Handler",
            (_Handler,),
            {"bridge": bridge, "registry": metrics.bridge_registry(bridge)},
        )
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="bridge-http", daemon=True
        )

    def start(self) -> "BridgeHTTP":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(bridge, *, host: str | None = None, port: int | None = None):
    """The endpoint for `bridge` (settings when not given); None when off or when
    the port is taken (logged: the bridge runs on without it)."""
    host = host if host is not None else settings.BRIDGE_HTTP_HOST
    port = port if port is not None else settings.BRIDGE_HTTP_PORT
    if not port:
        return None
    try:
        http = BridgeHTTP(bridge, host=host, port=port).start()
    except OSError as exc:
        logger.error("bridge http endpoint not started on port %s: %s", port, exc)
        return None
    logger.info("bridge http endpoint on %s:%s", host, http.port)
    return http
