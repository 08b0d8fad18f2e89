"""Opus in and out of whole clips: the one encoder and decoder the components share.

The edge (answers re-framed to a device's frame duration, WAV for seed devices), the hub
(spoken answers, utterances for the recogniser), the speech package and the simulator (its
microphone) all turn PCM into Opus packets and back. They do it here, with opuslib, the same
way: 16-bit mono little-endian PCM, the VoIP application (what xiaozhi firmware uses for
speech), one packet per frame, the last frame padded with silence.

Rates Opus cannot run at (seed 003's 22050 Hz) are refused by libopus; :func:`opus_rate`
gives the next rate it can.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import opuslib

from xiaozhi.errors import InvalidMessage

__all__ = ["OPUS_RATES", "OpusError", "StreamDecoder", "decode", "encode", "opus_rate", "reframe"]

OPUS_RATES: Final = (8000, 12000, 16000, 24000, 48000)
"""The sample rates libopus encodes and decodes at."""

FRAME_DURATIONS_MS: Final = (10, 20, 40, 60)
"""Frame durations one Opus packet can carry that xiaozhi devices use (2.5 and 5 ms are not)."""

_MAX_PACKET_MS: Final = 120
"""The longest audio one Opus packet may hold (RFC 6716), the decoder's output size."""


class OpusError(InvalidMessage):
    """A packet libopus refused to decode; names libopus's reason."""


def opus_rate(sample_rate: int) -> int:
    """The lowest Opus rate at or above ``sample_rate`` (48000 above all of them)."""
    return next((rate for rate in OPUS_RATES if rate >= sample_rate), OPUS_RATES[-1])


def _check(sample_rate: int, frame_duration_ms: int | None = None) -> None:
    if sample_rate not in OPUS_RATES:
        raise ValueError(f"sample rate {sample_rate} Hz is not an Opus rate {OPUS_RATES}")
    if frame_duration_ms is not None and frame_duration_ms not in FRAME_DURATIONS_MS:
        raise ValueError(f"frame duration {frame_duration_ms} ms not in {FRAME_DURATIONS_MS}")


def encode(
    pcm: bytes, *, sample_rate: int, frame_duration_ms: int, bitrate: int | None = None
) -> list[bytes]:
    """``pcm`` (16-bit mono) as Opus packets, one per frame; the last frame padded.

    A fresh encoder per clip, so the same PCM always gives the same packets.

    Args:
        bitrate: bits per second; None keeps libopus's default for the rate.

    Raises:
        ValueError: not an Opus rate or frame duration (caller misuse).
    """
    _check(sample_rate, frame_duration_ms)
    frame_samples = sample_rate * frame_duration_ms // 1000
    frame_bytes = frame_samples * 2
    remainder = len(pcm) % frame_bytes
    if remainder:
        pcm += bytes(frame_bytes - remainder)
    encoder: Any = opuslib.Encoder(sample_rate, 1, opuslib.APPLICATION_VOIP)
    if bitrate is not None:
        encoder.bitrate = bitrate
    view = memoryview(pcm)
    return [
        bytes(encoder.encode(bytes(view[offset : offset + frame_bytes]), frame_samples))
        for offset in range(0, len(pcm), frame_bytes)
    ]


def decode(packets: Iterable[bytes], *, sample_rate: int) -> bytes:
    """Opus packets (any frame duration up to 120 ms each) as 16-bit mono PCM at ``sample_rate``.

    Raises:
        OpusError: a packet libopus cannot decode (which one, and why).
        ValueError: not an Opus rate (caller misuse).
    """
    return StreamDecoder(sample_rate).decode(packets)


class StreamDecoder:
    """One stream's decoder: packets decoded batch after batch give the same PCM as
    :func:`decode` of all of them (libopus keeps state from one packet to the next).

    Raises:
        ValueError: not an Opus rate (caller misuse).
    """

    def __init__(self, sample_rate: int) -> None:
        _check(sample_rate)
        self._decoder: Any = opuslib.Decoder(sample_rate, 1)
        self._max_samples = sample_rate * _MAX_PACKET_MS // 1000
        self._index = 0

    def decode(self, packets: Iterable[bytes]) -> bytes:
        """The next packets as PCM.

        Raises:
            OpusError: a packet libopus cannot decode (which one of the stream, and why).
        """
        pcm = bytearray()
        for packet in packets:
            try:
                pcm += self._decoder.decode(packet, self._max_samples)
            except opuslib.OpusError as err:
                raise OpusError(f"opus packet {self._index} does not decode: {err}") from err
            self._index += 1
        return bytes(pcm)


def reframe(packets: Iterable[bytes], *, sample_rate: int, frame_duration_ms: int) -> list[bytes]:
    """The same audio re-encoded in ``frame_duration_ms`` packets (for a device that asked
    for another frame duration than the clip's)."""
    pcm = decode(packets, sample_rate=sample_rate)
    return encode(pcm, sample_rate=sample_rate, frame_duration_ms=frame_duration_ms)
