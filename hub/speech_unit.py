"""The speech unit: a device's utterance → text → a ``voice_command`` for the voice unit.

Edges publish each finished utterance as one message on ``xiaozhi/utterances/{device_id}``
(Opus as the device sent it, or a seed device's PCM). This unit takes them through a shared
subscription (``$share/<XIAOZHI_SPEECH_SHARE_GROUP>/…``): hub replicas (or hubs started only
for speech) split the fleet's utterances, and since an utterance is one whole message a
device's audio is never split across workers.

Who spoke is the topic's device, never the payload's (the broker's ACL decides who may
publish on a device's topic). The audio is transcribed by the configured engine
(:mod:`xiaozhi_speech`: the offline recogniser built from this home's sentences, a Wyoming
service, an OpenAI-compatible endpoint); an accepted transcript is published as a
``voice_command`` event with ``confidence``, ``language``, ``processing_time_ms`` and
``audio_duration_ms`` (seed 003's fields), the voice unit does the rest. A transcript the
engine did not accept (nothing heard, out of domain) executes nothing: the device is told
"Sorry, I didn't catch that."

The offline recogniser hears only what this home can do: it is loaded from every sentence
the intent engine matches (:func:`xiaozhi_speech.corpus_from_intents`), and reloaded by
:meth:`SpeechUnit.reload` when the home changes.

**Decoding while the user speaks** (docs/speech.md, "Streaming"): an edge announces each
utterance as it begins (``xiaozhi/utterances/{device_id}/start``, through the same shared
group). With the offline recogniser and a free stream, this unit claims it
(``…/claim``, naming this hub as the worker); the edge then sends the utterance's Opus
frames in batches to this hub alone (``…/stream/{hub_id}``, numbered), which feeds them to
a :class:`~xiaozhi_speech.RecognizerStream` as they come; at the final batch it answers
``received`` and only the last frames and the search remain. A batch missing, a bad one, or
a stream the hub does not know is answered ``refused``: the edge sends the utterance whole.
A decoding process that dies mid-stream costs nothing either: this unit has the audio and
transcribes it whole. Unclaimed (another engine, every stream busy, an old hub), the edge
sends the whole utterance at the end as before.

The decoded audio of the last utterances stays in memory, bounded
(:class:`~xiaozhi_hub.utterance_audio.UtteranceAudio`), for the dashboard's play buttons.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import structlog

from xiaozhi.dedup import RecentIds
from xiaozhi.errors import WireError
from xiaozhi.payloads import (
    ClaimState,
    EventType,
    UtteranceChunk,
    UtteranceClaim,
    UtteranceEncoding,
    UtterancePayload,
    UtteranceStart,
    VoiceCommandEvent,
)
from xiaozhi.topics import ParsedTopic, TopicKind
from xiaozhi_hub.pipeline import VoicePipeline
from xiaozhi_hub.responses import own_sentence
from xiaozhi_hub.unit import HubContext, Route, UnitTasks
from xiaozhi_hub.utterance_audio import UtteranceAudio
from xiaozhi_runtime import opus
from xiaozhi_speech import (
    OfflineRecognizer,
    RecognizerStream,
    SpeechToText,
    StreamLost,
    Transcript,
)

__all__ = ["MAX_UTTERANCE_BYTES", "NOT_HEARD", "SpeechUnit"]

log = structlog.get_logger("xiaozhi.hub")

MAX_UTTERANCE_BYTES: Final = 2 * 1024 * 1024
"""Largest utterance message parsed: 30 s of base64 PCM (1.28 MB) with room to spare."""

NOT_HEARD: Final = "Sorry, I didn't catch that."
"""The answer to speech the engine did not accept; nothing is executed."""

_DECODE_RATE: Final = 16000
"""Opus utterances are decoded at the recogniser's rate (libopus resamples for free)."""

STREAM_IDLE_SECONDS: Final = 5.0
"""A claimed stream with no batch for this long is dropped (its edge went away, or gave up
waiting for the claim and sent the utterance whole)."""

Answer = Callable[..., Awaitable[None]]
"""The voice unit's ``answer(device_id, text, *, stt, message_id, session_id, error,
language)``."""


class SpeechUnit:
    """Utterances → transcripts → ``voice_command`` events (or "didn't catch that").

    Args:
        ctx: what the units share.
        stt: the speech-to-text engine.
        pipeline: the voice pipeline, whose loaded intents give an offline recogniser its
            sentences.
        answer: how a device is answered when nothing was understood (the voice unit's).
    """

    def __init__(
        self,
        ctx: HubContext,
        *,
        stt: SpeechToText,
        pipeline: VoicePipeline,
        answer: Answer,
    ) -> None:
        self._ctx = ctx
        self.stt = stt
        self._pipeline = pipeline
        self._answer = answer
        self._tasks = UnitTasks("utterance", ctx.settings.max_concurrent_voice_commands)
        self._recent = RecentIds(4096)
        self.audio = UtteranceAudio()  # for GET /utterances/{message_id}/audio
        self.worker_id = ctx.settings.hub_id
        self._streams: dict[tuple[str, str], _Streaming] = {}  # (device_id, message_id)
        self._sweeper: asyncio.Task[None] | None = None
        self.routes: Mapping[TopicKind, Route] = {
            TopicKind.UTTERANCE: self._on_utterance,
            TopicKind.UTTERANCE_START: self._on_start,
            TopicKind.UTTERANCE_STREAM: self._on_chunk,
        }

    @property
    def streams(self) -> bool:
        """Whether this hub decodes utterances as they are spoken (the offline engine)."""
        return isinstance(self.stt, OfflineRecognizer) and self.stt.streams_per_worker > 0

    @property
    def filters(self) -> list[str]:
        topics, group = self._ctx.topics, self._ctx.settings.speech_share_group
        whole = [topics.shared(group, topics.all_utterances())]
        if not self.streams:
            return whole
        starts = topics.shared(group, topics.all_utterance_starts())
        return [*whole, starts, topics.worker_streams(self.worker_id)]

    async def start(self) -> None:
        await self.reload()
        await self._ctx.owner.subscribe(self.filters)
        if self.streams:
            self._sweeper = asyncio.create_task(self._sweep(), name="speech-streams-sweep")

    async def reload(self) -> None:
        """(Re)build an offline recogniser from the home's sentences; other engines need
        nothing. Call after the home model changed."""
        if not isinstance(self.stt, OfflineRecognizer):
            return
        model = await self._pipeline.load_recognizer(self.stt)
        log.info("speech_loaded", sentences=model.sentences, words=model.words)

    async def stop(self) -> None:
        await self._ctx.owner.unsubscribe(self.filters)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for streaming in self._streams.values():
            streaming.stream.cancel()
        self._streams.clear()
        await self._tasks.drain()

    # -- streamed utterances ----------------------------------------------------------

    def _on_start(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        ctx = self._ctx
        try:
            start = UtteranceStart.from_wire(payload)
        except WireError as err:
            ctx.invalid("utterance_start", topic, err)
            return
        if start.device_id != parsed.device_id:
            ctx.invalid("utterance_start", topic, "device_id differs from the topic's")
            return
        if (start.device_id, start.message_id) in self._streams:
            return  # the broker's redelivery of a start already claimed
        self._tasks.spawn(self._claim(start), name=f"claim-{start.device_id}")

    async def _claim(self, start: UtteranceStart) -> None:
        """Claim ``start``'s utterance if a stream is free; else say nothing (the edge sends
        it whole)."""
        assert isinstance(self.stt, OfflineRecognizer)
        stream = await self.stt.open_stream()
        if stream is None:
            self._ctx.counters["utterance_streams_busy"] += 1
            return
        self._streams[(start.device_id, start.message_id)] = _Streaming(start, stream)
        self._ctx.counters["utterance_streams_claimed"] += 1
        self._tell(start.device_id, start.message_id, ClaimState.CLAIMED)

    def _tell(self, device_id: str, message_id: str, state: ClaimState) -> None:
        claim = UtteranceClaim(
            device_id=device_id, message_id=message_id, worker_id=self.worker_id, state=state
        )
        self._ctx.publish(self._ctx.topics.utterance_claim(device_id), claim.to_wire())

    def _on_chunk(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        ctx = self._ctx
        try:
            chunk = UtteranceChunk.from_wire(payload)
        except WireError as err:
            ctx.invalid("utterance_chunk", topic, err)
            return
        if chunk.device_id != parsed.device_id:
            ctx.invalid("utterance_chunk", topic, "device_id differs from the topic's")
            return
        key = (chunk.device_id, chunk.message_id)
        streaming = self._streams.get(key)
        if streaming is not None and chunk.seq < streaming.seq:
            return  # the broker's redelivery of a batch already fed
        try:
            if streaming is None or chunk.seq != streaming.seq:
                raise WireError("a batch of a stream this worker does not hold, or out of order")
            pcm = b"".join(streaming.decoder.decode(packet) for packet in chunk.opus_packets())
        except WireError as err:
            log.warning("utterance_stream_refused", device_id=chunk.device_id, error=str(err))
            self._drop(key)
            ctx.counters["utterance_streams_refused"] += 1
            self._tell(chunk.device_id, chunk.message_id, ClaimState.REFUSED)
            return
        streaming.seq += 1
        streaming.seen = time.monotonic()
        streaming.stream.feed(pcm)
        if not chunk.final:
            return
        del self._streams[key]
        self._recent.seen(chunk.message_id)  # a late whole copy is a duplicate
        self._tell(chunk.device_id, chunk.message_id, ClaimState.RECEIVED)
        self._tasks.spawn(
            self._finish(streaming), name=f"speech-{chunk.device_id}", device_id=chunk.device_id
        )

    async def _finish(self, streaming: _Streaming) -> None:
        start, stream = streaming.start, streaming.stream
        try:
            transcript = await stream.finish()
            self._ctx.counters["utterances_streamed"] += 1
        except StreamLost:
            self._ctx.counters["utterance_streams_lost"] += 1
            transcript = await self.stt.transcribe(stream.pcm, _DECODE_RATE)
        self.audio.keep(start.message_id, stream.pcm, _DECODE_RATE)
        await self._heard(start, transcript)

    def _drop(self, key: tuple[str, str]) -> None:
        streaming = self._streams.pop(key, None)
        if streaming is not None:
            streaming.stream.cancel()

    async def _sweep(self) -> None:
        """Drop streams whose edge stopped sending (:data:`STREAM_IDLE_SECONDS`)."""
        while True:
            await asyncio.sleep(1.0)
            stale = time.monotonic() - STREAM_IDLE_SECONDS
            for key in [k for k, s in self._streams.items() if s.seen < stale]:
                self._drop(key)
                self._ctx.counters["utterance_streams_expired"] += 1

    # -- whole utterances -------------------------------------------------------------

    def _on_utterance(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        ctx = self._ctx
        try:
            utterance = UtterancePayload.from_wire(payload, max_bytes=MAX_UTTERANCE_BYTES)
        except WireError as err:
            ctx.metrics.utterances.labels("invalid").inc()
            ctx.invalid("utterance", topic, err)
            return
        device_id = parsed.device_id
        assert device_id is not None
        if utterance.device_id != device_id:
            ctx.metrics.utterances.labels("invalid").inc()
            ctx.invalid("utterance", topic, "device_id differs from the topic's")
            return
        if self._recent.seen(utterance.message_id):
            ctx.metrics.utterances.labels("duplicate").inc()
            return
        self._tasks.spawn(
            self._transcribe(utterance), name=f"speech-{device_id}", device_id=device_id
        )

    async def _transcribe(self, utterance: UtterancePayload) -> None:
        ctx = self._ctx
        try:
            pcm, rate = _pcm_of(utterance)
        except WireError as err:
            ctx.metrics.utterances.labels("invalid").inc()
            ctx.invalid("utterance", ctx.topics.utterance(utterance.device_id), err)
            return
        self.audio.keep(utterance.message_id, pcm, rate)
        await self._heard(utterance, await self.stt.transcribe(pcm, rate))

    async def _heard(
        self, utterance: UtterancePayload | UtteranceStart, transcript: Transcript
    ) -> None:
        """A ``voice_command`` of what was heard, or "didn't catch that"."""
        ctx = self._ctx
        log.info(
            "transcript",
            device_id=utterance.device_id,
            text=transcript.text[:100],
            accepted=transcript.accepted,
            reason=transcript.reason,
            confidence=round(transcript.confidence, 3),
            ms=round(transcript.processing_time_ms),
        )
        ctx.metrics.speech_latency.observe(transcript.processing_time_ms / 1000)
        if not transcript.accepted:
            ctx.metrics.utterances.labels("not_understood").inc()
            language = self._pipeline.language_of(utterance.device_id)
            await self._answer(
                utterance.device_id,
                own_sentence(language, "not_heard") or NOT_HEARD,
                language=language,
                stt=transcript.text or None,
                message_id=utterance.message_id,
                session_id=utterance.session_id,
                error=transcript.reason or "not_understood",
            )
            return
        ctx.metrics.utterances.labels("transcribed").inc()
        ctx.publish(ctx.topics.voice_command_events(), _voice_command(utterance, transcript))


def _pcm_of(utterance: UtterancePayload) -> tuple[bytes, int]:
    """The utterance as 16-bit mono PCM and its rate.

    Raises:
        WireError: frames that are not base64 or do not decode.
    """
    if utterance.encoding is UtteranceEncoding.OPUS:
        return opus.decode(utterance.opus_packets(), sample_rate=_DECODE_RATE), _DECODE_RATE
    return utterance.pcm_bytes(), utterance.sample_rate


@dataclass(slots=True)
class _Streaming:
    """A claimed utterance: its start, its recogniser stream, its Opus decoder, the next
    batch number expected and when the last came (monotonic)."""

    start: UtteranceStart
    stream: RecognizerStream
    decoder: opus.Decoder = field(default_factory=lambda: opus.Decoder(_DECODE_RATE))
    seq: int = 0
    seen: float = field(default_factory=time.monotonic)


def _voice_command(utterance: UtterancePayload | UtteranceStart, transcript: Transcript) -> bytes:
    event = VoiceCommandEvent(
        event_type=EventType.VOICE_COMMAND.value,
        device_id=utterance.device_id,
        command=transcript.text,
        confidence=min(1.0, max(0.0, transcript.confidence)),
        language=transcript.language,
        session_id=utterance.session_id,
        transport=utterance.transport,
        edge_id=utterance.edge_id,
        message_id=utterance.message_id,
        processing_time_ms=round(transcript.processing_time_ms),
        audio_duration_ms=round(transcript.audio_duration_ms),
    )
    return event.to_wire()
