"""A virtual pool controller: the real controller module behind a paho-mqtt client.

One VirtualDevice speaks exactly what a board speaks (docs/protocol.md): the ps1 topics
and the v3.1 ones, or only the v3.1 ones in legacy mode. Tests start one in-process and
stop it; the CLI (`python -m firmware.sim`) runs many of them.
"""

import logging
import random
import socket
import ssl
import threading
import time
import urllib.parse

import paho.mqtt.client as mqtt

from firmware import controller as ctl
from firmware import protocol as P
from firmware.sim.pool import PoolModel

log = logging.getLogger("firmware.sim")

SIM_FW = "ps1-0.1.0-sim"
# The board's model, firmware/hardware.py MODEL (that module imports `machine`, so it
# cannot be imported here; firmware/tests/test_sim_unit.py holds the two equal).
SIM_HW = "esp32"
OTA_OFFER, OTA_CHUNK = "ota/offer", "ota/chunk"


def parse_broker_url(url):
    """(host, port, tls, username, password) of mqtt://[user:pass@]host[:port] or mqtts://."""
    u = urllib.parse.urlparse(url)
    if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"unsupported broker URL scheme: {u.scheme!r}")
    tls = u.scheme in ("mqtts", "ssl")
    port = u.port or (8883 if tls else 1883)
    user = urllib.parse.unquote(u.username) if u.username else None
    pw = urllib.parse.unquote(u.password) if u.password else None
    return u.hostname or "127.0.0.1", port, tls, user, pw


class VirtualDevice:
    """A simulated ESP32 pool controller.

    Fault injection (seconds of device time, 0 = off): drop_every closes the TCP socket
    without DISCONNECT (the broker publishes the will, paho reconnects); garbage_every
    publishes a malformed telemetry payload; silent_after stops publishing anything
    while staying connected.

    `hw_model` is the hardware model its telemetry reports (`hw`) and its updater
    accepts; None sends no `hw`, as firmware from before the model (whose updater
    took esp32 releases).

    OTA (docs/ota.md, "Simulator"): with `ota_key` (the provisioning bundle's, hex)
    the device takes updates through firmware/updater.py into the folder `ota_root`
    (firmware.sim.ota.SimOta); `ota_opts` passes its switches (fail_verify,
    corrupt_at, crash_new, drop_at: the TCP socket is shut mid-transfer, paho
    reconnects; reboot_at, damage_on_reboot).
    """

    def __init__(
        self,
        device_id,
        broker="mqtt://127.0.0.1:1883",
        username=None,
        password=None,
        prefix=P.DEFAULT_PREFIX,
        legacy=False,
        interval=None,
        clock=None,
        store=None,
        keepalive=30,
        clean_session=False,
        drop_every=0,
        garbage_every=0,
        silent_after=0,
        water=None,
        seed=None,
        reconnect_delay=(1, 8),
        ca_certs=None,
        ota_key=None,
        ota_root=None,
        ota_version="0.1.0",
        ota_opts=None,
        hw_model=SIM_HW,
    ):
        if not P.is_valid_id(device_id):
            raise ValueError(f"bad device id {device_id!r}")
        if not P.is_valid_prefix(prefix):
            raise ValueError(f"bad prefix {prefix!r}")
        self.device_id = device_id
        self.prefix = prefix
        self.root = prefix + "/" + device_id + "/"
        self.legacy = legacy
        self.interval = interval
        self.clock = clock or (lambda: int(time.time()))
        self.keepalive = keepalive
        self.drop_every = drop_every
        self.garbage_every = garbage_every
        self.silent_after = silent_after
        self.host, self.port, self.tls, url_user, url_pw = parse_broker_url(broker)
        self.username = username if username is not None else url_user
        self.password = password if password is not None else url_pw
        self.ca_certs = ca_certs
        self.rng = random.Random(seed if seed is not None else device_id)
        self.pool = PoolModel(
            water=water if water is not None else self.rng.uniform(18.0, 28.0),
            air_mean=self.rng.uniform(14.0, 26.0),
            seed=self.rng.random(),
        )
        self.store = store if store is not None else ctl.MemoryStore()
        self.lock = threading.RLock()
        self.connected = threading.Event()
        self.connects = 0
        self.received = []
        self.provisioning = False
        self.rssi = self.rng.randint(-75, -50)
        self._stop = threading.Event()
        self._thread = None
        self._client = None
        self._clean_session = clean_session
        self._reconnect_delay = reconnect_delay
        # A credential switch under way (docs/protocol.md 3.2.1): (cmd id, value), and
        # the ack to publish once connected again with the old pair after a refusal.
        self._switch = None
        self._switch_client = None
        self._ack_on_connect = None
        self.fw = SIM_FW
        self.hw = hw_model
        self.ota = None
        if ota_key:
            from firmware.sim.ota import SimOta

            if ota_root is None:
                raise ValueError("ota_key needs ota_root (the device's folder)")
            opts = {"model": hw_model or SIM_HW}
            opts.update(ota_opts or {})
            self.ota = SimOta(
                ota_key,
                ota_root,
                self._ota_send,
                version=ota_version,
                drop=self.drop_connection,
                on_version=self._ota_version,
                **opts,
            )
        self._boot()

    # --- lifecycle --------------------------------------------------------------------

    def _boot(self):
        self.controller = ctl.Controller(self.clock, self.store, fw=self.fw, hw=self.hw)
        if not self.legacy:
            self.controller.device_id = self.device_id
            self.controller.on_credentials = self._credentials
        if self.legacy:
            # v3.1 devices have neither freeze protection nor a runtime limit.
            th = self.controller.config["thresholds"]
            th["freeze_on_c"] = -100.0
            th["min_switch_interval_s"] = 0
        self.boot_time = self.clock()
        self.boot_reported = False
        self._last_step = self.boot_time
        self._last_tel = None
        self._last_temp_pub = None
        self._last_wifi_pub = self.boot_time
        self._last_timer_pub = None
        self._last_drop = self.boot_time
        self._last_garbage = self.boot_time

    def _make_client(self, username=None, password=None):
        c = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            clean_session=self._clean_session,
            protocol=mqtt.MQTTv311,
        )
        if username is None:
            username, password = self.username, self.password
        if username is not None:
            c.username_pw_set(username, password)
        if self.tls:
            c.tls_set(ca_certs=self.ca_certs, cert_reqs=ssl.CERT_REQUIRED)
        if self.legacy:
            c.will_set(
                self.root + P.WIFI_STATE, P.WIFI_DISCONNECTED, qos=0, retain=True
            )
        else:
            c.will_set(self.root + P.STATUS, b"offline", qos=1, retain=True)
        c.reconnect_delay_set(*self._reconnect_delay)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        return c

    def start(self, ticker=True):
        """Connect (retrying in the background) and, with ticker, run the 1 s loop."""
        self._stop.clear()
        self._client = self._make_client()
        self._client.connect_async(self.host, self.port, self.keepalive)
        self._client.loop_start()
        if ticker:
            self._thread = threading.Thread(
                target=self._run, name="sim-" + self.device_id, daemon=True
            )
            self._thread.start()
        return self

    def wait_connected(self, timeout=10.0):
        if not self.connected.wait(timeout):
            raise TimeoutError(f"{self.device_id} did not connect in {timeout} s")
        return self

    def stop(self):
        """Clean shutdown: wifi disconnected and status offline, then DISCONNECT."""
        self.begin_stop()
        self.finish_stop()

    def begin_stop(self):
        """Say goodbye and send DISCONNECT, without waiting (for stopping many)."""
        self._stop.set()
        c = self._client
        if c is not None:
            if self.connected.is_set():
                self._pub(P.WIFI_STATE, P.WIFI_DISCONNECTED, force=True)
                if not self.legacy:
                    self._pub(P.STATUS, b"offline", force=True)
            # Queued after the goodbye messages, so the broker gets them first.
            c.disconnect()

    def finish_stop(self):
        c = self._client
        if c is not None:
            c.loop_stop()
        self._join()
        self.connected.clear()

    def kill(self):
        """Die like a board losing power: the TCP connection drops without DISCONNECT,
        so the broker publishes the last will."""
        self._stop.set()
        c = self._client
        if c is not None:
            sock = c.socket()
            # Stop paho's thread first (it sends nothing when stopped this way), so it
            # can neither send DISCONNECT nor reconnect; then cut the TCP connection.
            c.loop_stop()
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
        self._join()
        self.connected.clear()

    def local(self, op, value=None):
        """A local action on the device (a button, the serial console): (ok, error,
        reason), published like any other change."""
        with self.lock:
            result = self.controller.execute(op, value)
            if self._client is not None:
                self._flush()
        return result

    def drop_connection(self):
        """Close the socket under paho (fault injection); paho reconnects by itself."""
        c = self._client
        sock = c.socket() if c is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def reboot(self):
        """Restart the firmware: state from the store, seq back to 0, new connection."""
        c = self._client
        if c is not None:
            c.disconnect()
            c.loop_stop()
        self.connected.clear()
        with self.lock:
            self._boot()
        self._client = self._make_client()
        self._client.connect_async(self.host, self.port, self.keepalive)
        self._client.loop_start()

    def _join(self):
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(5)
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- MQTT -------------------------------------------------------------------------

    def _pub(self, suffix, payload, force=False, retain=None, qos=None):
        if self.silent and not force:
            return None
        opt_retain, opt_qos = P.PUBLISH_OPTS.get(suffix, (False, 0))
        return self._client.publish(
            self.root + suffix,
            payload,
            qos=opt_qos if qos is None else qos,
            retain=opt_retain if retain is None else retain,
        )

    @property
    def silent(self):
        if not self.silent_after:
            return False
        return self.clock() - self.boot_time >= self.silent_after

    def _ota_send(self, suffix, payload, qos):
        c = self._client
        if c is None or not self.connected.is_set():
            return None
        return c.publish(self.root + suffix, payload, qos=qos)

    def _ota_version(self, version):
        """The application that booted (after a swap or a rollback) is `version`:
        telemetry says so from now on."""
        self.fw = f"ps1-{version}-sim"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("%s: connect refused: %s", self.device_id, reason_code)
            # 134/135: CONNACK 4 (bad user name or password) / 5 (not authorised).
            if self._switch is not None and reason_code.value in (134, 135):
                threading.Thread(target=self._switch_refused, daemon=True).start()
            return
        subs = P.V31_CLOUD_TO_DEVICE if self.legacy else P.DEVICE_SUBSCRIPTIONS
        client.subscribe([(self.root + s, 1) for s in subs])
        if self.ota is not None:
            client.subscribe([(self.root + OTA_OFFER, 1), (self.root + OTA_CHUNK, 0)])
        with self.lock:
            self.connects += 1
            if not self.legacy:
                self._pub(P.STATUS, b"online")
            # The whole state goes out now: the next step must not send it again.
            self.controller.pop_changed()
            self._publish_state()
            if not self.legacy:
                self._publish_telemetry()
                if not self.boot_reported:
                    self.boot_reported = True
                    self._pub(
                        P.EVENT,
                        P.encode_event(
                            self._ts(),
                            "boot",
                            {"reason": "power_on", "boot_count": 1, "safe_mode": False},
                        ),
                    )
            self._after_switch(client)
        self.connected.set()
        if self.ota is not None:
            self.ota.online()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()

    def _on_message(self, client, userdata, msg):
        if not msg.topic.startswith(self.root):
            return  # a stale subscription of a persistent session
        suffix = msg.topic[len(self.root) :]
        if self.ota is not None and suffix in (OTA_OFFER, OTA_CHUNK):
            # Straight to the updater (its own lock), as the board's MQTT reader does.
            if suffix == OTA_CHUNK:
                self.ota.chunk(msg.payload)
            else:
                self.received.append((suffix, bytes(msg.payload)))
                self.ota.offer(msg.payload)
            return
        self.received.append((suffix, bytes(msg.payload)))
        if not msg.payload and msg.retain:
            return  # a retained message being deleted, not a message
        with self.lock:
            if suffix == P.CMD:
                ack = self.controller.handle_command(msg.payload)
                if ack is None:
                    log.info("%s: dropped command without id", self.device_id)
                    return
                self._pub(P.ACK, P.dumps(ack))
            elif suffix == P.CONFIG_SET:
                applied = self.controller.handle_config(msg.payload)
                self._pub(P.CONFIG_APPLIED, P.dumps(applied))
            elif suffix in P.V31_CLOUD_TO_DEVICE:
                op, _ = self.controller.handle_v31_set(suffix, msg.payload)
                if op is None:
                    log.info("%s: ignored %s %r", self.device_id, suffix, msg.payload)
            action = self.controller.pop_action()
            if action:
                self._after_command(action)
            self._flush()

    # --- credential rotation (docs/protocol.md 3.2.1), in memory ----------------------

    def _credentials(self, cmd_id, value):
        """The controller's hook, as on the board: None while the switch runs."""
        if self._switch is not None:
            if self._switch[0] == cmd_id:
                return None
            return False, "busy", "credential switch in progress"
        if self.connected.is_set() and (
            (value["username"], value["password"]) == (self.username, self.password)
        ):
            return True, None, None
        self._switch = (cmd_id, value)
        threading.Thread(target=self._switch_start, daemon=True).start()
        return None

    def _replace_client(self, username=None, password=None, switching=False):
        # Not under self.lock: loop_stop() waits for paho's thread, which may be
        # waiting for the lock in _on_message.
        old = self._client
        if old is not None:
            # A clean DISCONNECT: the broker drops the will, nothing says offline.
            old.disconnect()
            old.loop_stop()
        self.connected.clear()
        new = self._make_client(username, password)
        self._switch_client = new if switching else None
        self._client = new
        new.connect_async(self.host, self.port, self.keepalive)
        new.loop_start()

    def _switch_start(self):
        value = self._switch[1]
        self._replace_client(value["username"], value["password"], switching=True)

    def _switch_refused(self):
        with self.lock:
            if self._switch is None:
                return  # a second refusal before the old pair was back
            cmd_id = self._switch[0]
            self._switch = None
            reason = "new credentials refused"
            ack = self.controller.record(cmd_id, False, "failed", reason)
            self._ack_on_connect = P.dumps(ack)
        self._replace_client()

    def _after_switch(self, client):
        # Under self.lock, connected: promote the new pair and ack, or send the ack
        # of a refusal now that the old pair is back.
        if self._switch is not None and client is self._switch_client:
            cmd_id, value = self._switch
            self._switch = None
            self.username, self.password = value["username"], value["password"]
            self._pub(P.ACK, P.dumps(self.controller.record(cmd_id, True)))
        elif self._ack_on_connect is not None:
            self._pub(P.ACK, self._ack_on_connect)
            self._ack_on_connect = None

    def _after_command(self, op):
        if op == "wifi_clear":
            # The board erases its networks and opens the captive portal: offline for
            # good.
            self._pub(P.WIFI_STATE, P.WIFI_DISCONNECTED, force=True)
            if not self.legacy:
                self._pub(P.STATUS, b"offline", force=True)
            self.provisioning = True
            threading.Thread(target=self.stop, daemon=True).start()
        elif op == "reboot":
            threading.Thread(target=self.reboot, daemon=True).start()

    # --- publishing -------------------------------------------------------------------

    def _ts(self):
        now = self.clock()
        return now if ctl.clock_valid(now) else 0

    def _publish_state(self):
        c = self.controller
        self._pub(P.PUMP_STATE, P.encode_pump_state(c.pump))
        self._pub(P.VALVE_STATE, P.encode_valve_state(c.valve))
        self._pub(P.TIMER_STATE, P.encode_timer_state(c.timer_state()))
        self._last_timer_pub = self.clock()
        if c.temp is not None:
            self._pub(P.TEMPERATURE_STATE, P.encode_temperature(c.temp))
            self._last_temp_pub = self.clock()
        self._pub(P.WIFI_STATE, P.encode_wifi_state("sim-pool", "127.0.0.1", self.rssi))

    def _publish_telemetry(self):
        tel = self.controller.telemetry(
            rssi=self.rssi,
            uptime=max(0, self.clock() - self.boot_time),
            mem_free=80000 + self.rng.randint(-2000, 2000),
        )
        self._pub(P.TELEMETRY, P.encode_telemetry(tel))
        self._last_tel = self.clock()

    def _flush(self):
        """Publish what changed and the events the controller queued."""
        c = self.controller
        if not self.connected.is_set() and self.connects == 0:
            c.pop_events()
            return
        if c.pop_changed():
            self._publish_state()
            if not self.legacy:
                self._publish_telemetry()
        for ts, etype, data in c.pop_events():
            if not self.legacy:
                self._pub(P.EVENT, P.encode_event(ts, etype, data))

    # --- the 1 s loop -----------------------------------------------------------------

    def step(self):
        """One loop iteration: simulate the pool, tick the controller, publish."""
        if self._client is None:
            return
        now = self.clock()
        with self.lock:
            dt = max(0, now - self._last_step)
            self._last_step = now
            c = self.controller
            temp = self.pool.step(dt, c.tz.local(now), c.pump)
            c.tick(temp)
            if not self.connected.is_set():
                return
            self._flush()
            interval = self.interval or c.config["telemetry_interval"]
            if not self.legacy and (
                now - self._last_tel >= interval or self.controller.fw != self.fw
            ):
                self.controller.fw = self.fw
                self._publish_telemetry()
            temp_every = self.interval if self.legacy and self.interval else 60
            if c.temp is not None and (
                self._last_temp_pub is None or now - self._last_temp_pub >= temp_every
            ):
                self._pub(P.TEMPERATURE_STATE, P.encode_temperature(c.temp))
                self._last_temp_pub = now
            if c.timer_active:
                # v3.1 cadence: every 10 s, every second in the last 10 s.
                every = 1 if c.timer_remaining <= 10 else 10
                if now - self._last_timer_pub >= every:
                    self._pub(P.TIMER_STATE, P.encode_timer_state(c.timer_state()))
                    self._last_timer_pub = now
            if now - self._last_wifi_pub >= 300:
                self.rssi = max(-90, min(-40, self.rssi + self.rng.randint(-2, 2)))
                self._pub(
                    P.WIFI_STATE,
                    P.encode_wifi_state("sim-pool", "127.0.0.1", self.rssi),
                )
                self._last_wifi_pub = now
            if self.garbage_every and now - self._last_garbage >= self.garbage_every:
                self._last_garbage = now
                garbage = self.rng.choice(
                    [b"\xff\xfe\x00garbage", b'{"ts": NaN}', b"[1,2", b"x" * 5000]
                )
                suffix = P.TEMPERATURE_STATE if self.legacy else P.TELEMETRY
                self._pub(suffix, garbage)
        if self.ota is not None and self.connected.is_set():
            self.ota.step()
        if self.drop_every and now - self._last_drop >= self.drop_every:
            self._last_drop = now
            self.drop_connection()

    def _run(self):
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - one bad step must not kill the device
                log.exception("%s: step failed", self.device_id)
            next_t += 1.0
            self._stop.wait(max(0.0, next_t - time.monotonic()))
