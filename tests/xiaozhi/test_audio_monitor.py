"""Seed 004 audio monitor packets: golden vectors, round trips, hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xiaozhi import audio_monitor
from xiaozhi.audio_monitor import (
    AUDIO_HEADER,
    DEFAULT_MAX_PAYLOAD_BYTES,
    AudioPacket,
    ListenerStream,
    MonitorPacketType,
    decode_audio_packet,
    encode_audio_packet,
)
from xiaozhi.errors import (
    LengthMismatch,
    PayloadTooLarge,
    TruncatedFrame,
    UnknownFrameType,
    WireError,
)

# Seed 004's test frame: data [1, 2, 3, 4, 5], duration 20 ms, sequence 42; timestamp 1000 ms.
SEED_PACKET = AudioPacket(
    timestamp_ms=1000, duration_ms=20, sequence=42, opus=b"\x01\x02\x03\x04\x05"
)
SEED_BYTES = (
    b"\x02"  # type: audio
    b"\xe8\x03\x00\x00"  # timestamp 1000, u32 LE
    b"\x14\x00"  # duration 20, u16 LE
    b"\x2a\x00\x00\x00"  # sequence 42, u32 LE
    b"\x05\x00\x00\x00"  # data length 5, u32 LE
    b"\x01\x02\x03\x04\x05"
)


def test_golden_packet_both_directions() -> None:
    assert encode_audio_packet(SEED_PACKET) == SEED_BYTES
    assert decode_audio_packet(SEED_BYTES) == SEED_PACKET


def test_header_is_15_bytes_of_type_2() -> None:
    assert AUDIO_HEADER.size == 15
    assert MonitorPacketType.AUDIO == 0x02
    assert encode_audio_packet(SEED_PACKET)[0] == 0x02


def test_empty_opus_means_packet_loss_and_is_valid() -> None:
    data = b"\x02" + b"\x00" * 14
    assert decode_audio_packet(data) == AudioPacket(0, 0, 0, b"")
    assert encode_audio_packet(AudioPacket(0, 0, 0, b"")) == data


def test_max_field_values() -> None:
    packet = AudioPacket(0xFFFFFFFF, 0xFFFF, 0xFFFFFFFF, b"\x00")
    data = encode_audio_packet(packet)
    assert data[:15] == b"\x02" + b"\xff" * 10 + b"\x01\x00\x00\x00"
    assert decode_audio_packet(bytearray(data)) == packet


def header(kind: int = 2, length: int = 5) -> bytes:
    return AUDIO_HEADER.pack(kind, 1000, 20, 42, length)


HOSTILE: list[tuple[str, bytes, type[WireError]]] = [
    ("empty", b"", TruncatedFrame),
    ("type byte only", b"\x02", TruncatedFrame),
    ("header cut", SEED_BYTES[:14], TruncatedFrame),
    ("data short", SEED_BYTES[:-1], LengthMismatch),
    ("header only", header(), LengthMismatch),
    ("trailing bytes", SEED_BYTES + b"\x00", LengthMismatch),
    ("length says 0, data follows", header(length=0) + b"\x01", LengthMismatch),
    ("type 0x00", header(kind=0) + b"\x01\x02\x03\x04\x05", UnknownFrameType),
    ("type 0x01", header(kind=1) + b"\x01\x02\x03\x04\x05", UnknownFrameType),
    ("type 0xff", header(kind=0xFF) + b"\x01\x02\x03\x04\x05", UnknownFrameType),
    ("declares 4 GiB", header(length=0xFFFFFFFF), PayloadTooLarge),
    ("declares limit + 1", header(length=DEFAULT_MAX_PAYLOAD_BYTES + 1), PayloadTooLarge),
]


@pytest.mark.parametrize(
    ("data", "error"), [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE]
)
def test_hostile_input_raises_typed_error(data: bytes, error: type[WireError]) -> None:
    with pytest.raises(error):
        decode_audio_packet(data)


def test_declared_length_is_checked_against_the_limit_before_slicing() -> None:
    with pytest.raises(PayloadTooLarge) as info:
        decode_audio_packet(header(length=100), max_payload_bytes=10)
    assert (info.value.size, info.value.limit) == (100, 10)


def test_errors_carry_their_fields() -> None:
    with pytest.raises(LengthMismatch) as mismatch:
        decode_audio_packet(SEED_BYTES[:-2])
    assert (mismatch.value.declared, mismatch.value.actual) == (5, 3)
    with pytest.raises(UnknownFrameType) as kind:
        decode_audio_packet(header(kind=9) + b"\x00" * 5)
    assert (kind.value.frame_type, kind.value.known) == (9, (2,))


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ((-1, 0, 0), "timestamp_ms"),
        ((1 << 32, 0, 0), "timestamp_ms"),
        ((0, 1 << 16, 0), "duration_ms"),
        ((0, -1, 0), "duration_ms"),
        ((0, 0, 1 << 32), "sequence"),
    ],
)
def test_packet_checks_its_fields(fields: tuple[int, int, int], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        AudioPacket(*fields, b"")


def test_opus_must_be_bytes() -> None:
    with pytest.raises(ValueError, match="bytes"):
        AudioPacket(0, 0, 0, "opus")  # type: ignore[arg-type]


def test_encode_refuses_data_over_u32(monkeypatch: pytest.MonkeyPatch) -> None:
    packet = AudioPacket(0, 0, 0, b"1234")
    monkeypatch.setattr(audio_monitor, "_U32_MAX", 3)  # a real 4 GiB packet is too big for a test
    with pytest.raises(PayloadTooLarge):
        encode_audio_packet(packet)


u32 = st.integers(0, 0xFFFFFFFF)


@given(timestamp=u32, duration=st.integers(0, 0xFFFF), sequence=u32, opus=st.binary(max_size=1024))
def test_round_trip(timestamp: int, duration: int, sequence: int, opus: bytes) -> None:
    packet = AudioPacket(timestamp, duration, sequence, opus)
    data = encode_audio_packet(packet)
    assert len(data) == 15 + len(opus)
    assert decode_audio_packet(data) == packet


@given(fields=st.binary(min_size=10, max_size=10), opus=st.binary(max_size=1024))
def test_valid_bytes_reencode_identically(fields: bytes, opus: bytes) -> None:
    data = b"\x02" + fields + len(opus).to_bytes(4, "little") + opus
    assert encode_audio_packet(decode_audio_packet(data)) == data


@given(data=st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_a_wire_error(data: bytes) -> None:
    try:
        packet = decode_audio_packet(data)
    except WireError:
        return
    assert len(packet.opus) == len(data) - 15


def test_a_listener_stream_numbers_stamps_and_skips_ahead_when_full() -> None:
    stream = ListenerStream(started=100.0, limit=2)
    assert stream.offer(b"a", 60, 100.0) is False
    assert stream.offer(b"b", 60, 100.06) is False
    assert stream.offer(b"c", 60, 100.12) is True  # full: "a" goes, the listener lags
    packets = [decode_audio_packet(p) for p in stream.queue]
    assert [(p.sequence, p.timestamp_ms, p.opus) for p in packets] == [
        (1, 60, b"b"),
        (2, 120, b"c"),
    ]
    assert stream.lagged == 1
