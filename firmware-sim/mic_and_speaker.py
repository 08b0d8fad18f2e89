"""Real Opus audio for simulated devices: the microphone uplink and the TTS downlink.

Uplink (reference 1.3, 1.7): one Opus packet of 60 ms of 16 kHz mono audio per binary frame,
about 16.7 frames/s. :func:`load_microphone_wav` reads a WAV file for ``speak`` and insists on
16 kHz (the simulator does not resample: a resampler would be a second source of artefacts in
QA recordings); channels are mixed down and 8/24/32-bit samples converted to 16-bit, which is
lossless enough and needs no filter.

Speaking text (``--say``): :func:`synthesize_microphone` has a synthetic voice (espeak-ng
or flite, through :mod:`xiaozhi_speech`) say it, resampled once to 16 kHz, with the silence
before and after that a person leaves, so a server's end-of-speech detection sees the turn end.

Downlink: the device decodes at the server's ``audio_params.sample_rate`` (24 kHz by default,
reference 1.4). :class:`TtsRecorder` decodes what the device played and writes it as a WAV.
"""

from __future__ import annotations

import array
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from xiaozhi.errors import OperationFailed, WireError
from xiaozhi.wav import UPLINK_FORMAT, WavFormat, decode_wav, encode_wav

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "FRAME_MS",
    "OPUS_RATES",
    "SAMPLES_PER_FRAME",
    "AudioFormatError",
    "MicrophoneEncoder",
    "TtsRecorder",
    "load_microphone_wav",
    "synthesize_microphone",
    "tone",
]

FRAME_MS: Final = 60
SAMPLES_PER_FRAME: Final = UPLINK_FORMAT.sample_rate * FRAME_MS // 1000  # 960
OPUS_RATES: Final = (8000, 12000, 16000, 24000, 48000)
"""Sample rates an Opus decoder can output."""


LEAD_IN_MS: Final = 300
"""Silence before a synthesized sentence (the breath before speaking)."""

TRAIL_MS: Final = 1200
"""Silence after it: twice the edge's end-of-speech silence, so auto mode ends the turn."""


class AudioFormatError(OperationFailed):
    """A WAV file the microphone cannot stream; the message says how to convert it."""


async def synthesize_microphone(text: str, *, voice: str = "espeak") -> bytes:
    """``text`` said by a synthetic voice, as the microphone's 16 kHz 16-bit mono PCM.

    Args:
        voice: ``espeak`` or ``flite``, optionally with the engine's voice name
            (``espeak:en-us+f3``, ``flite:slt``).

    Raises:
        AudioFormatError: an unknown engine, or the engine failed (not installed...).
    """
    from xiaozhi_speech import EspeakVoice, FliteVoice, SynthesisFailed, TextToSpeech

    engine, _, name = voice.partition(":")
    tts: TextToSpeech
    try:
        if engine == "espeak":
            tts = EspeakVoice(voices={"en": name} if name else None)
        elif engine == "flite":
            tts = FliteVoice(name or "slt")
        else:
            raise ValueError(f"unknown voice {voice!r}: espeak[:NAME] or flite[:NAME]")
        speech = await tts.synthesize(text)
    except (ValueError, SynthesisFailed) as err:
        raise AudioFormatError(f"could not say {text!r} with {voice}: {err}") from err
    from xiaozhi_speech import resample

    rate = UPLINK_FORMAT.sample_rate
    pcm = resample(speech.pcm, speech.sample_rate, rate)
    return bytes(LEAD_IN_MS * rate // 1000 * 2) + pcm + bytes(TRAIL_MS * rate // 1000 * 2)


def _to_int16(pcm: bytes, bits: int) -> array.array[int]:
    if bits == 16:
        out = array.array("h")
        out.frombytes(pcm)
    elif bits == 8:  # unsigned, centred on 128
        out = array.array("h", ((b - 128) << 8 for b in pcm))
    elif bits == 24:
        top_bytes = (pcm[i + 1 : i + 3] for i in range(0, len(pcm), 3))
        out = array.array("h", (int.from_bytes(b, "little", signed=True) for b in top_bytes))
    else:  # 32
        wide = array.array("i")
        wide.frombytes(pcm)
        if sys.byteorder == "big":  # pragma: no cover - WAV is little-endian
            wide.byteswap()
        out = array.array("h", (v >> 16 for v in wide))
    if bits == 16 and sys.byteorder == "big":  # pragma: no cover
        out.byteswap()
    return out


def load_microphone_wav(path: Path | str) -> bytes:
    """Read a WAV file as 16 kHz mono 16-bit little-endian PCM, the microphone's format.

    Raises:
        AudioFormatError: not a PCM WAV file, or not 16 kHz (no resampling here).
        OSError: the file cannot be read.
    """
    path = Path(path)
    try:
        fmt, pcm = decode_wav(path.read_bytes())
    except WireError as err:
        raise AudioFormatError(f"{path}: not a PCM WAV file: {err}") from err
    if fmt.sample_rate != UPLINK_FORMAT.sample_rate:
        raise AudioFormatError(
            f"{path}: {fmt.sample_rate} Hz, but the microphone streams 16000 Hz mono 16-bit; "
            f"convert it first, e.g. `sox {path.name} -r 16000 -c 1 -b 16 out.wav` or "
            f"`ffmpeg -i {path.name} -ar 16000 -ac 1 -sample_fmt s16 out.wav`"
        )
    samples = _to_int16(pcm, fmt.bits_per_sample)
    if fmt.channels > 1:
        channels = fmt.channels
        samples = array.array(
            "h",
            (sum(samples[i : i + channels]) // channels for i in range(0, len(samples), channels)),
        )
    if sys.byteorder == "big":  # pragma: no cover
        samples.byteswap()
    return samples.tobytes()


def tone(seconds: float, *, hz: float = 440.0, rate: int = 16000, amplitude: int = 8000) -> bytes:
    """A sine tone as 16-bit mono PCM (demo speech and test audio)."""
    import math

    count = int(seconds * rate)
    samples = array.array(
        "h", (int(amplitude * math.sin(2 * math.pi * hz * i / rate)) for i in range(count))
    )
    return samples.tobytes()


class MicrophoneEncoder:
    """Opus encoder of the uplink: 16 kHz mono, 60 ms packets (opuslib, VoIP application)."""

    def __init__(self) -> None:
        import opuslib

        self._encoder = opuslib.Encoder(UPLINK_FORMAT.sample_rate, 1, opuslib.APPLICATION_VOIP)

    def packets(self, pcm: bytes) -> Iterator[bytes]:
        """One Opus packet per 60 ms of ``pcm``; the last frame is padded with silence."""
        frame_bytes = SAMPLES_PER_FRAME * 2
        for offset in range(0, len(pcm), frame_bytes):
            frame = pcm[offset : offset + frame_bytes]
            if len(frame) < frame_bytes:
                frame = frame + bytes(frame_bytes - len(frame))
            yield self._encoder.encode(frame, SAMPLES_PER_FRAME)


class TtsRecorder:
    """Decodes the downlink Opus packets the device played and keeps the PCM.

    Args:
        sample_rate: the server's ``audio_params.sample_rate``; a rate Opus cannot output
            (e.g. seed 003's 22050) is decoded at the next Opus rate above it.
    """

    def __init__(self, sample_rate: int = 24000) -> None:
        import opuslib

        self.sample_rate = next((r for r in OPUS_RATES if r >= sample_rate), OPUS_RATES[-1])
        self._decoder = opuslib.Decoder(self.sample_rate, 1)
        self._pcm = bytearray()
        self.packets = 0
        self.errors = 0

    def add(self, opus: bytes) -> None:
        """Decode one packet (up to 120 ms); a corrupt packet is counted, not raised."""
        import opuslib

        try:
            self._pcm += self._decoder.decode(opus, self.sample_rate * 120 // 1000)
        except opuslib.OpusError:
            self.errors += 1
            return
        self.packets += 1

    @property
    def seconds(self) -> float:
        """Duration decoded so far."""
        return len(self._pcm) / 2 / self.sample_rate

    def wav(self) -> bytes:
        """Everything decoded so far, as a 16-bit mono WAV file."""
        return encode_wav(bytes(self._pcm), WavFormat(self.sample_rate, 1, 16))

    def write(self, path: Path | str) -> None:
        """Write :meth:`wav` to ``path`` (replacing it)."""
        Path(path).write_bytes(self.wav())
