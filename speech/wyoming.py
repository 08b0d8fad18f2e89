"""Wyoming, Home Assistant's protocol for voice services: as a client, and our recogniser as a
server.

Wyoming is JSON lines over TCP, each event optionally followed by a binary payload
(``wyoming.event``). The flows used here:

* speech to text: ``transcribe`` → ``audio-start`` → ``audio-chunk``\\ * → ``audio-stop``,
  answered by ``transcript``; ``describe`` is answered by ``info``;
* text to speech: ``synthesize``, answered by ``audio-start`` → ``audio-chunk``\\ * →
  ``audio-stop``.

:class:`WyomingSpeechToText` lets the hub use any Wyoming recogniser (faster-whisper,
Vosk...), in any language: its text still goes through the hub's strict intent parser, so a
general-purpose recogniser cannot execute what the home does not know. :func:`serve_wyoming_stt`
offers our offline recogniser to Home Assistant ("Add integration → Wyoming Protocol", host and
port). Each client connection is one request; audio is converted to 16 kHz 16-bit mono as it
arrives, and bounded by ``max_audio_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, TypeVar

from wyoming.asr import Transcribe
from wyoming.asr import Transcript as WyomingTranscript
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info
from wyoming.tts import Synthesize, SynthesizeVoice

from xiaozhi_speech.base import (
    BYTES_PER_SAMPLE,
    Speech,
    SpeechEngineError,
    SpeechToText,
    Transcript,
    pcm_duration_ms,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "WyomingSpeechToText",
    "WyomingSttServer",
    "WyomingTextToSpeech",
    "serve_wyoming_stt",
]

DEFAULT_TIMEOUT_S: Final = 30.0
CHUNK_SAMPLES: Final = 1024
"""Samples per ``audio-chunk`` sent (64 ms at 16 kHz, as Home Assistant's satellites send)."""
MAX_AUDIO_SECONDS: Final = 60.0
MAX_SPEECH_BYTES: Final = 48_000 * BYTES_PER_SAMPLE * 120
"""A synthesised answer larger than two minutes at 48 kHz is refused."""

_T = TypeVar("_T")


@contextlib.asynccontextmanager
async def _connection(
    host: str, port: int, timeout_s: float
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError) as err:
        raise SpeechEngineError(f"Wyoming service {host}:{port} unreachable: {err}") from err
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _within(work: Awaitable[_T], timeout_s: float, what: str) -> _T:
    try:
        return await asyncio.wait_for(work, timeout_s)
    except TimeoutError as err:
        raise SpeechEngineError(f"Wyoming {what}: no answer within {timeout_s} s") from err
    except (OSError, ValueError) as err:  # a reset, or JSON that does not parse
        raise SpeechEngineError(f"Wyoming {what} failed: {err}") from err


async def _read(reader: asyncio.StreamReader, what: str) -> Event:
    event = await async_read_event(reader)
    if event is None:
        raise SpeechEngineError(f"Wyoming {what}: the service closed the connection")
    return event


class WyomingSpeechToText:
    """A Wyoming recogniser as :class:`~xiaozhi_speech.base.SpeechToText`.

    A non-empty transcript is accepted with confidence 1.0 (Wyoming carries no score); the
    hub's intent parser decides what it means. Our own server adds ``accepted``,
    ``confidence`` and ``reason`` in the transcript's ``context``, which are honoured.

    Args:
        host, port: the service.
        language: sent with ``transcribe``; the service picks its model by it.
        model: a model name from the service's ``info``; None: its default.
        timeout_s: for connecting and for the answer.
    """

    def __init__(
        self,
        host: str,
        port: int,
        language: str = "en-US",
        *,
        model: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.host, self.port, self.language = host, port, language
        self.model = model
        self.timeout_s = timeout_s

    async def transcribe(self, pcm: bytes, sample_rate: int) -> Transcript:
        """Send the audio, wait for ``transcript``.

        Raises:
            SpeechEngineError: unreachable, timed out, or the connection closed first.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with _connection(self.host, self.port, self.timeout_s) as (reader, writer):
            answer = await _within(
                self._exchange(reader, writer, pcm, sample_rate), self.timeout_s, "transcribe"
            )
        context = answer.context or {}
        text = " ".join(answer.text.split())
        accepted = bool(context.get("accepted", bool(text)))
        reason = context.get("reason") or (None if accepted else "no_speech")
        return Transcript(
            text=text if accepted else "",
            accepted=accepted,
            confidence=float(context.get("confidence", 1.0 if accepted else 0.0)),
            language=answer.language or self.language,
            processing_time_ms=(loop.time() - started) * 1000,
            audio_duration_ms=pcm_duration_ms(pcm, sample_rate),
            reason=None if accepted else str(reason),
        )

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pcm: bytes,
        sample_rate: int,
    ) -> WyomingTranscript:
        await async_write_event(Transcribe(name=self.model, language=self.language).event(), writer)
        audio = {"rate": sample_rate, "width": BYTES_PER_SAMPLE, "channels": 1}
        await async_write_event(AudioStart(**audio).event(), writer)
        step = CHUNK_SAMPLES * BYTES_PER_SAMPLE
        for offset in range(0, len(pcm), step):
            chunk = AudioChunk(audio=pcm[offset : offset + step], **audio)
            await async_write_event(chunk.event(), writer)
        await async_write_event(AudioStop().event(), writer)
        while True:
            event = await _read(reader, "transcribe")
            if WyomingTranscript.is_type(event.type):
                return WyomingTranscript.from_event(event)

    async def aclose(self) -> None:
        """Nothing to release: each transcription opens its own connection."""


class WyomingTextToSpeech:
    """A Wyoming voice (Piper and the like) as :class:`~xiaozhi_speech.base.TextToSpeech`.

    Args:
        host, port: the service.
        voice: a voice name from its ``info``; None: chosen by the language.
        timeout_s: for connecting and for the whole answer.
    """

    def __init__(
        self, host: str, port: int, voice: str | None = None, *, timeout_s: float = 30.0
    ) -> None:
        self.host, self.port, self.voice = host, port, voice
        self.timeout_s = timeout_s

    async def synthesize(self, text: str, *, language: str = "en") -> Speech:
        """Ask for ``text`` spoken; the audio comes back as 16-bit mono at the voice's rate.

        Raises:
            SpeechEngineError: unreachable, timed out, closed early, or over
                :data:`MAX_SPEECH_BYTES`.
        """
        async with _connection(self.host, self.port, self.timeout_s) as (reader, writer):
            return await _within(
                self._exchange(reader, writer, text, language), self.timeout_s, "synthesize"
            )

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, text: str, language: str
    ) -> Speech:
        voice = SynthesizeVoice(name=self.voice, language=None if self.voice else language)
        await async_write_event(Synthesize(text=text, voice=voice).event(), writer)
        pcm = bytearray()
        converter: AudioChunkConverter | None = None
        rate = 0
        while True:
            event = await _read(reader, "synthesize")
            if AudioStart.is_type(event.type):
                rate = AudioStart.from_event(event).rate
                converter = AudioChunkConverter(rate=rate, width=BYTES_PER_SAMPLE, channels=1)
            elif AudioChunk.is_type(event.type):
                chunk = AudioChunk.from_event(event)
                if converter is None:  # a service that skipped audio-start
                    rate = chunk.rate
                    converter = AudioChunkConverter(rate=rate, width=BYTES_PER_SAMPLE, channels=1)
                pcm += converter.convert(chunk).audio
                if len(pcm) > MAX_SPEECH_BYTES:
                    raise SpeechEngineError(f"Wyoming speech over {MAX_SPEECH_BYTES} B")
            elif AudioStop.is_type(event.type):
                if not rate:
                    raise SpeechEngineError("Wyoming synthesize: audio-stop before any audio")
                return Speech(pcm=bytes(pcm), sample_rate=rate)


# -- our recogniser as a Wyoming service ---------------------------------------------------

_RATE: Final = 16_000


def _info(recognizer: SpeechToText) -> Info:
    attribution = Attribution(name="xiaozhi hub", url="https://github.com/")
    model = AsrModel(
        name="xiaozhi-home",
        description="pocketsphinx en-US with a language model of this home's commands",
        attribution=attribution,
        installed=True,
        version=None,
        languages=[recognizer.language],
    )
    program = AsrProgram(
        name="xiaozhi-speech",
        description="Offline recogniser of the home's voice commands",
        attribution=attribution,
        installed=True,
        version=None,
        models=[model],
    )
    return Info(asr=[program])


class WyomingSttServer:
    """A TCP Wyoming service around a recogniser; :func:`serve_wyoming_stt` runs one.

    Args:
        recognizer: any :class:`~xiaozhi_speech.base.SpeechToText`.
        host, port: where to listen; port 0 picks a free one (read :attr:`port`).
        max_audio_seconds: audio beyond this in one request is dropped (memory bound:
            1.9 MB per connection at 16 kHz).
    """

    def __init__(
        self,
        recognizer: SpeechToText,
        host: str,
        port: int,
        *,
        max_audio_seconds: float = MAX_AUDIO_SECONDS,
    ) -> None:
        self.recognizer = recognizer
        self.host, self.port = host, port
        self.max_bytes = int(max_audio_seconds * _RATE) * BYTES_PER_SAMPLE
        self._server: asyncio.Server | None = None
        self.requests = 0

    async def start(self) -> int:
        """Listen; returns the port (the one picked when 0 was asked)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(AttributeError):  # Python < 3.13: no close_clients
                self._server.close_clients()  # type: ignore[attr-defined]
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._session(reader, writer)
        except (OSError, ValueError, asyncio.IncompleteReadError):
            pass  # a client that went away or sent garbage: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        converter = AudioChunkConverter(rate=_RATE, width=BYTES_PER_SAMPLE, channels=1)
        pcm = bytearray()
        while (event := await async_read_event(reader)) is not None:
            if Describe.is_type(event.type):
                await async_write_event(_info(self.recognizer).event(), writer)
            elif Transcribe.is_type(event.type) or AudioStart.is_type(event.type):
                pcm.clear()
            elif AudioChunk.is_type(event.type):
                audio = converter.convert(AudioChunk.from_event(event)).audio
                pcm += audio[: max(0, self.max_bytes - len(pcm))]
            elif AudioStop.is_type(event.type):
                self.requests += 1
                heard = await self.recognizer.transcribe(bytes(pcm), _RATE)
                context = {
                    "accepted": heard.accepted,
                    "confidence": heard.confidence,
                    "reason": heard.reason,
                }
                answer = WyomingTranscript(
                    text=heard.text, language=heard.language, context=context
                )
                await async_write_event(answer.event(), writer)
                pcm.clear()


async def serve_wyoming_stt(
    recognizer: SpeechToText,
    host: str,
    port: int,
    *,
    ready: asyncio.Event | None = None,
    on_port: Callable[[int], None] | None = None,
) -> None:
    """Offer ``recognizer`` as a Wyoming speech-to-text service until cancelled.

    Args:
        recognizer: the engine (the offline one, loaded).
        host, port: where to listen; port 0 picks a free port, reported through ``on_port``.
        ready: set once the service accepts connections.
        on_port: called with the bound port before ``ready`` is set.
    """
    server = WyomingSttServer(recognizer, host, port)
    bound = await server.start()
    try:
        if on_port is not None:
            on_port(bound)
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()  # until cancelled
    finally:
        await server.stop()
