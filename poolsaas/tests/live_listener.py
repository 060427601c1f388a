"""A page's socket, as a test stands it in: one channel-layer listener that joins its
groups and keeps receiving on an event loop of its own, in a thread, for as long as
it is open (what a daphne consumer does).

Why not `async_to_sync(layer.receive)` per step: each call runs on a new event loop,
and the pub/sub layer (poolsaas/live/layer.py) keeps a channel, its groups and its
subscription in the loop that made it, subscribed only while a receive waits there.
One loop that never stops receiving works with either layer (pubsub or core)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future

from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

from poolsaas.live.groups import watch_announce

TIMEOUT = 15.0
PROBE = "test.probe"


class GroupListener:
    """`with GroupListener(group, ...) as page:` joins each group (announced to the
    bridges, as a page's socket does, unless announce=False) and returns once Redis
    delivers to it; `page.wait(match)` is the first message that matches."""

    def __init__(self, *groups: str, announce: bool = True) -> None:
        self.groups: list[str] = []
        self._initial = groups
        self._announce = announce
        self.messages: list[dict] = []
        self._taken = 0  # by next()
        self._changed = threading.Condition()
        self._probes: set[str] = set()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, name="test-listener", daemon=True
        )
        self._started = threading.Event()
        # What the main task is asked to do: (groups, announce, future), None to end.
        self._requests: asyncio.Queue | None = None

    def __enter__(self) -> GroupListener:
        self._thread.start()
        if not self._started.wait(TIMEOUT):
            raise AssertionError("the listener did not start")
        self.join(*self._initial, announce=self._announce)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- from the test's thread ------------------------------------------------------

    def join(self, *groups: str, announce: bool = True) -> None:
        """Join each group; returns once a message sent to it has arrived."""
        done: Future = Future()
        self.loop.call_soon_threadsafe(
            self._requests.put_nowait, (groups, announce, done)
        )
        done.result(TIMEOUT * (len(groups) + 1))

    def wait(self, match: Callable[[dict], bool], timeout: float = TIMEOUT) -> dict:
        """The first message received (since the start) for which match() is true."""
        found = self.wait_until(
            lambda got: next((m for m in got if match(m)), None), timeout
        )
        return found

    def next(self, timeout: float = TIMEOUT) -> dict:
        """The message after the last one next() returned."""
        taken = self._taken
        message = self.wait_until(
            lambda got: got[taken] if len(got) > taken else None, timeout
        )
        self._taken += 1
        return message

    def wait_until(self, check: Callable[[list[dict]], object], timeout=TIMEOUT):
        """check(messages so far), once it is truthy."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = check(list(self.messages))
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"not received; got {self.messages}")
                self._changed.wait(left)

    def received(self, within: float = 0.0) -> list[dict]:
        """Every message so far, after `within` seconds more of listening (to show
        that something does not arrive)."""
        if within:
            deadline = time.monotonic() + within
            with self._changed:
                while (left := deadline - time.monotonic()) > 0:
                    self._changed.wait(left)
        with self._changed:
            return list(self.messages)

    def close(self) -> None:
        if self._requests is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self._requests.put_nowait, None)
        self._thread.join(TIMEOUT)

    # --- on the listener's loop ------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self._requests = asyncio.Queue()
        self.layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        self.channel = await self.layer.new_channel()
        receiving = asyncio.ensure_future(self._receive())
        self._started.set()
        try:
            # Joins run on this task, as a consumer's on its socket's: a watch it
            # announces is held until the listener closes.
            while (request := await self._requests.get()) is not None:
                groups, announce, done = request
                try:
                    await self._join(groups, announce)
                    done.set_result(None)
                except Exception as error:  # noqa: BLE001 - raised in the test
                    done.set_exception(error)
        finally:
            # While the loop runs: a receive left pending would be torn down by the
            # loop's closing ("Event loop is closed").
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiving
            for group in self.groups:
                with contextlib.suppress(Exception):
                    await self.layer.group_discard(group, self.channel)
            close = getattr(self.layer, "close_pools", None)
            if close is not None:
                await close()

    async def _receive(self) -> None:
        while True:
            message = await self.layer.receive(self.channel)
            if message.get("type") == PROBE:
                self._probes.discard(message.get("id"))
                continue
            with self._changed:
                self.messages.append(message)
                self._changed.notify_all()

    async def _join(self, groups: tuple[str, ...], announce: bool) -> None:
        for group in groups:
            await self.layer.group_add(group, self.channel)
            self.groups.append(group)
            # SUBSCRIBE is asynchronous: joined once a message to the group comes
            # back (probes are not kept).
            probe = uuid.uuid4().hex
            self._probes.add(probe)
            deadline = time.monotonic() + TIMEOUT
            while probe in self._probes:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{group}: no message came back")
                await self.layer.group_send(group, {"type": PROBE, "id": probe})
                await asyncio.sleep(0.05)
            if announce:
                await watch_announce(self.layer, group)
