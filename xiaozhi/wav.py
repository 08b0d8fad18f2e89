"""WAV (RIFF) files of integer PCM, the audio format of seed 003 ("Audio Protocol").

Seed 003 fixes the microphone at 16 kHz mono 16-bit little-endian PCM and the speaker at
22.05 kHz mono 16-bit, both in WAV; seed-style devices send ``audio_data`` messages of base64
WAV chunks (design.md §4). Its "Header Format" table is the canonical 44-byte header that
:func:`encode_wav` writes::

    0  "RIFF"  4  RIFF size (file size - 8)  8  "WAVE"
    12 "fmt "  16 chunk size 16  20 audio format 1 (PCM)  22 channels  24 sample rate
    28 byte rate  32 block align  34 bits per sample
    36 "data"  40 data size  44 samples ...

:func:`decode_wav` parses by hand rather than with the ``wave`` module, so every refusal is a
typed error: the total size is checked against the limit first, each chunk's declared size
against the bytes left before it is read, and unknown chunks (``LIST``, ``fact``…) are skipped
by their size. Chunks of odd size are followed by one pad byte (RIFF); a missing pad after the
very last chunk, a common writer slip, is tolerated.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from xiaozhi.errors import (
    InvalidMessage,
    LengthMismatch,
    MissingField,
    PayloadTooLarge,
    TruncatedFrame,
)

__all__ = [
    "DEFAULT_MAX_WAV_BYTES",
    "DOWNLINK_FORMAT",
    "PCM_FORMAT_TAG",
    "UPLINK_FORMAT",
    "WAV_HEADER_SIZE",
    "WavFormat",
    "decode_wav",
    "encode_wav",
]

PCM_FORMAT_TAG: Final = 1
"""``audio format`` 1 = integer PCM; the only encoding we read (seed 003 "encoding: pcm")."""

WAV_HEADER_SIZE: Final = 44
"""Size of the canonical header :func:`encode_wav` writes (RIFF + fmt + data chunk header)."""

DEFAULT_MAX_WAV_BYTES: Final = 16 * 1024 * 1024
"""Default decode limit: about 6 minutes of 22.05 kHz mono 16-bit audio."""

_RIFF_HEADER: Final = struct.Struct("<4sI4s")  # "RIFF", size, "WAVE"
_CHUNK_HEADER: Final = struct.Struct("<4sI")  # id, size
_FMT_PCM: Final = struct.Struct("<HHIIHH")  # format, channels, rate, byte rate, align, bits
_U16_MAX: Final = 0xFFFF
_U32_MAX: Final = 0xFFFF_FFFF


@dataclass(frozen=True, slots=True)
class WavFormat:
    """The sample format of an integer PCM WAV file.

    Attributes:
        sample_rate: Frames per second, 1..2**32-1.
        channels: Interleaved channels, 1..65535.
        bits_per_sample: 8, 16, 24 or 32 (whole bytes; 8-bit is unsigned, others signed LE).

    Raises:
        ValueError: a field is out of range (caller misuse, checked when built).
    """

    sample_rate: int
    channels: int
    bits_per_sample: int

    def __post_init__(self) -> None:
        if not 1 <= self.sample_rate <= _U32_MAX:
            raise ValueError(f"sample_rate {self.sample_rate} outside 1..{_U32_MAX}")
        if not 1 <= self.channels <= _U16_MAX:
            raise ValueError(f"channels {self.channels} outside 1..{_U16_MAX}")
        if self.bits_per_sample not in (8, 16, 24, 32):
            raise ValueError(f"bits_per_sample {self.bits_per_sample} is not 8, 16, 24 or 32")
        if self.byte_rate > _U32_MAX:
            raise ValueError(f"byte rate {self.byte_rate} does not fit a u32")

    @property
    def block_align(self) -> int:
        """Bytes per frame (one sample of every channel)."""
        return self.channels * (self.bits_per_sample // 8)

    @property
    def byte_rate(self) -> int:
        """Bytes per second."""
        return self.sample_rate * self.block_align


UPLINK_FORMAT: Final = WavFormat(sample_rate=16000, channels=1, bits_per_sample=16)
"""The microphone: 16 kHz mono 16-bit PCM (seed 003 "Input Audio")."""

DOWNLINK_FORMAT: Final = WavFormat(sample_rate=22050, channels=1, bits_per_sample=16)
"""The speaker: 22.05 kHz mono 16-bit PCM (seed 003 "Output Audio")."""


def encode_wav(pcm: bytes, fmt: WavFormat) -> bytes:
    """Wrap PCM samples in the canonical 44-byte WAV header.

    Args:
        pcm: Interleaved little-endian samples, a whole number of frames.
        fmt: Their format.

    Returns:
        The WAV file, with a pad byte after odd-sized data as RIFF requires.

    Raises:
        ValueError: ``pcm`` is not a whole number of frames.
        PayloadTooLarge: the file would not fit RIFF's u32 size field.
    """
    if len(pcm) % fmt.block_align:
        raise ValueError(f"{len(pcm)} B of PCM is not a whole number of {fmt.block_align}-B frames")
    pad = b"\x00" if len(pcm) % 2 else b""
    riff_size = 4 + _CHUNK_HEADER.size + _FMT_PCM.size + _CHUNK_HEADER.size + len(pcm) + len(pad)
    if riff_size > _U32_MAX:
        raise PayloadTooLarge(size=riff_size, limit=_U32_MAX, what="RIFF size")
    return b"".join(
        (
            _RIFF_HEADER.pack(b"RIFF", riff_size, b"WAVE"),
            _CHUNK_HEADER.pack(b"fmt ", _FMT_PCM.size),
            _FMT_PCM.pack(
                PCM_FORMAT_TAG,
                fmt.channels,
                fmt.sample_rate,
                fmt.byte_rate,
                fmt.block_align,
                fmt.bits_per_sample,
            ),
            _CHUNK_HEADER.pack(b"data", len(pcm)),
            pcm,
            pad,
        )
    )


def _decode_fmt(body: bytes) -> WavFormat:
    """Check a ``fmt `` chunk body: integer PCM with consistent derived fields."""
    if len(body) < _FMT_PCM.size:
        raise TruncatedFrame(size=len(body), needed=_FMT_PCM.size, what="fmt chunk")
    tag, channels, rate, byte_rate, block_align, bits = _FMT_PCM.unpack_from(body)
    if tag != PCM_FORMAT_TAG:
        # 0xFFFE (WAVE_FORMAT_EXTENSIBLE) is refused too: seed 003 audio is plain PCM.
        raise InvalidMessage(f"WAV audio format {tag:#06x} is not PCM (1)", field="audio_format")
    try:
        fmt = WavFormat(sample_rate=rate, channels=channels, bits_per_sample=bits)
    except ValueError as err:
        raise InvalidMessage(f"WAV fmt chunk: {err}", field="fmt") from err
    if block_align != fmt.block_align:
        raise InvalidMessage(
            f"WAV block align {block_align} != channels x bytes per sample {fmt.block_align}",
            field="block_align",
        )
    if byte_rate != fmt.byte_rate:
        raise InvalidMessage(
            f"WAV byte rate {byte_rate} != sample rate x block align {fmt.byte_rate}",
            field="byte_rate",
        )
    return fmt


def decode_wav(data: bytes, *, max_bytes: int = DEFAULT_MAX_WAV_BYTES) -> tuple[WavFormat, bytes]:
    """Parse a WAV file of integer PCM.

    Args:
        data: The whole file.
        max_bytes: Largest file accepted, in bytes; checked before anything is parsed.

    Returns:
        The sample format and the PCM bytes of the ``data`` chunk.

    Raises:
        PayloadTooLarge: ``data`` exceeds ``max_bytes``.
        TruncatedFrame: shorter than the RIFF header, a chunk header or a 16-byte fmt body.
        InvalidMessage: not ``RIFF``/``WAVE``, not PCM, inconsistent fmt fields, a data chunk
            before the fmt chunk, a repeated fmt or data chunk, or data that is not a whole
            number of frames.
        LengthMismatch: the RIFF size disagrees with the file length, or a chunk's size
            runs past the end of the file.
        MissingField: no ``fmt `` or no ``data`` chunk.
    """
    if len(data) > max_bytes:
        raise PayloadTooLarge(size=len(data), limit=max_bytes, what="WAV file")
    if len(data) < _RIFF_HEADER.size:
        raise TruncatedFrame(size=len(data), needed=_RIFF_HEADER.size, what="WAV file")
    riff, riff_size, wave = _RIFF_HEADER.unpack_from(data)
    if riff != b"RIFF" or wave != b"WAVE":
        raise InvalidMessage(f"not a RIFF/WAVE file (starts {riff!r}...{wave!r})", field="riff")
    if riff_size != len(data) - 8:
        raise LengthMismatch(declared=riff_size, actual=len(data) - 8, what="RIFF size")

    fmt: WavFormat | None = None
    pcm: bytes | None = None
    offset = _RIFF_HEADER.size
    while offset < len(data):
        if len(data) - offset < _CHUNK_HEADER.size:
            raise TruncatedFrame(
                size=len(data) - offset, needed=_CHUNK_HEADER.size, what="WAV chunk header"
            )
        chunk_id, size = _CHUNK_HEADER.unpack_from(data, offset)
        offset += _CHUNK_HEADER.size
        left = len(data) - offset
        if size > left:
            raise LengthMismatch(declared=size, actual=left, what=f"WAV {chunk_id!r} chunk size")
        body = data[offset : offset + size]
        offset += size + (size % 2)  # RIFF pad byte; may be absent after the last chunk
        if chunk_id == b"fmt ":
            if fmt is not None:
                raise InvalidMessage("WAV has two fmt chunks", field="fmt")
            fmt = _decode_fmt(body)
        elif chunk_id == b"data":
            if fmt is None:
                raise InvalidMessage("WAV data chunk comes before the fmt chunk", field="data")
            if pcm is not None:
                raise InvalidMessage("WAV has two data chunks", field="data")
            if size % fmt.block_align:
                raise InvalidMessage(
                    f"WAV data is {size} B, not a whole number of {fmt.block_align}-B frames",
                    field="data",
                )
            pcm = bytes(body)
    if fmt is None:
        raise MissingField(field="fmt", model="WAV")
    if pcm is None:
        raise MissingField(field="data", model="WAV")
    return fmt, pcm
