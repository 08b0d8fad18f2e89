"""Helpers for tests that drive real processes and a real broker: wait for what you expect
(a line, a message) with a timeout, never sleep."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import queue
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import aiomqtt

from xiaozhi import jsonutil
from xiaozhi.config import parse_mqtt_url
from xiaozhi.errors import WireError
from xiaozhi.tokens import Ed25519PrivateKey, public_key_text

T = TypeVar("T")


@contextlib.contextmanager
def refused_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port nothing listens on, for the whole block: a connection to it is refused.

    A socket bound to it (and not listening) holds it, so no other process can start
    listening there meanwhile; a port found free and let go could be taken at once.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind((host, 0))
        yield int(holder.getsockname()[1])


class LineReader:
    """Reads a child's output on a thread so a test can wait for a line with a timeout."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(process,), daemon=True)
        self._thread.start()

    def _pump(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        """Return the first (new) line containing `text`; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"process ended before {text!r}; output: {self.lines}")
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} within {timeout} s; output: {self.lines}")

    def rest(self, timeout: float = 10.0) -> list[str]:
        """Everything until the output closes."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        return self.lines


def pid_alive(pid: int) -> bool:
    """True while `pid` is a live (non-zombie) process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@dataclass(frozen=True)
class Received:
    """One MQTT message as a test's subscriber got it (`retain`: sent from the broker's store)."""

    topic: str
    payload: bytes
    retain: bool = False

    @functools.cached_property
    def obj(self) -> dict[str, Any]:
        """The payload as a JSON object; {} when it is not one (an empty retained delete).
        Parsed once: predicates look at every message again after each new one."""
        try:
            return jsonutil.loads_object(self.payload)
        except WireError:
            return {}


class Recorder:
    """Every MQTT message a test sees, in order, and waits for the one it expects.

    The tests' one MQTT recorder. :func:`record` gives it a client of its own (aiomqtt, not
    the code under test), subscribed before the block starts, that can also publish as an
    integrator would. Or it is the ``on_message`` of an :class:`~xiaozhi_runtime.mqtt.MqttOwner`
    under test. Every wait has a timeout and fails saying what did arrive; nothing sleeps.
    """

    def __init__(self, client: aiomqtt.Client | None = None) -> None:
        self.messages: list[Received] = []
        self.client = client
        self._changed = asyncio.Event()

    def __call__(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.messages.append(Received(topic, payload, retain))
        self._changed.set()

    # -- what arrived ----------------------------------------------------------------------

    def mark(self) -> int:
        """A position in the record: pass it as ``after`` to look only at what came later."""
        return len(self.messages)

    def payloads(self, topic: str, *, after: int = 0) -> list[bytes]:
        return [m.payload for m in self.messages[after:] if m.topic == topic]

    def json(self, topic: str, *, after: int = 0) -> list[dict[str, Any]]:
        """Every non-empty payload on ``topic`` (after ``after``), parsed."""
        return [
            json.loads(m.payload) for m in self.messages[after:] if m.topic == topic and m.payload
        ]

    # -- waiting ---------------------------------------------------------------------------

    async def wait_for(self, check: Callable[[], T], within: float = 15.0) -> T:
        """Return ``check()``'s result once it is truthy, checking after every message.

        Raises:
            AssertionError: not within ``within`` seconds; the message lists the last messages.
        """

        async def _wait() -> T:
            while not (result := check()):
                self._changed.clear()
                await self._changed.wait()
            return result

        try:
            return await asyncio.wait_for(_wait(), within)
        except TimeoutError:
            seen = [(m.topic, m.payload[:80]) for m in self.messages[-12:]]
            raise AssertionError(f"not within {within} s; the last messages: {seen}") from None

    async def first(
        self, match: Callable[[Received], object], *, after: int = 0, within: float = 15.0
    ) -> Received:
        """The first message (after ``after``, already here or coming) that ``match`` accepts."""
        return await self.wait_for(
            lambda: next((m for m in self.messages[after:] if match(m)), None), within
        )

    async def expect(
        self,
        topic: str,
        where: Callable[[dict[str, Any]], bool] = lambda _: True,
        *,
        after: int = 0,
        within: float = 15.0,
    ) -> dict[str, Any]:
        """The first JSON payload on ``topic`` (after ``after``) for which ``where`` holds."""
        return await self.wait_for(
            lambda: next((m for m in self.json(topic, after=after) if where(m)), None), within
        )

    # -- as an integrator (with a client of its own) ---------------------------------------

    async def publish(
        self, topic: str, payload: Any, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish ``payload`` (bytes as they are, anything else as JSON); QoS 1 returns once
        the broker has it."""
        assert self.client is not None, "a Recorder from record() publishes"
        raw = payload if isinstance(payload, bytes) else jsonutil.dumps(payload)
        await self.client.publish(topic, raw, qos=qos, retain=retain)

    async def subscribe(self, *filters: str) -> None:
        """Subscribe to more; returns once the broker granted it (later messages all come)."""
        assert self.client is not None, "a Recorder from record() subscribes"
        await self.client.subscribe([(f, 1) for f in filters])

    async def _pump(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            raw = message.payload
            payload = bytes(raw) if isinstance(raw, bytes | bytearray) else str(raw or "").encode()
            self(str(message.topic), payload, bool(message.retain))


_recorders = itertools.count()


@contextlib.asynccontextmanager
async def record(
    url: str,
    *filters: str,
    name: str = "recorder",
    identifier: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Recorder]:
    """A :class:`Recorder` with its own client on the broker at ``url``, subscribed (QoS 1) to
    ``filters`` before the block starts; retained messages arrive flagged.

    ``identifier`` is the MQTT client id (default: one made from ``name``; an attacker's test
    picks another client's); ``tls`` connects over TLS with that context."""
    host, port, username, password, _ = parse_mqtt_url(url)
    identifier = identifier or f"test-{name}-{os.getpid()}-{next(_recorders)}"
    async with aiomqtt.Client(
        host,
        port,
        username=username,
        password=password,
        identifier=identifier,
        tls_context=tls,
    ) as client:
        recorder = Recorder(client)
        pump = asyncio.create_task(recorder._pump(client), name=identifier)
        try:
            if filters:
                await recorder.subscribe(*filters)
            yield recorder
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await pump


@contextlib.asynccontextmanager
async def latency_proxy(target_port: int, delay: float) -> AsyncIterator[int]:
    """A TCP relay to ``127.0.0.1:target_port`` that delivers every byte ``delay`` seconds
    late, in both directions and in order: a broker on another host, as an edge may have it.
    Yields the relay's port (a free one); connections end with the block.

    The delay is the network being simulated, not a wait for something to happen."""
    loop = asyncio.get_running_loop()
    pipes: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        late: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await late.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(data)
                await writer.drain()

        delivering = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                late.put_nowait((loop.time() + delay, data))
            late.put_nowait((0.0, b""))
            await delivering
        except (ConnectionError, asyncio.CancelledError):
            delivering.cancel()
        finally:
            writer.close()

    async def relay(down_reader: asyncio.StreamReader, down_writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        for task in (pipe(down_reader, up_writer), pipe(up_reader, down_writer)):
            pipes.add(asyncio.create_task(task))

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)


def device_token_keys() -> tuple[Ed25519PrivateKey, str]:
    """A fresh device token key pair: the hub's private key, and the public key's text that
    an edge is given (``device_token_public_key``)."""
    key = Ed25519PrivateKey.generate()
    return key, public_key_text(key)
