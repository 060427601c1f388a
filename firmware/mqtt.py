"""A small asynchronous MQTT 3.1.1 client of our own for the board (firmware/README.md
says why): QoS 0 and 1, keepalive, last will, TLS, session-present, one connection per
object. Reconnecting, backoff and the outbox belong to link.py: a client that failed is
closed and a new one is made.

The packet codecs are pure functions (tested on the PC and under MicroPython); the
client needs asyncio streams (`asyncio.open_connection`).
"""

import asyncio
import time

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82  # the reserved flags of SUBSCRIBE are 0b0010
SUBACK = 0x90
PINGREQ = b"\xc0\x00"
PINGRESP = 0xD0
DISCONNECT = b"\xe0\x00"

# Incoming packets larger than this are read and thrown away: a broker (or anyone who
# may publish to our topics) must not be able to make the board allocate at will.
MAX_INCOMING = 6144
CONNACK_ERRORS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class MQTTError(OSError):
    """A broker answer that ends the connection (refused CONNACK, failed SUBACK).
    `code` is the CONNACK return code of a refused connection (4: bad user name or
    password, 5: not authorised), else None."""

    def __init__(self, msg, code=None):
        super().__init__(msg)
        self.code = code


def _str(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    return len(b).to_bytes(2, "big") + b


def encode_length(n):
    """The remaining-length varint of the fixed header."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + encode_length(len(body)) + body


def encode_connect(client_id, keepalive, clean, will=None, user=None, password=None):
    """CONNECT; will is (topic, payload, retain, qos)."""
    flags = 0x02 if clean else 0
    payload = _str(client_id)
    if will:
        topic, msg, retain, qos = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _str(topic) + _str(msg)
    if user:
        flags |= 0x80
        payload += _str(user)
        if password is not None:
            flags |= 0x40
            payload += _str(password)
    head = _str("MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big")
    return packet(CONNECT, head + payload)


def parse_connack(body):
    """CONNACK body -> session present (bool); MQTTError when refused."""
    if len(body) != 2:
        raise MQTTError("bad CONNACK")
    if body[1]:
        code = body[1]
        raise MQTTError("refused: " + CONNACK_ERRORS.get(code, str(code)), code)
    return bool(body[0] & 1)


def encode_publish(topic, payload, retain=False, qos=0, pid=0, dup=False):
    first = PUBLISH | (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
    body = _str(topic)
    if qos:
        body += pid.to_bytes(2, "big")
    return packet(first, body + payload)


def parse_publish(first, body):
    """PUBLISH -> (topic bytes, payload bytes, qos, pid)."""
    qos = (first >> 1) & 3
    n = int.from_bytes(body[:2], "big")
    topic = body[2 : 2 + n]
    i = 2 + n
    pid = 0
    if qos:
        pid = int.from_bytes(body[i : i + 2], "big")
        i += 2
    if len(topic) < n or i > len(body):
        raise MQTTError("bad PUBLISH")
    return bytes(topic), bytes(body[i:]), qos, pid


def encode_subscribe(pid, topic, qos):
    return packet(SUBSCRIBE, pid.to_bytes(2, "big") + _str(topic) + bytes([qos]))


def encode_puback(pid):
    return bytes([PUBACK, 2]) + pid.to_bytes(2, "big")


def _ctx(ca_der):
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_der:
        ctx.load_verify_locations(cadata=ca_der)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class MQTTClient:
    """One connection. After connect(), `error` stays None while the link is healthy;
    the reader or the keepalive set it (and close the socket) when it is not."""

    def __init__(
        self,
        client_id,
        host,
        port=1883,
        user=None,
        password=None,
        keepalive=30,
        will=None,
        tls=False,
        ca_der=None,
        on_message=None,
        timeout_s=10,
    ):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.will = will
        self.tls = tls
        self.ca_der = ca_der
        self.on_message = on_message
        self.timeout_ms = timeout_s * 1000
        self.reader = self.stream = None
        self.error = None
        self.session_present = False
        self._pid = 0
        self._acks = {}  # pid -> SUBACK code, or True for a PUBACK
        self._ack = asyncio.Event()
        self._lock = (
            asyncio.Lock()
        )  # the reader's PUBACKs and our packets share a socket
        self._tasks = []
        self._rx = 0
        self._pinged = False

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    async def _send(self, data):
        async with self._lock:
            if self.stream is None:
                raise self.error or OSError("closed")
            self.stream.write(data)
            await asyncio.wait_for_ms(self.stream.drain(), self.timeout_ms)

    async def _read(self, n):
        return await self.reader.readexactly(n)

    async def _packet(self):
        """(first byte, body); bodies over MAX_INCOMING come back as None."""
        first = (await self._read(1))[0]
        n = 0
        shift = 0
        while True:
            b = (await self._read(1))[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift > 21:
                raise MQTTError("bad remaining length")
        if n > MAX_INCOMING:
            while n:
                n -= len(await self._read(min(n, 256)))
            return first, None
        return first, (await self._read(n) if n else b"")

    async def connect(self, clean=False):
        """Open the socket, CONNECT, wait for CONNACK; returns session present. Any
        exception means this client is done (the caller closes it and makes another)."""
        ssl = _ctx(self.ca_der) if self.tls else None
        kw = {"ssl": ssl, "server_hostname": self.host} if ssl else {}
        self.reader, self.stream = await asyncio.wait_for_ms(
            asyncio.open_connection(self.host, self.port, **kw), self.timeout_ms
        )
        await self._send(
            encode_connect(
                self.client_id,
                self.keepalive,
                clean,
                self.will,
                self.user,
                self.password,
            )
        )
        first, body = await asyncio.wait_for_ms(self._packet(), self.timeout_ms)
        if first != CONNACK:
            raise MQTTError("CONNACK expected")
        self.session_present = parse_connack(body)
        self._rx = time.ticks_ms()
        self._tasks = [
            asyncio.create_task(self._reader()),
            asyncio.create_task(self._keepalive()),
        ]
        return self.session_present

    def _fail(self, e):
        if self.error is None:
            self.error = e
        self._ack.set()  # wake whoever waits for an acknowledgement
        self.close()

    async def _reader(self):
        try:
            while True:
                first, body = await self._packet()
                self._rx = time.ticks_ms()
                self._pinged = False
                kind = first & 0xF0
                if kind == PUBLISH:
                    if body is None:
                        raise MQTTError("incoming message too large")
                    topic, msg, qos, pid = parse_publish(first, body)
                    if qos:
                        await self._send(encode_puback(pid))
                    if self.on_message:
                        self.on_message(topic, msg)
                elif kind == PUBACK and body:
                    self._acks[int.from_bytes(body[:2], "big")] = True
                    self._ack.set()
                elif kind == SUBACK and body and len(body) >= 3:
                    self._acks[int.from_bytes(body[:2], "big")] = body[2]
                    self._ack.set()
        except asyncio.CancelledError:
            pass
        except Exception as e:  # noqa: BLE001 - whatever broke, this link is over
            self._fail(e)

    async def _keepalive(self):
        # Ping after half the keepalive without traffic from the broker; give up after
        # a whole keepalive of silence (a frozen broker, a dead route).
        ka = self.keepalive * 1000
        try:
            while self.error is None:
                await asyncio.sleep_ms(500)
                quiet = time.ticks_diff(time.ticks_ms(), self._rx)
                if quiet > ka:
                    self._fail(OSError("keepalive: broker silent"))
                elif quiet > ka // 2 and not self._pinged:
                    self._pinged = True
                    await self._send(PINGREQ)
        except asyncio.CancelledError:
            pass
        except Exception as e:  # noqa: BLE001
            self._fail(e)

    async def _wait_ack(self, pid):
        deadline = time.ticks_add(time.ticks_ms(), self.timeout_ms)
        while pid not in self._acks:
            if self.error is not None:
                raise self.error
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                raise OSError("no acknowledgement")
            self._ack.clear()
            try:
                await asyncio.wait_for_ms(self._ack.wait(), left)
            except asyncio.TimeoutError:  # noqa: UP041 - MicroPython has no builtin
                pass
        return self._acks.pop(pid)

    async def subscribe(self, topic, qos=1):
        pid = self._next_pid()
        await self._send(encode_subscribe(pid, topic, qos))
        if await self._wait_ack(pid) == 0x80:
            raise MQTTError("subscription refused: " + topic)

    async def publish(self, topic, payload, retain=False, qos=0, dup=False):
        """QoS 1 returns once the broker acknowledged (or raises)."""
        if self.error is not None:
            raise self.error
        if isinstance(payload, str):
            payload = payload.encode()
        pid = self._next_pid() if qos else 0
        await self._send(encode_publish(topic, payload, retain, qos, pid, dup))
        if qos:
            await self._wait_ack(pid)

    async def disconnect(self):
        try:
            if self.error is None and self.stream:
                await self._send(DISCONNECT)
        finally:
            self.close()

    def close(self):
        if self.error is None:
            self.error = OSError("closed")
        for t in self._tasks:
            if t is not asyncio.current_task():
                t.cancel()
        self._tasks = []
        if self.stream:
            # MicroPython's Stream.close() leaves the socket open (wait_closed() closes
            # it); close the socket itself, now, so the broker sees the link end.
            try:
                self.stream.s.close()
            except Exception:  # noqa: BLE001, S110 - closing a broken socket
                pass
            self.reader = self.stream = None
