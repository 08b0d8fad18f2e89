"""Audio on the edge: Opus uplink into utterances, and a stand-in TTS for the downlink.

Uplink (reference §1.5, §1.7): the device streams one Opus packet per binary frame, 16 kHz
mono, while listening. :class:`UtteranceBuffer` keeps the packets as sent, bounded, and cuts
them into :class:`Utterance`\\ s. Nothing at the edge consumes PCM (speech gets the Opus), so
a packet is decoded only where the VAD needs its energy (docs/benchmarks.md, issue 14
point 2):

* ``manual`` mode (push to talk): from ``listen start`` to ``listen stop``. No packet is
  decoded: libopus parses it (what makes ``opus_decode`` refuse a packet is its framing) and
  its TOC gives its duration;
* ``auto`` and ``realtime`` modes (server-side VAD ends the turn): an utterance begins with
  speech (frame energy over a threshold, with a short pre-roll kept) and ends after
  ``silence_ms`` of silence; the buffer keeps listening for the next one. The threshold
  follows the room: a frame is speech when it is over the fixed threshold *and*
  :data:`SPEECH_OVER_NOISE` above the noise floor: the higher of a slow tracker (down at
  once to a quieter frame, up by :data:`NOISE_FLOOR_RISE` per frame) and the quietest frame
  of the last few seconds, so a fan or a street at 15 dB under the voice does not hold a
  turn open. Each packet is decoded by libopus, called through ctypes into the decoder's
  own reused buffer (opuslib's wrapper copied the samples through a Python list, twice the
  cost of the decode), and its energy is a sum of squares in C (``math.hypot``);
* any mode: ``listen stop`` (or a new ``listen start``) ends the current one.

The edge publishes each utterance's metadata as an ``utterance`` event and, for the speech
workers, the utterance itself (its Opus packets as sent) on ``xiaozhi/utterances/{device_id}``.

Downlink: the hub's ``respond`` command carries the spoken answer; :class:`ToneSynthesizer`
is the **stand-in** the edge plays when a ``respond`` comes without audio (an integrator's
command, a hub with ``XIAOZHI_TTS_ENGINE=none``): an audible, deterministic chime (one short
note per word) encoded as real Opus.
"""

from __future__ import annotations

import array
import ctypes
import enum
import math
import sys
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import opuslib
import opuslib.api

from xiaozhi.errors import InvalidMessage
from xiaozhi.messages import ListenMode
from xiaozhi_runtime import opus

__all__ = [
    "MAX_OPUS_FRAME_SAMPLES",
    "SAMPLE_RATE",
    "SUPPORTED_FRAME_DURATIONS_MS",
    "OpusDecodeError",
    "OpusDecoder",
    "ToneSynthesizer",
    "Utterance",
    "UtteranceBuffer",
    "UtteranceReason",
    "mean_square",
    "packet_samples",
]

SAMPLE_RATE: Final = 16000
"""Uplink decode rate and TTS encode rate, Hz (reference §1.3: the firmware records 16 kHz)."""

SPEECH_OVER_NOISE: Final = 6.0
"""A speech frame's mean square over the noise floor's (about 8 dB)."""

NOISE_FLOOR_RISE: Final = 1.01
"""Per frame, the noise floor's mean square rises this much (0.7 dB/s at 60 ms frames):
slow enough that a sentence does not lift it over the voice, fast enough to follow a room
that got louder."""

NOISE_BLOCK_MS: Final = 1000
NOISE_BLOCKS: Final = 3
"""The noise floor is also the quietest frame of the last :data:`NOISE_BLOCKS` blocks of
:data:`NOISE_BLOCK_MS` (minimum statistics): in steady noise the floor is the noise after
one block, whatever it started from."""

_MIN_NOISE_FLOOR: Final = 50.0**2
"""The noise floor's lowest mean square (RMS 50, about -56 dBFS)."""

SUPPORTED_FRAME_DURATIONS_MS: Final = (20, 40, 60)
"""Frame durations a device may negotiate in its hello (reference §6.2)."""

MAX_OPUS_FRAME_SAMPLES: Final = SAMPLE_RATE * 120 // 1000
"""Room given to the decoder: the longest Opus packet is 120 ms. A device whose packets are
longer than the duration its hello announced still decodes; duration is counted from the
samples a packet holds, not from the announced duration."""

_SAMPLES_PER_MS: Final = SAMPLE_RATE // 1000
_BYTES_PER_SAMPLE: Final = 2
_RMS_STRIDE: Final = 4  # energy from every 4th sample: a quarter of the work, same decision

if sys.byteorder != "little":  # pragma: no cover - every supported target is little-endian
    raise ImportError("xiaozhi_edge.utterances assumes little-endian 16-bit PCM")

# libopus, the library opuslib found, through a handle of our own: the argument types set
# here do not change opuslib's. A CDLL call releases the GIL while libopus runs.
_LIB: Final = ctypes.CDLL(opuslib.api.lib_location)
_LIB.opus_decoder_create.restype = ctypes.c_void_p
_LIB.opus_decoder_create.argtypes = (ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int))
_LIB.opus_decoder_destroy.restype = None
_LIB.opus_decoder_destroy.argtypes = (ctypes.c_void_p,)
_OPUS_DECODE: Final = _LIB.opus_decode
_OPUS_DECODE.restype = ctypes.c_int
_OPUS_DECODE.argtypes = (
    ctypes.c_void_p,  # decoder state
    ctypes.c_char_p,  # packet
    ctypes.c_int32,  # its length
    ctypes.c_void_p,  # output samples
    ctypes.c_int,  # room for samples
    ctypes.c_int,  # decode_fec
)
_OPUS_PACKET_PARSE: Final = _LIB.opus_packet_parse
_OPUS_PACKET_PARSE.restype = ctypes.c_int
_OPUS_PACKET_PARSE.argtypes = (
    ctypes.c_char_p,  # packet
    ctypes.c_int32,  # its length
    ctypes.c_void_p,  # out_toc (NULL)
    ctypes.c_void_p,  # frames (NULL)
    ctypes.c_void_p,  # frame sizes (48 int16)
    ctypes.c_void_p,  # payload offset (NULL)
)
_OPUS_PACKET_SAMPLES: Final = _LIB.opus_packet_get_nb_samples
_OPUS_PACKET_SAMPLES.restype = ctypes.c_int
_OPUS_PACKET_SAMPLES.argtypes = (ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32)
_LIB.opus_strerror.restype = ctypes.c_char_p
_LIB.opus_strerror.argtypes = (ctypes.c_int,)
_OPUS_BUFFER_TOO_SMALL: Final = -2
_PARSE_SIZES: Final = (ctypes.c_int16 * 48)()  # opus_packet_parse's required output, unread


class OpusDecodeError(InvalidMessage):
    """An Opus packet that libopus refuses; the rest of the utterance is untouched."""

    def __init__(self, *, size: int, reason: str) -> None:
        super().__init__(f"Opus packet of {size} B does not decode: {reason}", field="opus")
        self.size, self.reason = size, reason


class UtteranceReason(enum.StrEnum):
    """Why an utterance ended."""

    STOP = "stop"  # listen stop, or a new listen start
    SILENCE = "silence"  # auto/realtime: silence_ms of silence after speech
    LIMIT = "limit"  # the buffer reached max_utterance_seconds


@dataclass(frozen=True, slots=True)
class Utterance:
    """One finished utterance: the Opus the device sent, and its PCM on demand.

    Attributes:
        duration_ms: Length of the audio.
        frames: Opus frames in it.
        dropped_frames: Frames of this utterance that were not kept: in manual mode, frames
            after the buffer was full (``reason`` is then ``limit``).
        reason: Why it ended (:class:`UtteranceReason`).
        mode: The listen mode it was recorded in.
        decode_errors: Frames of this utterance libopus refused (each also raised).
        packets: The Opus packets as the device sent them (empty for audio that did not come
            as Opus); what the edge forwards to speech.
        raw_pcm: The PCM, for audio that came as PCM (a seed device's WAV); None for Opus.
    """

    duration_ms: int
    frames: int
    dropped_frames: int
    reason: UtteranceReason
    mode: ListenMode = ListenMode.MANUAL
    decode_errors: int = 0
    packets: tuple[bytes, ...] = ()
    raw_pcm: bytes | None = None

    @property
    def pcm(self) -> bytes:
        """16 kHz mono signed 16-bit little-endian samples, decoded when asked (nothing on the
        edge's own path asks): the packets through a fresh decoder, as the hub's speech unit
        decodes the forwarded utterance."""
        if self.raw_pcm is not None:
            return self.raw_pcm
        return opus.decode(self.packets, sample_rate=SAMPLE_RATE)


class _Decoder(Protocol):
    """Decodes one packet into :attr:`samples` (valid until the next call)."""

    samples: memoryview

    def decode(self, packet: bytes) -> int:
        """Samples decoded, or a negative libopus error code."""
        ...


class OpusDecoder:
    """A 16 kHz mono libopus decoder writing into a buffer of its own, reused for every packet.

    opuslib allocated a buffer per packet and copied the samples out through a Python list
    (64 of its 116 us per frame, docs/benchmarks.md). Not thread-safe: one per device.
    """

    __slots__ = ("_buffer", "_state", "samples")

    def __init__(self) -> None:
        error = ctypes.c_int()
        state = _LIB.opus_decoder_create(SAMPLE_RATE, 1, ctypes.byref(error))
        if error.value or not state:  # pragma: no cover - out of memory
            raise MemoryError(f"opus_decoder_create: {_opus_reason(error.value)}")
        self._state: int = state
        self._buffer = (ctypes.c_int16 * MAX_OPUS_FRAME_SAMPLES)()
        self.samples = memoryview(self._buffer).cast("B").cast("h")
        """The last packet's samples are ``samples[:n]``, ``n`` from :meth:`decode`."""

    def decode(self, packet: bytes) -> int:
        """Decode ``packet`` into :attr:`samples`: how many, or a negative libopus error code.
        An empty packet is a lost one (libopus conceals the full buffer), as with opuslib."""
        return int(
            _OPUS_DECODE(self._state, packet, len(packet), self._buffer, MAX_OPUS_FRAME_SAMPLES, 0)
        )

    def __del__(self) -> None:
        state, self._state = getattr(self, "_state", 0), 0
        if state:
            _LIB.opus_decoder_destroy(state)


def packet_samples(packet: bytes) -> int:
    """The samples ``packet`` holds at 16 kHz without decoding it, or the negative libopus
    error :class:`OpusDecoder` would return for it: libopus refuses a packet for its framing
    (``opus_packet_parse``, the same check ``opus_decode`` starts with) or its length (more
    than :data:`MAX_OPUS_FRAME_SAMPLES`). An empty packet is a lost one, concealed over the
    whole buffer by a decoder."""
    if not packet:
        return MAX_OPUS_FRAME_SAMPLES
    size = len(packet)
    parsed = int(_OPUS_PACKET_PARSE(packet, size, None, None, _PARSE_SIZES, None))
    if parsed < 0:
        return parsed
    samples = int(_OPUS_PACKET_SAMPLES(packet, size, SAMPLE_RATE))
    return samples if samples <= MAX_OPUS_FRAME_SAMPLES else _OPUS_BUFFER_TOO_SMALL


def _opus_reason(code: int) -> str:
    """libopus's text for an error code."""
    text: bytes | None = _LIB.opus_strerror(code)
    return (text or b"unknown error").decode("ascii", "replace")


def mean_square(samples: memoryview) -> float:
    """Mean square of every ``_RMS_STRIDE``-th sample, summed in C (``math.hypot`` is
    exact to a rounding; `array` and `sum(map(operator.mul, ...))` cost 15 us a frame, this 5)."""
    strided = samples[::_RMS_STRIDE]
    count = len(strided)
    return math.hypot(*strided) ** 2 / count if count else 0.0


class UtteranceBuffer:
    """Cuts a device's Opus uplink into bounded utterances (module docstring).

    Args:
        max_utterance_seconds: Longest utterance kept. Beyond it, in ``manual`` mode
            further frames are counted as dropped until ``listen stop`` (the utterance then
            ends with reason ``limit``); in ``auto``/``realtime`` mode the utterance ends at
            once with reason ``limit`` and the next frames begin a new one. Memory never
            grows past this.
        silence_rms_threshold: Frame RMS (16-bit units) under which a frame is silence.
        silence_ms: Silence after speech that ends an auto/realtime utterance.
        preroll_ms: Audio kept from before the first speech frame (auto/realtime), so the
            first syllable is not cut.
        min_speech_ms: Speech needed before an utterance counts as begun (auto/realtime).
        decoder_factory: Builds the Opus decoder (:class:`OpusDecoder` by default); called by
            the first frame the VAD hears, so idle and push-to-talk devices hold no decoder.

    Every method is pure bookkeeping over what it is given; no clock is read.
    """

    def __init__(
        self,
        *,
        max_utterance_seconds: float = 15.0,
        silence_rms_threshold: float = 500.0,
        silence_ms: int = 600,
        preroll_ms: int = 300,
        min_speech_ms: int = 60,
        decoder_factory: Callable[[], _Decoder] = OpusDecoder,
    ) -> None:
        self.max_samples = int(max_utterance_seconds * SAMPLE_RATE)
        self.silence_ms = silence_ms
        self.min_speech_ms = min_speech_ms
        self._threshold_sq = float(silence_rms_threshold) ** 2
        self._preroll_samples = preroll_ms * _SAMPLES_PER_MS
        self._decoder_factory = decoder_factory
        self._decoder: _Decoder | None = None
        self._mode: ListenMode | None = None
        self.dropped_frames_total = 0
        self.decode_errors_total = 0
        # The room's quiet frames' mean square; it starts where the fixed threshold rules.
        self._noise_floor = self._threshold_sq / SPEECH_OVER_NOISE
        self._quiet_blocks: deque[float] = deque(maxlen=NOISE_BLOCKS)
        self._block_quietest = math.inf
        self._block_ms = 0
        self._reset_segment()

    # -- state -------------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        """True between ``start`` and ``stop``: frames are accepted."""
        return self._mode is not None

    @property
    def mode(self) -> ListenMode | None:
        """The current listen mode, or None when not listening."""
        return self._mode

    @property
    def buffered_ms(self) -> int:
        """Audio held for the current utterance (pre-roll included)."""
        return (self._samples + self._preroll_size) // _SAMPLES_PER_MS

    @property
    def current_packets(self) -> list[bytes]:
        """The frames of the utterance in progress, in order (the buffer's own list: read,
        do not keep); none in auto mode before speech began."""
        if self._mode is ListenMode.MANUAL or self._speech_started:
            return self._packets
        return []

    def _reset_segment(self) -> None:
        self._samples = 0
        self._packets: list[bytes] = []
        self._preroll: deque[tuple[int, bytes]] = deque()  # (samples, packet) per frame
        self._preroll_size = 0
        self._dropped = 0
        self._errors = 0
        self._speech_ms = 0
        self._speech_started = False
        self._silence_run_ms = 0

    # -- control -----------------------------------------------------------------------

    def start(self, mode: ListenMode) -> Utterance | None:
        """``listen start``: begin listening in ``mode``.

        Returns:
            The utterance that was in progress, ended with reason ``stop``, if any.
        """
        finished = self.stop() if self.listening else None
        self._mode = mode
        return finished

    def stop(self) -> Utterance | None:
        """``listen stop``: stop listening and end the current utterance.

        Returns:
            The utterance (reason ``stop``, or ``limit`` if frames were dropped), or None if
            nothing was said: no frame in manual mode, no speech in auto/realtime mode.
        """
        finished = None
        if self._speech_started or (self._mode is ListenMode.MANUAL and self._packets):
            reason = UtteranceReason.LIMIT if self._dropped else UtteranceReason.STOP
            finished = self._complete(reason)
        self._mode = None
        self._reset_segment()
        return finished

    def reset(self) -> None:
        """Discard everything buffered and stop listening (abort of a session)."""
        self._mode = None
        self._reset_segment()

    def release(self) -> None:
        """:meth:`reset` and free the decoder (connection closed)."""
        self.reset()
        self._decoder = None

    # -- audio -------------------------------------------------------------------------

    def feed(self, packet: bytes) -> Utterance | None:
        """Take one Opus packet into the current utterance.

        Returns:
            An utterance that this frame ended (silence or limit in auto/realtime mode),
            else None. A frame fed while not listening is counted as dropped.

        Raises:
            OpusDecodeError: libopus refused the packet. It is counted; nothing else is lost
                and the next packet is taken normally.
        """
        mode = self._mode
        if mode is None:
            self.dropped_frames_total += 1
            return None
        if mode is ListenMode.MANUAL:
            self._feed_manual(packet, self._checked(packet, packet_samples(packet)))
            return None
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = self._decoder_factory()
        count = self._checked(packet, decoder.decode(packet))
        return self._feed_vad(count, mean_square(decoder.samples[:count]), packet)

    def _checked(self, packet: bytes, count: int) -> int:
        if count < 0:
            self._errors += 1
            self.decode_errors_total += 1
            raise OpusDecodeError(size=len(packet), reason=_opus_reason(count))
        return count

    def _feed_manual(self, packet: bytes, count: int) -> None:
        if self._samples + count > self.max_samples:
            self._dropped += 1
            self.dropped_frames_total += 1
        else:
            self._samples += count
            self._packets.append(packet)

    def _feed_vad(self, count: int, mean_square: float, packet: bytes) -> Utterance | None:
        frame_ms = count // _SAMPLES_PER_MS
        voiced = self._voiced(mean_square, frame_ms)
        if not self._speech_started:
            self._feed_before_speech(count, packet, frame_ms, voiced)
            return None
        finished = None
        if self._samples + count > self.max_samples:
            finished = self._complete(UtteranceReason.LIMIT)
            self._reset_segment()
            # This frame opens the next utterance, as speech or as its pre-roll.
            self._feed_before_speech(count, packet, frame_ms, voiced)
            return finished
        self._samples += count
        self._packets.append(packet)
        self._silence_run_ms = 0 if voiced else self._silence_run_ms + frame_ms
        if self._silence_run_ms >= self.silence_ms:
            finished = self._complete(UtteranceReason.SILENCE)
            self._reset_segment()
        return finished

    def _voiced(self, mean_square: float, frame_ms: int) -> bool:
        """Speech: over the fixed threshold and :data:`SPEECH_OVER_NOISE` over the noise
        floor, which this frame then updates (module docstring)."""
        floor = self._noise_floor
        if self._quiet_blocks:
            floor = max(floor, min(self._quiet_blocks))
        voiced = mean_square >= self._threshold_sq and mean_square >= floor * SPEECH_OVER_NOISE
        # The slow tracker: down at once to a quieter frame, up slowly; never to zero
        # (digital silence), from where it could not rise again.
        self._noise_floor = max(
            _MIN_NOISE_FLOOR,
            mean_square
            if mean_square < self._noise_floor
            else self._noise_floor * NOISE_FLOOR_RISE,
        )
        # The window: the quietest frame of each of the last blocks of NOISE_BLOCK_MS.
        self._block_quietest = min(self._block_quietest, mean_square)
        self._block_ms += frame_ms
        if self._block_ms >= NOISE_BLOCK_MS:
            self._quiet_blocks.append(self._block_quietest)
            self._block_quietest = math.inf
            self._block_ms = 0
        return voiced

    def _feed_before_speech(self, count: int, packet: bytes, frame_ms: int, voiced: bool) -> None:
        """Keep ``packet`` as pre-roll; begin the utterance once speech lasted long enough."""
        self._keep_preroll(count, packet)
        self._speech_ms = self._speech_ms + frame_ms if voiced else 0
        if self._speech_ms >= self.min_speech_ms:
            self._speech_started = True
            self._samples = self._preroll_size
            self._packets = [kept for _, kept in self._preroll]
            self._preroll.clear()
            self._preroll_size = 0

    def _keep_preroll(self, count: int, packet: bytes) -> None:
        self._preroll.append((count, packet))
        self._preroll_size += count
        while len(self._preroll) > 1 and self._preroll_size > self._preroll_samples:
            self._preroll_size -= self._preroll.popleft()[0]

    def _complete(self, reason: UtteranceReason) -> Utterance:
        return Utterance(
            duration_ms=self._samples // _SAMPLES_PER_MS,
            frames=len(self._packets),
            dropped_frames=self._dropped,
            reason=reason,
            mode=self._mode or ListenMode.MANUAL,
            decode_errors=self._errors,
            packets=tuple(self._packets),
        )


# -- downlink: the stand-in TTS ----------------------------------------------------------

# A major pentatonic scale around A4-A5: any sequence of its notes sounds consonant.
_NOTES_HZ: Final = (440.0, 493.88, 554.37, 659.25, 739.99, 880.0)
_FADE_MS: Final = 8


class ToneSynthesizer:
    """A stand-in for text-to-speech; **no real TTS engine exists in this project**.

    For a sentence it produces a short, audible chime: one note per word (``ms_per_word``,
    a note from a pentatonic scale chosen by a CRC of the word, with soft edges and a short
    gap), capped at ``max_ms``. The same text always gives the same notes and the same Opus
    packets, so tests and the simulator can rely on it. Audio is 16 kHz mono, encoded with
    ``opuslib.Encoder(16000, 1, APPLICATION_VOIP)`` (a fresh encoder per sentence, which
    keeps the packets deterministic), one packet per ``frame_duration_ms``.

    Results are cached per ``(text, frame_duration_ms)`` in an LRU of ``cache_size``
    entries (3 s of Opus is about 10 KB, so the default holds about 320 KB). One instance is
    shared by every session of a process; it is not thread-safe (the event loop is one
    thread).

    Args:
        ms_per_word: Note length per word, gap included.
        max_ms: Longest result; longer sentences are cut.
        cache_size: LRU entries.
        amplitude: Peak level, 0..1 of full scale.
    """

    def __init__(
        self,
        *,
        ms_per_word: int = 80,
        max_ms: int = 3000,
        cache_size: int = 32,
        amplitude: float = 0.3,
    ) -> None:
        if ms_per_word < 2 * _FADE_MS or max_ms < ms_per_word or cache_size < 1:
            raise ValueError("need ms_per_word >= 16, max_ms >= ms_per_word, cache_size >= 1")
        if not 0 < amplitude <= 1:
            raise ValueError(f"amplitude {amplitude} outside (0, 1]")
        self.ms_per_word = ms_per_word
        self.max_ms = max_ms
        self.cache_size = cache_size
        self.amplitude = amplitude
        self._cache: OrderedDict[tuple[str, int], tuple[bytes, ...]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def synthesize(self, text: str, frame_duration_ms: int) -> tuple[bytes, ...]:
        """The Opus packets (not yet framed for a protocol version) that speak ``text``.

        Args:
            text: The sentence; an empty one still gives one note.
            frame_duration_ms: 20, 40 or 60, the device's negotiated duration.

        Returns:
            One Opus packet per frame, at least one.

        Raises:
            ValueError: an unsupported frame duration (caller misuse).
        """
        if frame_duration_ms not in SUPPORTED_FRAME_DURATIONS_MS:
            raise ValueError(
                f"frame duration {frame_duration_ms} ms not in {SUPPORTED_FRAME_DURATIONS_MS}"
            )
        key = (text, frame_duration_ms)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return cached
        self.misses += 1
        packets = self._encode(self.pcm(text), frame_duration_ms)
        self._cache[key] = packets
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return packets

    def pcm(self, text: str) -> bytes:
        """The chime for ``text`` as 16 kHz mono 16-bit little-endian PCM (not padded)."""
        words = text.split() or [""]
        per_word = self.ms_per_word * SAMPLE_RATE // 1000
        fade = _FADE_MS * SAMPLE_RATE // 1000
        note_len = per_word - 2 * fade  # the rest of the slot is a gap between notes
        peak = self.amplitude * 32767
        max_samples = self.max_ms * SAMPLE_RATE // 1000
        samples = array.array("h")
        for word in words:
            if len(samples) >= max_samples:
                break
            freq = _NOTES_HZ[zlib.crc32(word.casefold().encode("utf-8")) % len(_NOTES_HZ)]
            step = 2 * math.pi * freq / SAMPLE_RATE
            for i in range(note_len):
                edge = min(i, note_len - 1 - i)
                gain = 1.0 if edge >= fade else 0.5 - 0.5 * math.cos(math.pi * edge / fade)
                samples.append(int(peak * gain * math.sin(step * i)))
            samples.extend([0] * (per_word - note_len))
        del samples[max_samples:]
        return samples.tobytes()

    @staticmethod
    def _encode(pcm: bytes, frame_duration_ms: int) -> tuple[bytes, ...]:
        frame_bytes = SAMPLE_RATE * frame_duration_ms // 1000 * _BYTES_PER_SAMPLE
        remainder = len(pcm) % frame_bytes
        if remainder:
            pcm += bytes(frame_bytes - remainder)
        encoder: Any = opuslib.Encoder(SAMPLE_RATE, 1, opuslib.APPLICATION_VOIP)
        frame_samples = frame_bytes // _BYTES_PER_SAMPLE
        return tuple(
            bytes(encoder.encode(pcm[offset : offset + frame_bytes], frame_samples))
            for offset in range(0, len(pcm), frame_bytes)
        )

    def cache_info(self) -> dict[str, int]:
        """Hits, misses and entries of the LRU, for ``/stats``."""
        return {"hits": self.hits, "misses": self.misses, "size": len(self._cache)}
