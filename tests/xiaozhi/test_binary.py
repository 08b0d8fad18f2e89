"""xiaozhi WebSocket binary protocol v1/v2/v3: golden vectors, round trips, hostile input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xiaozhi import binary
from xiaozhi.binary import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    HEADER_SIZES,
    V2_HEADER,
    V3_HEADER,
    BinaryFrame,
    BinaryVersion,
    FrameType,
    decode_frame,
    decode_json_payload,
    encode_frame,
    encode_opus,
)
from xiaozhi.errors import (
    ErrorCode,
    InvalidMessage,
    LengthMismatch,
    PayloadTooLarge,
    TruncatedFrame,
    UnknownFrameType,
    UnsupportedVersion,
    VersionMismatch,
    WireError,
)

# Seed 000 "Testing" and seed 001 "Parse Opus frame": the same 160-byte Opus payload.
SEED_OPUS = b"\xff\xfb\x90\x00" + b"\x00" * 156

# Seed 000 create_test_frame(opus_data, timestamp_ms=60), written out byte by byte.
SEED_V2_FRAME = (
    b"\x00\x02"  # version 2
    b"\x00\x00"  # type 0 = Opus
    b"\x00\x00\x00\x00"  # reserved
    b"\x00\x00\x00\x3c"  # timestamp 60 ms
    b"\x00\x00\x00\xa0"  # payload_size 160
) + SEED_OPUS

# Seed 001 "Ví dụ (hex)": 00 00 00 A0 + 160 bytes.
SEED_V3_FRAME = b"\x00\x00\x00\xa0" + SEED_OPUS


def test_seed_000_v2_frame_decodes() -> None:
    frame = decode_frame(SEED_V2_FRAME, 2)
    assert frame == BinaryFrame(FrameType.OPUS, SEED_OPUS, timestamp_ms=60)
    assert len(frame.payload) == 160


def test_seed_000_v2_frame_encodes() -> None:
    assert encode_opus(SEED_OPUS, 2, timestamp_ms=60) == SEED_V2_FRAME
    assert encode_frame(BinaryFrame(FrameType.OPUS, SEED_OPUS, 60), BinaryVersion.V2) == (
        SEED_V2_FRAME
    )


def test_seed_001_v3_frame_both_directions() -> None:
    assert decode_frame(SEED_V3_FRAME, 3) == BinaryFrame(FrameType.OPUS, SEED_OPUS)
    assert encode_opus(SEED_OPUS, 3) == SEED_V3_FRAME


def test_v1_is_the_raw_packet() -> None:
    assert decode_frame(SEED_OPUS, 1) == BinaryFrame(FrameType.OPUS, SEED_OPUS, 0)
    assert encode_opus(SEED_OPUS, 1) == SEED_OPUS


@pytest.mark.parametrize(("version", "size"), [(1, 160), (2, 176), (3, 164)])
def test_seed_001_size_table(version: int, size: int) -> None:
    assert len(encode_opus(SEED_OPUS, version)) == size
    assert HEADER_SIZES[version] == size - 160


def test_header_constants() -> None:
    assert HEADER_SIZES == {1: 0, 2: 16, 3: 4}
    assert (V2_HEADER.size, V3_HEADER.size) == (16, 4)


def test_v1_opus_that_looks_like_v3_is_not_guessed() -> None:
    # Seed 001's auto-detect would read this v1 packet as a v3 frame of 2 bytes.
    packet = b"\x00\x00\x00\x02\xaa\xbb"
    assert decode_frame(packet, 1).payload == packet


def test_v2_json_in_binary() -> None:
    data = b"\x00\x02\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0e" + b'{"type":"mcp"}'
    frame = decode_frame(data, 2)
    assert frame.type is FrameType.JSON
    assert decode_json_payload(frame) == {"type": "mcp"}
    assert encode_frame(frame, 2) == data


def test_v3_json_in_binary() -> None:
    data = b"\x01\x00\x00\x02{}"
    frame = decode_frame(data, 3)
    assert frame == BinaryFrame(FrameType.JSON, b"{}")
    assert encode_frame(frame, 3) == data


def test_reserved_fields_are_ignored_and_written_as_zero() -> None:
    v2 = bytearray(SEED_V2_FRAME)
    v2[4:8] = b"\xde\xad\xbe\xef"
    assert decode_frame(bytes(v2), 2) == decode_frame(SEED_V2_FRAME, 2)
    v3 = b"\x00\x7f\x00\x01\x55"
    assert encode_frame(decode_frame(v3, 3), 3) == b"\x00\x00\x00\x01\x55"


def test_v1_and_v3_drop_the_timestamp() -> None:
    assert encode_opus(b"\x01", 1, timestamp_ms=99) == b"\x01"
    assert encode_opus(b"\x01", 3, timestamp_ms=99) == b"\x00\x00\x00\x01\x01"


def test_empty_payload_is_a_valid_v2_and_v3_frame() -> None:
    assert decode_frame(b"\x00\x00\x00\x00", 3) == BinaryFrame(FrameType.OPUS, b"")
    assert encode_opus(b"", 2) == b"\x00\x02" + b"\x00" * 14


def test_accepts_bytes_like_input() -> None:
    assert decode_frame(bytearray(SEED_V3_FRAME), 3).payload == SEED_OPUS
    assert decode_frame(memoryview(SEED_V2_FRAME), 2).payload == SEED_OPUS


def test_frame_type_is_coerced_from_int() -> None:
    frame = BinaryFrame(1, b"{}")  # type: ignore[arg-type]
    assert frame.type is FrameType.JSON


# --- hostile input: every refusal is a typed error ------------------------------------------

V2 = V2_HEADER.pack
V3 = V3_HEADER.pack

HOSTILE: list[tuple[str, bytes, int, type[WireError]]] = [
    ("v1 empty", b"", 1, TruncatedFrame),
    ("v2 empty", b"", 2, TruncatedFrame),
    ("v3 empty", b"", 3, TruncatedFrame),
    ("v2 header cut", SEED_V2_FRAME[:15], 2, TruncatedFrame),
    ("v3 header cut", SEED_V3_FRAME[:3], 3, TruncatedFrame),
    ("v2 payload short", SEED_V2_FRAME[:-1], 2, LengthMismatch),
    ("v3 payload short", SEED_V3_FRAME[:-1], 3, LengthMismatch),
    ("v2 trailing bytes", SEED_V2_FRAME + b"\x00", 2, LengthMismatch),
    ("v3 trailing bytes", SEED_V3_FRAME + b"\x00", 3, LengthMismatch),
    ("v2 header only, size 1", V2(2, 0, 0, 0, 1), 2, LengthMismatch),
    ("v3 header only, size 1", V3(0, 0, 1), 3, LengthMismatch),
    ("v2 version 0 (gateway)", V2(0, 0, 0, 0, 1) + b"\x00", 2, VersionMismatch),
    ("v2 version 3", V2(3, 0, 0, 0, 1) + b"\x00", 2, VersionMismatch),
    ("v2 v3 frame given", SEED_V3_FRAME, 2, VersionMismatch),
    ("v2 unknown type", V2(2, 2, 0, 0, 1) + b"\x00", 2, UnknownFrameType),
    ("v2 type 0xffff", V2(2, 0xFFFF, 0, 0, 0), 2, UnknownFrameType),
    ("v3 unknown type", V3(2, 0, 1) + b"\x00", 3, UnknownFrameType),
    ("v3 type 0xff", V3(0xFF, 0, 0), 3, UnknownFrameType),
    ("v2 declares 4 GiB", V2(2, 0, 0, 0, 0xFFFFFFFF) + b"\x00", 2, PayloadTooLarge),
    ("v1 over limit", b"\x00" * (DEFAULT_MAX_PAYLOAD_BYTES + 1), 1, PayloadTooLarge),
    ("version 0", SEED_OPUS, 0, UnsupportedVersion),
    ("version 4", SEED_OPUS, 4, UnsupportedVersion),
    ("version -1", SEED_OPUS, -1, UnsupportedVersion),
]


@pytest.mark.parametrize(
    ("data", "version", "error"),
    [case[1:] for case in HOSTILE],
    ids=[case[0] for case in HOSTILE],
)
def test_hostile_input_raises_typed_error(
    data: bytes, version: int, error: type[WireError]
) -> None:
    with pytest.raises(error):
        decode_frame(data, version)


def test_declared_size_is_refused_before_slicing() -> None:
    # Only the header is present: the limit, not the missing bytes, is what is reported.
    with pytest.raises(PayloadTooLarge) as info:
        decode_frame(V2(2, 0, 0, 0, 1 << 20), 2, max_payload_bytes=1024)
    assert (info.value.size, info.value.limit) == (1 << 20, 1024)
    assert info.value.code is ErrorCode.MESSAGE_TOO_LARGE
    with pytest.raises(PayloadTooLarge):
        decode_frame(V3(0, 0, 200), 3, max_payload_bytes=100)


def test_errors_carry_their_fields() -> None:
    with pytest.raises(LengthMismatch) as mismatch:
        decode_frame(SEED_V3_FRAME + b"xy", 3)
    assert (mismatch.value.declared, mismatch.value.actual) == (160, 162)
    with pytest.raises(VersionMismatch) as version:
        decode_frame(V2(0, 0, 0, 0, 0), 2)
    assert (version.value.expected, version.value.got) == (2, 0)
    with pytest.raises(UnknownFrameType) as kind:
        decode_frame(V3(7, 0, 0), 3)
    assert (kind.value.frame_type, kind.value.known) == (7, (0, 1))
    with pytest.raises(TruncatedFrame) as cut:
        decode_frame(b"\x00\x02", 2)
    assert (cut.value.size, cut.value.needed) == (2, 16)


@pytest.mark.parametrize("version", [True, 2.0, "2", None])
def test_version_must_be_an_int(version: object) -> None:
    with pytest.raises(UnsupportedVersion):
        decode_frame(SEED_V2_FRAME, version)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedVersion):
        encode_opus(SEED_OPUS, version)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe", b"{not json", b"[1,2]", b'"text"', b"null"],
    ids=["bad utf-8", "bad json", "array", "string", "null"],
)
def test_json_payload_must_be_a_utf8_json_object(payload: bytes) -> None:
    with pytest.raises(InvalidMessage):
        decode_json_payload(BinaryFrame(FrameType.JSON, payload))


def test_json_payload_of_opus_frame_is_caller_misuse() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        decode_json_payload(BinaryFrame(FrameType.OPUS, b"{}"))


# --- encode-side misuse ----------------------------------------------------------------------


def test_v3_encode_refuses_payload_over_u16() -> None:
    assert len(encode_opus(b"\x00" * 0xFFFF, 3)) == 4 + 0xFFFF
    with pytest.raises(PayloadTooLarge):
        encode_opus(b"\x00" * 0x10000, 3)


def test_v2_encode_refuses_payload_over_u32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(binary, "_U32_MAX", 3)  # a real 4 GiB payload is too big for a test
    with pytest.raises(PayloadTooLarge):
        encode_opus(b"1234", 2)


def test_v1_cannot_carry_json_or_nothing() -> None:
    with pytest.raises(ValueError, match="raw Opus"):
        encode_frame(BinaryFrame(FrameType.JSON, b"{}"), 1)
    with pytest.raises(ValueError, match="empty"):
        encode_opus(b"", 1)


@pytest.mark.parametrize("timestamp", [-1, 1 << 32])
def test_timestamp_must_fit_u32(timestamp: int) -> None:
    with pytest.raises(ValueError, match="u32"):
        encode_opus(b"\x00", 2, timestamp_ms=timestamp)


def test_frame_checks_its_fields() -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - enum's own message
        BinaryFrame(5, b"")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bytes"):
        BinaryFrame(FrameType.OPUS, "text")  # type: ignore[arg-type]


# --- properties ------------------------------------------------------------------------------

payloads = st.binary(max_size=2048)
timestamps = st.integers(min_value=0, max_value=0xFFFFFFFF)
types = st.sampled_from(FrameType)


@given(payload=payloads, kind=types, timestamp=timestamps)
def test_v2_round_trip(payload: bytes, kind: FrameType, timestamp: int) -> None:
    frame = BinaryFrame(kind, payload, timestamp)
    data = encode_frame(frame, 2)
    assert len(data) == 16 + len(payload)
    assert decode_frame(data, 2) == frame


@given(payload=payloads, kind=types)
def test_v3_round_trip(payload: bytes, kind: FrameType) -> None:
    frame = BinaryFrame(kind, payload)
    assert decode_frame(encode_frame(frame, 3), 3) == frame


@given(payload=st.binary(min_size=1, max_size=2048))
def test_v1_round_trip(payload: bytes) -> None:
    assert decode_frame(encode_opus(payload, 1), 1) == BinaryFrame(FrameType.OPUS, payload)


@given(kind=st.integers(0, 1), timestamp=timestamps, payload=payloads)
def test_v2_valid_bytes_reencode_identically(kind: int, timestamp: int, payload: bytes) -> None:
    data = struct.pack(">HHIII", 2, kind, 0, timestamp, len(payload)) + payload
    assert encode_frame(decode_frame(data, 2), 2) == data


@given(kind=st.integers(0, 1), payload=payloads)
def test_v3_valid_bytes_reencode_identically(kind: int, payload: bytes) -> None:
    data = struct.pack(">BBH", kind, 0, len(payload)) + payload
    assert encode_frame(decode_frame(data, 3), 3) == data


@given(data=st.binary(min_size=1, max_size=2048))
def test_v1_valid_bytes_reencode_identically(data: bytes) -> None:
    assert encode_frame(decode_frame(data, 1), 1) == data


@given(data=st.binary(max_size=64), version=st.sampled_from([1, 2, 3]))
def test_arbitrary_bytes_decode_or_raise_a_wire_error(data: bytes, version: int) -> None:
    try:
        frame = decode_frame(data, version)
    except WireError:
        return
    assert len(frame.payload) == len(data) - HEADER_SIZES[version]
