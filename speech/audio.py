"""Speech as the devices take it: resampled, Opus-encoded in 60 ms frames, or a WAV file.

Real firmware decodes the downlink at the rate the server's hello announced
(``audio_params.sample_rate``, 24 kHz by default, reference §1.4) in frames of the negotiated
duration (60 ms); seed-style devices take WAV (seed 003). Resampling uses the ``audioop``
``ratecv`` that wyoming's :class:`~wyoming.audio.AudioChunkConverter` wraps (the standard
library's on Python < 3.13, wyoming's pure-Python copy after): linear interpolation, which is
plenty for synthetic speech whose energy lies far below the Nyquist limit of either rate.
"""

from __future__ import annotations

from typing import Any, Final

import opuslib
from wyoming.audio import AudioChunk, AudioChunkConverter

from xiaozhi.wav import WavFormat, encode_wav
from xiaozhi_speech.base import BYTES_PER_SAMPLE, Speech

__all__ = ["OPUS_RATES", "opus_frames", "resample", "wav_bytes"]

OPUS_RATES: Final = (8000, 12000, 16000, 24000, 48000)
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
    if sample_rate not in OPUS_RATES:
        raise ValueError(f"Opus cannot encode {sample_rate} Hz (rates: {OPUS_RATES})")
    if frame_ms not in (10, 20, 40, 60):
        raise ValueError(f"frame duration {frame_ms} ms is not 10, 20, 40 or 60")
    pcm = resample(speech.pcm, speech.sample_rate, sample_rate)
    samples = sample_rate * frame_ms // 1000
    frame_bytes = samples * BYTES_PER_SAMPLE
    if remainder := len(pcm) % frame_bytes:
        pcm += bytes(frame_bytes - remainder)
    # A fresh VoIP encoder per utterance: the same text gives the same packets.
    encoder: Any = opuslib.Encoder(sample_rate, 1, opuslib.APPLICATION_VOIP)
    return [
        bytes(encoder.encode(pcm[offset : offset + frame_bytes], samples))
        for offset in range(0, len(pcm), frame_bytes)
    ]


def wav_bytes(speech: Speech) -> bytes:
    """``speech`` as a 16-bit mono WAV file (the contract's canonical 44-byte header)."""
    pcm = speech.pcm[: len(speech.pcm) - len(speech.pcm) % BYTES_PER_SAMPLE]
    return encode_wav(pcm, WavFormat(speech.sample_rate, 1, 16))
