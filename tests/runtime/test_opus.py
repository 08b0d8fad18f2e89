"""The shared Opus clip codec: real libopus through opuslib, both ways."""

from __future__ import annotations

import array
import math

import pytest

from xiaozhi.errors import InvalidMessage
from xiaozhi_runtime import opus


def _tone(ms: int, rate: int = 16000, hz: float = 440.0) -> bytes:
    count = rate * ms // 1000
    return array.array(
        "h", (int(9000 * math.sin(2 * math.pi * hz * i / rate)) for i in range(count))
    ).tobytes()


def test_encode_gives_one_packet_per_frame_and_pads_the_last() -> None:
    packets = opus.encode(_tone(130), sample_rate=16000, frame_duration_ms=60)
    assert len(packets) == 3
    pcm = opus.decode(packets, sample_rate=16000)
    assert len(pcm) == 180 * 16 * 2
    # the padding is silence, the tone is not
    assert max(array.array("h", pcm[: 100 * 32])) > 4000
    assert max(array.array("h", pcm[-20 * 32 :])) < 500


def test_the_same_pcm_always_gives_the_same_packets() -> None:
    pcm = _tone(240)
    assert opus.encode(pcm, sample_rate=16000, frame_duration_ms=20) == opus.encode(
        pcm, sample_rate=16000, frame_duration_ms=20
    )


def test_decode_at_another_opus_rate_resamples() -> None:
    packets = opus.encode(_tone(120), sample_rate=16000, frame_duration_ms=60)
    assert len(opus.decode(packets, sample_rate=24000)) == 120 * 24 * 2


def test_reframe_keeps_the_audio_in_shorter_packets() -> None:
    packets = opus.encode(_tone(600), sample_rate=16000, frame_duration_ms=60)
    shorter = opus.reframe(packets, sample_rate=16000, frame_duration_ms=20)
    assert len(shorter) == 30
    assert len(opus.decode(shorter, sample_rate=16000)) == 600 * 16 * 2


def test_a_corrupt_packet_is_named_by_its_index() -> None:
    packets = opus.encode(_tone(180), sample_rate=16000, frame_duration_ms=60)
    packets[2] = b"\xff" * 40
    with pytest.raises(InvalidMessage, match="opus packet 2 does not decode"):
        opus.decode(packets, sample_rate=16000)


@pytest.mark.parametrize(("rate", "frame_ms"), [(22050, 60), (16000, 30)])
def test_rates_and_durations_opus_cannot_carry_are_refused(rate: int, frame_ms: int) -> None:
    with pytest.raises(ValueError, match="not"):
        opus.encode(b"\0\0" * 160, sample_rate=rate, frame_duration_ms=frame_ms)


def test_opus_rate_rounds_up_to_a_rate_libopus_runs_at() -> None:
    assert [opus.opus_rate(r) for r in (8000, 11025, 22050, 44100, 96000)] == [
        8000,
        12000,
        24000,
        48000,
        48000,
    ]


def test_bitrate_is_applied() -> None:
    pcm = _tone(1200)
    low = opus.encode(pcm, sample_rate=16000, frame_duration_ms=60, bitrate=8000)
    high = opus.encode(pcm, sample_rate=16000, frame_duration_ms=60, bitrate=32000)
    assert sum(map(len, low)) < sum(map(len, high)) / 2
