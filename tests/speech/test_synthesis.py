"""Voices (real espeak-ng and flite) and the audio devices get: Opus frames that decode, WAV."""

from __future__ import annotations

import subprocess

import opuslib
import pytest

from xiaozhi.wav import decode_wav
from xiaozhi_speech import EspeakVoice, FliteVoice, Speech, opus_frames, synthesis, wav_bytes
from xiaozhi_speech.audio import resample
from xiaozhi_speech.synthesis import MANDARIN_VOICE, SynthesisFailed, espeak_voice_for


@pytest.mark.parametrize(
    ("voice", "language", "rate"),
    [
        (EspeakVoice(), "en", 22050),
        (EspeakVoice(), "zh-CN", 22050),
        (EspeakVoice(), "vi", 22050),
        (FliteVoice("rms"), "en", 16000),
    ],
)
async def test_voices_speak_and_their_opus_frames_decode(
    voice: EspeakVoice | FliteVoice, language: str, rate: int
) -> None:
    speech = await voice.synthesize("Turning on the kitchen light.", language=language)
    assert speech.sample_rate == rate
    assert speech.duration_ms > 500
    frames = opus_frames(speech, sample_rate=24000)
    decoder = opuslib.Decoder(24000, 1)
    pcm = b"".join(decoder.decode(frame, 1440) for frame in frames)
    assert len(pcm) == len(frames) * 1440 * 2
    assert abs(len(pcm) / 48 - speech.duration_ms) < 61  # ms: only the last frame's padding
    assert max(abs(s) for s in memoryview(pcm).cast("h")) > 1000  # not silence


def test_language_tags_choose_espeak_voices() -> None:
    assert espeak_voice_for("en") == "en-us"
    assert espeak_voice_for("zh-CN") == MANDARIN_VOICE == "cmn-latn-pinyin"
    assert espeak_voice_for("zh-cn") == espeak_voice_for("zh-TW") == MANDARIN_VOICE
    assert espeak_voice_for("zh-HK") == "yue"
    assert espeak_voice_for("vi") == "vi"
    assert espeak_voice_for("vi-VN") == "vi"
    assert espeak_voice_for("de-AT") == "de"
    assert EspeakVoice(voices={"en": "en-us+f3"}).voice_for("EN") == "en-us+f3"


def test_the_mandarin_voice_reads_chinese_characters_in_mandarin() -> None:
    """espeak-ng 1.51's plain cmn voice reads 你好 as pinyin spelled in English ("ni three
    hao three": its phonemes switch to "(en)"); the Mandarin voice used reads Mandarin."""
    command = ["espeak-ng", "-q", "-x", "-v", espeak_voice_for("zh-CN"), "客厅灯已打开"]
    phonemes = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert phonemes.strip()
    assert "(en)" not in phonemes


async def test_chinese_answers_say_percent_in_chinese() -> None:
    voice = EspeakVoice()
    said = await voice.synthesize("亮度已设置为50%", language="zh-CN")
    assert said == await voice.synthesize("亮度已设置为百分之50", language="zh-CN")
    assert said != await voice.synthesize("亮度已设置为50 percent", language="zh-CN")


async def test_a_synthesiser_failure_is_typed() -> None:
    with pytest.raises(SynthesisFailed, match="is not installed"):
        await synthesis._run(["xiaozhi-no-such-synthesiser"], stdin=None, timeout_s=5)
    with pytest.raises(SynthesisFailed, match=r"false failed \(1\)"):
        await synthesis._run(["false"], stdin=b"", timeout_s=5)
    with pytest.raises(SynthesisFailed, match="longer than"):
        await synthesis._run(["sleep", "5"], stdin=None, timeout_s=0.1)
    with pytest.raises(SynthesisFailed, match="not a WAV stream"):
        synthesis._espeak_wav(b"RIFF")
    with pytest.raises(ValueError, match="not one of"):
        FliteVoice("hal")


def test_wav_and_resampling() -> None:
    speech = Speech(pcm=bytes(range(200)) * 80, sample_rate=16000)
    fmt, pcm = decode_wav(wav_bytes(speech))
    assert (fmt.sample_rate, fmt.channels, fmt.bits_per_sample, pcm) == (16000, 1, 16, speech.pcm)
    assert abs(len(resample(speech.pcm, 16000, 24000)) - len(speech.pcm) * 3 // 2) <= 4
    assert resample(speech.pcm, 16000, 16000) is speech.pcm
    with pytest.raises(ValueError, match="not an Opus rate"):
        opus_frames(speech, sample_rate=22050)
    with pytest.raises(ValueError, match="frame duration"):
        opus_frames(speech, sample_rate=16000, frame_ms=30)
