"""Speech as the devices take it: resampled, Opus-encoded in 60 ms frames, or a WAV file.

Real firmware decodes the downlink at the rate the server's hello announced
(``audio_params.sample_rate``, 24 kHz by default, reference §1.4) in frames of the negotiated
duration (60 ms); seed-style devices take WAV (seed 003). Resampling uses the ``audioop``
``ratecv`` that wyoming's :class:`~wyoming.audio.AudioChunkConverter` wraps (the standard
library's on Python < 3.13, wyoming's pure-Python copy after): linear interpolation, which is
plenty for synthetic speech whose energy lies far below the Nyquist limit of either rate.
"""

from __future__ import annotations

from typing import Final

from wyoming.audio import AudioChunk, AudioChunkConverter

from xiaozhi.wav import WavFormat, encode_wav
from xiaozhi_runtime import opus
from xiaozhi_speech.base import BYTES_PER_SAMPLE, Speech

__all__ = ["OPUS_RATES", "opus_frames", "resample", "wav_bytes"]

OPUS_RATES: Final = opus.OPUS_RATES
"""Rates libopus encodes; :func:`opus_frames` refuses others."""


def resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """16-bit mono ``pcm`` at ``from_rate`` as ``to_rate`` (the same bytes when equal)."""
    if from_rate == to_rate or not pcm:
        return pcm
    converter = AudioChunkConverter(rate=to_rate, width=BYTES_PER_SAMPLE, channels=1)
    chunk = AudioChunk(rate=from_rate, width=BYTES_PER_SAMPLE, channels=1, audio=pcm)
    return bytes(converter.convert(chunk).audio)


def opus_frames(speech: Speech, *, sample_rate: int, frame_ms: int = 60) -> list[bytes]:
    """``speech`` as Opus packets for a device: resampled to ``sample_rate``, one packet per
    ``frame_ms`` (the last padded with silence).

    Args:
        speech: what to send.
        sample_rate: the rate the server hello announced; one of :data:`OPUS_RATES`.
        frame_ms: the negotiated frame duration: 20, 40 or 60.

    Raises:
        ValueError: a rate or frame duration Opus cannot encode.
    """
    pcm = resample(speech.pcm, speech.sample_rate, sample_rate)
    return opus.encode(pcm, sample_rate=sample_rate, frame_duration_ms=frame_ms)


def wav_bytes(speech: Speech) -> bytes:
    """``speech`` as a 16-bit mono WAV file (the contract's canonical 44-byte header)."""
    pcm = speech.pcm[: len(speech.pcm) - len(speech.pcm) % BYTES_PER_SAMPLE]
    return encode_wav(pcm, WavFormat(speech.sample_rate, 1, 16))
