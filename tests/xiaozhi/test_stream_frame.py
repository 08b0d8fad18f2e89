"""Tests of the seed-002 checksummed MessagePack frames (xiaozhi.stream_frame).

Golden vectors are literal bytes, re-derived here with ``struct``, ``zlib.crc32`` and
``msgpack.packb`` rather than with the encoder under test. Hostile frames are built the same
way, so the decoder is never checked only against its own encoder.
"""

from __future__ import annotations

import datetime as dt
import struct
import tracemalloc
import uuid
import zlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xiaozhi import stream_frame
from xiaozhi.errors import (
    ChecksumMismatch,
    DecompressionFailed,
    ErrorCode,
    InvalidMessage,
    LengthMismatch,
    PayloadTooLarge,
    TruncatedFrame,
    UnknownFrameType,
    UnsupportedVersion,
    WireError,
)
from xiaozhi.stream_frame import (
    COMPRESSION_THRESHOLD_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    Flag,
    MessageType,
    NDArray,
    StreamMessage,
    StreamVersion,
    decode_message,
    encode_entries,
    encode_message,
    error_message,
    header_size,
    negotiate_version,
    pack_entries,
)

V1, V2, V3 = StreamVersion.V1, StreamVersion.V2, StreamVersion.V3


def raw_frame(
    version: int,
    frame_type: int,
    flags: int,
    payload: bytes,
    *,
    length: int | None = None,
    crc: int | None = None,
    timestamp_us: int = 0,
) -> bytes:
    """A frame built by hand (seed 002, "Header Format"), optionally lying in its header."""
    length = len(payload) if length is None else length
    crc = zlib.crc32(payload) if crc is None else crc
    if version == 3:
        header = struct.pack(">BBBIIQ", version, frame_type, flags, length, crc, timestamp_us)
    else:
        header = struct.pack(">BBBII", version, frame_type, flags, length, crc)
    return header + payload


# --------------------------------------------------------------------------- golden vectors

# V1 PING {"seq": 1}: 01 | 11 | 00 | length 6 | crc32 251cfd00 | 81 a3 "seq" 01
V1_PING_BYTES = bytes.fromhex("01 11 00 00000006 251cfd00 81a373657101")
V1_PING = StreamMessage(MessageType.PING, {"seq": 1}, version=V1)

# V3 ECG_DATA (device telemetry) with PRIORITY, timestamp 1_700_000_000_000_000 µs
V3_TELEMETRY_BYTES = bytes.fromhex(
    "03 01 04 00000026 2bb33c55 00060a24181e4000"
    "82 a9 6465766963655f6964 ac 616162626363646465656666 a4 74656d70 cb 4035800000000000"
)
V3_TELEMETRY = StreamMessage(
    MessageType.ECG_DATA,
    {"device_id": "aabbccddeeff", "temp": 21.5},
    version=V3,
    flags=Flag.PRIORITY,
    timestamp_us=1_700_000_000_000_000,
)

# V2 FEATURE_DATA "x" * 2000: packed 2003 B > 1024 B, so zlib level 6, COMPRESSED (0x01)
V2_COMPRESSED_PAYLOAD = bytes.fromhex("789cbbc57ea162148c8251300a46c1281805431e00000a51ab5f")
V2_COMPRESSED_BYTES = bytes.fromhex("02 04 01 0000001a fbec24ea") + V2_COMPRESSED_PAYLOAD


def test_golden_v1_ping_matches_hand_built_bytes() -> None:
    packed = msgpack.packb({"seq": 1})
    assert struct.pack(">BBBII", 1, 0x11, 0, 6, zlib.crc32(packed)) + packed == V1_PING_BYTES
    assert encode_message(V1_PING) == V1_PING_BYTES
    assert decode_message(V1_PING_BYTES) == V1_PING


def test_golden_v3_with_timestamp_matches_hand_built_bytes() -> None:
    packed = msgpack.packb({"device_id": "aabbccddeeff", "temp": 21.5})
    expected = struct.pack(
        ">BBBIIQ", 3, 0x01, 0x04, len(packed), zlib.crc32(packed), 1_700_000_000_000_000
    )
    assert expected + packed == V3_TELEMETRY_BYTES
    assert len(V3_TELEMETRY_BYTES) == 19 + 38
    assert encode_message(V3_TELEMETRY) == V3_TELEMETRY_BYTES
    assert decode_message(V3_TELEMETRY_BYTES) == V3_TELEMETRY


def test_golden_v2_compressed_encode() -> None:
    packed = msgpack.packb("x" * 2000)
    assert len(packed) > COMPRESSION_THRESHOLD_BYTES
    frame = encode_message(StreamMessage(MessageType.FEATURE_DATA, "x" * 2000, version=V2))
    version, frame_type, flags, length, crc = struct.unpack_from(">BBBII", frame)
    payload = frame[11:]
    assert (version, frame_type, flags) == (2, 0x04, 0x01)
    assert length == len(payload) < len(packed)  # length is the compressed length
    assert crc == zlib.crc32(payload)  # CRC over the compressed bytes
    assert payload == zlib.compress(packed, 6)
    assert zlib.decompress(payload) == packed


def test_golden_v2_compressed_decode() -> None:
    assert zlib.crc32(V2_COMPRESSED_PAYLOAD) == 0xFBEC24EA
    msg = decode_message(V2_COMPRESSED_BYTES)
    assert msg == StreamMessage(
        MessageType.FEATURE_DATA, "x" * 2000, version=V2, flags=Flag.COMPRESSED
    )


def test_seed_custom_wrappers_decode() -> None:
    """The three wrapper examples of seed 002, "Custom Type Wrappers", verbatim."""
    data = [
        {"__datetime__": "2024-01-15T10:30:45.123456"},
        {"__uuid__": "550e8400-e29b-41d4-a716-446655440000"},
        {"__ndarray__": [1.0, 2.0, 3.0], "dtype": "float64", "shape": [3]},
        {"__uuid__": "not a wrapper", "other": 1},  # extra keys: a plain map
    ]
    msg = decode_message(raw_frame(1, 0x04, 0, msgpack.packb(data)))
    assert msg.data == [
        dt.datetime(2024, 1, 15, 10, 30, 45, 123456),
        uuid.UUID("550e8400-e29b-41d4-a716-446655440000"),
        NDArray(data=[1.0, 2.0, 3.0], dtype="float64", shape=(3,)),
        {"__uuid__": "not a wrapper", "other": 1},
    ]


def test_custom_wrappers_encode_to_seed_maps() -> None:
    when = dt.datetime(2024, 1, 15, 10, 30, 45, 123456, tzinfo=dt.UTC)
    ident = uuid.UUID("550e8400-e29b-41d4-a716-446655440000")
    frame = encode_message(
        StreamMessage(MessageType.ECG_DATA, [when, ident, b"\x00\xff"], version=V1)
    )
    assert msgpack.unpackb(frame[11:]) == [
        {"__datetime__": "2024-01-15T10:30:45.123456+00:00"},
        {"__uuid__": "550e8400-e29b-41d4-a716-446655440000"},
        b"\x00\xff",  # bytes stay MessagePack bin
    ]
    assert frame.endswith(b"\xc4\x02\x00\xff")  # bin 8, length 2


class FakeDtype:
    def __str__(self) -> str:
        return "float32"


class FakeNumpyArray:
    """Duck-typed numpy.ndarray: what the encoder reads, without importing numpy."""

    def __init__(self, rows: list[list[float]]) -> None:
        self._rows = rows
        self.dtype = FakeDtype()
        self.shape = (len(rows), len(rows[0]))

    def tolist(self) -> list[list[float]]:
        return [list(row) for row in self._rows]


def test_ndarray_duck_typed_and_dataclass_round_trip() -> None:
    fake = FakeNumpyArray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    own = NDArray(data=7, dtype="int64", shape=())
    frame = encode_message(StreamMessage(MessageType.FEATURE_DATA, [fake, own], version=V1))
    assert msgpack.unpackb(frame[11:])[0] == {
        "__ndarray__": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
        "dtype": "float32",
        "shape": [2, 3],
    }
    assert decode_message(frame).data == [
        NDArray(data=[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype="float32", shape=(2, 3)),
        own,
    ]


@pytest.mark.parametrize(
    ("data", "dtype", "shape"),
    [
        ([1, 2], 5, (2,)),  # dtype not a string
        ([1, 2], "int8", (-2,)),  # negative dimension
        ([1, 2], "int8", (True,)),  # bool is not a dimension
        ([1, 2], "int8", (3,)),  # wrong length
        ([[1], [2, 3]], "int8", (2, 1)),  # ragged
        ([1, 2], "int8", ()),  # a 0-d array holds a scalar
        ([[1], [2]], "int8", (2,)),  # deeper than the shape
    ],
)
def test_ndarray_refuses_data_not_matching_shape(data: Any, dtype: Any, shape: Any) -> None:
    with pytest.raises(ValueError, match=r"dtype|shape"):
        NDArray(data=data, dtype=dtype, shape=shape)


def test_msgpack_native_timestamp_becomes_utc_datetime() -> None:
    when = dt.datetime(2024, 1, 15, 10, 30, tzinfo=dt.UTC)
    payload = msgpack.packb({"at": when}, datetime=True)
    assert decode_message(raw_frame(1, 0x10, 0, payload)).data == {"at": when}


def test_header_size() -> None:
    assert [header_size(v) for v in StreamVersion] == [11, 11, 19]


# --------------------------------------------------------------------------- round trips

_fixed_offsets = st.builds(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes)),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.datetimes()
    | st.datetimes(timezones=_fixed_offsets)
    | st.uuids()
)
_keys = st.text().filter(lambda k: not k.startswith("__")) | st.integers(-(2**63), 2**63 - 1)
_data = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_keys, children, max_size=5),
    max_leaves=20,
)
_v3_flags = st.sets(st.sampled_from([Flag.PRIORITY, Flag.BROADCAST, Flag.ACK_REQUIRED])).map(
    lambda fs: Flag(sum(fs))
)


@st.composite
def _messages(draw: st.DrawFn, data: st.SearchStrategy[Any] = _data) -> StreamMessage:
    version = draw(st.sampled_from(StreamVersion))
    v3 = version is StreamVersion.V3
    return StreamMessage(
        type=draw(st.sampled_from(MessageType)),
        data=draw(data),
        version=version,
        flags=draw(_v3_flags) if v3 else Flag(0),
        timestamp_us=draw(st.integers(0, 2**64 - 1)) if v3 else None,
    )


def _assert_round_trip(msg: StreamMessage, frame: bytes) -> StreamMessage:
    got = decode_message(frame)
    assert got.type is msg.type
    assert got.version is msg.version
    assert got.timestamp_us == msg.timestamp_us
    assert got.flags & ~Flag.COMPRESSED == msg.flags
    assert got.data == msg.data
    return got


@given(_messages())
def test_round_trip_any_data(msg: StreamMessage) -> None:
    _assert_round_trip(msg, encode_message(msg))


@settings(max_examples=30)
@given(_messages(st.lists(st.binary(min_size=64, max_size=512), min_size=3, max_size=40)))
def test_round_trip_large_payloads_compress(msg: StreamMessage) -> None:
    frame = encode_message(msg)
    packed_size = len(msgpack.packb(msg.data))
    got = _assert_round_trip(msg, frame)
    compressed = msg.version >= StreamVersion.V2 and packed_size > COMPRESSION_THRESHOLD_BYTES
    assert bool(got.flags & Flag.COMPRESSED) is compressed


def test_compress_threshold_is_strictly_greater() -> None:
    data = "y" * 100  # packs to 102 bytes
    at = encode_message(
        StreamMessage(MessageType.PING, data, version=V2), compress_threshold_bytes=102
    )
    over = encode_message(
        StreamMessage(MessageType.PING, data, version=V2), compress_threshold_bytes=101
    )
    assert at[2] == 0
    assert over[2] == Flag.COMPRESSED
    assert decode_message(over).data == data


def test_encoder_owns_the_compressed_flag() -> None:
    plain = StreamMessage(MessageType.PING, {"seq": 1}, version=V1, flags=Flag.COMPRESSED)
    assert encode_message(plain) == V1_PING_BYTES
    decoded = decode_message(V2_COMPRESSED_BYTES)
    assert encode_message(decoded) == encode_message(
        StreamMessage(MessageType.FEATURE_DATA, "x" * 2000, version=V2)
    )


def test_v1_never_compresses() -> None:
    frame = encode_message(StreamMessage(MessageType.ECG_DATA, "z" * 5000, version=V1))
    assert frame[2] == 0
    assert struct.unpack_from(">I", frame, 3)[0] == len(msgpack.packb("z" * 5000))


# --------------------------------------------------------------------------- hostile input

_PING = msgpack.packb({"seq": 1})
_BOMB_PAYLOAD_SIZE = 50 * 1024 * 1024


def _zlib(data: bytes) -> bytes:
    return zlib.compress(data, 6)


def _corrupt_zlib() -> bytes:
    good = bytearray(_zlib(msgpack.packb("a" * 3000)))
    good[2] ^= 0xFF  # first deflate block header: no longer a valid block type
    return bytes(good)


HOSTILE: list[tuple[str, bytes, type[WireError]]] = [
    ("empty", b"", TruncatedFrame),
    ("truncated header", V1_PING_BYTES[:10], TruncatedFrame),
    ("truncated v3 header", V3_TELEMETRY_BYTES[:18], TruncatedFrame),
    ("truncated payload", V1_PING_BYTES[:-2], LengthMismatch),
    ("trailing bytes", V1_PING_BYTES + b"\x00\x00", LengthMismatch),
    ("length says more", raw_frame(1, 0x11, 0, _PING, length=7), LengthMismatch),
    ("length says less", raw_frame(1, 0x11, 0, _PING, length=5), LengthMismatch),
    ("version 0", raw_frame(0, 0x11, 0, _PING), UnsupportedVersion),
    ("version 4", raw_frame(4, 0x11, 0, _PING), UnsupportedVersion),
    ("version bit 7 flipped", b"\x81" + V1_PING_BYTES[1:], UnsupportedVersion),
    ("version 1 flipped to 3", b"\x03" + V1_PING_BYTES[1:], TruncatedFrame),
    (
        "type bit flipped 0x11->0x13",
        V1_PING_BYTES[:1] + b"\x13" + V1_PING_BYTES[2:],
        UnknownFrameType,
    ),
    (
        "type bit flipped 0x11->0x91",
        V1_PING_BYTES[:1] + b"\x91" + V1_PING_BYTES[2:],
        UnknownFrameType,
    ),
    ("unknown type 0x00", raw_frame(1, 0x00, 0, _PING), UnknownFrameType),
    ("unknown type 0x05", raw_frame(3, 0x05, 0, _PING), UnknownFrameType),
    ("bad crc", raw_frame(1, 0x11, 0, _PING, crc=0), ChecksumMismatch),
    ("payload bit flip", V1_PING_BYTES[:-1] + b"\x00", ChecksumMismatch),
    ("reserved flag bit 5", raw_frame(3, 0x11, 1 << 5, _PING), InvalidMessage),
    ("reserved flag bit 7", raw_frame(3, 0x11, 1 << 7, _PING), InvalidMessage),
    ("COMPRESSED in V1", raw_frame(1, 0x11, 0x01, _zlib(_PING)), InvalidMessage),
    ("PRIORITY in V2", raw_frame(2, 0x11, 0x04, _PING), InvalidMessage),
    ("ENCRYPTED in V2", raw_frame(2, 0x11, 0x02, _PING), InvalidMessage),
    ("ENCRYPTED in V3", raw_frame(3, 0x11, 0x02, b"\x8a\x13\xee\x01ciphertext"), InvalidMessage),
    ("corrupt zlib, valid crc", raw_frame(2, 0x01, 0x01, _corrupt_zlib()), DecompressionFailed),
    ("truncated zlib", raw_frame(2, 0x01, 0x01, _zlib(_PING * 300)[:-6]), DecompressionFailed),
    ("zlib then garbage", raw_frame(2, 0x01, 0x01, _zlib(_PING) + b"junk"), DecompressionFailed),
    ("not msgpack, valid crc", raw_frame(1, 0x01, 0, b"\xc1"), InvalidMessage),
    ("empty payload", raw_frame(1, 0x01, 0, b""), InvalidMessage),
    ("incomplete msgpack", raw_frame(1, 0x01, 0, b"\x92\x01"), InvalidMessage),
    ("two msgpack values", raw_frame(1, 0x01, 0, _PING + _PING), InvalidMessage),
    ("unhashable map key", raw_frame(1, 0x01, 0, b"\x81\x91\x01\x02"), InvalidMessage),
    ("ext type", raw_frame(1, 0x01, 0, b"\xd4\x05\x01"), InvalidMessage),
    (
        "timestamp ext out of range",
        raw_frame(1, 0x01, 0, b"\xc7\x0c\xff" + b"\x00" * 4 + b"\x7f" * 8),
        InvalidMessage,
    ),
    ("msgpack str length lies", raw_frame(1, 0x01, 0, b"\xdb\xff\xff\xff\xffab"), InvalidMessage),
    (
        "bad uuid wrapper",
        raw_frame(1, 0x01, 0, msgpack.packb({"__uuid__": "nope"})),
        InvalidMessage,
    ),
    (
        "datetime wrapper not str",
        raw_frame(1, 0x01, 0, msgpack.packb({"__datetime__": 5})),
        InvalidMessage,
    ),
    (
        "bad datetime wrapper",
        raw_frame(1, 0x01, 0, msgpack.packb({"__datetime__": "yesterday"})),
        InvalidMessage,
    ),
    (
        "ndarray shape mismatch",
        raw_frame(1, 0x01, 0, msgpack.packb({"__ndarray__": [1], "dtype": "i1", "shape": [3]})),
        InvalidMessage,
    ),
    (
        "ndarray shape not a list",
        raw_frame(1, 0x01, 0, msgpack.packb({"__ndarray__": [1], "dtype": "i1", "shape": 1})),
        InvalidMessage,
    ),
    (
        "ndarray dtype not str",
        raw_frame(1, 0x01, 0, msgpack.packb({"__ndarray__": [1], "dtype": 8, "shape": [1]})),
        InvalidMessage,
    ),
    ("declared length over limit", raw_frame(1, 0x01, 0, b"", length=0xFFFFFFFF), PayloadTooLarge),
]


@pytest.mark.parametrize(
    ("frame", "error"), [(f, e) for _, f, e in HOSTILE], ids=[n for n, _, _ in HOSTILE]
)
def test_hostile_input_raises_typed_error(frame: bytes, error: type[WireError]) -> None:
    with pytest.raises(error) as info:
        decode_message(frame)
    assert type(info.value) is error
    assert isinstance(info.value.code, ErrorCode)


def test_encrypted_names_the_reason() -> None:
    with pytest.raises(InvalidMessage, match="encryption not supported") as info:
        decode_message(raw_frame(3, 0x11, 0x02, b"ciphertext"))
    assert info.value.field == "flags"


def test_every_payload_bit_flip_is_a_checksum_mismatch() -> None:
    for frame in (V1_PING_BYTES, V3_TELEMETRY_BYTES, V2_COMPRESSED_BYTES):
        start = header_size(StreamVersion(frame[0]))
        for bit in range((len(frame) - start) * 8):
            flipped = bytearray(frame)
            flipped[start + bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(ChecksumMismatch):
                decode_message(bytes(flipped))


def test_every_crc_bit_flip_is_a_checksum_mismatch() -> None:
    for bit in range(32):
        flipped = bytearray(V1_PING_BYTES)
        flipped[7 + bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ChecksumMismatch):
            decode_message(bytes(flipped))


def test_every_version_flags_and_length_bit_flip_is_refused() -> None:
    for index in (0, 2, 3, 4, 5, 6):  # version, flags, the four length bytes
        for bit in range(8):
            flipped = bytearray(V1_PING_BYTES)
            flipped[index] ^= 1 << bit
            with pytest.raises(WireError):
                decode_message(bytes(flipped))


def test_type_bit_flips_to_unlisted_values_are_refused() -> None:
    """The header is not under the CRC (seed 002, "Checksum"): only unlisted types are caught."""
    known = {int(t) for t in MessageType}
    for bit in range(8):
        flipped = bytearray(V1_PING_BYTES)
        flipped[1] ^= 1 << bit
        if flipped[1] in known:
            assert decode_message(bytes(flipped)).type == flipped[1]
        else:
            with pytest.raises(UnknownFrameType):
                decode_message(bytes(flipped))


def test_declared_length_over_limit_is_refused_before_the_length_check() -> None:
    payload = msgpack.packb("q" * 98)
    frame = raw_frame(1, 0x01, 0, payload)
    assert decode_message(frame, max_message_bytes=len(payload)).data == "q" * 98
    with pytest.raises(PayloadTooLarge) as info:
        decode_message(frame, max_message_bytes=len(payload) - 1)
    assert (info.value.size, info.value.limit) == (len(payload), len(payload) - 1)


def test_inflated_size_limit_is_exact() -> None:
    packed = msgpack.packb("r" * 5000)
    frame = raw_frame(2, 0x01, 0x01, _zlib(packed))
    assert decode_message(frame, max_message_bytes=len(packed)).data == "r" * 5000
    with pytest.raises(PayloadTooLarge):
        decode_message(frame, max_message_bytes=len(packed) - 1)


@pytest.fixture(scope="module")
def zip_bomb() -> bytes:
    """50 MB of zeros (as a MessagePack bin) deflated to about 50 KB, built in chunks."""
    deflater = zlib.compressobj(9)
    parts = [deflater.compress(b"\xc6" + struct.pack(">I", _BOMB_PAYLOAD_SIZE))]
    chunk = bytes(1 << 20)
    parts += [deflater.compress(chunk) for _ in range(_BOMB_PAYLOAD_SIZE >> 20)]
    parts.append(deflater.flush())
    return raw_frame(2, 0x01, 0x01, b"".join(parts))


def test_zip_bomb_is_refused_without_inflating_it(zip_bomb: bytes) -> None:
    limit = 64 * 1024
    assert len(zip_bomb) < limit  # the wire size passes the limit; only inflating would not
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge) as info:
            decode_message(zip_bomb, max_message_bytes=limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.limit == limit
    assert peak < 2 * 1024 * 1024, f"decoder allocated {peak} B for a {limit} B limit"


def test_default_limit_also_refuses_the_bomb(zip_bomb: bytes) -> None:
    with pytest.raises(PayloadTooLarge) as info:
        decode_message(zip_bomb)
    assert info.value.limit == DEFAULT_MAX_MESSAGE_BYTES


def test_decode_refuses_a_non_positive_limit() -> None:
    with pytest.raises(ValueError, match="max_message_bytes"):
        decode_message(V1_PING_BYTES, max_message_bytes=0)


# --------------------------------------------------------------------------- caller misuse


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        (StreamMessage(MessageType.PING, 1), "need timestamp_us"),
        (StreamMessage(MessageType.PING, 1, version=V1, timestamp_us=5), "carry no timestamp"),
        (StreamMessage(MessageType.PING, 1, version=V2, timestamp_us=0), "carry no timestamp"),
        (StreamMessage(MessageType.PING, 1, timestamp_us=-1), "timestamp_us must be"),
        (StreamMessage(MessageType.PING, 1, timestamp_us=2**64), "timestamp_us must be"),
        (StreamMessage(MessageType.PING, 1, timestamp_us=True), "timestamp_us must be"),
        (StreamMessage(MessageType.PING, 1, flags=Flag(0x20), timestamp_us=1), "reserved"),
        (
            StreamMessage(MessageType.PING, 1, version=V1, flags=Flag.PRIORITY),
            "^flag PRIORITY is not allowed in V1$",
        ),
        (
            StreamMessage(MessageType.PING, 1, version=V2, flags=Flag.ENCRYPTED | Flag.BROADCAST),
            "^flags ENCRYPTED, BROADCAST are not allowed in V2$",
        ),
        (StreamMessage(MessageType.PING, 1, flags=Flag.ENCRYPTED, timestamp_us=1), "encryption"),
        (StreamMessage(0x05, 1, version=V1), "MessageType"),  # type: ignore[arg-type]
        (StreamMessage(MessageType.PING, 1, version=4), "StreamVersion"),  # type: ignore[arg-type]
    ],
)
def test_encode_refuses_invalid_messages(msg: StreamMessage, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_message(msg)


def test_encode_refuses_negative_threshold() -> None:
    with pytest.raises(ValueError, match="compress_threshold_bytes"):
        encode_message(V1_PING, compress_threshold_bytes=-1)


def test_encode_refuses_unpackable_data() -> None:
    with pytest.raises(TypeError, match="cannot pack object"):
        encode_message(StreamMessage(MessageType.PING, object(), version=V1))


def test_encode_refuses_payload_over_u32(monkeypatch: pytest.MonkeyPatch) -> None:
    class Huge(bytes):
        def __len__(self) -> int:
            return 2**32

    monkeypatch.setattr(stream_frame, "_pack", lambda data: Huge(b"\x00"))
    with pytest.raises(ValueError, match="u32"):
        encode_message(V1_PING)


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [
        ([1, 2, 3], (1, 2, 3), V3),
        ([1, 2], (1, 2, 3), V2),
        ((v for v in (3, 1)), (1, 2), V1),
        ([3, 99, "x", None], (1, 2, 3), V3),
    ],
)
def test_negotiate_version_picks_highest_common(
    client: Any, server: tuple[int, ...], expected: StreamVersion
) -> None:
    assert negotiate_version(client, server) is expected


@pytest.mark.parametrize("client", [[], [4, 5], ["3", True, 3.0], 3, None])
def test_negotiate_version_without_common_version(client: Any) -> None:
    with pytest.raises(UnsupportedVersion) as info:
        negotiate_version(client)
    assert info.value.supported == (1, 2, 3)
    assert info.value.code is ErrorCode.INVALID_PROTOCOL_VERSION


def test_negotiate_version_refuses_unknown_server_version() -> None:
    with pytest.raises(ValueError, match="StreamVersion"):
        negotiate_version([1], [1, 4])


def test_error_message_round_trips() -> None:
    err = ChecksumMismatch(expected=1, actual=2)
    msg = error_message(err.code, str(err), version=V3, timestamp_us=42)
    assert msg == StreamMessage(
        MessageType.ERROR,
        {"code": 0x101, "name": "CHECKSUM_MISMATCH", "message": str(err)},
        version=V3,
        timestamp_us=42,
    )
    assert decode_message(encode_message(msg)) == msg
    v1 = error_message(0x204, "slow down", version=V1)  # type: ignore[arg-type]
    assert v1.data["name"] == "RATE_LIMIT_EXCEEDED"
    assert v1.timestamp_us is None


def test_error_message_checks_the_timestamp() -> None:
    with pytest.raises(ValueError, match="timestamp"):
        error_message(ErrorCode.PERMISSION_DENIED, "no", version=V3)


# --------------------------------------------------------------------------- packed once


@pytest.mark.parametrize("pairs", [0, 3, 15, 16, 300, 70_000])
@pytest.mark.parametrize("version", list(StreamVersion))
def test_a_map_joined_from_packed_entries_is_the_frame_of_the_whole_dict(
    pairs: int, version: StreamVersion
) -> None:
    """Fixmap, map 16 and map 32 headers; compressed or not: the same bytes as encode_message."""
    head = {"seq": 70_000 + pairs}
    body = {f"k{i}": i for i in range(pairs)}
    tail = {"retained": True}
    ts = 1_800_000_000_000_000 if version >= StreamVersion.V3 else None
    flags = Flag.PRIORITY | Flag.ACK_REQUIRED if version >= StreamVersion.V3 else Flag(0)
    whole = StreamMessage(MessageType.ECG_DATA, {**head, **body, **tail}, version, flags, ts)
    joined = encode_entries(
        MessageType.ECG_DATA,
        [pack_entries(head), pack_entries(body), pack_entries(tail)],
        version=version,
        flags=flags,
        timestamp_us=ts,
    )
    assert joined == encode_message(whole)
    assert decode_message(joined, max_message_bytes=1 << 24).data == whole.data


def test_packed_entries_refuse_what_encode_message_refuses() -> None:
    entries = [pack_entries({"a": 1})]
    with pytest.raises(ValueError, match="timestamp"):
        encode_entries(
            MessageType.ECG_DATA,
            entries,
            version=StreamVersion.V3,
            flags=Flag(0),
            timestamp_us=None,
        )
    with pytest.raises(ValueError, match="compress_threshold_bytes"):
        encode_entries(
            MessageType.ECG_DATA,
            entries,
            version=StreamVersion.V1,
            flags=Flag(0),
            timestamp_us=None,
            compress_threshold_bytes=-1,
        )
    with pytest.raises(TypeError):
        pack_entries({"a": object()})


def test_a_refused_flag_is_named_as_a_person_reads_it() -> None:
    """The message goes to a client in an ERROR frame: no Python repr."""
    with pytest.raises(InvalidMessage) as refused:
        decode_message(raw_frame(1, 0x11, 0x01, _zlib(_PING)))
    assert str(refused.value).startswith("flag COMPRESSED is not allowed in V1")
    assert "<" not in str(refused.value)
