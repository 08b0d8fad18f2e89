"""Voices on this machine: espeak-ng (the default, many languages) and flite (five US voices).

Both run as asyncio subprocesses, one per sentence, so the event loop never waits on them and
a hung synthesiser is killed after ``timeout_s``. Both are Debian packages
(``scripts/ensure-system-packages.sh``); nothing is downloaded at run time.

espeak-ng writes a WAV stream to stdout whose header sizes are placeholders (it cannot seek a
pipe), so its output is read by the fixed 44-byte layout it always writes rather than by
:func:`xiaozhi.wav.decode_wav`, which rightly refuses such sizes. flite cannot write to a pipe
at all and writes a proper WAV file into a temporary folder.
"""

from __future__ import annotations

import asyncio
import re
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from xiaozhi.errors import OperationFailed, WireError
from xiaozhi.wav import decode_wav
from xiaozhi_speech.base import Speech

__all__ = [
    "ESPEAK_VOICES",
    "FLITE_VOICES",
    "MANDARIN_VOICE",
    "EspeakVoice",
    "FliteVoice",
    "SynthesisFailed",
    "espeak_voice_for",
]

MANDARIN_VOICE: Final = "cmn-latn-pinyin"
"""espeak-ng's Mandarin voice that reads Chinese characters right.

espeak-ng 1.51 (Debian 12's) turns each character into pinyin with a tone digit and then, in
its plain ``cmn`` voice ("latin as English"), reads that pinyin as English: 你好 comes out as
"ni three hao three". ``cmn-latn-pinyin`` is the same Mandarin voice reading Latin text as
pinyin, so the characters are spoken in Mandarin with their tones (espeak-ng issue 1236)."""

ESPEAK_VOICES: Final[Mapping[str, str]] = {
    "en": "en-us",
    "en-us": "en-us",
    "en-gb": "en-gb",
    "zh": MANDARIN_VOICE,
    "zh-cn": MANDARIN_VOICE,
    "zh-sg": MANDARIN_VOICE,
    "zh-tw": MANDARIN_VOICE,
    "zh-hans": MANDARIN_VOICE,
    "zh-hant": MANDARIN_VOICE,
    "cmn": MANDARIN_VOICE,
    "yue": "yue",
    "zh-hk": "yue",
    "zh-mo": "yue",
    "vi": "vi",
    "vi-vn": "vi",
}
"""Language tag (lower case) → espeak-ng voice, where the two differ or a region matters;
any other tag is tried by its language part (``de-AT`` → ``de``). Chinese: Mandarin for
mainland China, Singapore and Taiwan, Cantonese for Hong Kong and Macau."""

_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_CHINESE_VOICES: Final = ("cmn", "yue", "zh")

FLITE_VOICES: Final = ("slt", "rms", "awb", "kal", "kal16")
"""flite's built-in English voices (``awb_time`` only speaks times, so it is left out)."""

DEFAULT_TIMEOUT_S: Final = 15.0
MAX_TEXT_CHARS: Final = 2000
"""Longer text is cut: a device plays at most a few sentences per answer."""

_ESPEAK_HEADER: Final = struct.Struct("<4sI4s4sIHHIIHH4sI")


class SynthesisFailed(OperationFailed):
    """A synthesiser is missing, failed, or produced no audio; the message says which."""


def espeak_voice_for(language: str) -> str:
    """The espeak-ng voice for a language tag: ``en`` → ``en-us``, ``zh-CN`` → Mandarin
    (:data:`MANDARIN_VOICE`), ``vi`` → ``vi``."""
    tag = language.replace("_", "-").lower()
    return ESPEAK_VOICES.get(tag) or ESPEAK_VOICES.get(tag.split("-")[0]) or tag.split("-")[0]


async def _run(command: list[str], *, stdin: bytes | None, timeout_s: float) -> bytes:
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as err:
        raise SynthesisFailed(f"{command[0]} is not installed: {err}") from err
    try:
        out, err_text = await asyncio.wait_for(process.communicate(stdin), timeout_s)
    except TimeoutError as err:
        process.kill()
        await process.wait()
        raise SynthesisFailed(f"{command[0]} took longer than {timeout_s} s") from err
    if process.returncode != 0:
        message = err_text.decode("utf-8", "replace").strip()[:200]
        raise SynthesisFailed(f"{command[0]} failed ({process.returncode}): {message}")
    return out


def _espeak_wav(data: bytes) -> Speech:
    """espeak-ng's stdout WAV: the canonical header (sizes unset), then 16-bit mono samples."""
    if len(data) < _ESPEAK_HEADER.size:
        raise SynthesisFailed(f"espeak-ng wrote {len(data)} B, not a WAV stream")
    riff, _, wave, fmt, _, tag, channels, rate, _, _, bits, data_id, _ = _ESPEAK_HEADER.unpack(
        data[: _ESPEAK_HEADER.size]
    )
    if (riff, wave, fmt, data_id, tag, channels, bits) != (
        b"RIFF",
        b"WAVE",
        b"fmt ",
        b"data",
        1,
        1,
        16,
    ):
        raise SynthesisFailed("espeak-ng wrote a WAV stream other than 16-bit mono PCM")
    pcm = data[_ESPEAK_HEADER.size :]
    return Speech(pcm=pcm[: len(pcm) - len(pcm) % 2], sample_rate=rate)


class EspeakVoice:
    """espeak-ng (``espeak-ng --stdout -v VOICE``), the default voice: about 100 languages,
    22.05 kHz, robotic but clear, a few ms of CPU per word.

    Args:
        voices: language tag → espeak-ng voice, over :data:`ESPEAK_VOICES`; a value may carry
            a variant (``en-us+f3`` for a female voice).
        words_per_minute: speaking rate (espeak's ``-s``); None: espeak's 175.
        timeout_s: a synthesis taking longer is killed and raises.
    """

    def __init__(
        self,
        *,
        voices: Mapping[str, str] | None = None,
        words_per_minute: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.voices = {k.lower(): v for k, v in (voices or {}).items()}
        self.words_per_minute = words_per_minute
        self.timeout_s = timeout_s

    def voice_for(self, language: str) -> str:
        tag = language.replace("_", "-").lower()
        return self.voices.get(tag) or espeak_voice_for(tag)

    async def synthesize(self, text: str, *, language: str = "en") -> Speech:
        """Speak ``text``; an empty text gives empty speech.

        Raises:
            SynthesisFailed: espeak-ng is missing, failed, or timed out.
        """
        text = " ".join(text.split())[:MAX_TEXT_CHARS]
        voice = self.voice_for(language)
        if voice.startswith(_CHINESE_VOICES):
            # "50%" would be read "fifty percent" in English: say 百分之50 ("fifty percent").
            text = _PERCENT.sub(r"百分之\1", text)
        command = ["espeak-ng", "--stdout", "-v", voice]
        if self.words_per_minute:
            command += ["-s", str(self.words_per_minute)]
        # Text on stdin: text that starts with "-" is never read as an option.
        out = await _run(command, stdin=text.encode("utf-8"), timeout_s=self.timeout_s)
        return _espeak_wav(out)


class FliteVoice:
    """flite (``flite -voice VOICE -t TEXT -o FILE``): five US English voices, 16 kHz; a more
    natural second voice for English, and a second speaker for testing the recogniser.

    Args:
        voice: one of :data:`FLITE_VOICES`.
        timeout_s: a synthesis taking longer is killed and raises.

    Raises:
        ValueError: an unknown voice.
    """

    def __init__(self, voice: str = "slt", *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if voice not in FLITE_VOICES:
            raise ValueError(f"flite voice {voice!r} is not one of {FLITE_VOICES}")
        self.voice = voice
        self.timeout_s = timeout_s

    async def synthesize(self, text: str, *, language: str = "en") -> Speech:
        """Speak ``text`` (English whatever ``language`` says: flite has no other).

        Raises:
            SynthesisFailed: flite is missing, failed, timed out or wrote no WAV.
        """
        text = " ".join(text.split())[:MAX_TEXT_CHARS]
        with tempfile.TemporaryDirectory(prefix="xiaozhi-flite-") as folder:
            path = Path(folder) / "speech.wav"
            command = ["flite", "-voice", self.voice, "-t", text, "-o", str(path)]
            await _run(command, stdin=None, timeout_s=self.timeout_s)
            try:
                fmt, pcm = decode_wav(path.read_bytes())
            except (OSError, WireError) as err:
                raise SynthesisFailed(f"flite wrote no usable WAV: {err}") from err
        if fmt.channels != 1 or fmt.bits_per_sample != 16:
            raise SynthesisFailed(f"flite wrote {fmt}, not 16-bit mono")
        return Speech(pcm=pcm, sample_rate=fmt.sample_rate)
