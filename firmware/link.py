"""Wi-Fi (up to 3 networks, with backoff), NTP and MQTT (mqtt_as) for the controller.

mqtt_as is installed on the board with `mpremote mip install
github:peterhinch/micropython-mqtt`, never copied into this repository. It reconnects by
itself once a first connection has been made; this module picks the network, builds the
last will, subscribes on every (re)connect, republishes the retained state and turns
incoming messages into controller calls and acknowledgements (docs/protocol.md).
"""

import asyncio
import time

try:
    from firmware import protocol as P  # CPython (tests of the pure helpers)
except ImportError:
    import protocol as P

BACKOFF_S = (2, 5, 10, 30, 60)


def pick_networks(configured, visible):
    """Configured (ssid, pw) pairs that are on the air, in configured order; all of them
    when a scan saw none (hidden SSIDs)."""
    seen = set(visible)
    found = [n for n in configured if n[0] in seen]
    return found or list(configured)


class Link:
    def __init__(self, settings, controller, hw, safe_mode=False, boot_count=0):
        self.settings = settings
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
        self.ssid = None
        self.last_tel = 0
        self.last_temp = 0
        self.last_timer = 0
        self.last_wifi = 0
        self.restart = None  # "reboot" or "wifi_clear" once acknowledged
        self.boot_ticks = time.ticks_ms()

    # --- connection -------------------------------------------------------------------

    def _mqtt_config(self, ssid, pw):
        from mqtt_as import config

        m = self.settings["mqtt"]
        cfg = dict(config)
        cfg["client_id"] = self.device_id
        cfg["server"] = m["host"]
        cfg["port"] = m["port"]
        cfg["user"] = m["username"]
        cfg["password"] = m["password"]
        cfg["keepalive"] = self.settings.get("keepalive", 30)
        cfg["ssid"] = ssid
        cfg["wifi_pw"] = pw
        # Persistent session: commands sent during a short outage still arrive; their
        # expiry time drops the stale ones.
        cfg["clean_init"] = False
        cfg["clean"] = False
        cfg["will"] = (self.root + P.STATUS, "offline", True, 1)
        cfg["subs_cb"] = self._on_message
        cfg["connect_coro"] = self._on_connect
        cfg["wifi_coro"] = self._on_wifi
        cfg["queue_len"] = 0
        if m["tls"]:
            cfg["ssl"] = True
            params = {"server_hostname": m["host"]}
            ca = self.settings.get("ca_der")
            if ca:
                import ssl

                params["cadata"] = ca
                params["cert_reqs"] = ssl.CERT_REQUIRED
            cfg["ssl_params"] = params
        return cfg

    def _scan(self):
        import network

        sta = network.WLAN(network.STA_IF)
        sta.active(True)
        try:
            return [r[0].decode() for r in sta.scan()]
        except OSError:
            return []

    async def connect(self):
        """Try the configured networks in order, backing off between rounds, until the
        first MQTT connection; mqtt_as keeps it alive after that."""
        from mqtt_as import MQTTClient

        attempt = 0
        while True:
            nets = pick_networks(self.settings["wifi"], self._scan())
            for ssid, pw in nets:
                self.client = MQTTClient(self._mqtt_config(ssid, pw))
                try:
                    await self.client.connect()
                    self.ssid = ssid
                    return
                except OSError as e:
                    print("link: cannot connect via", ssid, e)
                    try:
                        self.client.close()
                    except OSError:
                        pass
            delay = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
            attempt += 1
            await asyncio.sleep(delay)

    async def _on_wifi(self, state):
        self.up = state and self.up
        if state:
            sync_ntp(self.settings.get("ntp_host"))

    async def _on_connect(self, client):
        subs = ("cmd", "config/set", "pump/set", "valve/set", "timer/set", "wifi/clear")
        for s in subs:
            await client.subscribe(self.root + s, 1)
        self.up = True
        await self.pub(P.STATUS, b"online")
        await self.publish_state()
        await self.publish_telemetry()
        if not self.boot_reported:
            self.boot_reported = True
            await self.pub(
                P.EVENT,
                P.encode_event(
                    self.ctl_ts(),
                    "boot",
                    {
                        "reason": reset_reason(),
                        "boot_count": self.boot_count,
                        "safe_mode": self.safe_mode,
                    },
                ),
            )

    def _on_message(self, topic, msg, *rest):
        # mqtt_as calls this from its reader task: queue it, the main loop handles it.
        if len(self.inbox) < 16:
            self.inbox.append((bytes(topic).decode(), bytes(msg)))

    # --- publishing -------------------------------------------------------------------

    def ctl_ts(self):
        now = self.ctl.clock()
        return now if now >= 1577836800 else 0

    async def pub(self, suffix, payload):
        if self.client is None or not self.up:
            return False
        retain, qos = P.PUBLISH_OPTS.get(suffix, (False, 0))
        try:
            await self.client.publish(self.root + suffix, payload, retain, qos)
            return True
        except OSError:
            return False

    async def publish_state(self):
        c = self.ctl
        await self.pub(P.PUMP_STATE, P.encode_pump_state(c.pump))
        await self.pub(P.VALVE_STATE, P.encode_valve_state(c.valve))
        await self.pub(P.TIMER_STATE, P.encode_timer_state(c.timer_state()))
        if c.temp is not None:
            await self.pub(P.TEMPERATURE_STATE, P.encode_temperature(c.temp))
        await self.publish_wifi()

    async def publish_wifi(self):
        import network

        sta = network.WLAN(network.STA_IF)
        if sta.isconnected():
            payload = P.encode_wifi_state(
                self.ssid, sta.ifconfig()[0], sta.status("rssi")
            )
        else:
            payload = P.WIFI_DISCONNECTED
        await self.pub(P.WIFI_STATE, payload)

    def rssi(self):
        import network

        sta = network.WLAN(network.STA_IF)
        try:
            return sta.status("rssi") if sta.isconnected() else None
        except (OSError, ValueError):
            return None

    async def publish_telemetry(self):
        uptime = time.ticks_diff(time.ticks_ms(), self.boot_ticks) // 1000
        tel = self.ctl.telemetry(self.rssi(), max(0, uptime), self.hw.free_memory())
        await self.pub(P.TELEMETRY, P.encode_telemetry(tel))
        self.last_tel = time.time()

    # --- the work of one loop turn ----------------------------------------------------

    async def handle_inbox(self):
        while self.inbox:
            topic, msg = self.inbox.pop(0)
            if not topic.startswith(self.root) or (not msg and topic.endswith("/set")):
                continue  # a retained message being deleted
            suffix = topic[len(self.root) :]
            if suffix == P.CMD:
                await self._command(msg)
            elif suffix == P.CONFIG_SET:
                applied = self.ctl.handle_config(msg)
                await self.pub(P.CONFIG_APPLIED, P.dumps(applied))
            elif suffix in P.V31_CLOUD_TO_DEVICE:
                if self.safe_mode and suffix != P.WIFI_CLEAR:
                    continue
                op, _ = self.ctl.handle_v31_set(suffix, msg)
                if op is None:
                    print("link: ignored", suffix, msg)
            action = self.ctl.pop_action()
            if action:
                self.restart = action

    async def _command(self, msg):
        if self.safe_mode:
            try:
                cmd = P.parse_command(msg)
            except P.ProtocolError as e:
                if e.cmd_id:
                    await self.pub(P.ACK, P.encode_ack(e.cmd_id, False, e.code, e.msg))
                return
            if cmd["op"] not in ("reboot", "wifi_clear"):
                await self.pub(
                    P.ACK, P.encode_ack(cmd["id"], False, "busy", "safe mode")
                )
                return
        ack = self.ctl.handle_command(msg)
        if ack is None:
            print("link: command without id dropped")
            return
        await self.pub(P.ACK, P.dumps(ack))

    async def flush(self):
        """Publish changes, events and the periodic messages."""
        c = self.ctl
        if c.pop_changed():
            await self.publish_state()
            await self.publish_telemetry()
        for ts, etype, data in c.pop_events():
            await self.pub(P.EVENT, P.encode_event(ts, etype, data))
        now = time.time()
        if now - self.last_tel >= c.config["telemetry_interval"]:
            await self.publish_telemetry()
        if c.temp is not None and now - self.last_temp >= 60:
            self.last_temp = now
            await self.pub(P.TEMPERATURE_STATE, P.encode_temperature(c.temp))
        if c.timer_active:
            every = 1 if c.timer_remaining <= 10 else 10
            if now - self.last_timer >= every:
                self.last_timer = now
                await self.pub(P.TIMER_STATE, P.encode_timer_state(c.timer_state()))
        if now - self.last_wifi >= 300:
            self.last_wifi = now
            await self.publish_wifi()

    async def goodbye(self):
        """Clean offline before a restart (the will covers the unclean cases)."""
        await self.pub(P.WIFI_STATE, P.WIFI_DISCONNECTED)
        await self.pub(P.STATUS, b"offline")
        try:
            await self.client.disconnect()
        except OSError:
            pass


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
