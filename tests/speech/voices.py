"""Test speech: synthesised by real espeak-ng and flite, sent through real Opus at 16 kHz.

The recogniser is never tuned on these recordings; they stand in for a device's microphone:
60 ms Opus packets (VoIP application) decoded back to PCM, as the edge forwards them.
"""

from __future__ import annotations

import opuslib

from xiaozhi_speech import EspeakVoice, FliteVoice, Speech, TextToSpeech, opus_frames

__all__ = ["VOICES", "through_opus"]

VOICES: dict[str, TextToSpeech] = {
    "espeak-ng en-us": EspeakVoice(),
    "flite slt": FliteVoice("slt"),
}


def through_opus(speech: Speech, rate: int = 16000) -> bytes:
    """``speech`` as a device sends it (Opus, 60 ms frames) and the edge decodes it."""
    decoder = opuslib.Decoder(rate, 1)
    samples = rate * 60 // 1000
    return b"".join(
        decoder.decode(packet, samples) for packet in opus_frames(speech, sample_rate=rate)
    )


async def spoken(voice: TextToSpeech, text: str) -> bytes:
    """``text`` said by ``voice``, with 300 ms of silence either side, through Opus."""
    speech = await voice.synthesize(text)
    pause = bytes(speech.sample_rate * 3 // 10 * 2)
    return through_opus(Speech(pause + speech.pcm + pause, speech.sample_rate))
