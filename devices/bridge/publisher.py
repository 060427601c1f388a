"""The bridge's publisher thread: every room's `publish` hook, at once when the
doorbell rings and every `sweep_interval` anyway (the database is the queue of
record). It has a thread of its own so that a slow directory refresh never holds up
a command the doorbell just announced."""

import logging

from django.db import close_old_connections, connection, reset_queries

logger = logging.getLogger(__name__)


class PublisherThread:
    """The publisher of devices.bridge.runner.Bridge."""

    def _publisher(self) -> None:
        while not self._refreshed.wait(0.2):
            if self._stop.is_set():
                return
        while not self._stop.is_set():
            try:
                close_old_connections()
                self.sweep_publish()
            except Exception:  # noqa: BLE001 - keep the bridge alive, retry next tick
                self.db_errors += 1
                logger.exception("bridge publish sweep failed; retrying")
                connection.close()
            reset_queries()
            self._wake.wait(self.sweep_interval)
            self._wake.clear()
        connection.close()

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
        what is its own, and the publisher runs now."""
        for room in self.dispatcher.rooms:
            try:
                room.doorbell(message)
            except Exception:  # noqa: BLE001 - a bad ring must not stop the doorbell
                logger.exception("room %s failed on a doorbell ring", room.name)
        self._wake.set()
