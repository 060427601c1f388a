"""The bridge's worker and writer threads: the inbox drained through the dispatcher,
and the rooms' batches written, held and retried while the database is away.

- worker: takes messages from the inbox in bursts of up to MAX_BATCH, dispatches each
  to its room (devices.bridge.rooms), lets every room send its live updates after the
  burst, and every `flush_interval`, when the writer is idle, drains every room's
  batch to the writer. While the database is busy, batches keep growing (and a
  room may merge them) instead of the worker waiting;
- writer: each room's `flush`; a batch that fails is kept (merged with the next by
  the room's `merge`) and tried again after a delay doubling up to RETRY_MAX_DELAY.
"""

import logging
import queue
import time

from django.db import close_old_connections, connection, reset_queries

from poolsaas import metrics

logger = logging.getLogger(__name__)

MAX_BATCH = 5000
MAX_INBOX = 10000
# Samples (or other rows) pending in the rooms beyond which the worker stops taking
# messages while the writer is busy.
MAX_PENDING_SAMPLES = 20000
# Seconds between two attempts to write a held batch: doubles up to the maximum.
RETRY_MIN_DELAY, RETRY_MAX_DELAY = 0.25, 5.0


class WorkerThreads:
    """The worker and writer of devices.bridge.runner.Bridge."""

    def _enqueue(self, item: tuple) -> None:
        # Backpressure: past MAX_INBOX the network thread waits, the socket fills and
        # the broker holds (or, for QoS 0, drops) instead of this process growing.
        while self.inbox.qsize() >= MAX_INBOX and not self._stop.is_set():
            self.dispatcher.counters["inbox_full"] += 1
            time.sleep(0.002)
        self.inbox.put(item)

    def _pending_rows(self) -> int:
        return sum(room.pending() for room in self.dispatcher.rooms)

    def _work(self) -> None:
        dispatch = self.dispatcher.handle
        counters = self.dispatcher.counters
        last_flush = time.monotonic()
        while not self._stop.is_set() or not self.inbox.empty():
            if (
                self._pending_rows() >= MAX_PENDING_SAMPLES
                and not self._writer_idle.is_set()
                and not self._stop.is_set()
            ):
                # The database is behind: stop taking messages (the inbox fills,
                # then the socket) rather than queueing without bound in memory.
                counters["write_waits"] += 1
                self._writer_idle.wait(0.05)
                continue
            try:
                item = self.inbox.get(timeout=0.05)
            except queue.Empty:
                item = None
            if item is not None:
                metrics.burst_started(self, item[3])
                started = time.perf_counter()
                dispatch(*item)
                for _ in range(MAX_BATCH):
                    try:
                        item = self.inbox.get_nowait()
                    except queue.Empty:
                        break
                    dispatch(*item)
                self._updates()
                self.busy["handle"] += time.perf_counter() - started
            else:
                self._updates()  # idle: pages that opened may want their state
            now = time.monotonic()
            if now - last_flush >= self.flush_interval and self._writer_idle.is_set():
                last_flush = now
                batches = self._drain()
                # A held batch is retried even when nothing new arrived.
                if any(batches.values()) or self._retry:
                    self._writer_idle.clear()
                    self._to_write.put(batches)
        self._updates()
        self._writer_idle.wait(30)
        self._to_write.put(self._drain())
        self._to_write.put(None)

    def _updates(self) -> None:
        for room in self.dispatcher.rooms:
            try:
                room.updates(self.outbox)
            except Exception:  # noqa: BLE001 - the database away (OTA's lookups)
                # The worker goes on with telemetry; the room tries again next pass.
                self.db_errors += 1
                if room.name not in self._updates_failing:
                    logger.exception("room %s could not send its updates", room.name)
                self._updates_failing.add(room.name)
                connection.close()
            else:
                self._updates_failing.discard(room.name)

    def _drain(self) -> dict:
        self._meter()
        return {room.name: room.drain() for room in self.dispatcher.rooms}

    def _meter(self) -> None:
        """Hand the messages accepted since the last drain to the usage counters, one
        pipelined round trip per flush_interval (never raises)."""
        dispatcher = self.dispatcher
        usage, shed = dispatcher.usage, dispatcher.shed
        if usage:
            from billing import metering

            dispatcher.usage, dispatcher.shed = type(usage)(), type(shed)()
            counts = {(t, metering.MESSAGES_IN): n for t, n in usage.items()}
            counts.update({(t, metering.MESSAGES_DROPPED): n for t, n in shed.items()})
            metering.add_many(counts)

    def _write(self) -> None:
        try:
            while True:
                batches = self._to_write.get()
                if batches is None:
                    if self._retry:
                        self._flush({}, now=True)  # a last try on the way out
                    break
                started = time.perf_counter()
                self.write_started = time.monotonic()
                self._flush(batches)
                self.write_started = None
                # With DEBUG on, Django keeps every query (with its parameters) of a
                # connection; a long-running thread must drop them like a request.
                reset_queries()
                took = time.perf_counter() - started
                self.busy["write"] += took
                metrics.WRITE_SECONDS.observe(took)
                self._writer_idle.set()
        finally:
            self._writer_idle.set()
            connection.close()

    def held(self, room: str):
        """The batch of `room` held for a retry (None when there is none)."""
        return self._retry.get(room)

    def _flush(self, batches: dict, *, now: bool = False) -> None:
        work = {}
        for room in self.dispatcher.rooms:
            batch, old = batches.get(room.name), self._retry.pop(room.name, None)
            if old is not None:
                batch = old if not batch else room.merge(old, batch, self.outbox)
            if batch:
                work[room] = batch
        if not work:
            return
        if not now and time.monotonic() < self._retry_at:
            # The database failed just now: give it time.
            self._retry.update({room.name: batch for room, batch in work.items()})
            return
        close_old_connections()
        failed = None
        for room, batch in work.items():
            try:
                room.flush(batch, self.outbox)
            except Exception as exc:  # noqa: BLE001 - database away: keep and retry
                failed = exc
                self._retry[room.name] = batch
        if failed is None:
            self._retry_at, self._retry_delay = 0.0, RETRY_MIN_DELAY
            self.flushes += 1
            return
        self.db_errors += 1
        self.write_failures += 1
        if self._retry_delay == RETRY_MIN_DELAY:
            logger.error(
                "bridge cannot write to the database; will retry", exc_info=failed
            )
        else:
            logger.warning("bridge still cannot write to the database: %s", failed)
        connection.close()
        self._retry_at = time.monotonic() + self._retry_delay
        self._retry_delay = min(RETRY_MAX_DELAY, self._retry_delay * 2)
