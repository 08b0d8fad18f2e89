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

The decoded audio of the last utterances stays in memory, bounded
(:class:`~xiaozhi_hub.utterance_audio.UtteranceAudio`), for the dashboard's play buttons.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import structlog

from xiaozhi.dedup import RecentIds
from xiaozhi.errors import WireError
from xiaozhi.payloads import EventType, UtteranceEncoding, UtterancePayload, VoiceCommandEvent
from xiaozhi.topics import ParsedTopic, TopicKind
from xiaozhi_hub.pipeline import VoicePipeline
from xiaozhi_hub.responses import own_sentence
from xiaozhi_hub.unit import HubContext, Route, UnitTasks
from xiaozhi_hub.utterance_audio import UtteranceAudio
from xiaozhi_runtime import opus
from xiaozhi_speech import OfflineRecognizer, SpeechToText, Transcript

__all__ = ["MAX_UTTERANCE_BYTES", "NOT_HEARD", "SpeechUnit"]

log = structlog.get_logger("xiaozhi.hub")

MAX_UTTERANCE_BYTES: Final = 2 * 1024 * 1024
"""Largest utterance message parsed: 30 s of base64 PCM (1.28 MB) with room to spare."""

NOT_HEARD: Final = "Sorry, I didn't catch that."
"""The answer to speech the engine did not accept; nothing is executed."""

_DECODE_RATE: Final = 16000
"""Opus utterances are decoded at the recogniser's rate (libopus resamples for free)."""

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
        self.routes: Mapping[TopicKind, Route] = {TopicKind.UTTERANCE: self._on_utterance}

    @property
    def filter(self) -> str:
        topics = self._ctx.topics
        return topics.shared(self._ctx.settings.speech_share_group, topics.all_utterances())

    async def start(self) -> None:
        await self.reload()
        await self._ctx.owner.subscribe([self.filter])

    async def reload(self) -> None:
        """(Re)build an offline recogniser from the home's sentences; other engines need
        nothing. Call after the home model changed."""
        if not isinstance(self.stt, OfflineRecognizer):
            return
        model = await self._pipeline.load_recognizer(self.stt)
        log.info("speech_loaded", sentences=model.sentences, words=model.words)

    async def stop(self) -> None:
        await self._ctx.owner.unsubscribe([self.filter])
        await self._tasks.drain()

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
        transcript = await self.stt.transcribe(pcm, rate)
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


def _voice_command(utterance: UtterancePayload, transcript: Transcript) -> bytes:
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
