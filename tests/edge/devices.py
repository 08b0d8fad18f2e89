"""A real-protocol device client for edge tests: the firmware's handshake, hello and frames.

It speaks exactly what reference section 1 says the firmware sends, so a test reads like a
device's life: connect with the four headers, hello, frames in its binary version.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import opuslib
import websockets
from websockets.asyncio.client import ClientConnection

from xiaozhi.binary import FrameType, decode_frame, encode_opus

SAMPLE_RATE = 16000
FRAME_MS = 60


def opus_tone_frames(count: int, *, frame_ms: int = FRAME_MS, loud: bool = True) -> list[bytes]:
    """`count` real Opus packets of a 440 Hz tone (or silence) at 16 kHz mono."""
    import math
    import struct

    encoder = opuslib.Encoder(SAMPLE_RATE, 1, opuslib.APPLICATION_VOIP)
    samples = SAMPLE_RATE * frame_ms // 1000
    frames = []
    for index in range(count):
        amplitude = 8000 if loud else 0
        pcm = struct.pack(
            f"<{samples}h",
            *(
                int(amplitude * math.sin(2 * math.pi * 440 * (index * samples + i) / SAMPLE_RATE))
                for i in range(samples)
            ),
        )
        frames.append(encoder.encode(pcm, samples))
    return frames


def hello(version: int = 1, *, mcp: bool = False, frame_ms: int = FRAME_MS) -> str:
    return json.dumps(
        {
            "type": "hello",
            "version": version,
            "transport": "websocket",
            "features": {"mcp": mcp},
            "audio_params": {
                "format": "opus",
                "sample_rate": SAMPLE_RATE,
                "channels": 1,
                "frame_duration": frame_ms,
            },
        }
    )


class Device:
    """One device connection; received frames are sorted into JSON messages and audio."""

    def __init__(self, ws: ClientConnection, version: int) -> None:
        self.ws = ws
        self.version = version
        self.texts: list[dict[str, Any]] = []
        self.audio: list[tuple[float, bytes]] = []  # (arrival time, Opus payload)
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        device_id: str | None,
        version: int = 1,
        headers: dict[str, str] | None = None,
        path: str = "/xiaozhi/v1/",
        tls: ssl.SSLContext | None = None,
    ) -> Device:
        """Connect as the firmware does; ``tls`` connects with wss:// and that context."""
        sent = {"Client-Id": "client-uuid-1", "Protocol-Version": str(version)}
        if device_id is not None:
            sent["Device-Id"] = device_id
        sent.update(headers or {})
        scheme = "ws" if tls is None else "wss"
        ws = await websockets.connect(
            f"{scheme}://127.0.0.1:{port}{path}", additional_headers=sent, max_size=None, ssl=tls
        )
        return cls(ws, version)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for message in self.ws:
                if isinstance(message, str):
                    self.texts.append(json.loads(message))
                else:
                    frame = decode_frame(message, self.version)
                    assert frame.type is FrameType.OPUS
                    self.audio.append((loop.time(), frame.payload))
                self._changed.set()
        except websockets.ConnectionClosed:
            pass
        self._changed.set()

    async def wait_for(self, predicate: Any, within: float = 10.0) -> None:
        async def _wait() -> None:
            while not predicate():
                if self._reader.done():
                    raise AssertionError(f"connection closed; got {self.texts}")
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), within)

    async def expect(self, msg_type: str, within: float = 10.0, **fields: Any) -> dict[str, Any]:
        """The first received JSON message of `msg_type` whose fields match."""

        def found() -> dict[str, Any] | None:
            for message in self.texts:
                if message.get("type") == msg_type and all(
                    message.get(k) == v for k, v in fields.items()
                ):
                    return message
            return None

        await self.wait_for(lambda: found() is not None, within)
        result = found()
        assert result is not None
        return result

    async def hello(self, *, mcp: bool = False, version: int | None = None) -> dict[str, Any]:
        await self.ws.send(hello(self.version if version is None else version, mcp=mcp))
        return await self.expect("hello")

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def send_opus(self, packets: list[bytes], *, timestamp_ms: int = 0) -> None:
        for packet in packets:
            await self.ws.send(encode_opus(packet, self.version, timestamp_ms=timestamp_ms))

    async def closed(self, within: float = 10.0) -> tuple[int | None, str | None]:
        await asyncio.wait_for(self.ws.wait_closed(), within)
        return self.ws.close_code, self.ws.close_reason

    async def close(self) -> None:
        await self.ws.close()
        await self._reader
