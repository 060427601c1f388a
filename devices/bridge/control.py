"""The bridge's control thread: the directory, the broker connections and silence.

Every `refresh_interval` the topic directory is rebuilt from the access layer and the
broker connections are reconciled with the brokers in the database (so broker and
device changes need no restart); every `silence_interval` devices not heard from for
their silence window are marked offline; every `stats_interval` the stats are logged.
Every tick (the shorter of the sweep and refresh intervals) it renews the bridge's
heartbeat (devices.services.leases.bridge_beat), which tells the other bridges that
the commands it claimed are in hand.

Brokers: the platform broker is served by every bridge (shared subscriptions); any
other broker (a tenant's own, or the platform's without $share) by the one bridge
holding its lease (devices.services.leases), renewed at each refresh. A bridge that
cannot renew (the database away) drops those connections once its lease has run
out, since another bridge may hold it by then.
"""

import logging
import threading
import time

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import close_old_connections, connection, reset_queries

from billing.metering import over_quota
from devices.bridge.connection import BrokerConnection, broker_fingerprint
from devices.bridge.directory import Directory
from devices.fields import SecretDecryptionError
from devices.mqtt import device_went_silent
from devices.selectors import brokers_for_bridge, devices_for_bridge
from devices.services.brokers import broker_ensure_platform, validate_broker_address
from devices.services.ingest import devices_mark_silent
from devices.services.leases import (
    bridge_beat,
    broker_leases_hold,
    broker_leases_release,
)

logger = logging.getLogger(__name__)


class ControlThread:
    """The control loop of devices.bridge.runner.Bridge."""

    def _control(self) -> None:
        next_refresh = next_silence = 0.0
        next_stats = time.monotonic() + self.stats_interval
        try:
            platform = broker_ensure_platform()
            self.platform_broker_id = platform.pk
        except Exception:  # noqa: BLE001
            logger.exception("cannot ensure the platform broker")
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                close_old_connections()
                bridge_beat(name=self.name, instance=self.instance, ttl=self.beat_ttl)
                if now >= next_refresh:
                    self.refresh()
                    next_refresh = now + self.refresh_interval
                if now >= next_silence:
                    self.sweep_silence()
                    next_silence = now + self.silence_interval
            except Exception:  # noqa: BLE001 - keep the bridge alive, retry next tick
                self.db_errors += 1
                logger.exception("bridge control loop failed; retrying")
                connection.close()
            self._drop_lapsed_leases()
            if now >= next_stats:
                next_stats = now + self.stats_interval
                logger.info("bridge stats %s", self.stats())
            reset_queries()
            self._stop.wait(min(self.sweep_interval, self.refresh_interval))
        connection.close()

    def shared(self, broker) -> bool:
        """Served by every bridge (shared subscriptions), not under a lease."""
        return broker.is_platform and settings.MQTT_SHARED_SUBSCRIPTIONS

    def refresh(self) -> None:
        """Renew the leases, rebuild the topic directory and reconcile broker
        connections: the shared brokers and the leased ones this bridge holds."""
        brokers = list(brokers_for_bridge())
        started = time.monotonic()
        held = broker_leases_hold(
            holder=self.name,
            broker_ids=[b.pk for b in brokers if not self.shared(b)],
            ttl=self.lease_ttl,
        )
        self.leases_until = started + self.lease_ttl
        self.leased = held
        brokers = [b for b in brokers if self.shared(b) or b.pk in held]
        broker_ids = [b.pk for b in brokers]
        directory = Directory.build(
            devices_for_bridge(broker_ids=broker_ids),
            previous=self.dispatcher.directory,
            silence_factor=self.silence_factor,
        )
        self.dispatcher.directory = directory
        self.dispatcher.over_quota = over_quota()
        if self._stop.is_set():
            return  # stopping: the connections are being closed, not to be rebuilt
        for broker in brokers:
            conn = self.connections.get(broker.pk)
            if conn is not None and conn.fingerprint != broker_fingerprint(broker):
                logger.info("broker %s changed; reconnecting", broker.name)
                conn.stop()
                del self.connections[broker.pk]
                conn = None
            if conn is not None and not conn.alive():
                # Its network thread ended: it would look connected forever.
                logger.error("connection to broker %s died; rebuilding", broker.name)
                conn.stop()
                del self.connections[broker.pk]
                conn = None
            if conn is None:
                conn = self._connect(broker)
                if conn is None:
                    continue
                conn.set_prefixes(set(directory.prefixes(broker.pk)))
                self.connections[broker.pk] = conn
                conn.start()
            else:
                conn.set_prefixes(set(directory.prefixes(broker.pk)))
        for pk in set(self.connections) - set(broker_ids):
            self.connections.pop(pk).stop()
        self._refreshed.set()

    def _drop_lapsed_leases(self) -> None:
        """Not renewed in time (the database away): another bridge may hold these
        brokers by now, so this one lets them go."""
        if not self.leased or time.monotonic() < self.leases_until:
            return
        for pk in self.leased:
            conn = self.connections.pop(pk, None)
            if conn is not None:
                logger.warning("lease on broker %s lapsed; disconnecting", conn.name)
                conn.stop()
        self.leased = set()

    def release_leases(self) -> None:
        """Stopping: the leases go at once, for another bridge to take. On a thread
        (and database connection) of its own: the caller's connection is left as it
        is."""

        def release() -> None:
            try:
                broker_leases_release(holder=self.name)
            except Exception:  # noqa: BLE001 - they expire on their own
                logger.warning("cannot release the broker leases", exc_info=True)
            finally:
                connection.close()

        thread = threading.Thread(target=release, name="bridge-release", daemon=True)
        thread.start()
        thread.join(10)

    def _connect(self, broker) -> BrokerConnection | None:
        if not broker.is_platform:
            # A tenant's broker is checked again here, not only when it was saved:
            # the name may resolve elsewhere by now.
            try:
                validate_broker_address(broker.host)
            except ValidationError as exc:
                logger.warning(
                    "broker %s not connected: %s", broker.name, exc.messages[0]
                )
                return None
        try:
            conn = BrokerConnection(
                broker=broker,
                enqueue=self._enqueue,
                client_id=f"poolsaas-bridge-{self.name}-{broker.pk}"[:64],
                # Several bridges share the platform broker's traffic; a broker
                # without $share (the embedded one) is leased to one bridge.
                shared=self.shared(broker),
                share_group=self.share_group,
                keepalive=self.keepalive,
                min_backoff=self.min_backoff,
                max_backoff=self.max_backoff,
                suffixes=tuple(self.dispatcher.suffixes()),
            )
        except SecretDecryptionError:
            logger.error(
                "cannot decrypt the credentials of broker %s; skipped", broker.name
            )
            return None
        except Exception:  # noqa: BLE001 - e.g. a bad CA certificate
            logger.exception("cannot set up broker %s; skipped", broker.name)
            return None
        return conn

    def sweep_silence(self) -> None:
        """Mark offline the devices of this bridge's brokers that said nothing for
        their silence window (devices_mark_silent), and show it live."""
        directory = self.dispatcher.directory
        mine = set(self.connections)
        candidates = {
            pk: info.silence_s
            for pk, info in directory.by_pk.items()
            if info.broker_id in mine
        }
        for pk in devices_mark_silent(candidates=candidates):
            info = directory.by_pk.get(pk)
            if info is not None:
                device_went_silent(info, self.outbox)
