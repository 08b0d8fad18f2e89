"""A protocol peer fixture: a tiny WebSocket server playing the **edge's part** of the xiaozhi
firmware protocol, written for these tests with ``websockets``.

It is not the edge (which is being written): it answers just enough of design.md section 4 and
reference section 1 for the simulated device to be exercised end to end - the server hello
with ``audio_params``, an ``stt`` + ``tts`` answer with real Opus frames in the connection's
binary version (v2 frames carry timestamps), ``error`` replies to bad frames, HTTP 401 for a
refused token and 400 for an unknown ``Protocol-Version``. Tests against the real edge will be
added once it lands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any

import opuslib
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from xiaozhi import jsonutil
from xiaozhi.binary import BinaryFrame, decode_frame, encode_opus
from xiaozhi.errors import WireError
from xiaozhi.messages import AudioParams, ErrorMessage, ServerHello, Stt, Tts, TtsState
from xiaozhi_sim.mic_and_speaker import tone
from xiaozhi_sim.notify import Notifier

BAD_TOKEN = "Bearer bad.0"
DOWNLINK_TIMESTAMPS = [1000 + 60 * i for i in range(10)]


@dataclass
class PeerConnection:
    """What one device connection sent."""

    ws: ServerConnection
    headers: dict[str, str]
    version: int
    texts: list[dict[str, Any]] = field(default_factory=list)
    frames: list[BinaryFrame] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    closed_code: int | None = None


class EdgeProtocolPeer:
    """Serve on a free loopback port as an async context manager; ``url`` is the address.

    Args:
        hello_reply: answer the device hello (False: let the device's 10 s timer fire).
        sample_rate: downlink ``audio_params.sample_rate``.
        strict: refuse bad tokens and versions at the handshake (False: a lax server).
    """

    def __init__(
        self, *, hello_reply: bool = True, sample_rate: int = 16000, strict: bool = True
    ) -> None:
        self.hello_reply = hello_reply
        self.strict = strict
        self.sample_rate = sample_rate
        self.connections: list[PeerConnection] = []
        self._server: Server | None = None
        self._notifier: Notifier | None = None
        self._encoder = opuslib.Encoder(sample_rate, 1, opuslib.APPLICATION_VOIP)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/xiaozhi/v1/"

    async def __aenter__(self) -> EdgeProtocolPeer:
        self._notifier = Notifier()
        self._server = await serve(
            self._handler, "127.0.0.1", 0, process_request=self._check, compression=None
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        assert self._notifier is not None
        if not await self._notifier.wait_until(predicate, within):
            raise AssertionError(f"peer: condition not met within {within} s")

    @property
    def last(self) -> PeerConnection:
        return self.connections[-1]

    async def send(self, message: Any) -> None:
        """Send a JSON message (a model or a dict) on the latest connection."""
        text = message.to_text() if hasattr(message, "to_text") else jsonutil.dumps_text(message)
        await self.last.ws.send(text)

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        # Auth and version are checked in the handshake, as design.md section 4 asks of the edge.
        if not self.strict:
            return None
        if request.headers.get("Authorization") == BAD_TOKEN:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "bad token\n")
        if request.headers.get("Protocol-Version", "1") not in ("1", "2", "3"):
            return connection.respond(HTTPStatus.BAD_REQUEST, "unsupported protocol version\n")
        return None

    async def _error(self, conn: PeerConnection, err: WireError) -> None:
        conn.errors.append(str(err))
        await conn.ws.send(ErrorMessage.from_error(err).to_text())

    async def _handler(self, ws: ServerConnection) -> None:
        assert self._notifier is not None
        headers = dict(ws.request.headers.raw_items()) if ws.request else {}
        conn = PeerConnection(ws, headers, int(headers.get("Protocol-Version", "1")))
        self.connections.append(conn)
        self._notifier.notify()
        try:
            async for message in ws:
                if isinstance(message, str):
                    try:
                        obj = jsonutil.loads_object(message)
                    except WireError as err:
                        await self._error(conn, err)
                    else:
                        conn.texts.append(obj)
                        await self._answer(conn, obj)
                else:
                    try:
                        conn.frames.append(decode_frame(message, conn.version))
                    except WireError as err:
                        await self._error(conn, err)
                self._notifier.notify()
        except ConnectionClosed as closed:
            frame = closed.rcvd or closed.sent  # the peer may be the one that closed (1009)
            conn.closed_code = frame.code if frame else 1006
        else:
            conn.closed_code = ws.close_code
        self._notifier.notify()

    async def _answer(self, conn: PeerConnection, obj: dict[str, Any]) -> None:
        ws = conn.ws
        if obj.get("type") == "hello" and self.hello_reply:
            params = AudioParams(
                format="opus", sample_rate=self.sample_rate, channels=1, frame_duration=60
            )
            await ws.send(ServerHello(session_id="peer-session", audio_params=params).to_text())
        elif obj.get("type") == "listen" and obj.get("state") == "detect":
            await ws.send(Stt(session_id="peer-session", text=obj.get("text", "")).to_text())
            await ws.send(Tts(session_id="peer-session", state=TtsState.START).to_text())
            await ws.send(
                Tts(session_id="peer-session", state=TtsState.SENTENCE_START, text="OK.").to_text()
            )
            samples = self.sample_rate * 60 // 1000
            pcm = tone(0.6, rate=self.sample_rate)
            for index, timestamp in enumerate(DOWNLINK_TIMESTAMPS):
                chunk = pcm[index * samples * 2 : (index + 1) * samples * 2]
                packet = self._encoder.encode(chunk, samples)
                await ws.send(encode_opus(packet, conn.version, timestamp_ms=timestamp))
            await ws.send(Tts(session_id="peer-session", state=TtsState.STOP).to_text())
