"""The speech engines a hub's settings choose (docs/speech.md), built in one place."""

from __future__ import annotations

from xiaozhi_hub.settings import HubSettings, SpeechToTextEngine, TextToSpeechEngine, host_port
from xiaozhi_speech import (
    EspeakVoice,
    FliteVoice,
    OfflineRecognizer,
    OpenAiSpeechToText,
    SpeechToText,
    TextToSpeech,
    WyomingSpeechToText,
    WyomingTextToSpeech,
)

__all__ = ["speech_to_text", "text_to_speech"]


def speech_to_text(settings: HubSettings) -> SpeechToText | None:
    """The configured recogniser; None when this hub does not transcribe.

    Remote recognisers are asked for the home's language as Whisper names it, the ISO 639-1
    code (``zh-CN`` → ``zh``, ``vi`` → ``vi``): faster-whisper refuses ``zh-CN``, and without
    a language an OpenAI-compatible server is told English. The offline recogniser hears
    English only (docs/speech.md).
    """
    spoken = settings.language.split("-", 1)[0]
    match settings.stt_engine:
        case SpeechToTextEngine.OFFLINE:
            return OfflineRecognizer(
                workers=settings.speech_workers, cache_dir=settings.speech_cache
            )
        case SpeechToTextEngine.WYOMING:
            assert settings.stt_url is not None  # checked by the settings
            host, port = host_port(settings.stt_url)
            return WyomingSpeechToText(host, port, language=spoken)
        case SpeechToTextEngine.OPENAI:
            assert settings.stt_url is not None
            key = settings.stt_api_key.get_secret_value() if settings.stt_api_key else None
            return OpenAiSpeechToText(
                settings.stt_url, settings.stt_model, api_key=key, language=spoken
            )
    return None


def text_to_speech(settings: HubSettings) -> TextToSpeech | None:
    """The configured voice; None when answers go without audio."""
    match settings.tts_engine:
        case TextToSpeechEngine.ESPEAK:
            voices = {settings.language: settings.tts_voice} if settings.tts_voice else None
            return EspeakVoice(voices=voices)
        case TextToSpeechEngine.FLITE:
            return FliteVoice(settings.tts_voice or "slt")
        case TextToSpeechEngine.WYOMING:
            assert settings.tts_url is not None
            host, port = host_port(settings.tts_url)
            return WyomingTextToSpeech(host, port, voice=settings.tts_voice)
    return None
