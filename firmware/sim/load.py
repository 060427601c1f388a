"""Load mode: thousands of virtual devices, multiplexed over a few MQTT connections.

A full VirtualDevice has its own paho client, thread and sockets, which caps one process
at a few hundred devices (paho waits on select(), limited to file descriptors < 1024).
For load (the bridge benchmark, bench/sim.py) each virtual device keeps its own
controller, pool model and topics, and publishes its own telemetry at its own rate, but
many devices share one connection and several processes share the work. Load devices
publish `status` online/offline and telemetry; they take no commands.

With `ota` ({device id: {"key": hex, switches...}}) those devices also take updates
(firmware.sim.ota.SimOta, each in its own folder under `ota_dir`): their connection
subscribes to their `ota/offer` and `ota/chunk`, and the updater runs in the
connection's network thread as on a board; a link drop (`drop_at`) cuts that device
alone off for a while (the connection is shared). At the end each worker puts what
its OTA devices did on `results` (device id -> version, chunks, drop point, asks).
"""

import multiprocessing as mp
import os
import time

import paho.mqtt.client as mqtt

from firmware import controller as ctl
from firmware import protocol as P
from firmware.sim.device import SIM_HW, parse_broker_url
from firmware.sim.pool import PoolModel


def _client(host, port, name, username, password):
    c = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=name,
        clean_session=True,
    )
    c.max_queued_messages_set(0)
    if username is not None:
        c.username_pw_set(username, password)
    c.connect(host, port, 60)
    c.loop_start()
    return c


def _ota_devices(ids, opts, conns, controllers):
    """SimOta per device of `ids` named in opts["ota"]; each connection subscribes
    to its devices' OTA topics and hands what arrives to them."""
    from firmware.sim.ota import SimOta

    wanted = opts.get("ota") or {}
    routes = {c: {} for c in conns}
    devices = {}
    for n, device_id in enumerate(ids):
        if device_id not in wanted:
            continue
        conn = conns[n % len(conns)]
        root = P.topic(opts["prefix"], device_id, "")
        spec = {"model": opts.get("hw_model") or SIM_HW}
        spec.update(wanted[device_id])
        key = spec.pop("key")

        def send(suffix, payload, qos, conn=conn, root=root):
            return conn.publish(root + suffix, payload, qos=qos)

        def on_version(version, c=controllers[n]):
            c.fw = "ps1-" + version + "-load"

        ota = SimOta(
            key,
            os.path.join(opts["ota_dir"], device_id),
            send,
            on_version=on_version,
            **spec,
        )
        devices[device_id] = ota
        routes[conn][root + "ota/offer"] = ota.offer
        routes[conn][root + "ota/chunk"] = ota.chunk
    for conn, table in routes.items():
        if not table:
            continue

        def on_message(client, userdata, msg, table=table):
            handler = table.get(msg.topic)
            if handler is not None:
                handler(msg.payload)

        conn.on_message = on_message
        topics = [(t, 1 if t.endswith("offer") else 0) for t in table]
        for i in range(0, len(topics), 100):
            conn.subscribe(topics[i : i + 100])
    return devices


def _worker(ids, opts, sent, ready, go, results=None):
    host, port, _, url_user, url_pw = parse_broker_url(opts["broker"])
    user = opts.get("username") or url_user
    pw = opts.get("password") or url_pw
    n_conn = max(1, min(opts["connections"], len(ids)))
    conns = [
        _client(host, port, f"load-{opts['prefix']}-{ids[0]}-{n}", user, pw)
        for n in range(n_conn)
    ]
    now = [int(time.time())]
    devices = []
    for n, device_id in enumerate(ids):
        c = ctl.Controller(
            lambda: now[0], None, fw="ps1-0.1.0-load", hw=opts.get("hw_model")
        )
        conn = conns[n % n_conn]
        devices.append(
            (c, PoolModel(seed=device_id), P.topic(opts["prefix"], device_id, ""), conn)
        )
        conn.publish(P.topic(opts["prefix"], device_id, P.STATUS), b"online", 1, True)
    otas = _ota_devices(ids, opts, conns, [d[0] for d in devices])
    ready.release()
    go.wait()
    t0 = time.monotonic()
    period = opts["interval"]
    k = len(devices)
    count = 0
    flushed = 0
    end = t0 + opts["duration"] if opts["duration"] else None
    next_ota = t0
    while not opts["stop"].is_set():
        t = time.monotonic()
        if end is not None and t >= end:
            break
        if otas and t >= next_ota:
            next_ota = t + 0.1  # retries, verification and swaps ten times a second
            for ota in otas.values():
                ota.step()
        # Every device whose slot in the current period has come publishes now.
        due = int((t - t0) / period * k)
        while count < due:
            c, pool, root, conn = devices[count % k]
            now[0] = int(time.time())
            c.tick(pool.step(period, now[0], c.pump))
            tel = c.telemetry(
                rssi=-60, uptime=int(t - t0), mem_free=80000 + count % 1000
            )
            conn.publish(root + P.TELEMETRY, P.encode_telemetry(tel), qos=0)
            count += 1
        if count - flushed >= 200:
            with sent.get_lock():
                sent.value += count - flushed
            flushed = count
        time.sleep(0.002)
    with sent.get_lock():
        sent.value += count - flushed
    if results is not None:
        results.put(
            {
                device_id: {
                    "version": ota.version,
                    "chunks_in": ota.chunks_in,
                    "dropped_at": ota.dropped_at,
                    "asks": len(ota.asks),
                    "resumed_from": ota.resumed_from(),
                    "crashes": ota.crashes,
                    "reports": [r[0] for r in ota.reports],
                }
                for device_id, ota in otas.items()
            }
        )
    for _, _, root, conn in devices:
        conn.publish(root + P.STATUS, b"offline", 1, True)
    time.sleep(0.5)
    for conn in conns:
        conn.disconnect()
        conn.loop_stop()


class LoadRun:
    """Start the load processes; `sent` counts telemetry messages handed to paho."""

    def __init__(
        self,
        ids,
        broker="mqtt://127.0.0.1:1883",
        prefix=P.DEFAULT_PREFIX,
        interval=1.0,
        duration=0,
        processes=2,
        connections=25,
        username=None,
        password=None,
        ota=None,
        ota_dir=None,
        hw_model=SIM_HW,
    ):
        self.ctx = mp.get_context("fork")
        self.results = self.ctx.Queue() if ota else None
        self.ota_done = None  # device id -> what its updater did, after stop()
        self.ids = list(ids)
        self.sent = self.ctx.Value("q", 0)
        self._ready = self.ctx.Semaphore(0)
        self._go = self.ctx.Event()
        self._stop = self.ctx.Event()
        opts = {
            "broker": broker,
            "prefix": prefix,
            "interval": float(interval),
            "duration": duration,
            "connections": connections,
            "username": username,
            "password": password,
            "stop": self._stop,
            "ota": ota,
            "ota_dir": ota_dir,
            "hw_model": hw_model,
        }
        slices = [s for s in (self.ids[i::processes] for i in range(processes)) if s]
        self.connections = sum(max(1, min(connections, len(s))) for s in slices)
        self.procs = [
            self.ctx.Process(
                target=_worker,
                args=(s, opts, self.sent, self._ready, self._go, self.results),
                daemon=True,
            )
            for s in slices
        ]

    def start(self, timeout=60):
        for p in self.procs:
            p.start()
        for _ in self.procs:
            if not self._ready.acquire(timeout=timeout):
                raise TimeoutError("load processes did not connect")
        self._go.set()
        return self

    def stop(self):
        self._stop.set()
        if self.results is not None and self.ota_done is None:
            self.ota_done = self.ota_results()
        self.join()

    def ota_results(self, timeout=30):
        """Device id -> what its updater did (read while the workers end)."""
        out = {}
        if self.results is not None:
            for _ in self.procs:
                out.update(self.results.get(timeout=timeout))
        return out

    def join(self, timeout=None):
        for p in self.procs:
            p.join(timeout)
