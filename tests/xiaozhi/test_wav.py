"""Seed 003 WAV audio: golden headers, round trips, chunk walking and hostile files."""

from __future__ import annotations

import io
import struct
import wave

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xiaozhi import wav as wav_module
from xiaozhi.errors import (
    InvalidMessage,
    LengthMismatch,
    MissingField,
    PayloadTooLarge,
    TruncatedFrame,
    WireError,
)
from xiaozhi.wav import (
    DOWNLINK_FORMAT,
    UPLINK_FORMAT,
    WAV_HEADER_SIZE,
    WavFormat,
    decode_wav,
    encode_wav,
)

PCM = b"\x01\x00\xff\x7f"  # two 16-bit samples: 1, 32767

# Seed 003 "Header Format", filled in for the microphone format and 4 bytes of samples.
UPLINK_WAV = (
    b"RIFF"
    b"\x28\x00\x00\x00"  # RIFF size 40 = 36 + 4
    b"WAVE"
    b"fmt "
    b"\x10\x00\x00\x00"  # fmt chunk size 16
    b"\x01\x00"  # audio format 1 = PCM
    b"\x01\x00"  # 1 channel
    b"\x80\x3e\x00\x00"  # 16000 Hz
    b"\x00\x7d\x00\x00"  # byte rate 32000
    b"\x02\x00"  # block align 2
    b"\x10\x00"  # 16 bits per sample
    b"data"
    b"\x04\x00\x00\x00"  # data size 4
) + PCM

DOWNLINK_WAV_HEADER = (
    b"RIFF\x28\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00"
    b"\x22\x56\x00\x00"  # 22050 Hz
    b"\x44\xac\x00\x00"  # byte rate 44100
    b"\x02\x00\x10\x00data\x04\x00\x00\x00"
)


def test_seed_formats() -> None:
    assert WavFormat(16000, 1, 16) == UPLINK_FORMAT
    assert WavFormat(22050, 1, 16) == DOWNLINK_FORMAT
    assert (UPLINK_FORMAT.block_align, UPLINK_FORMAT.byte_rate) == (2, 32000)


def test_uplink_golden_both_directions() -> None:
    assert encode_wav(PCM, UPLINK_FORMAT) == UPLINK_WAV
    assert decode_wav(UPLINK_WAV) == (UPLINK_FORMAT, PCM)
    assert len(UPLINK_WAV) == WAV_HEADER_SIZE + len(PCM)


def test_downlink_golden_both_directions() -> None:
    assert encode_wav(PCM, DOWNLINK_FORMAT) == DOWNLINK_WAV_HEADER + PCM
    assert decode_wav(DOWNLINK_WAV_HEADER + PCM) == (DOWNLINK_FORMAT, PCM)


def _stdlib_wav(pcm: bytes, fmt: WavFormat) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(fmt.channels)
        writer.setsampwidth(fmt.bits_per_sample // 8)
        writer.setframerate(fmt.sample_rate)
        writer.writeframes(pcm)
    return out.getvalue()


@pytest.mark.parametrize("fmt", [UPLINK_FORMAT, DOWNLINK_FORMAT, WavFormat(48000, 2, 24)])
def test_agrees_with_the_stdlib_writer(fmt: WavFormat) -> None:
    pcm = bytes(range(fmt.block_align * 5))
    assert encode_wav(pcm, fmt) == _stdlib_wav(pcm, fmt)
    assert decode_wav(_stdlib_wav(pcm, fmt)) == (fmt, pcm)


def test_empty_audio() -> None:
    data = encode_wav(b"", UPLINK_FORMAT)
    assert len(data) == WAV_HEADER_SIZE
    assert decode_wav(data) == (UPLINK_FORMAT, b"")


def test_odd_data_gets_a_pad_byte() -> None:
    fmt = WavFormat(8000, 1, 8)
    data = encode_wav(b"\x80\x81\x82", fmt)
    assert data[4:8] == (36 + 3 + 1).to_bytes(4, "little")
    assert data[40:44] == b"\x03\x00\x00\x00"
    assert data.endswith(b"\x80\x81\x82\x00")
    assert decode_wav(data) == (fmt, b"\x80\x81\x82")


# --- chunk walking ---------------------------------------------------------------------------


def chunk(chunk_id: bytes, body: bytes, *, pad: bool = True) -> bytes:
    padding = b"\x00" if pad and len(body) % 2 else b""
    return chunk_id + struct.pack("<I", len(body)) + body + padding


def riff(*chunks: bytes, form: bytes = b"WAVE") -> bytes:
    body = form + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt_body(
    *,
    tag: int = 1,
    channels: int = 1,
    rate: int = 16000,
    byte_rate: int = 32000,
    align: int = 2,
    bits: int = 16,
) -> bytes:
    return struct.pack("<HHIIHH", tag, channels, rate, byte_rate, align, bits)


FMT = chunk(b"fmt ", fmt_body())
DATA = chunk(b"data", PCM)


def test_unknown_chunks_are_skipped_with_their_pad() -> None:
    data = riff(chunk(b"LIST", b"INFOabc"), FMT, chunk(b"fact", b"\x02\x00\x00\x00"), DATA)
    assert decode_wav(data) == (UPLINK_FORMAT, PCM)
    assert decode_wav(riff(FMT, DATA, chunk(b"LIST", b"xyz"))) == (UPLINK_FORMAT, PCM)


def test_missing_pad_after_the_last_chunk_is_tolerated() -> None:
    assert decode_wav(riff(FMT, DATA, chunk(b"LIST", b"xyz", pad=False))) == (UPLINK_FORMAT, PCM)


def test_fmt_chunk_with_extension_bytes() -> None:
    # WAVE_FORMAT_PCM written with cbSize = 0 (an 18-byte fmt chunk), as some tools do.
    data = riff(chunk(b"fmt ", fmt_body() + b"\x00\x00"), DATA)
    assert decode_wav(data) == (UPLINK_FORMAT, PCM)


def test_accepts_bytes_like_input() -> None:
    assert decode_wav(bytearray(UPLINK_WAV)) == (UPLINK_FORMAT, PCM)
    assert decode_wav(memoryview(UPLINK_WAV)) == (UPLINK_FORMAT, PCM)


# --- hostile files ---------------------------------------------------------------------------

HOSTILE: list[tuple[str, bytes, type[WireError]]] = [
    ("empty", b"", TruncatedFrame),
    ("riff header cut", UPLINK_WAV[:11], TruncatedFrame),
    ("not RIFF", b"RIFX" + UPLINK_WAV[4:], InvalidMessage),
    ("not WAVE", riff(FMT, DATA, form=b"AVI "), InvalidMessage),
    ("riff size too big", UPLINK_WAV[:4] + b"\x29\x00\x00\x00" + UPLINK_WAV[8:], LengthMismatch),
    ("riff size too small", UPLINK_WAV[:4] + b"\x27\x00\x00\x00" + UPLINK_WAV[8:], LengthMismatch),
    ("file cut, riff size kept", UPLINK_WAV[:-1], LengthMismatch),
    ("trailing bytes, riff size kept", UPLINK_WAV + b"\x00\x00", LengthMismatch),
    ("no chunks", riff(), MissingField),
    ("chunk header cut", riff(FMT, b"dat"), TruncatedFrame),
    ("data size too long", riff(FMT, b"data\x06\x00\x00\x00" + PCM), LengthMismatch),
    ("data size 4 GiB", riff(FMT, b"data\xff\xff\xff\xff" + PCM), LengthMismatch),
    ("data size too short", riff(FMT, b"data\x02\x00\x00\x00" + PCM), TruncatedFrame),
    ("fmt size too long", riff(b"fmt \xff\x00\x00\x00" + fmt_body()), LengthMismatch),
    ("fmt body short", riff(chunk(b"fmt ", fmt_body()[:14]), DATA), TruncatedFrame),
    ("IEEE float", riff(chunk(b"fmt ", fmt_body(tag=3)), DATA), InvalidMessage),
    ("extensible", riff(chunk(b"fmt ", fmt_body(tag=0xFFFE)), DATA), InvalidMessage),
    ("zero channels", riff(chunk(b"fmt ", fmt_body(channels=0, align=0)), DATA), InvalidMessage),
    ("zero rate", riff(chunk(b"fmt ", fmt_body(rate=0, byte_rate=0)), DATA), InvalidMessage),
    ("12-bit", riff(chunk(b"fmt ", fmt_body(bits=12)), DATA), InvalidMessage),
    ("block align wrong", riff(chunk(b"fmt ", fmt_body(align=4)), DATA), InvalidMessage),
    ("byte rate wrong", riff(chunk(b"fmt ", fmt_body(byte_rate=16000)), DATA), InvalidMessage),
    (
        "byte rate overflows u32",
        riff(chunk(b"fmt ", fmt_body(rate=0xFFFFFFFF, byte_rate=0xFFFFFFFE)), DATA),
        InvalidMessage,
    ),
    ("data before fmt", riff(DATA, FMT), InvalidMessage),
    ("two fmt chunks", riff(FMT, FMT, DATA), InvalidMessage),
    ("two data chunks", riff(FMT, DATA, DATA), InvalidMessage),
    ("partial frame", riff(FMT, chunk(b"data", b"\x01\x02\x03")), InvalidMessage),
    ("no fmt", riff(chunk(b"LIST", b"INFO")), MissingField),
    ("no data", riff(FMT, chunk(b"LIST", b"INFO")), MissingField),
]


@pytest.mark.parametrize(("data", "error"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_file_raises_typed_error(data: bytes, error: type[WireError]) -> None:
    with pytest.raises(error):
        decode_wav(data)


def test_size_limit_is_checked_first() -> None:
    with pytest.raises(PayloadTooLarge) as info:
        decode_wav(b"\x00" * 100, max_bytes=99)
    assert (info.value.size, info.value.limit) == (100, 99)
    assert decode_wav(UPLINK_WAV, max_bytes=len(UPLINK_WAV)) == (UPLINK_FORMAT, PCM)


def test_errors_name_the_problem() -> None:
    with pytest.raises(MissingField) as missing:
        decode_wav(riff(FMT))
    assert missing.value.field == "data"
    with pytest.raises(InvalidMessage) as not_pcm:
        decode_wav(riff(chunk(b"fmt ", fmt_body(tag=3)), DATA))
    assert not_pcm.value.field == "audio_format"
    with pytest.raises(LengthMismatch) as mismatch:
        decode_wav(riff(FMT, b"data\x06\x00\x00\x00" + PCM))
    assert (mismatch.value.declared, mismatch.value.actual) == (6, 4)


# --- encode-side misuse ----------------------------------------------------------------------


def test_encode_refuses_partial_frames() -> None:
    with pytest.raises(ValueError, match="whole number"):
        encode_wav(b"\x00\x00\x00", UPLINK_FORMAT)


def test_encode_refuses_files_over_u32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wav_module, "_U32_MAX", 40)  # a real 4 GiB file is too big for a test
    assert encode_wav(PCM, UPLINK_FORMAT) == UPLINK_WAV
    with pytest.raises(PayloadTooLarge):
        encode_wav(PCM * 2, UPLINK_FORMAT)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ((0, 1, 16), "sample_rate"),
        ((1 << 32, 1, 16), "sample_rate"),
        ((16000, 0, 16), "channels"),
        ((16000, 1 << 16, 16), "channels"),
        ((16000, 1, 12), "bits_per_sample"),
        ((0xFFFFFFFF, 2, 16), "byte rate"),
    ],
)
def test_format_checks_its_fields(fields: tuple[int, int, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WavFormat(*fields)


# --- properties ------------------------------------------------------------------------------

formats = st.builds(
    WavFormat,
    sample_rate=st.integers(1, 192_000),
    channels=st.integers(1, 8),
    bits_per_sample=st.sampled_from([8, 16, 24, 32]),
)


@st.composite
def format_and_pcm(draw: st.DrawFn) -> tuple[WavFormat, bytes]:
    fmt = draw(formats)
    frames = draw(st.integers(0, 64))
    return fmt, draw(
        st.binary(min_size=frames * fmt.block_align, max_size=frames * fmt.block_align)
    )


@given(format_and_pcm())
def test_round_trip(case: tuple[WavFormat, bytes]) -> None:
    fmt, pcm = case
    assert decode_wav(encode_wav(pcm, fmt)) == (fmt, pcm)


@given(format_and_pcm())
def test_valid_bytes_reencode_identically(case: tuple[WavFormat, bytes]) -> None:
    fmt, pcm = case
    data = riff(
        chunk(
            b"fmt ",
            fmt_body(
                channels=fmt.channels,
                rate=fmt.sample_rate,
                byte_rate=fmt.byte_rate,
                align=fmt.block_align,
                bits=fmt.bits_per_sample,
            ),
        ),
        chunk(b"data", pcm),
    )
    decoded_fmt, decoded_pcm = decode_wav(data)
    assert encode_wav(decoded_pcm, decoded_fmt) == data


@given(st.binary(max_size=128))
def test_arbitrary_bytes_decode_or_raise_a_wire_error(data: bytes) -> None:
    try:
        fmt, pcm = decode_wav(b"RIFF" + struct.pack("<I", len(data) + 4) + b"WAVE" + data)
    except WireError:
        return
    assert len(pcm) % fmt.block_align == 0
