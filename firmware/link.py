"""Wi-Fi (up to 3 networks), NTP and MQTT (our own client, mqtt.py) for the controller.

The controller loop never waits for the network: it hands what it has to say to a
bounded Outbox and takes what arrived from the inbox. One task, `Link.run()`, owns the
connection: join Wi-Fi, connect, subscribe, publish the retained state, drain the
outbox; when anything fails (Wi-Fi gone, broker silent, TLS refused, any exception) it
closes the connection, waits a backoff and starts again. It never returns.
"""

import asyncio
import time

try:
    from firmware import protocol_device as P  # CPython (tests of the pure helpers)
except ImportError:
    import protocol_device as P

try:
    # At import, with the heap still in one piece: loaded later, inside the connect
    # task, this module's code could not find contiguous memory in a small heap.
    from mqtt import MQTTClient
except ImportError:  # CPython: the pure helpers only
    MQTTClient = None

# Seconds between connection attempts; each wait is randomised down to half of it so a
# fleet does not reconnect in step after a broker restart. Capped low enough that a
# device is back within ~10 s of the broker or the Wi-Fi coming back.
BACKOFF_S = (1, 2, 4, 8)
OUTBOX_SIZE = 16
SUBSCRIBE = ("cmd", "config/set", "pump/set", "valve/set", "timer/set", "wifi/clear")
# Over-the-air updates (updater.py): offers and chunks in, requests and reports out.
OTA_IN = ("ota/offer", "ota/chunk")
# Retained flag and QoS of the OTA topics (not in protocol_device: the cloud side of
# the OTA protocol is the ota app's). Requests and reports are coalesced in the
# outbox: only the newest one matters.
OTA_OPTS = {"ota/get": (False, 0), "ota/status": (False, 1)}
NTP_EVERY_MS = 6 * 3600 * 1000
# CONNACK codes that mean "these credentials are refused" (not a network problem).
REFUSED = (4, 5)
# Online with the current pair while a pending one could not be tried (the network
# failed during its attempt): try the switch again after this long.
SWITCH_RETRY_MS = 15000


def pick_networks(configured, visible):
    """Configured (ssid, pw) pairs that are on the air, in configured order; all of them
    when a scan saw none (hidden SSIDs)."""
    seen = set(visible)
    found = [n for n in configured if n[0] in seen]
    return found or list(configured)


def backoff_ms(attempt, rand):
    """The wait before connection attempt `attempt` (0-based); rand() gives 0..1."""
    full = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)] * 1000
    return full // 2 + int(full // 2 * rand())


class Outbox:
    """What the device still has to publish, bounded whatever the network does.

    Retained state and telemetry are coalesced (the newest value per topic is all the
    cloud needs); acknowledgements and events queue in order, QoS 1, up to `size`, and
    when full the oldest is dropped and counted in `dropped`.
    """

    def __init__(self, size=OUTBOX_SIZE):
        self.size = size
        self.latest = {}
        self.queue = []
        self.dropped = 0
        self.event = asyncio.Event()

    def put(self, suffix, payload):
        retain, qos = P.PUBLISH_OPTS.get(suffix, (False, 0))
        if retain or suffix == P.TELEMETRY or suffix in OTA_OPTS:
            self.latest[suffix] = payload
        else:
            if len(self.queue) >= self.size:
                self.queue.pop(0)
                self.dropped += 1
            self.queue.append((suffix, payload))
        self.event.set()

    def peek(self):
        """The next (suffix, payload): queued acks and events first, then state."""
        if self.queue:
            return self.queue[0]
        for suffix in self.latest:
            return suffix, self.latest[suffix]
        return None

    def done(self, item):
        """item was published: forget it, unless a newer value replaced it meanwhile."""
        suffix, payload = item
        if self.queue and self.queue[0] is item:
            self.queue.pop(0)
        elif self.latest.get(suffix) is payload:
            del self.latest[suffix]

    def __len__(self):
        return len(self.queue) + len(self.latest)


class Link:
    def __init__(
        self, settings, controller, hw, safe_mode=False, boot_count=0, creds=None
    ):
        self.settings = settings
        # creds.CredStore (current and pending MQTT pair); None: the bundle's pair.
        self.creds = creds
        self.switch = False  # end this connection cleanly and try the pending pair
        self.try_pending = True  # which pair the next attempt uses, while one pends
        self.switch_retry = None  # ticks_ms when to try the pending pair again
        self.ctl = controller
        self.hw = hw
        self.safe_mode = safe_mode
        self.boot_count = boot_count
        mqtt = settings["mqtt"]
        self.device_id = settings["device_id"]
        self.root = mqtt["prefix"] + "/" + self.device_id + "/"
        self.client = None
        self.up = False
        self.boot_reported = False
        self.inbox = []
        self.outbox = Outbox()
        self.ssid = None
        self.connects = 0
        self.last_tel = 0
        self.last_temp = 0
        self.last_timer = 0
        self.last_wifi = 0
        self.last_ntp = None
        self.restart = None  # "reboot", "wifi_clear" or "ota" once acknowledged
        self.ota = None  # updater.Updater, once loaded
        self.ota_load = None  # loads it; None: the board takes no updates
        self.boot_ticks = time.ticks_ms()

    # --- connection -------------------------------------------------------------------

    def _sta(self):
        import network

        return network.WLAN(network.STA_IF)

    def _scan(self, sta):
        try:
            return [r[0].decode() for r in sta.scan()]
        except OSError:
            return []

    async def _join_wifi(self):
        """Join the first configured network that works; OSError when none does."""
        sta = self._sta()
        sta.active(True)
        if sta.isconnected():
            return
        import network

        failed = [
            getattr(network, n)
            for n in ("STAT_WRONG_PASSWORD", "STAT_NO_AP_FOUND", "STAT_CONNECT_FAIL")
            if hasattr(network, n)
        ]
        for ssid, pw in pick_networks(self.settings["wifi"], self._scan(sta)):
            sta.connect(ssid, pw)
            for _ in range(20):
                if sta.isconnected():
                    self.ssid = ssid
                    return
                if sta.status() in failed:
                    break
                await asyncio.sleep_ms(500)
            sta.disconnect()
        raise OSError("no Wi-Fi network joined")

    def _pair(self):
        """(pair, is_pending) for the next connection attempt: while a pending pair
        exists, pending and current alternate, pending first."""
        cs = self.creds
        if cs is None:
            m = self.settings["mqtt"]
            return {"username": m["username"], "password": m["password"]}, False
        if cs.pending is not None and self.try_pending:
            return cs.pending, True
        return cs.current, False

    def _client(self, pair):
        m = self.settings["mqtt"]
        return MQTTClient(
            self.device_id,
            m["host"],
            m["port"],
            pair["username"] or None,
            pair["password"],
            self.settings.get("keepalive", 30),
            (self.root + P.STATUS, "offline", True, 1),
            m["tls"],
            self.settings.get("ca_der"),
            self._on_message,
        )

    async def run(self):
        """The connection task: connect, serve, and after any failure back off and
        connect again, forever."""
        import random

        attempt = 0
        while True:
            served = False
            try:
                served = await self._session()
            except Exception as e:  # noqa: BLE001 - TLS ValueError, OSError, anything
                print("link:", repr(e))
            self.up = False
            if self.client:
                self.client.close()
            if served == "now":
                # A credential switch: connect again at once, no backoff.
                attempt = 0
                continue
            attempt = 0 if served else attempt + 1
            await asyncio.sleep_ms(backoff_ms(attempt, random.random))

    async def _session(self):
        await self._join_wifi()
        self._ntp()
        pair, is_pending = self._pair()
        self.switch = False
        if self.creds is not None and self.creds.pending is not None:
            # The user name only (never the password): which pair this attempt uses.
            print("link: connecting as", pair["username"])
        self.client = c = self._client(pair)
        # Persistent session (clean=False): commands published while the device is away
        # are kept by the broker and delivered on reconnect, whether or not the broker
        # still has the session (session present is fine either way); the commands'
        # expiry time drops stale ones. We subscribe every time: cheap, and it covers a
        # broker that lost the session.
        try:
            present = await c.connect(clean=False)
        except Exception as e:
            # mqtt.MQTTError.code: the CONNACK's refusal.
            if is_pending and getattr(e, "code", None) in REFUSED:
                self._switch_end(False)
                return "now"  # back at once with the current pair
            if self.creds is not None and self.creds.pending is not None:
                # Any other failure (network, broker down): keep both pairs and try
                # the other one next time.
                self.try_pending = not is_pending
            raise
        print("link: connected,", "session present" if present else "new session")
        if is_pending:
            self._switch_end(True)
        elif self.creds is not None and self.creds.pending is not None:
            # Online with the current pair because the pending one's attempt failed
            # on the network, not on the broker: try it again in a while.
            self.switch_retry = time.ticks_add(time.ticks_ms(), SWITCH_RETRY_MS)
        for s in SUBSCRIBE:
            await c.subscribe(self.root + s, 1)
        if self.ota_load is not None:
            for s in OTA_IN:
                await c.subscribe(self.root + s, 0 if s == "ota/chunk" else 1)
        retain, qos = P.PUBLISH_OPTS[P.STATUS]
        await c.publish(self.root + P.STATUS, b"online", retain, qos)
        self.up = True
        self.connects += 1
        self.publish_state()
        self.publish_telemetry()
        if self.ota is not None:
            self.ota.online()  # ask again for chunks lost with the last connection
        if not self.boot_reported:
            self.boot_reported = True
            self.event(
                "boot",
                {
                    "reason": reset_reason(),
                    "boot_count": self.boot_count,
                    "safe_mode": self.safe_mode,
                },
            )
        return await self._serve(c)

    async def _serve(self, c):
        """Publish what the outbox holds until the link fails (an exception) or a
        credential switch ends it ("now")."""
        sta = self._sta()
        ob = self.outbox
        while True:
            if not sta.isconnected():
                raise OSError("Wi-Fi lost")
            if c.error is not None:
                raise c.error
            if self.switch_retry is not None and (
                time.ticks_diff(time.ticks_ms(), self.switch_retry) >= 0
            ):
                self.switch_retry = None
                self.switch = self.creds.pending is not None
            if self.switch:
                # Not going offline: no `status offline`, no `wifi/state`; a clean
                # DISCONNECT, so the broker drops the will too.
                print("link: switching credentials")
                self.try_pending = True
                await c.disconnect()
                return "now"
            self._ntp()
            item = ob.peek()
            if item is None:
                ob.event.clear()
                try:
                    await asyncio.wait_for_ms(ob.event.wait(), 1000)
                except asyncio.TimeoutError:  # noqa: UP041 - MicroPython has no builtin
                    pass
                continue
            suffix, payload = item
            retain, qos = P.PUBLISH_OPTS.get(suffix) or OTA_OPTS.get(suffix, (False, 0))
            await c.publish(self.root + suffix, payload, retain, qos)
            ob.done(item)
            if suffix == "ota/status" and self.ota is not None:
                self.ota.sent(payload)  # acknowledged by the broker (QoS 1)

    # --- credential rotation (docs/protocol.md 3.2.1) ---------------------------------

    def credentials(self, cmd_id, value):
        """The controller's hook for a `credentials` command: None when the switch
        starts (acked once the broker decided), else (ok, error, reason) now."""
        cs = self.creds
        if cs is None:
            return False, "unsupported", "no credential store"
        if cs.pending is not None:
            if cs.pending["id"] == cmd_id:
                return None  # re-sent while the switch is under way
            return False, "busy", "credential switch in progress"
        if self.up and value == cs.current:
            # Connected with it already (promoted, then the ack lost to a power cut).
            return True, None, None
        try:
            cs.set_pending(cmd_id, value["username"], value["password"])
        except OSError:
            return False, "failed", "credentials not stored"
        self.switch = True
        self.try_pending = True
        self.outbox.event.set()  # wake the connection task now
        return None

    def _switch_end(self, accepted):
        """The broker accepted the pending pair (promoted) or refused it (dropped):
        ack the command that brought it, once connected, and keep the result."""
        cmd_id = self.creds.pending["id"]
        try:
            self.creds.end(accepted)
        except OSError as e:
            # Still pending in flash, so tried first at the next boot again.
            print("link: credentials file not written:", repr(e))
        self.switch_retry = None
        self.try_pending = True
        if accepted:
            print("link: new credentials in use")
            ack = self.ctl.record(cmd_id, True)
        else:
            print("link: new credentials refused, back to the current ones")
            ack = self.ctl.record(cmd_id, False, "failed", "new credentials refused")
        self.pub(P.ACK, P.dumps(ack))

    def _ntp(self):
        if self.last_ntp is None or (
            time.ticks_diff(time.ticks_ms(), self.last_ntp) > NTP_EVERY_MS
        ):
            self.last_ntp = time.ticks_ms()
            sync_ntp(self.settings.get("ntp_host"))

    def _on_message(self, topic, msg):
        # Called from the client's reader task: queue it, the main loop handles it.
        # Chunks go straight to the updater (it appends them to a file; a corrupted
        # one is dropped and counted, a few writes of ota.json at most): they
        # come faster than the 1 s loop and are too big to queue.
        if topic.endswith(b"/ota/chunk"):
            try:
                if self.ota is not None:
                    self.ota.chunk(msg)
            except OSError as e:
                print("link: chunk not written:", repr(e))
            return
        if len(self.inbox) < 16:
            self.inbox.append((topic.decode(), msg))

    # --- publishing (never waits: everything goes through the outbox) ----------------

    def ctl_ts(self):
        now = self.ctl.clock()
        return now if now >= 1577836800 else 0

    def pub(self, suffix, payload):
        self.outbox.put(suffix, payload)

    def event(self, etype, data=None):
        self.pub(P.EVENT, P.encode_event(self.ctl_ts(), etype, data))

    def publish_state(self):
        c = self.ctl
        self.pub(P.PUMP_STATE, P.encode_pump_state(c.pump))
        self.pub(P.VALVE_STATE, P.encode_valve_state(c.valve))
        self.pub(P.TIMER_STATE, P.encode_timer_state(c.timer_state()))
        if c.temp is not None:
            self.pub(P.TEMPERATURE_STATE, P.encode_temperature(c.temp))
        self.publish_wifi()

    def publish_wifi(self):
        sta = self._sta()
        if sta.isconnected():
            payload = P.encode_wifi_state(
                self.ssid, sta.ifconfig()[0], sta.status("rssi")
            )
        else:
            payload = P.WIFI_DISCONNECTED
        self.pub(P.WIFI_STATE, payload)

    def rssi(self):
        sta = self._sta()
        try:
            return sta.status("rssi") if sta.isconnected() else None
        except (OSError, ValueError):
            return None

    def publish_telemetry(self):
        uptime = time.ticks_diff(time.ticks_ms(), self.boot_ticks) // 1000
        tel = self.ctl.telemetry(self.rssi(), max(0, uptime), self.hw.free_memory())
        # Not in the parsed schema (the bridge ignores it): for soak tests and support.
        tel["dropped"] = self.outbox.dropped
        self.pub(P.TELEMETRY, P.encode_telemetry(tel))
        self.last_tel = time.time()

    # --- the work of one loop turn (both return at once) -----------------------------

    def handle_inbox(self):
        while self.inbox:
            topic, msg = self.inbox.pop(0)
            if not topic.startswith(self.root) or (not msg and topic.endswith("/set")):
                continue  # a retained message being deleted
            suffix = topic[len(self.root) :]
            if suffix == P.CMD:
                self._command(msg)
            elif suffix == "ota/offer" and self.ota_load is not None:
                try:
                    if self.ota is None:
                        self.ota = self.ota_load()
                    self.ota.offer(msg)
                except (OSError, MemoryError) as e:
                    # No room in flash or heap: the offer comes again in a minute.
                    print("link: offer not taken:", repr(e))
            elif suffix == P.CONFIG_SET:
                applied = self.ctl.handle_config(msg)
                self.pub(P.CONFIG_APPLIED, P.dumps(applied))
            elif suffix in P.V31_CLOUD_TO_DEVICE:
                if self.safe_mode and suffix != P.WIFI_CLEAR:
                    continue
                op, _ = self.ctl.handle_v31_set(suffix, msg)
                if op is None:
                    print("link: ignored", suffix, msg)
            action = self.ctl.pop_action()
            if action:
                self.restart = action

    def _command(self, msg):
        if self.safe_mode:
            try:
                cmd = P.parse_command(msg)
            except P.ProtocolError as e:
                if e.cmd_id:
                    self.pub(P.ACK, P.encode_ack(e.cmd_id, False, e.code, e.msg))
                return
            if cmd["op"] not in ("reboot", "wifi_clear"):
                self.pub(P.ACK, P.encode_ack(cmd["id"], False, "busy", "safe mode"))
                return
        ack = self.ctl.handle_command(msg)
        if ack is None:
            # No id to answer to, or a credential switch that answers when decided.
            return
        self.pub(P.ACK, P.dumps(ack))

    def flush(self):
        """Hand changes, events and the periodic messages to the outbox."""
        c = self.ctl
        if c.pop_changed():
            self.publish_state()
            self.publish_telemetry()
        for ts, etype, data in c.pop_events():
            self.pub(P.EVENT, P.encode_event(ts, etype, data))
        now = time.time()
        if now - self.last_tel >= c.config["telemetry_interval"]:
            self.publish_telemetry()
        if c.temp is not None and now - self.last_temp >= 60:
            self.last_temp = now
            self.pub(P.TEMPERATURE_STATE, P.encode_temperature(c.temp))
        if c.timer_active:
            every = 1 if c.timer_remaining <= 10 else 10
            if now - self.last_timer >= every:
                self.last_timer = now
                self.pub(P.TIMER_STATE, P.encode_timer_state(c.timer_state()))
        if now - self.last_wifi >= 300:
            self.last_wifi = now
            self.publish_wifi()

    async def goodbye(self, timeout_ms=3000):
        """Before a restart: let the outbox drain (the ack of the reboot command), then
        a clean offline. Bounded: with the link down the will covers it."""
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while self.up and len(self.outbox):
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                break
            await asyncio.sleep_ms(50)
        c = self.client
        if not self.up or c is None:
            return
        try:
            await asyncio.wait_for_ms(self._offline(c), timeout_ms)
        except Exception as e:  # noqa: BLE001 - we restart anyway
            print("link: goodbye:", repr(e))

    async def _offline(self, c):
        await c.publish(self.root + P.WIFI_STATE, P.WIFI_DISCONNECTED, True, 0)
        await c.publish(self.root + P.STATUS, b"offline", True, 1)
        await c.disconnect()


def sync_ntp(host=None):
    try:
        import ntptime

        if host:
            ntptime.host = host
        ntptime.settime()
        return True
    except (ImportError, OSError):
        return False


def reset_reason():
    try:
        import machine

        return {
            machine.PWRON_RESET: "power_on",
            machine.HARD_RESET: "hard_reset",
            machine.WDT_RESET: "watchdog",
            machine.DEEPSLEEP_RESET: "deep_sleep",
            machine.SOFT_RESET: "soft_reset",
        }.get(machine.reset_cause(), "unknown")
    except (ImportError, AttributeError):
        return "unknown"
