"""The paho client of a bridge connection (devices.bridge.connection): reads in large
chunks and bounds what a broker can make us hold.

paho-mqtt is pinned: this overrides its private read hook `_sock_recv` and resets
its private `_in_packet` (the packet being read), acknowledges a skipped PUBLISH
with its private `_send_puback`, and overrides its private `_handle_on_message` to
skip the empty matcher of filtered callbacks (13 % of the network thread in the
profile of docs/capacity.md). paho has no public hook for either: `on_socket_*`
callbacks are for external event loops, not for reading bytes ourselves, and its
public API only sees a packet once it is whole in memory, which is what the bound
must prevent. `VettedClient` (devices.services.brokers.addresses) overrides
`_create_socket_connection` for the same reason: paho opens the socket itself, and
the address vetted must be the one connected to, in one DNS resolution.
"""

from collections.abc import Callable

import paho.mqtt.client as mqtt

from devices.services.brokers import VettedClient

# The largest packet (MQTT remaining length) a broker may make us hold. Device
# payloads are at most protocol.MAX_PAYLOAD (4 KiB); this leaves room for the topic.
MAX_PACKET_BYTES = 16 * 1024
_PUBLISH = 0x30


def _fresh_packet() -> dict:
    # paho's own reset state of the packet being read.
    return {
        "command": 0,
        "have_remaining": 0,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": 0,
        "packet": bytearray(b""),
        "to_process": 0,
        "pos": 0,
    }


class BufferedClient(VettedClient):
    """paho reads each packet with three or more recv() calls, and every one releases
    and retakes the GIL; while the worker thread computes, each retake waits for a
    thread switch, and that (not parsing) caps the intake. This reads up to 64 KiB
    per system call and serves paho's small reads from memory. (paho-mqtt is pinned:
    `_sock_recv` is its internal read hook and `_in_packet` the packet being read.)

    The same hook bounds what a broker can make us hold: a PUBLISH longer than
    `max_packet` is read through and discarded as it arrives (acknowledged, so that
    the broker does not send it again), and is reported to `on_oversize`; a QoS 2
    delivery (we subscribe with QoS 1, and paho would keep every one until its
    PUBREL) or any other oversize packet ends the connection."""

    _rbuf = b""
    _roff = 0
    max_packet = MAX_PACKET_BYTES
    on_oversize: Callable[[int], None] | None = None
    # An oversize PUBLISH being skipped: [bytes left, head (topic length, topic,
    # packet id), QoS].
    _skipping: list | None = None

    def _sock_recv(self, bufsize: int) -> bytes:
        packet = self._in_packet
        if packet["have_remaining"]:
            # paho asks for the body: the fixed header is known.
            if (
                self._skipping is not None
                or packet["remaining_length"] > self.max_packet
            ):
                self._skip_oversize(packet)
            if packet["command"] & 0xF6 == _PUBLISH | 0x04:
                raise ConnectionError("QoS 2 delivery on a QoS 1 subscription")
        return self._read(bufsize)

    def _read(self, bufsize: int) -> bytes:
        if self._roff >= len(self._rbuf):
            data = super()._sock_recv(65536)
            if not data:
                return data
            self._rbuf, self._roff = data, 0
        chunk = self._rbuf[self._roff : self._roff + bufsize]
        self._roff += len(chunk)
        return chunk

    def _skip_oversize(self, packet: dict) -> None:
        """Discard the body of an oversize PUBLISH; always raises (BlockingIOError
        tells paho to come back later, with a fresh packet once this one is gone)."""
        if self._skipping is None:
            if packet["command"] & 0xF0 != _PUBLISH:
                raise ConnectionError("oversize packet")
            qos = (packet["command"] >> 1) & 3
            if qos > 1:
                raise ConnectionError("QoS 2 delivery on a QoS 1 subscription")
            self._skipping = [packet["remaining_length"], bytearray(), qos]
            if self.on_oversize is not None:
                self.on_oversize(packet["remaining_length"])
        state = self._skipping
        while state[0]:
            data = self._read(min(state[0], 65536))  # BlockingIOError: later
            if not data:
                raise ConnectionError("closed while skipping an oversize packet")
            state[0] -= len(data)
            head = state[1]
            at = 0
            while state[2] and at < len(data):
                want = 2 if len(head) < 2 else 4 + int.from_bytes(head[:2], "big")
                if len(head) >= want:
                    break
                take = data[at : at + want - len(head)]
                head += take
                at += len(take)
        _, head, qos = state
        self._skipping = None
        self._in_packet = _fresh_packet()
        if qos == 1 and len(head) >= 4:
            end = 4 + int.from_bytes(head[:2], "big")
            if len(head) >= end:
                self._send_puback(int.from_bytes(head[end - 2 : end], "big"))
        raise BlockingIOError

    def _handle_on_message(self, message) -> None:
        """paho's dispatch of a PUBLISH, without its per-message walk of the topic
        trie of filtered callbacks (`message_callback_add`) while there is none,
        which is always in the bridge: paho's own code otherwise."""
        if self._on_message_filtered._root._children:
            super()._handle_on_message(message)
            return
        on_message = self._on_message
        if on_message is None:
            return
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception as err:
                self._easy_log(
                    mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err
                )
                if not self.suppress_exceptions:
                    raise

    def buffered(self) -> int:
        return len(self._rbuf) - self._roff

    def reconnect(self):
        self._rbuf, self._roff = b"", 0  # bytes of the old socket
        self._skipping = None
        return super().reconnect()
