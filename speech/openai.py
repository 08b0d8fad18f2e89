"""An OpenAI-compatible transcription server as a recogniser.

``POST {base_url}/v1/audio/transcriptions`` with a multipart form (``file``: a WAV file,
``model``, ``language``, ``response_format=json``) answered by ``{"text": "..."}``: the API of
OpenAI's Whisper endpoint, which local servers (faster-whisper-server, speaches, LocalAI,
whisper.cpp's server) also speak. Any language the model knows works; the text then goes
through the hub's strict intent parser like every other engine's.

A non-empty text is accepted with confidence 1.0 (the API gives no score). The API key, when
given, is sent as ``Authorization: Bearer`` and never logged.
"""

from __future__ import annotations

import time
from typing import Final

import httpx

from xiaozhi_speech.audio import wav_bytes
from xiaozhi_speech.base import Speech, SpeechEngineError, Transcript, pcm_duration_ms

__all__ = ["DEFAULT_TIMEOUT_S", "OpenAiSpeechToText"]

DEFAULT_TIMEOUT_S: Final = 30.0


def _endpoint(base_url: str) -> str:
    """``http://h:8000`` and ``http://h:8000/v1`` both → ``http://h:8000/v1/audio/transcriptions``."""
    base = base_url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return base + "/audio/transcriptions"


class OpenAiSpeechToText:
    """:class:`~xiaozhi_speech.base.SpeechToText` over an OpenAI-compatible server.

    Args:
        base_url: the server, with or without the ``/v1`` suffix.
        model: the model name the server knows (``whisper-1``, ``Systran/faster-whisper-small``).
        api_key: sent as a bearer token; None: no ``Authorization`` header.
        language: sent as the ISO 639-1 code (``en-US`` → ``en``) so the server does not
            have to guess.
        timeout_s: for the whole request.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        language: str = "en-US",
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.url = _endpoint(base_url)
        self.model = model
        self.language = language
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout_s)

    async def transcribe(self, pcm: bytes, sample_rate: int) -> Transcript:
        """Upload the audio as WAV and read the text.

        Raises:
            SpeechEngineError: unreachable, timed out, an HTTP error status, or an answer
                without ``text``.
        """
        started = time.perf_counter()
        form = {
            "model": self.model,
            "language": self.language.split("-")[0].lower(),
            "response_format": "json",
        }
        wav = wav_bytes(Speech(pcm=pcm, sample_rate=sample_rate))
        try:
            response = await self._client.post(
                self.url, data=form, files={"file": ("utterance.wav", wav, "audio/wav")}
            )
        except httpx.HTTPError as err:
            raise SpeechEngineError(f"transcription server {self.url}: {err!r}") from err
        if response.status_code != 200:
            raise SpeechEngineError(
                f"transcription server {self.url} answered {response.status_code}: "
                f"{response.text[:200]}"
            )
        try:
            text = response.json()["text"]
        except (ValueError, KeyError, TypeError) as err:
            raise SpeechEngineError(f"transcription server {self.url}: no text in answer") from err
        if not isinstance(text, str):
            raise SpeechEngineError(f"transcription server {self.url}: text is not a string")
        text = " ".join(text.split())
        return Transcript(
            text=text,
            accepted=bool(text),
            confidence=1.0 if text else 0.0,
            language=self.language,
            processing_time_ms=(time.perf_counter() - started) * 1000,
            audio_duration_ms=pcm_duration_ms(pcm, sample_rate),
            reason=None if text else "no_speech",
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()
