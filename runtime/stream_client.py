"""A client of the hub's live stream (``/api/v1/stream``, docs/protocols.md §3.9).

For integrators and ``xiaozhi watch``::

    async with StreamClient("ws://hub:8003/api/v1/stream", api_key=key,
                            topics=["xiaozhi/status/+", "xiaozhi/events/#"]) as stream:
        async for msg in stream:
            if msg.type in DATA_TYPES:
                print(msg.data["topic"], msg.data["payload"])

It does the protocol's chores: version negotiation, subscribing, answering the server's
``PING`` and acknowledging frames sent with ``ACK_REQUIRED``; it counts what the hub
dropped for it (:attr:`StreamClient.dropped`). Every frame is verified
(:func:`~xiaozhi.stream_frame.decode_message`); one that fails is counted in
:attr:`StreamClient.refused` and skipped. The iterator yields every other message
(data, ``HEARTBEAT``, ``ERROR``...), so a caller sees what the hub said.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from xiaozhi.errors import WireError
from xiaozhi.stream_frame import (
    Flag,
    MessageType,
    StreamMessage,
    StreamVersion,
    decode_message,
    encode_message,
)
from xiaozhi.stream_session import DATA_TYPES

__all__ = ["DATA_TYPES", "StreamClient", "StreamClosed", "stream_url"]

_CONNECT_TIMEOUT_SECONDS = 10.0


class StreamClosed(Exception):
    """The hub refused or ended the stream: its ``ERROR`` (seed-002 ``code``, text), or the
    close (``code`` None) when it was not a normal one (1012: the hub is restarting)."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def stream_url(url: str) -> str:
    """``http://hub:8003`` (or ``ws://...``, with or without the path) → the stream's URL."""
    url = url.rstrip("/")
    if url.startswith("http://") or url.startswith("https://"):
        url = "ws" + url[4:]
    if not url.endswith("/api/v1/stream"):
        url += "/api/v1/stream"
    return url


class StreamClient:
    """One connection to the live stream; an async iterator of :class:`StreamMessage`.

    Args:
        url: ``ws://host:port/api/v1/stream`` (or anything :func:`stream_url` takes).
        api_key: an API key of the hub (read-only is enough).
        token: a REST JWT, instead of a key.
        topics: MQTT topic filters subscribed once connected (``[]``: none yet).
        versions: versions offered; the hub picks the highest it also speaks.
        ack: ask for data frames with ``ACK_REQUIRED`` (V3); this client acks them.
        credentials_in_frame: send the key in ``VERSION_CHECK`` (as a browser must) rather
            than as the ``X-API-Key`` header.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        topics: Iterable[str] = ("#",),
        versions: Iterable[int] = (3, 2, 1),
        ack: bool = False,
        credentials_in_frame: bool = False,
    ) -> None:
        self.url = stream_url(url)
        self._api_key = api_key
        self._token = token
        self._topics = list(topics)
        self._versions = [int(v) for v in versions]
        self._ack = ack
        self._in_frame = credentials_in_frame
        self._ws: ClientConnection | None = None
        self._pending: collections.deque[StreamMessage] = collections.deque()
        self.version = StreamVersion.V1
        self.hello: dict[str, Any] = {}
        self.agreed: dict[str, Any] = {}
        self.topics: list[str] = []
        self.dropped = 0
        self.refused = 0
        self.received = 0

    async def __aenter__(self) -> StreamClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open, negotiate and subscribe.

        Raises:
            StreamClosed: the hub refused (bad credentials, no common version).
            OSError, websockets.exceptions.InvalidHandshake: no stream at ``url``.
        """
        headers: dict[str, str] = {}
        if not self._in_frame:
            if self._api_key is not None:
                headers["X-API-Key"] = self._api_key
            if self._token is not None:
                headers["Authorization"] = f"Bearer {self._token}"
        self._ws = await connect(
            self.url, additional_headers=headers, open_timeout=_CONNECT_TIMEOUT_SECONDS
        )
        hello = await self._expect(MessageType.PROTOCOL_NEGOTIATION)
        self.hello = hello.data if isinstance(hello.data, dict) else {}
        check: dict[str, Any] = {"versions": self._versions, "ack": self._ack}
        if self._in_frame:
            if self._api_key is not None:
                check["api_key"] = self._api_key
            if self._token is not None:
                check["token"] = self._token
        # V1 framing: the version is not agreed yet, and every server reads V1.
        await self.send(MessageType.VERSION_CHECK, check, version=StreamVersion.V1)
        agreed = await self._expect(MessageType.VERSION_CHECK)
        self.agreed = agreed.data
        self.version = StreamVersion(agreed.data["version"])
        if self._topics:
            await self.subscribe(self._topics)

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()

    # ------------------------------------------------------------------ requests

    async def send(
        self,
        kind: MessageType,
        data: Any,
        *,
        flags: Flag = Flag(0),  # noqa: B008 - an int flag, immutable
        version: StreamVersion | None = None,
    ) -> None:
        """Send one message in the agreed version (or ``version``)."""
        version = version or self.version
        ts = int(time.time() * 1_000_000) if version >= StreamVersion.V3 else None
        await self.send_raw(encode_message(StreamMessage(kind, data, version, flags, ts)))

    async def send_raw(self, frame: bytes) -> None:
        """Send bytes as one binary message, as they are (for diagnostics and tests)."""
        assert self._ws is not None, "connect() first"
        await self._ws.send(frame)

    async def subscribe(self, topics: Iterable[str]) -> list[str]:
        """Add topic filters; returns every filter now held. Raises :class:`StreamClosed`."""
        await self.send(MessageType.SUBSCRIBE, {"topics": list(topics)})
        ack = await self._expect(MessageType.SUBSCRIPTION_ACK)
        self.topics = list(ack.data["topics"])
        return self.topics

    async def unsubscribe(self, topics: Iterable[str]) -> list[str]:
        await self.send(MessageType.UNSUBSCRIBE, {"topics": list(topics)})
        ack = await self._expect(MessageType.SUBSCRIPTION_ACK)
        self.topics = list(ack.data["topics"])
        return self.topics

    async def ping(self, data: Any = None) -> StreamMessage:
        """``PING`` and the hub's ``PONG``."""
        await self.send(MessageType.PING, {"sent": time.time()} if data is None else data)
        return await self._expect(MessageType.PONG)

    # ------------------------------------------------------------------ receiving

    def __aiter__(self) -> StreamClient:
        return self

    async def __anext__(self) -> StreamMessage:
        if self._pending:
            return self._pending.popleft()
        try:
            return await self._receive()
        except ConnectionClosedOK as err:
            raise StopAsyncIteration from err
        except ConnectionClosed as err:
            raise StreamClosed(f"the hub closed the stream: {err}") from err

    async def _expect(self, kind: MessageType) -> StreamMessage:
        """The next message of ``kind``; others are kept for the iterator in order."""
        while True:
            try:
                msg = await self._receive()
            except ConnectionClosed as err:
                raise StreamClosed(f"the hub closed the stream: {err}") from err
            if msg.type is kind:
                return msg
            if msg.type is MessageType.ERROR and kind is not MessageType.PONG:
                raise StreamClosed(str(msg.data.get("message")), code=msg.data.get("code"))
            self._pending.append(msg)

    async def _receive(self) -> StreamMessage:
        assert self._ws is not None, "connect() first"
        while True:
            raw = await self._ws.recv()
            if isinstance(raw, str):
                self.refused += 1
                continue
            try:
                msg = decode_message(raw)
            except WireError:
                self.refused += 1
                continue
            self.received += 1
            await self._chores(msg)
            return msg

    async def _chores(self, msg: StreamMessage) -> None:
        """Acks, PONGs and the drop counter, before the caller sees the message."""
        data = msg.data if isinstance(msg.data, dict) else {}
        if msg.flags & Flag.ACK_REQUIRED and type(data.get("seq")) is int:
            await self.send(MessageType.HEARTBEAT, {"ack": data["seq"]}, flags=Flag.PRIORITY)
        if msg.type is MessageType.PING:
            await self.send(MessageType.PONG, msg.data)
        if msg.type is MessageType.HEARTBEAT and type(data.get("dropped")) is int:
            self.dropped = max(self.dropped, data["dropped"])
