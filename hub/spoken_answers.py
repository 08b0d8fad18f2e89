"""The hub's voice: an answer's sentence as Opus audio in the ``respond`` command.

The edge plays what the command carries (``parameters.audio``, an
:class:`~xiaozhi.payloads.AudioClip`): to firmware devices paced at their frame duration, to
seed devices as a WAV file. Audio is made here, once per answer, by the configured
text-to-speech engine (espeak-ng by default: :mod:`xiaozhi_speech`), encoded as 16 kHz mono
Opus in 60 ms frames (the firmware's default; the edge re-frames for devices that asked for
20 or 40 ms).

Each clip is spoken in the answer's language (the home's, or a device's own from the home
file): espeak-ng picks its voice by it (Mandarin for ``zh-CN``, Vietnamese for ``vi``:
:func:`xiaozhi_speech.synthesis.espeak_voice_for`).

Answers repeat ("Turning on the living room light."), so recent clips are kept in a small
LRU, per language and sentence. A new clip is encoded on a worker thread (20-50 ms of CPU):
the event loop never waits for it. An answer longer than :data:`MAX_ANSWER_SECONDS` is cut so
the command stays under the edge's 64 KiB message limit. A failing engine never costs the
answer: the command goes without audio (the edge then plays its chime) and the failure is
logged.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Final

import structlog

from xiaozhi.payloads import AudioClip
from xiaozhi_runtime import opus
from xiaozhi_speech import Speech, TextToSpeech, resample

__all__ = ["ANSWER_FRAME_MS", "ANSWER_SAMPLE_RATE", "MAX_ANSWER_SECONDS", "SpokenAnswers"]

log = structlog.get_logger("xiaozhi.hub")

ANSWER_SAMPLE_RATE: Final = 16000
"""The rate the edge's server hello announces to devices (and plays at)."""

ANSWER_FRAME_MS: Final = 60
"""Frames of the clip; the firmware's default frame duration."""

MAX_ANSWER_SECONDS: Final = 12.0
"""Longest spoken answer: about 30 KB of Opus, under the edge's 64 KiB command limit."""

_BITRATE: Final = 16000
"""Speech at 16 kbit/s: clear on the device's speaker, 120 bytes per 60 ms frame."""


class SpokenAnswers:
    """Sentences → Opus clips for ``respond``, with an LRU of recent ones.

    Args:
        tts: the text-to-speech engine; None: answers go without audio.
        language: the answers' language when :meth:`clip` is given none (the home's).
        cache_size: clips kept.
    """

    def __init__(
        self, tts: TextToSpeech | None, *, language: str = "en", cache_size: int = 64
    ) -> None:
        self.tts = tts
        self.language = language
        self._cache: OrderedDict[tuple[str, str], AudioClip] = OrderedDict()
        self._cache_size = cache_size
        self.failures = 0

    async def clip(self, text: str, *, language: str | None = None) -> AudioClip | None:
        """``text`` spoken in ``language`` (None: :attr:`language`), or None without an
        engine, for empty text, or when it failed."""
        if self.tts is None or not text.strip():
            return None
        language = language or self.language
        key = (language, text)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        try:
            speech = await self.tts.synthesize(text, language=language)
        except Exception as err:  # an engine's failure must not cost the answer's text
            self.failures += 1
            log.warning("tts_failed", text=text[:80], language=language, error=str(err)[:200])
            return None
        # Resampling and Opus encoding take 20-50 ms of CPU per answer (docs/benchmarks.md):
        # on a worker thread, so the event loop goes on meanwhile (libopus releases the GIL).
        clip = await asyncio.to_thread(encode_answer, speech)
        self._cache[key] = clip
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return clip


def encode_answer(speech: Speech) -> AudioClip:
    """``speech`` as the clip the edge plays: 16 kHz Opus, 60 ms frames, at most
    :data:`MAX_ANSWER_SECONDS`."""
    pcm = resample(speech.pcm, speech.sample_rate, ANSWER_SAMPLE_RATE)
    pcm = pcm[: int(MAX_ANSWER_SECONDS * ANSWER_SAMPLE_RATE) * 2]
    packets = opus.encode(
        pcm, sample_rate=ANSWER_SAMPLE_RATE, frame_duration_ms=ANSWER_FRAME_MS, bitrate=_BITRATE
    )
    return AudioClip.from_opus(
        packets, sample_rate=ANSWER_SAMPLE_RATE, frame_duration_ms=ANSWER_FRAME_MS
    )
