"""The bridge's publisher threads: the sweep, every room's `publish` every
`sweep_interval` (the database is the queue of record), or at once for a ring that
carried too little; and the ringer, every room's `publish_now` the moment the
doorbell rings (what a ring carried, such as a whole command). Each has a thread of
its own, so that a ring never waits behind a sweep, nor either behind a slow
directory refresh."""

import logging
import time

from django.db import close_old_connections, connection, reset_queries

logger = logging.getLogger(__name__)


class PublisherThread:
    """The publisher of devices.bridge.runner.Bridge."""

    def _publisher(self) -> None:
        while not self._refreshed.wait(0.2):
            if self._stop.is_set():
                return
        next_sweep = 0.0
        swept = False
        while not self._stop.is_set():
            # Cleared before the work: a ring during it runs the loop again.
            self._wake.clear()
            if self._sweep_asked or time.monotonic() >= next_sweep:
                self._sweep_asked = False
                next_sweep = time.monotonic() + self.sweep_interval
                try:
                    close_old_connections()
                    self.sweep_publish()
                    if not swept:
                        swept = True
                        logger.info(
                            "bridge %s: first publish sweep done (then every %s s)",
                            self.name,
                            self.sweep_interval,
                        )
                except Exception:  # noqa: BLE001 - keep the bridge alive, retry
                    self.db_errors += 1
                    logger.exception("bridge publish sweep failed; retrying")
                    connection.close()
                reset_queries()
            self._wake.wait(max(0.0, next_sweep - time.monotonic()))
        connection.close()

    def _ringer(self) -> None:
        while not self._refreshed.wait(0.2):
            if self._stop.is_set():
                return
        while not self._stop.is_set():
            if not self._rang.wait(1.0):
                continue
            self._rang.clear()
            close_old_connections()
            self.publish_now()
            reset_queries()
        connection.close()

    def publish_now(self) -> None:
        """Every room's publish_now (one room failing does not stop the others)."""
        for room in self.dispatcher.rooms:
            try:
                room.publish_now(self.outbox)
            except Exception:  # noqa: BLE001 - the sweep covers what it left
                self.db_errors += 1
                logger.exception("room %s failed to publish a ring", room.name)

    def sweep_publish(self) -> None:
        """One round of every room's publishing (one room failing does not stop the
        others)."""
        failed = None
        for room in self.dispatcher.rooms:
            try:
                room.publish(self.outbox)
            except Exception as exc:  # noqa: BLE001 - re-raised below
                failed = exc
        if failed is not None:
            raise failed

    def _on_doorbell(self, message: dict) -> None:
        """A ring of the doorbell (devices.bridge.live's thread): each room takes
        what is its own; the ringer publishes what the rooms took whole, and the
        sweep runs now for a ring that needs it."""
        handled = False
        for room in self.dispatcher.rooms:
            try:
                handled = bool(room.doorbell(message)) or handled
            except Exception:  # noqa: BLE001 - a bad ring must not stop the doorbell
                logger.exception("room %s failed on a doorbell ring", room.name)
        if handled:
            self._rang.set()
        else:
            self._sweep_asked = True
            self._wake.set()
