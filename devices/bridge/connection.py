"""One MQTT connection to one broker, owned by the bridge.

paho's callbacks only enqueue (the worker does the parsing); the network loop runs in
its own thread and reconnects with exponential backoff plus jitter, so that a broker
restart does not bring every bridge back in the same instant. Subscriptions are made
in on_connect, so every reconnect resubscribes. Credentials are decrypted when the
connection is built and live only inside the paho client.
"""

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from firmware import protocol

logger = logging.getLogger(__name__)

# Seconds after a subscription during which retained messages are taken as replays.
RETAIN_REPLAY_WINDOW = 5.0

SHARE_GROUP = "poolsaas"


class BufferedClient(mqtt.Client):
    """paho reads each packet with three or more recv() calls, and every one releases
    and retakes the GIL; while the worker thread computes, each retake waits for a
    thread switch, and that (not parsing) caps the intake. This reads up to 64 KiB
    per system call and serves paho's small reads from memory. (paho-mqtt is pinned:
    `_sock_recv` is its internal read hook.)"""

    _rbuf = b""
    _roff = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._roff >= len(self._rbuf):
            data = super()._sock_recv(65536)
            if not data:
                return data
            self._rbuf, self._roff = data, 0
        chunk = self._rbuf[self._roff : self._roff + bufsize]
        self._roff += len(chunk)
        return chunk

    def buffered(self) -> int:
        return len(self._rbuf) - self._roff

    def reconnect(self):
        self._rbuf, self._roff = b"", 0  # bytes of the old socket
        return super().reconnect()


def is_replay(retain: bool, *, received_at: float, subscribed_at: float) -> bool:
    """Is a message the broker's replay of retained state (old news)?

    Some brokers (amqtt) keep the retain flag on live messages too; a retained message
    long after the subscription is a live one, not a replay.
    """
    return retain and received_at - subscribed_at < RETAIN_REPLAY_WINDOW


def broker_fingerprint(broker) -> tuple:
    """Anything that, when changed, needs a new connection."""
    return (
        broker.host,
        broker.port,
        broker.use_tls,
        broker.ca_certificate,
        broker.secrets_changed_at,
        broker.updated_at,
    )


class BrokerConnection:
    def __init__(
        self,
        *,
        broker,
        enqueue: Callable[[tuple], None],
        client_id: str,
        shared: bool,
        share_group: str = SHARE_GROUP,
        keepalive: int = 30,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self.broker_id = broker.pk
        self.name = broker.name
        self.fingerprint = broker_fingerprint(broker)
        self.host, self.port = broker.host, broker.port
        self.keepalive = keepalive
        self.shared = shared
        self.share_group = share_group
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self.prefixes: set[str] = set()
        self.connected = threading.Event()
        # Set once the broker acknowledged the subscriptions made on connect.
        self.subscribed = threading.Event()
        self._sub_mid = None
        self.connects = 0
        self.connected_at = 0.0
        # When the last subscription was made: retained replays follow it closely.
        self.subscribed_at = 0.0
        self._stop = threading.Event()
        self._enqueue = enqueue
        self._lock = threading.Lock()
        self.client = BufferedClient(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        self.client.connect_timeout = 5.0
        self.client.max_inflight_messages_set(200)
        # Raises SecretDecryptionError for an undecryptable secret: the caller logs it
        # and retries later rather than connecting with ciphertext.
        username, password = broker.username, broker.password
        if username or password:
            self.client.username_pw_set(username or None, password or None)
        if broker.use_tls:
            context = ssl.create_default_context(cadata=broker.ca_certificate or None)
            self.client.tls_set_context(context)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self._thread = threading.Thread(
            target=self._run, name=f"mqtt-{broker.pk}", daemon=True
        )

    # --- subscriptions ---------------------------------------------------------------

    def filters(self, prefixes) -> list[str]:
        out = []
        for prefix in sorted(prefixes):
            for topic_filter in protocol.subscriptions(prefix):
                if self.shared:
                    topic_filter = f"$share/{self.share_group}/{topic_filter}"
                out.append(topic_filter)
        return out

    def set_prefixes(self, prefixes: set[str]) -> None:
        with self._lock:
            added, removed = prefixes - self.prefixes, self.prefixes - prefixes
            self.prefixes = set(prefixes)
        if not self.connected.is_set():
            return  # on_connect subscribes to all of them
        if added:
            self.subscribed_at = time.time()
            self.client.subscribe([(f, 1) for f in self.filters(added)])
        if removed:
            self.client.unsubscribe(self.filters(removed))

    # --- paho callbacks (network thread: keep them short) ----------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            logger.warning("broker %s refused the bridge: %s", self.name, reason_code)
            return
        with self._lock:
            filters = self.filters(self.prefixes)
        if filters:
            self.subscribed_at = time.time()
            _, self._sub_mid = client.subscribe([(f, 1) for f in filters])
        else:
            self.subscribed.set()
        self.connects += 1
        self.connected_at = time.time()
        self.connected.set()
        logger.info("connected to broker %s (%s:%s)", self.name, self.host, self.port)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(code.is_failure for code in reason_codes):
            logger.warning("broker %s refused a subscription", self.name)
        if mid == self._sub_mid:
            self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if not self._stop.is_set():
            logger.warning("lost broker %s: %s", self.name, reason_code)

    def _on_message(self, client, userdata, message) -> None:
        now = time.time()
        retain = is_replay(
            message.retain, received_at=now, subscribed_at=self.subscribed_at
        )
        self._enqueue((self.broker_id, message.topic, message.payload, now, retain))

    # --- the network loop ------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001, S110 - closing a dead socket
            pass
        self._thread.join(timeout)

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain=False
    ) -> bool:
        if not self.connected.is_set():
            return False
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def _sleep_backoff(self, attempt: int) -> None:
        delay = min(self.max_backoff, self.min_backoff * (2**attempt))
        self._stop.wait(random.uniform(delay / 2, delay))

    def _run(self) -> None:
        attempt = 0
        first = True
        while not self._stop.is_set():
            try:
                if first:
                    self.client.connect(self.host, self.port, self.keepalive)
                    first = False
                else:
                    self.client.reconnect()
            except (OSError, ssl.SSLError, mqtt.WebsocketConnectionError) as exc:
                logger.warning(
                    "cannot reach broker %s (%s:%s): %s",
                    self.name,
                    self.host,
                    self.port,
                    exc,
                )
                self._sleep_backoff(attempt)
                attempt += 1
                continue
            while not self._stop.is_set():
                rc = self.client.loop(timeout=0.2)
                # Whole packets already in memory: handle them before the next
                # select(), which cannot see them.
                while rc == mqtt.MQTT_ERR_SUCCESS and self.client.buffered():
                    before = self.client.buffered()
                    rc = self.client.loop_read()
                    if self.client.buffered() == before:
                        break  # a partial packet: wait for the rest
                if self.connected.is_set():
                    attempt = 0
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    break
            self.connected.clear()
            if not self._stop.is_set():
                self._sleep_backoff(attempt)
                attempt += 1
