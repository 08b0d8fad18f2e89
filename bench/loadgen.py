"""A load generator that costs little: raw WebSocket devices and a raw MQTT publisher.

On a 2-core machine the generator competes with the edge for the CPU, so it must be cheap
per message, and equally cheap for the edge and for the reference it is compared with. The
clients here speak just enough of each protocol, on plain asyncio protocols:

* :class:`WsDevice`: the firmware's WebSocket handshake (reference §1.1 headers), then frames
  masked with an all-zero key (RFC 6455 §5.3 only asks for a key; zero makes masking free),
  built with :func:`ws_frame` and written in batches. It answers pings and close frames and
  hands every text frame to its ``on_text`` callback. Writes follow TCP flow control: while
  the peer is slow, :attr:`WsDevice.paused` is true and :meth:`WsDevice.drain` waits.
* :class:`MqttUdpDevice`: the firmware's other transport (reference §2): MQTT 3.1.1 CONNECT
  with a client id in the xinnan form, JSON published at QoS 0 (it never subscribes; what the
  server pushes arrives anyway), and audio as AES-128-CTR datagrams on a UDP socket of its
  own, keyed by the server's hello. Encrypting costs it about 11 µs a frame, which the
  WebSocket device does not pay.
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
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar, cast

import orjson

from xiaozhi.mqtt_credentials import PUBLISH_TOPIC, DeviceClientId
from xiaozhi.mqtt_packets import (
    PacketType,
    decode_publish,
    encode_connect,
    encode_publish,
    split_packet,
)
from xiaozhi.udp_audio import KEY_BYTES, encode_datagram

__all__ = [
    "HandshakeRefused",
    "MqttPublisher",
    "MqttUdpDevice",
    "WsDevice",
    "connect_devices",
    "connect_mqtt_udp_devices",
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
_Device = TypeVar("_Device")


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame (masked with the zero key, so the payload goes as is)."""
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, 0x80 | size)) + _ZERO_MASK + payload
    if size < 65536:
        return _LEN16.pack(0x80 | opcode, 0xFE, size) + _ZERO_MASK + payload
    return _LEN64.pack(0x80 | opcode, 0xFF, size) + _ZERO_MASK + payload


def hello_text(version: int = 1, frame_ms: int = 60, transport: str = "websocket") -> bytes:
    """The firmware's hello (reference §1.2; ``udp`` on MQTT, §2.3), as UTF-8 bytes."""
    return (
        b'{"type":"hello","version":%d,"transport":"%s","features":{"mcp":false},'
        b'"audio_params":{"format":"opus","sample_rate":16000,"channels":1,'
        b'"frame_duration":%d}}' % (version, transport.encode(), frame_ms)
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


class _TextInbox(_FlowControl):
    """The last text messages a device received, and a wait for the next one."""

    def __init__(self, device_id: str) -> None:
        super().__init__()
        self.device_id = device_id
        self.texts: collections.deque[bytes] = collections.deque(maxlen=16)
        self.server_hello: bytes | None = None
        self._text_arrived = asyncio.Event()

    def _keep_text(self, _: object, payload: bytes) -> None:
        self.texts.append(payload)
        self._text_arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._text_arrived.set()

    async def next_text(self, within: float = 10.0) -> bytes:
        """The next text message (only while it is kept: the WebSocket device's default
        :attr:`WsDevice.on_text`)."""

        async def _wait() -> bytes:
            while not self.texts:
                if self.closed.done():
                    raise ConnectionResetError(f"{self.device_id}: closed")
                self._text_arrived.clear()
                await self._text_arrived.wait()
            return self.texts.popleft()

        return await asyncio.wait_for(_wait(), within)

    async def _server_hello(self, within: float) -> bytes:
        """Wait for the server's hello (other messages before it are skipped) and keep it."""
        while True:
            text = await self.next_text(within)
            if b'"hello"' in text:
                self.server_hello = text
                return text


class WsDevice(_TextInbox):
    """One device connection. Create with :meth:`connect`."""

    def __init__(self, request: bytes, device_id: str) -> None:
        super().__init__(device_id)
        self.request = request
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_text: Callable[[WsDevice, bytes], None] = self._keep_text
        self.binary_frames = 0
        self.close_sent = False
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

    async def hello(self, version: int = 1, within: float = 10.0) -> bytes:
        """Send the firmware hello and return the server's hello."""
        self.write(ws_frame(TEXT, hello_text(version)))
        return await self._server_hello(within)

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

    async def one() -> WsDevice:
        device = await WsDevice.connect(host, port, version=version)
        if hello:
            await device.hello(version)
        return device

    return await _connect_many(one, count, concurrency)


async def connect_mqtt_udp_devices(
    host: str, port: int, count: int, *, concurrency: int = 64
) -> list[MqttUdpDevice]:
    """Connect `count` MQTT + UDP devices to the edge's firmware MQTT listener on `port`,
    each with its hello answered (so its UDP channel is open), `concurrency` at a time."""

    async def one() -> MqttUdpDevice:
        device = await MqttUdpDevice.connect(host, port)
        await device.hello()
        return device

    return await _connect_many(one, count, concurrency)


async def _connect_many(
    one: Callable[[], Awaitable[_Device]], count: int, concurrency: int
) -> list[_Device]:
    devices: list[_Device] = []
    gate = asyncio.Semaphore(concurrency)

    async def gated() -> None:
        async with gate:
            devices.append(await one())

    async with asyncio.TaskGroup() as group:
        for _ in range(count):
            group.create_task(gated())
    return devices


class MqttUdpDevice(_TextInbox):
    """One device in the firmware's MQTT + UDP mode (reference §2). Create with
    :meth:`connect`, then :meth:`hello` opens its audio channel."""

    def __init__(self, device_id: str) -> None:
        super().__init__(device_id)
        self.client_id = str(DeviceClientId("GID_bench", device_id, str(uuid.uuid4())))
        self.connack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.udp: asyncio.DatagramTransport | None = None
        self.key = self.nonce = b""
        self.sequence = 0  # the last one sent, as the firmware's local_sequence_
        self._buffer = bytearray()

    @classmethod
    async def connect(cls, host: str, port: int, *, device_id: str | None = None) -> MqttUdpDevice:
        """CONNECT to the edge's firmware MQTT listener; raise unless CONNACK accepts."""
        loop = asyncio.get_running_loop()
        _, device = await loop.create_connection(
            lambda: cls(device_id or new_device_id()), host, port
        )
        try:
            await asyncio.wait_for(asyncio.shield(device.connack), 10)
        except BaseException:
            device.abort()
            raise
        return device

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(encode_connect(self.client_id, keepalive_seconds=240))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while packet := split_packet(buffer, max_packet_bytes=1 << 20):
            first, body, used = packet
            del buffer[:used]
            kind = first >> 4
            if kind == PacketType.PUBLISH:
                self._keep_text(self, decode_publish(first & 0x0F, body).payload)
            elif kind == PacketType.CONNACK and not self.connack.done():
                if body[1:2] == b"\x00":
                    self.connack.set_result(None)
                else:
                    self.connack.set_exception(ConnectionError(f"CONNACK refused: {body!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connack.done():
            self.connack.set_exception(exc or ConnectionResetError("closed before CONNACK"))
        super().connection_lost(exc)

    async def hello(self, within: float = 10.0) -> bytes:
        """The hello with ``transport: udp``; the server's gives the key and nonce, and the
        UDP socket opens towards its ``udp`` server and port (sequence back to 0)."""
        self.send_text(hello_text(3, transport="udp"))
        text = await self._server_hello(within)
        udp = orjson.loads(text)["udp"]
        self.key, self.nonce = bytes.fromhex(udp["key"]), bytes.fromhex(udp["nonce"])
        if len(self.key) != KEY_BYTES or len(self.nonce) != KEY_BYTES:
            raise ConnectionError(f"{self.device_id}: a server hello without a 16-byte key")
        self.sequence = 0
        if self.udp is not None:
            self.udp.close()
        loop = asyncio.get_running_loop()
        self.udp, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=(str(udp["server"]), int(udp["port"]))
        )
        return text

    def send_text(self, payload: bytes) -> None:
        """One JSON message, published at QoS 0 as the firmware does."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(encode_publish(PUBLISH_TOPIC, payload))

    def send_audio(self, opus: bytes) -> None:
        """One Opus packet as the next datagram (``SendAudio``)."""
        assert self.udp is not None, "no audio channel before the server's hello"
        self.sequence += 1
        self.udp.sendto(
            encode_datagram(self.key, self.nonce, opus, timestamp=0, sequence=self.sequence)
        )

    def abort(self) -> None:
        """Drop both sockets, as a device losing power would."""
        if self.transport is not None:
            self.transport.abort()
        if self.udp is not None:
            self.udp.close()


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
