"""What every speech engine gives and takes: transcripts, synthesised speech, two protocols.

The hub codes against :class:`SpeechToText` and :class:`TextToSpeech` only; which engine runs
(the offline recogniser, a Wyoming service, an OpenAI-compatible server; espeak-ng, flite or a
Wyoming voice) is a setting. Audio is always 16-bit mono little-endian PCM with its rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from xiaozhi.errors import OperationFailed

__all__ = [
    "BYTES_PER_SAMPLE",
    "Speech",
    "SpeechEngineError",
    "SpeechToText",
    "TextToSpeech",
    "Transcript",
    "pcm_duration_ms",
]

BYTES_PER_SAMPLE = 2
"""16-bit PCM, the only sample format in this package."""


def pcm_duration_ms(pcm: bytes, sample_rate: int) -> float:
    """Length of 16-bit mono ``pcm`` at ``sample_rate``, in milliseconds."""
    return len(pcm) / BYTES_PER_SAMPLE * 1000 / sample_rate


@dataclass(frozen=True, slots=True)
class Transcript:
    """What a recogniser heard.

    Attributes:
        text: the words, lower case; ``""`` when not accepted.
        accepted: False when nothing was heard, when the words are outside the home's
            sentences, or when the engine is unsure: the caller must then execute nothing.
        confidence: 0..1; for the offline recogniser the share of the heard four-word
            sequences that occur in the home's sentences (1.0 is needed to accept).
        language: a BCP 47 tag, ``en-US``.
        processing_time_ms: wall time spent recognising.
        audio_duration_ms: length of the audio given.
        reason: why not accepted: ``no_speech``, ``out_of_domain``, ``unsure``,
            ``engine_error``; None when accepted.
    """

    text: str
    accepted: bool
    confidence: float
    language: str
    processing_time_ms: float
    audio_duration_ms: float
    reason: str | None = None


class SpeechToText(Protocol):
    """A recogniser: PCM in, :class:`Transcript` out."""

    language: str

    async def transcribe(self, pcm: bytes, sample_rate: int) -> Transcript:
        """Recognise 16-bit mono little-endian ``pcm`` recorded at ``sample_rate``."""
        ...

    async def aclose(self) -> None:
        """Release processes and connections; the engine is unusable afterwards."""
        ...


@dataclass(frozen=True, slots=True)
class Speech:
    """Synthesised speech: 16-bit mono little-endian PCM at ``sample_rate``."""

    pcm: bytes
    sample_rate: int

    @property
    def duration_ms(self) -> float:
        return pcm_duration_ms(self.pcm, self.sample_rate)


class TextToSpeech(Protocol):
    """A voice: text in, :class:`Speech` out."""

    async def synthesize(self, text: str, *, language: str = "en") -> Speech:
        """Speak ``text`` in ``language`` (a BCP 47 tag or a bare language code)."""
        ...


class SpeechEngineError(OperationFailed):
    """A remote engine (Wyoming, OpenAI-compatible) could not be reached, timed out, or
    answered something other than the protocol promises; the message says which."""
