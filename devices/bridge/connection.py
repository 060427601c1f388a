"""One MQTT connection to one broker, owned by the bridge.

paho's callbacks only enqueue (the worker does the parsing); the network loop runs in
its own thread and reconnects with exponential backoff plus jitter, so that a broker
restart does not bring every bridge back in the same instant. Subscriptions are made
in on_connect, so every reconnect resubscribes. Credentials are decrypted when the
connection is built and live only inside the paho client.

Credentials staged for a rotation (devices/services/brokers/credentials.py) are tried
first: accepted, they are promoted (a compare-and-swap on the staging time, so a pair
staged again meanwhile is kept); refused by the broker (CONNACK "bad username or
password" / "not authorised"), the connection goes back to the current pair at once,
with no backoff, and the refusal is recorded. Any other failure is not a refusal: the
staged pair is tried again on the next attempt.

A tenant's broker is not trusted: nothing it sends may end the network thread (every
callback is guarded, and a failing loop drops the connection and reconnects), it
cannot make us hold more than one bounded packet (bigger PUBLISHes are skipped as
they stream in, QoS 2 deliveries we never asked for drop the connection, our own
queue towards it is bounded), and every connect and reconnect goes to an address
vetted in the same DNS resolution (devices.services.brokers.VettedClient).
"""

import logging
import random
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable

import paho.mqtt.client as mqtt

from devices.bridge.paho_client import BufferedClient
from devices.services.brokers import (
    BrokerAddressRefused,
    broker_credentials_promote,
    broker_credentials_refused,
)
from firmware import protocol

logger = logging.getLogger(__name__)

# Seconds after a subscription during which retained messages are taken as replays.
RETAIN_REPLAY_WINDOW = 5.0

SHARE_GROUP = "poolsaas"

# Packets of ours (acknowledgements, commands) waiting for a broker that stopped
# reading; past this the connection is dropped rather than grown.
MAX_OUT_PACKETS = 5000
MAX_QUEUED_MESSAGES = 1000

# CONNACK codes that refuse the credentials themselves (MQTT 3.1.1: 4 bad username
# or password, 5 not authorised; MQTT 5: 134, 135).
CREDENTIALS_REFUSED = frozenset({4, 5, 134, 135})


def is_replay(retain: bool, *, received_at: float, subscribed_at: float) -> bool:
    """Is a message the broker's replay of retained state (old news)?

    Some brokers (amqtt) keep the retain flag on live messages too; a retained message
    long after the subscription is a live one, not a replay.
    """
    return retain and received_at - subscribed_at < RETAIN_REPLAY_WINDOW


def broker_fingerprint(broker) -> tuple:
    """Anything that, when changed, needs a new connection. The staging time of
    rotated credentials is last: a pair staged (or staged again, or cancelled) makes
    the bridge reconnect and try it; the connection that promotes a pair puts None
    there itself, so a promotion needs no second connect."""
    return (
        broker.host,
        broker.port,
        broker.use_tls,
        broker.ca_certificate,
        broker.secrets_changed_at,
        broker.updated_at,
        broker.credentials_pending_since,
    )


def _in_own_connection(function: Callable, **kwargs):
    """Run a service from the network thread, closing that thread's database
    connection afterwards (it is rarely needed and must not linger)."""
    from django.db import connection

    try:
        return function(**kwargs)
    finally:
        connection.close()


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
        suffixes: tuple[str, ...] | None = None,
    ) -> None:
        self.broker_id = broker.pk
        # What is subscribed under each device root (`<prefix>/+/<suffix>`): the
        # bridge's rooms name them; None is the devices topics of the protocol alone.
        self.suffixes = suffixes
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
        # What this broker sent that we dropped, and connections we ended for it.
        self.counters: Counter = Counter()
        self.client = BufferedClient(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        self.client.vet_addresses = not broker.is_platform
        self.client.connect_timeout = 5.0
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(MAX_QUEUED_MESSAGES)
        self.client.on_oversize = self._on_oversize
        # Raises SecretDecryptionError for an undecryptable secret: the caller logs it
        # and retries later rather than connecting with ciphertext.
        self._current_auth = (broker.username, broker.password)
        # The staging time of the pair being tried, None when using the current one.
        # A pair the broker refused once is not tried again until staged again.
        self.pending_since = None
        auth = self._current_auth
        if (
            broker.credentials_pending_since is not None
            and broker.credentials_refused_at is None
        ):
            self.pending_since = broker.credentials_pending_since
            auth = (broker.pending_username, broker.pending_password)
        self._set_auth(*auth)
        # Reconnect at once (no backoff): set when falling back to the current pair.
        self._retry_now = False
        if broker.use_tls:
            context = ssl.create_default_context(cadata=broker.ca_certificate or None)
            self.client.tls_set_context(context)
        self.client.on_connect = self._guarded(self._on_connect)
        self.client.on_disconnect = self._guarded(self._on_disconnect)
        self.client.on_subscribe = self._guarded(self._on_subscribe)
        self.client.on_message = self._guarded(self._on_message)
        self._thread = threading.Thread(
            target=self._run, name=f"mqtt-{broker.pk}", daemon=True
        )

    def _set_auth(self, username: str, password: str) -> None:
        if username or password:
            self.client.username_pw_set(username or None, password or None)
        else:
            self.client.username_pw_set(None, None)

    # --- credential rotation ----------------------------------------------------------

    def _pending_accepted(self) -> None:
        # Left as it is if the database fails: the next connect promotes.
        promoted = _in_own_connection(
            broker_credentials_promote,
            broker_id=self.broker_id,
            staged_at=self.pending_since,
        )
        self.pending_since = None
        if promoted:
            self.fingerprint = (*self.fingerprint[:-1], None)
            logger.info("broker %s: new credentials accepted, promoted", self.name)
        # Not promoted: staged again or cancelled meanwhile; the fingerprint still
        # names the pair tried, so the bridge rebuilds this connection.

    def _pending_refused(self, reason_code) -> None:
        staged_at, self.pending_since = self.pending_since, None
        self._set_auth(*self._current_auth)
        self._retry_now = True
        self.counters["credentials_refused"] += 1
        logger.warning(
            "broker %s refused the new credentials (%s); using the current ones",
            self.name,
            reason_code,
        )
        _in_own_connection(
            broker_credentials_refused,
            broker_id=self.broker_id,
            staged_at=staged_at,
            reason=str(reason_code),
        )

    # --- subscriptions ---------------------------------------------------------------

    def filters(self, prefixes) -> list[str]:
        out = []
        for prefix in sorted(prefixes):
            if self.suffixes is None:
                filters = protocol.subscriptions(prefix)
            else:
                filters = [f"{prefix}/+/{suffix}" for suffix in self.suffixes]
            for topic_filter in filters:
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

    # --- faults -----------------------------------------------------------------------

    def _fault(self, kind: str, message: str, *args) -> None:
        """Count something the broker did wrong; log the 1st, 2nd, 4th, 8th... of
        each kind, so that a broker sending garbage cannot flood the log."""
        self.counters[kind] += 1
        count = self.counters[kind]
        if count & (count - 1) == 0:
            logger.warning(
                "broker %s: " + message + " (%s so far)", self.name, *args, count
            )

    def _guarded(self, callback: Callable) -> Callable:
        def run(*args) -> None:
            try:
                callback(*args)
            except Exception as exc:  # noqa: BLE001 - must never end the network thread
                self._fault("callback_errors", "%s failed: %r", callback.__name__, exc)

        return run

    def _on_oversize(self, size: int) -> None:
        self._fault("oversize", "skipped a %d-byte packet", size)

    def alive(self) -> bool:
        """False once the network thread has ended (it should not, but if it ever
        does the bridge must notice and rebuild the connection)."""
        return self._thread.is_alive() or not self._thread.ident

    # --- paho callbacks (network thread: keep them short) ----------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            if self.pending_since is not None and (
                reason_code.value in CREDENTIALS_REFUSED
            ):
                self._pending_refused(reason_code)
                return
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
        if self.pending_since is not None:
            self._pending_accepted()

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
        try:
            topic = message.topic
        except UnicodeDecodeError:
            # MQTT requires UTF-8 topics; no device of ours can have sent this.
            self._fault("bad_topic", "dropped a topic that is not UTF-8")
            return
        retain = is_replay(
            message.retain, received_at=now, subscribed_at=self.subscribed_at
        )
        self._enqueue((self.broker_id, topic, message.payload, now, retain))

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
        # Capped before the power: a broker down for days must not overflow a float
        # and end the connection thread.
        delay = min(self.max_backoff, self.min_backoff * (2 ** min(attempt, 32)))
        self._stop.wait(random.uniform(delay / 2, delay))

    def _run(self) -> None:
        attempt = 0
        first = True
        try:
            while not self._stop.is_set():
                try:
                    if first:
                        self.client.connect(self.host, self.port, self.keepalive)
                        first = False
                    else:
                        self.client.reconnect()
                except BrokerAddressRefused as exc:
                    # Vetted on every attempt: the name may point inside by now.
                    self.counters["address_refused"] += 1
                    logger.warning("broker %s not connected: %s", self.name, exc)
                    self._sleep_backoff(attempt)
                    attempt += 1
                    continue
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
                except Exception as exc:  # noqa: BLE001 - e.g. paho refusing the host
                    self._fault("loop_errors", "cannot connect: %r", exc)
                    self._sleep_backoff(attempt)
                    attempt += 1
                    continue
                try:
                    attempt = self._serve(attempt)
                except Exception as exc:  # noqa: BLE001 - a broker's bytes broke paho
                    self._fault("loop_errors", "connection dropped after %r", exc)
                # Closed now, not at the next attempt: the broker must not go on
                # sending while we back off. (paho has already closed it when it
                # ended the connection itself.) Private: paho's public way out,
                # disconnect(), sends a DISCONNECT to a broker that may not read it,
                # and closing client.socket() behind paho leaves it holding the
                # closed socket in its loop state.
                self.client._sock_close()
                self.connected.clear()
                self.subscribed.clear()
                if self._retry_now:
                    self._retry_now = False  # refused new credentials: old ones now
                    continue
                if not self._stop.is_set():
                    self._sleep_backoff(attempt)
                    attempt += 1
        finally:
            self.connected.clear()
            self.subscribed.clear()

    def _serve(self, attempt: int) -> int:
        """Run one connection until it fails; returns the backoff attempt count."""
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
            # Private: paho's queue of packets not yet written. A count of our own
            # publishes would miss the PUBACKs and PINGREQs that pile up there too.
            if len(self.client._out_packet) > MAX_OUT_PACKETS:
                self._fault("not_reading", "stopped reading what we send; dropped")
                break
        return attempt
