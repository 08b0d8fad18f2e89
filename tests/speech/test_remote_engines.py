"""The remote engines against FAKE servers named as such: an OpenAI-compatible transcription
endpoint (a few lines of FastAPI) and a Wyoming voice (a few lines of asyncio). Neither is the
real thing; they check what our clients send and that they read the protocol's answers."""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import async_read_event, async_write_event
from wyoming.tts import Synthesize

from xiaozhi.wav import decode_wav
from xiaozhi_runtime.asgi import serve_app
from xiaozhi_speech import OpenAiSpeechToText, SpeechEngineError, WyomingTextToSpeech


class FakeTranscriptionServer:
    """FAKE OpenAI-compatible ``/v1/audio/transcriptions``: records each form, answers text."""

    def __init__(self, text: str = "turn on the kitchen light") -> None:
        self.text = text
        self.requests: list[dict[str, Any]] = []
        self.url = ""
        self.app = FastAPI()

        @self.app.post("/v1/audio/transcriptions")
        async def transcribe(request: Request) -> JSONResponse:
            body = await request.body()
            head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
            parts = {
                part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                for part in message.iter_parts()
            }
            self.requests.append({"auth": request.headers.get("authorization"), **parts})
            if self.text == "<error>":
                return JSONResponse({"error": "model not found"}, status_code=404)
            return JSONResponse({"text": self.text})

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeTranscriptionServer]:
        async with serve_app(self.app, host="127.0.0.1", port=0) as served:
            self.url = served.url
            yield self


async def test_openai_client_uploads_wav_and_reads_the_text() -> None:
    pcm = bytes(3200)
    async with FakeTranscriptionServer().running() as fake:
        client = OpenAiSpeechToText(fake.url, "whisper-1", api_key="sk-test")
        heard = await client.transcribe(pcm, 16000)
        await client.aclose()
    assert (heard.text, heard.accepted, heard.confidence) == (
        "turn on the kitchen light",
        True,
        1.0,
    )
    assert heard.audio_duration_ms == 100
    request = fake.requests[0]
    assert request["auth"] == "Bearer sk-test"
    assert (request["model"], request["language"]) == (b"whisper-1", b"en")
    fmt, audio = decode_wav(request["file"])
    assert (fmt.sample_rate, audio) == (16000, pcm)


async def test_openai_client_errors_and_empty_text() -> None:
    async with FakeTranscriptionServer("<error>").running() as fake:
        client = OpenAiSpeechToText(fake.url + "/v1", "nope")
        with pytest.raises(SpeechEngineError, match="answered 404"):
            await client.transcribe(bytes(3200), 16000)
        fake.text = "  "
        heard = await client.transcribe(bytes(3200), 16000)
        assert (heard.accepted, heard.reason) == (False, "no_speech")
        await client.aclose()
        assert fake.requests[0]["auth"] is None
    client = OpenAiSpeechToText(fake.url, "gone", timeout_s=2)
    with pytest.raises(SpeechEngineError, match="transcription server"):
        await client.transcribe(bytes(3200), 16000)
    await client.aclose()


@contextlib.asynccontextmanager
async def fake_wyoming_voice(rate: int = 22050) -> AsyncIterator[tuple[int, list[Synthesize]]]:
    """FAKE Wyoming TTS: answers each ``synthesize`` with 0.5 s of a square wave in chunks."""
    asked: list[Synthesize] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        event = await async_read_event(reader)
        assert event is not None
        asked.append(Synthesize.from_event(event))
        audio = {"rate": rate, "width": 2, "channels": 1}
        await async_write_event(AudioStart(**audio).event(), writer)
        wave = (b"\x00\x20" * 50 + b"\x00\xe0" * 50) * (rate // 200)
        step = len(wave) // 6 * 2  # whole samples
        for start in range(0, len(wave), step):
            piece = wave[start : start + step]
            await async_write_event(AudioChunk(audio=piece, **audio).event(), writer)
        await async_write_event(AudioStop().event(), writer)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], asked
    finally:
        server.close()
        await server.wait_closed()


async def test_wyoming_voice_client() -> None:
    async with fake_wyoming_voice() as (port, asked):
        speech = await WyomingTextToSpeech("127.0.0.1", port, voice="en_US-lessac").synthesize(
            "Turning on the light."
        )
    assert speech.sample_rate == 22050
    assert speech.duration_ms == pytest.approx(499, abs=1)
    assert asked[0].text == "Turning on the light."
    assert asked[0].voice is not None
    assert asked[0].voice.name == "en_US-lessac"
    with pytest.raises(SpeechEngineError, match="unreachable"):
        await WyomingTextToSpeech("127.0.0.1", port, timeout_s=2).synthesize("hi")
