"""Speech for the hub: recognition built from the home's own sentences, and synthesis.

Meets the edge only on MQTT, like the hub (design.md sections 2 and 10). docs/speech.md tells
how the engines work and what they were measured at.
"""

from xiaozhi_speech.audio import opus_frames, resample, wav_bytes
from xiaozhi_speech.base import (
    Speech,
    SpeechEngineError,
    SpeechToText,
    TextToSpeech,
    Transcript,
)
from xiaozhi_speech.corpus import background_from_intents, corpus_from_intents, normalize_words
from xiaozhi_speech.offline import (
    ModelFiles,
    OfflineRecognizer,
    RecognizerClosed,
    RecognizerStream,
    StreamLost,
)
from xiaozhi_speech.openai import OpenAiSpeechToText
from xiaozhi_speech.synthesis import EspeakVoice, FliteVoice, SynthesisFailed
from xiaozhi_speech.wyoming import (
    WyomingSpeechToText,
    WyomingTextToSpeech,
    serve_wyoming_stt,
)

__all__ = [
    "EspeakVoice",
    "FliteVoice",
    "ModelFiles",
    "OfflineRecognizer",
    "OpenAiSpeechToText",
    "RecognizerClosed",
    "RecognizerStream",
    "Speech",
    "SpeechEngineError",
    "SpeechToText",
    "StreamLost",
    "SynthesisFailed",
    "TextToSpeech",
    "Transcript",
    "WyomingSpeechToText",
    "WyomingTextToSpeech",
    "background_from_intents",
    "corpus_from_intents",
    "normalize_words",
    "opus_frames",
    "resample",
    "serve_wyoming_stt",
    "wav_bytes",
]
