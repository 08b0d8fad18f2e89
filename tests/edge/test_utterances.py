"""Opus uplink segmentation (UtteranceBuffer) and the stand-in TTS (ToneSynthesizer)."""

from __future__ import annotations

import array
import operator
import random

import opuslib
import pytest

from xiaozhi.messages import ListenMode
from xiaozhi_edge.utterances import (
    MAX_OPUS_FRAME_SAMPLES,
    OpusDecodeError,
    OpusDecoder,
    ToneSynthesizer,
    UtteranceBuffer,
    UtteranceReason,
    mean_square,
    packet_samples,
)
from xiaozhi_runtime import opus
from xiaozhi_speech import EspeakVoice, Speech, opus_frames

from .helpers import opus_packets, pcm_tone, silence_packets, tone_packets


def feed_all(buffer: UtteranceBuffer, packets: list[bytes]) -> list:
    return [u for u in (buffer.feed(p) for p in packets) if u is not None]


def test_not_listening_counts_dropped_frames() -> None:
    buffer = UtteranceBuffer()
    assert not buffer.listening
    assert buffer.mode is None
    assert buffer.feed(b"\x00") is None
    assert buffer.dropped_frames_total == 1
    assert buffer.stop() is None


def test_manual_mode_keeps_everything_until_stop() -> None:
    buffer = UtteranceBuffer()
    assert buffer.start(ListenMode.MANUAL) is None
    assert buffer.mode is ListenMode.MANUAL
    assert feed_all(buffer, silence_packets(240) + tone_packets(360)) == []
    assert buffer.buffered_ms == 600
    utterance = buffer.stop()
    assert utterance is not None
    assert (utterance.frames, utterance.duration_ms, utterance.reason) == (10, 600, "stop")
    assert utterance.mode is ListenMode.MANUAL
    assert len(utterance.pcm) == 600 * 32


@pytest.mark.parametrize("frame_ms", [20, 40, 60])
def test_every_frame_duration_decodes(frame_ms: int) -> None:
    buffer = UtteranceBuffer()
    buffer.start(ListenMode.MANUAL)
    feed_all(buffer, tone_packets(480, frame_ms))
    utterance = buffer.stop()
    assert utterance is not None
    assert utterance.duration_ms == 480
    assert utterance.frames == 480 // frame_ms


def test_manual_silence_only_still_is_an_utterance_but_nothing_is_none() -> None:
    buffer = UtteranceBuffer()
    buffer.start(ListenMode.MANUAL)
    assert buffer.stop() is None
    buffer.start(ListenMode.MANUAL)
    feed_all(buffer, silence_packets(120))
    assert buffer.stop() is not None


def test_auto_mode_ignores_silence_before_speech_but_keeps_a_preroll() -> None:
    buffer = UtteranceBuffer(preroll_ms=300)
    buffer.start(ListenMode.AUTO)
    assert feed_all(buffer, silence_packets(3000)) == []
    assert buffer.buffered_ms <= 360  # bounded pre-roll, not 3 s
    assert buffer.stop() is None  # nothing was said


def test_auto_mode_ends_after_silence_and_keeps_listening() -> None:
    buffer = UtteranceBuffer(silence_ms=600)
    buffer.start(ListenMode.REALTIME)
    done = feed_all(buffer, tone_packets(600) + silence_packets(540))
    assert done == []
    (utterance,) = feed_all(buffer, silence_packets(120))
    assert utterance.reason is UtteranceReason.SILENCE
    assert utterance.mode is ListenMode.REALTIME
    assert buffer.listening
    # A stop in the middle of the next one ends it with reason stop.
    feed_all(buffer, tone_packets(300))
    last = buffer.stop()
    assert last is not None
    assert last.reason is UtteranceReason.STOP


def test_auto_mode_at_the_limit_ends_and_starts_the_next_one() -> None:
    buffer = UtteranceBuffer(max_utterance_seconds=1.2)
    buffer.start(ListenMode.AUTO)
    # syllables: 240 ms of voice, 60 ms of pause (a steady tone would be noise to the VAD)
    syllables = [*tone_packets(240), *silence_packets(60)] * 10
    done = feed_all(buffer, syllables)
    assert [u.reason for u in done] == ["limit", "limit"]
    assert all(u.duration_ms <= 1200 for u in done)
    assert all(u.dropped_frames == 0 for u in done)
    assert buffer.dropped_frames_total == 0


class PcmDecoder:
    """Packets are raw PCM: VAD decisions without codec ringing."""

    samples = memoryview(b"").cast("h")

    def decode(self, packet: bytes) -> int:
        self.samples = memoryview(packet).cast("h")
        return len(self.samples)


LOUD = array.array("h", [8000, -8000] * 480).tobytes()  # 60 ms at 16 kHz
QUIET = bytes(1920)


def test_auto_limit_on_a_silent_frame_opens_a_preroll() -> None:
    buffer = UtteranceBuffer(
        max_utterance_seconds=0.6, silence_ms=10_000, decoder_factory=PcmDecoder
    )
    buffer.start(ListenMode.AUTO)
    done = feed_all(buffer, [LOUD] * 10 + [QUIET])
    assert [u.reason for u in done] == ["limit"]
    assert buffer.stop() is None  # the silent frame was only pre-roll


def test_manual_limit_drops_and_counts() -> None:
    buffer = UtteranceBuffer(max_utterance_seconds=0.3)
    buffer.start(ListenMode.MANUAL)
    feed_all(buffer, tone_packets(600))
    utterance = buffer.stop()
    assert utterance is not None
    assert (utterance.reason, utterance.frames, utterance.dropped_frames) == ("limit", 5, 5)
    assert buffer.dropped_frames_total == 5


def test_decode_error_is_raised_counted_and_harmless() -> None:
    buffer = UtteranceBuffer()
    buffer.start(ListenMode.MANUAL)
    good = tone_packets(180)
    buffer.feed(good[0])
    with pytest.raises(OpusDecodeError) as caught:
        buffer.feed(b"\xff\xff\xff")
    assert caught.value.code.name == "INVALID_DATA_FORMAT"
    assert str(caught.value) == "Opus packet of 3 B does not decode: corrupted stream"
    feed_all(buffer, good[1:])
    utterance = buffer.stop()
    assert utterance is not None
    assert (utterance.frames, utterance.decode_errors) == (3, 1)
    assert buffer.decode_errors_total == 1


def test_decode_error_with_an_odd_code() -> None:
    class Broken:
        samples = memoryview(b"").cast("h")

        def decode(self, packet: bytes) -> int:
            return -999

    buffer = UtteranceBuffer(decoder_factory=Broken)
    buffer.start(ListenMode.AUTO)
    with pytest.raises(OpusDecodeError, match="unknown error"):
        buffer.feed(b"\x00")


def test_a_new_start_ends_the_running_utterance_and_reset_discards() -> None:
    buffer = UtteranceBuffer()
    buffer.start(ListenMode.MANUAL)
    feed_all(buffer, tone_packets(120))
    finished = buffer.start(ListenMode.AUTO)
    assert finished is not None
    assert finished.frames == 2
    assert buffer.mode is ListenMode.AUTO
    buffer.reset()
    assert not buffer.listening
    buffer.release()
    buffer.start(ListenMode.MANUAL)  # a released buffer builds a new decoder
    feed_all(buffer, tone_packets(60))
    assert buffer.stop() is not None


def test_longest_opus_packet_fits_the_decode_buffer() -> None:
    assert MAX_OPUS_FRAME_SAMPLES == 1920


# -- ToneSynthesizer ---------------------------------------------------------------------


@pytest.mark.parametrize("frame_ms", [20, 40, 60])
def test_tone_is_real_opus_that_decodes(frame_ms: int) -> None:
    synth = ToneSynthesizer()
    packets = synth.synthesize("turning on the light", frame_ms)
    assert len(packets) == -(-320 // frame_ms)
    decoder = opuslib.Decoder(16000, 1)
    pcm = b"".join(decoder.decode(p, 16 * frame_ms) for p in packets)
    samples = array.array("h", pcm)
    assert len(samples) == len(packets) * 16 * frame_ms
    assert max(samples) > 3000  # audible


def test_tone_is_deterministic_and_cached() -> None:
    synth = ToneSynthesizer(cache_size=2)
    first = synth.synthesize("hello world", 60)
    assert synth.synthesize("hello world", 60) is first
    assert ToneSynthesizer().synthesize("hello world", 60) == first
    assert synth.cache_info() == {"hits": 1, "misses": 1, "size": 1}
    synth.synthesize("a", 60)
    synth.synthesize("b", 60)  # evicts "hello world"
    assert synth.cache_info()["size"] == 2
    synth.synthesize("hello world", 60)
    assert synth.misses == 4


def test_tone_length_per_word_and_cap() -> None:
    synth = ToneSynthesizer(ms_per_word=80, max_ms=400)
    assert len(synth.pcm("one two three")) == 3 * 80 * 32
    assert len(synth.pcm("")) == 80 * 32  # an empty sentence still chimes
    assert len(synth.pcm("w " * 100)) == 400 * 32
    different = {synth.pcm(word) for word in ("on", "off", "light", "kitchen", "door", "hello")}
    assert len(different) > 1


def test_tone_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="frame duration"):
        ToneSynthesizer().synthesize("x", 30)
    with pytest.raises(ValueError, match="ms_per_word >= 16"):
        ToneSynthesizer(ms_per_word=10)
    with pytest.raises(ValueError, match="amplitude"):
        ToneSynthesizer(amplitude=2.0)


def _noisy(pcm: bytes, noise_rms: float, seed: int = 7) -> bytes:
    """``pcm`` plus white noise of ``noise_rms`` (a fan, a street)."""
    rng = random.Random(seed)
    samples = array.array("h", pcm)
    for i, value in enumerate(samples):
        samples[i] = max(-32768, min(32767, value + int(rng.gauss(0, noise_rms))))
    return samples.tobytes()


def test_auto_mode_ends_the_turn_in_steady_noise_15_db_under_the_voice() -> None:
    # the voice at RMS ~6550 (0.3 of full scale / sqrt 2), the noise 15 dB under it (~1160),
    # more than twice the fixed threshold: the noise floor, not the threshold, ends the turn
    voice = pcm_tone(300, 900)
    noise_rms = 6550 / 10 ** (15 / 20)
    room = _noisy(bytes(2 * 16 * 600), noise_rms, seed=1)
    speech = _noisy(voice, noise_rms, seed=2)
    after = _noisy(bytes(2 * 16 * 1200), noise_rms, seed=3)
    quiet = array.array("h", room)
    assert (sum(v * v for v in quiet) / len(quiet)) ** 0.5 > 2 * 500  # over the fixed threshold
    buffer = UtteranceBuffer(silence_ms=600)
    buffer.start(ListenMode.AUTO)
    assert feed_all(buffer, opus_packets(room)) == []
    (utterance,) = feed_all(buffer, opus_packets(speech + after))
    assert utterance.reason is UtteranceReason.SILENCE
    # The room's first second is taken for speech until one block of it is known, so the
    # utterance may start with it; it ends 600 ms after the voice, inside the noise.
    assert 900 <= utterance.duration_ms <= 600 + 900 + 600 + 120


# -- the decode path against opuslib (issue 14 point 2) ----------------------------------


async def _speech_packets() -> list[bytes]:
    """Real speech (espeak-ng) with pauses, as a device sends it: 60 ms Opus packets."""
    speech = await EspeakVoice().synthesize("turn on the kitchen light. and the fan, please")
    pause = bytes(speech.sample_rate * 6 // 10 * 2)
    return opus_frames(Speech(pause + speech.pcm + pause, speech.sample_rate), sample_rate=16000)


def _old_mean_square(pcm: bytes) -> float:
    """The VAD energy as the edge computed it before: a sum of squares in Python."""
    samples = array.array("h", pcm)[::4]
    return sum(map(operator.mul, samples, samples)) / len(samples) if samples else 0.0


async def test_direct_libopus_decodes_and_weighs_as_opuslib_did() -> None:
    """Same samples as opuslib, same energy, so the same VAD decisions frame by frame; and
    without decoding, the same duration (manual mode) and the same refusals."""
    streams = [
        await _speech_packets(),
        silence_packets(600) + tone_packets(900) + silence_packets(900),
        tone_packets(200, 20) + silence_packets(200, 20) + tone_packets(200, 40),
    ]
    for packets in streams:
        reference, ours = opuslib.Decoder(16000, 1), OpusDecoder()
        old_vad, new_vad = UtteranceBuffer(), UtteranceBuffer()
        for packet in packets:
            pcm = reference.decode(packet, MAX_OPUS_FRAME_SAMPLES)
            count = ours.decode(packet)
            assert ours.samples[:count].tobytes() == pcm
            assert packet_samples(packet) == count
            old, new = _old_mean_square(pcm), mean_square(ours.samples[:count])
            assert new == pytest.approx(old, rel=1e-12)
            assert old_vad._voiced(old, count // 16) == new_vad._voiced(new, count // 16)
    for garbage in (b"\xff\xff\xff", b"\x03\x00", b"\xfb" + bytes(50)):
        with pytest.raises(opuslib.OpusError) as refused:
            opuslib.Decoder(16000, 1).decode(garbage, MAX_OPUS_FRAME_SAMPLES)
        assert packet_samples(garbage) == OpusDecoder().decode(garbage) == refused.value.code


async def test_speech_in_auto_mode_is_cut_where_speech_pauses() -> None:
    """The utterance forwarded is the packets as sent, pre-roll included, and its PCM (on
    demand) is what the hub decodes from them."""
    packets = await _speech_packets()
    buffer = UtteranceBuffer()
    buffer.start(ListenMode.AUTO)
    done = feed_all(buffer, packets)
    assert [u.reason for u in done] == ["silence"]
    (utterance,) = done
    runs = {tuple(packets[i : i + utterance.frames]) for i in range(len(packets))}
    assert utterance.packets in runs  # contiguous, as sent
    assert utterance.duration_ms == utterance.frames * 60
    assert utterance.pcm == opus.decode(utterance.packets, sample_rate=16000)
