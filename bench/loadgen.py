"""A load generator that costs little: raw WebSocket devices and a raw MQTT publisher.

On a 2-core machine the generator competes with the edge for the CPU, so it must be cheap
per message, and equally cheap for the edge and for the reference it is compared with. The
clients here speak just enough of each protocol, on plain asyncio protocols:

* :class:`WsDevice`: the firmware's WebSocket handshake (reference §1.1 headers), then frames
  masked with an all-zero key (RFC 6455 §5.3 only asks for a key; zero makes masking free),
  built with :func:`ws_frame` and written in batches. It answers pings and close frames and
  hands every text frame to its ``on_text`` callback. Writes follow TCP flow control: while
  the peer is slow, :attr:`WsDevice.paused` is true and :meth:`WsDevice.drain` waits.
* :class:`MqttPublisher`: MQTT 3.1.1 CONNECT, then QoS 0 PUBLISH packets (no waiting per
  message), for the "straight to Mosquitto" ceilings.

Nothing here validates what a server sends beyond the framing: the servers measured are
tested elsewhere; this module only has to load them and time their answers.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import math
import os
import struct
from collections.abc import Callable, Sequence
from typing import cast

from xiaozhi.mqtt_packets import encode_connect, encode_publish

__all__ = [
    "HandshakeRefused",
    "MqttPublisher",
    "WsDevice",
    "connect_devices",
    "hello_text",
    "mqtt_publish_packet",
    "percentile",
    "ws_frame",
]

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
_ZERO_MASK = b"\x00\x00\x00\x00"
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")
_device_numbers = itertools.count()


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame (masked with the zero key, so the payload goes as is)."""
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, 0x80 | size)) + _ZERO_MASK + payload
    if size < 65536:
        return _LEN16.pack(0x80 | opcode, 0xFE, size) + _ZERO_MASK + payload
    return _LEN64.pack(0x80 | opcode, 0xFF, size) + _ZERO_MASK + payload


def hello_text(version: int = 1, frame_ms: int = 60) -> bytes:
    """The firmware's hello (reference §1.2), as UTF-8 bytes."""
    return (
        b'{"type":"hello","version":%d,"transport":"websocket","features":{"mcp":false},'
        b'"audio_params":{"format":"opus","sample_rate":16000,"channels":1,'
        b'"frame_duration":%d}}' % (version, frame_ms)
    )


def new_device_id() -> str:
    """A MAC-style device id unique in this process (``02:..`` is a locally administered MAC)."""
    number = next(_device_numbers)
    raw = f"02{os.getpid() & 0xFFFF:04x}{number:06x}"
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


class HandshakeRefused(ConnectionError):
    """The server answered the upgrade with something other than 101."""


class _FlowControl(asyncio.Protocol):
    """Pause and resume of the transport's writes, as one flag and one waiter."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self._resumed: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)

    async def drain(self) -> None:
        """Return once the transport takes writes again (at once when it does)."""
        if self.paused:
            self._resumed = asyncio.get_running_loop().create_future()
            await asyncio.wait([self._resumed, self.closed], return_when=asyncio.FIRST_COMPLETED)

    def connection_lost(self, exc: Exception | None) -> None:
        self.paused = False
        if not self.closed.done():
            self.closed.set_result(None)
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)


class WsDevice(_FlowControl):
    """One device connection. Create with :meth:`connect`."""

    def __init__(self, request: bytes, device_id: str) -> None:
        super().__init__()
        self.device_id = device_id
        self.request = request
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_text: Callable[[WsDevice, bytes], None] = self._keep_text
        self.texts: collections.deque[bytes] = collections.deque(maxlen=16)
        self.binary_frames = 0
        self.close_sent = False
        self.server_hello: bytes | None = None
        self._text_arrived = asyncio.Event()
        self._buffer = bytearray()
        self._upgraded = False

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        device_id: str | None = None,
        version: int = 1,
        path: str = "/xiaozhi/v1/",
    ) -> WsDevice:
        """Open the WebSocket (firmware headers, reference §1.1); raise if refused."""
        device_id = device_id or new_device_id()
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Device-Id: {device_id}\r\nClient-Id: bench-{device_id}\r\n"
            f"Protocol-Version: {version}\r\n\r\n"
        ).encode()
        loop = asyncio.get_running_loop()
        _, device = await loop.create_connection(lambda: cls(request, device_id), host, port)
        try:
            await device.opened
        except BaseException:
            device.abort()
            raise
        return device

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[: buffer.find(b"\r\n")])
            if not status.startswith(b"HTTP/1.1 101"):
                if not self.opened.done():
                    self.opened.set_exception(HandshakeRefused(status.decode(errors="replace")))
                self.abort()
                return
            del buffer[: end + 4]
            self._upgraded = True
            self.opened.set_result(None)
        self._parse()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionResetError("closed during the handshake"))
        super().connection_lost(exc)
        self._text_arrived.set()

    def _parse(self) -> None:
        buffer = self._buffer
        size = len(buffer)
        pos = 0
        while size - pos >= 2:
            first, second = buffer[pos], buffer[pos + 1]
            length = second & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                head = 10
            if second & 0x80:
                head += 4  # a server never masks; skip a key if one came anyway
            if size - pos < head + length:
                break
            payload = bytes(buffer[pos + head : pos + head + length])
            pos += head + length
            opcode = first & 0x0F
            if opcode == TEXT:
                self.on_text(self, payload)
            elif opcode == BINARY:
                self.binary_frames += 1
            elif opcode == PING:
                self.write(ws_frame(PONG, payload))
            elif opcode == CLOSE and not self.close_sent:
                self.close_sent = True
                self.write(ws_frame(CLOSE, payload[:2]))
        del buffer[:pos]

    # -- use ---------------------------------------------------------------------------------

    def _keep_text(self, _: WsDevice, payload: bytes) -> None:
        self.texts.append(payload)
        self._text_arrived.set()

    async def next_text(self, within: float = 10.0) -> bytes:
        """The next text frame (only while :attr:`on_text` is the default keeper)."""

        async def _wait() -> bytes:
            while not self.texts:
                if self.closed.done():
                    raise ConnectionResetError(f"{self.device_id}: closed")
                self._text_arrived.clear()
                await self._text_arrived.wait()
            return self.texts.popleft()

        return await asyncio.wait_for(_wait(), within)

    async def hello(self, version: int = 1, within: float = 10.0) -> bytes:
        """Send the firmware hello and return the server's hello."""
        self.write(ws_frame(TEXT, hello_text(version)))
        while True:
            text = await self.next_text(within)
            if b'"hello"' in text:
                self.server_hello = text
                return text

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def send_text(self, payload: bytes) -> None:
        self.write(ws_frame(TEXT, payload))

    def send_binary(self, payload: bytes) -> None:
        self.write(ws_frame(BINARY, payload))

    async def close(self, within: float = 5.0) -> None:
        """Close handshake (1000), then wait for the server to end the TCP connection."""
        if not self.close_sent:
            self.close_sent = True
            self.write(ws_frame(CLOSE, b"\x03\xe8"))
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), within)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        """Drop the TCP connection without a close frame, as a device losing power would."""
        if self.transport is not None:
            self.transport.abort()


async def connect_devices(
    host: str,
    port: int,
    count: int,
    *,
    concurrency: int = 64,
    hello: bool = True,
    version: int = 1,
) -> list[WsDevice]:
    """Connect `count` devices, at most `concurrency` handshakes at a time (the listen
    backlog is small: more SYNs at once would be dropped and retried a second later)."""
    devices: list[WsDevice] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            device = await WsDevice.connect(host, port, version=version)
            if hello:
                await device.hello(version)
            devices.append(device)

    async with asyncio.TaskGroup() as group:
        for _ in range(count):
            group.create_task(one())
    return devices


# -- MQTT ----------------------------------------------------------------------------------


def mqtt_publish_packet(topic: bytes, payload: bytes, *, retain: bool = False) -> bytes:
    """A QoS 0 PUBLISH packet (MQTT 3.1.1 §3.3): the one encoder, the edge's own."""
    return encode_publish(topic, payload, retain=retain)


class MqttPublisher(_FlowControl):
    """A QoS 0 publisher with no per-message wait: packets go to the socket in batches."""

    def __init__(self, client_id: str) -> None:
        super().__init__()
        self.client_id = client_id
        self.connack: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def connect(cls, host: str, port: int, client_id: str) -> MqttPublisher:
        loop = asyncio.get_running_loop()
        _, publisher = await loop.create_connection(lambda: cls(client_id), host, port)
        await asyncio.wait_for(publisher.connack, 10)
        return publisher

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(encode_connect(self.client_id, keepalive_seconds=120))

    def data_received(self, data: bytes) -> None:
        if not self.connack.done():
            if data[:1] == b"\x20" and len(data) >= 4 and data[3] == 0:
                self.connack.set_result(None)
            else:
                self.connack.set_exception(ConnectionError(f"MQTT CONNACK refused: {data!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connack.done():
            self.connack.set_exception(exc or ConnectionResetError("closed before CONNACK"))
        super().connection_lost(exc)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def disconnect(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"\xe0\x00")
            self.transport.close()
        await asyncio.wait_for(asyncio.shield(self.closed), 5)


# -- statistics ----------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile `q` (0-100) of already sorted values; NaN when empty."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
