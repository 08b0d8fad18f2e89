"""Checksummed MessagePack frames of the live stream (seed 002, "Binary Protocol Specification").

Dashboards and integrators subscribe to the hub's live stream over WebSocket; every binary
message on it is one frame::

    +---------+------+-------+------------+--------------+------------------------+
    | version | type | flags | length u32 | checksum u32 | timestamp u64 (V3 only) |
    +---------+------+-------+------------+--------------+------------------------+
    then ``length`` bytes of payload: MessagePack, zlib-compressed when COMPRESSED is set

All fields are big-endian (seed 002, "Header Format"): V1 and V2 headers are 11 bytes
(``>BBBII``), V3 headers 19 bytes (``>BBBIIQ``). ``length`` and ``checksum`` describe the
payload *as sent*, i.e. the compressed bytes when compressed (seed 002, "Compression Flow"
steps 4-5, and "Checksum").

The message-type table is the seed's, kept number for number because it is the wire table:
the seed came from an ECG monitor, and in our hub the data types carry device data and events
(see :class:`MessageType`).

Decoding checks, in this order, so that nothing is sliced, inflated or unpacked before it has
been bounded and verified: header size, version, declared length against the limit, declared
length against the bytes present, CRC32, type, flags, bounded decompression, MessagePack.

The module is pure: it takes ``bytes`` and returns models, the caller passes the clock
(``timestamp_us``) and decides what to answer; every refusal is a
:class:`~xiaozhi.errors.WireError` carrying the seed-002 error code to answer with.
"""

from __future__ import annotations

import datetime as _dt
import enum
import struct
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import msgpack

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

__all__ = [
    "ALLOWED_FLAGS",
    "COMPRESSION_LEVEL",
    "COMPRESSION_THRESHOLD_BYTES",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "HEADER_V1",
    "HEADER_V3",
    "Flag",
    "MessageType",
    "NDArray",
    "PackedEntries",
    "StreamMessage",
    "StreamVersion",
    "decode_message",
    "encode_entries",
    "encode_message",
    "error_message",
    "header_size",
    "negotiate_version",
    "pack_entries",
]


class StreamVersion(enum.IntEnum):
    """Protocol versions of seed 002 ("Protocol Versions")."""

    V1 = 1  # framing, type, CRC32; no compression
    V2 = 2  # + optional zlib payload compression
    V3 = 3  # + timestamp in the header, priority/broadcast/ack flags, encryption placeholder


class MessageType(enum.IntEnum):
    """The seed-002 message-type table ("Message Types"), unchanged because it is the wire.

    The seed was written for an ECG monitor. In the xiaozhi hub the four data types carry:
    ``ECG_DATA`` device telemetry and sensor readings, ``ANOMALY_ALERT`` device alerts and
    events, ``PREDICTION_RESULT`` results the hub produced (recognised intents, action
    results), ``FEATURE_DATA`` derived per-device data (e.g. audio levels).
    """

    # data messages
    ECG_DATA = 0x01  # in our use: device telemetry / sensor data
    ANOMALY_ALERT = 0x02  # in our use: device alerts and events
    PREDICTION_RESULT = 0x03  # in our use: hub results (intents, action outcomes)
    FEATURE_DATA = 0x04  # in our use: derived per-device data
    # control messages
    HEARTBEAT = 0x10
    PING = 0x11
    PONG = 0x12
    # subscription messages
    SUBSCRIBE = 0x20
    UNSUBSCRIBE = 0x21
    SUBSCRIPTION_ACK = 0x22
    # system messages
    VERSION_CHECK = 0xFD
    PROTOCOL_NEGOTIATION = 0xFE
    ERROR = 0xFF


class Flag(enum.IntFlag):
    """Header flag bits (seed 002, "Flags"); bits 5-7 are reserved and must be 0."""

    COMPRESSED = 1 << 0  # payload is zlib (V2+); set and cleared by the encoder only
    ENCRYPTED = 1 << 1  # V3+, a placeholder in the seed: refused, never decoded as plain
    PRIORITY = 1 << 2  # V3+, high priority
    BROADCAST = 1 << 3  # V3+, broadcast to all clients
    ACK_REQUIRED = 1 << 4  # V3+, the receiver should acknowledge


#: Flags each version may carry (seed 002, "Flags": the version each bit appeared in).
ALLOWED_FLAGS: Final[dict[StreamVersion, Flag]] = {
    StreamVersion.V1: Flag(0),
    StreamVersion.V2: Flag.COMPRESSED,
    StreamVersion.V3: (
        Flag.COMPRESSED | Flag.ENCRYPTED | Flag.PRIORITY | Flag.BROADCAST | Flag.ACK_REQUIRED
    ),
}
_NO_FLAGS: Final = Flag(0)
_KNOWN_FLAG_BITS: Final = int(ALLOWED_FLAGS[StreamVersion.V3])

HEADER_V1: Final = struct.Struct(">BBBII")  # version, type, flags, length, crc32 (V1 and V2)
HEADER_V3: Final = struct.Struct(">BBBIIQ")  # ... + timestamp in µs since the Unix epoch

#: Seed 002, "Compression": compress packed payloads strictly larger than 1 KB, zlib level 6.
COMPRESSION_THRESHOLD_BYTES: Final = 1024
COMPRESSION_LEVEL: Final = 6

#: Default cap, in bytes, on both the payload as sent and the payload once inflated (1 MiB,
#: as websockets' ``max_size``). Seed 002, "Security Considerations": size limits.
DEFAULT_MAX_MESSAGE_BYTES: Final = 1 << 20

_U32_MAX: Final = 0xFFFF_FFFF
_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF
_SUPPORTED: Final = tuple(int(v) for v in StreamVersion)
_KNOWN_TYPES: Final = tuple(int(t) for t in MessageType)


def header_size(version: StreamVersion) -> int:
    """Header length for ``version``: 11 B for V1/V2, 19 B for V3 (seed 002, "Header Sizes")."""
    return HEADER_V3.size if version >= StreamVersion.V3 else HEADER_V1.size


# --------------------------------------------------------------------------- models


@dataclass(frozen=True, slots=True)
class NDArray:
    """An array from the seed's ``__ndarray__`` wrapper, without depending on numpy.

    ``data`` is what numpy's ``tolist()`` gives (nested lists, a scalar for a 0-d array), so a
    caller with numpy rebuilds the array with ``numpy.array(a.data, dtype=a.dtype)``.
    The nesting is checked against ``shape`` when built: exactly ``len(shape)`` levels of
    lists, each level as long as its dimension.

    Raises:
        ValueError: ``dtype`` is not a string, ``shape`` holds something other than
            non-negative ints, or ``data`` does not have that shape.
    """

    data: Any
    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.dtype, str):
            raise ValueError(f"dtype must be a str, got {self.dtype!r}")
        shape = tuple(self.shape)
        if not all(type(n) is int and n >= 0 for n in shape):
            raise ValueError(f"shape must hold non-negative ints, got {self.shape!r}")
        object.__setattr__(self, "shape", shape)
        # Walk level by level rather than recursively: nesting comes from the peer.
        level: list[Any] = [self.data]
        for depth, size in enumerate(shape):
            below: list[Any] = []
            for item in level:
                if not isinstance(item, list) or len(item) != size:
                    raise ValueError(f"data does not match shape {shape} at axis {depth}")
                below.extend(item)
            level = below
        if any(isinstance(item, list) for item in level):
            raise ValueError(f"data is nested deeper than shape {shape}")


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One message of the stream: what a frame carries once decoded.

    Args:
        type: the seed-002 message type.
        data: any MessagePack-able value, plus ``datetime``, ``uuid.UUID``, :class:`NDArray`
            and numpy-like arrays (seed 002, "Custom Type Wrappers").
        version: the frame version; fixed per connection by :func:`negotiate_version`.
        flags: header flags. On encode ``COMPRESSED`` is decided by the encoder; after decode
            the flags are exactly what was on the wire.
        timestamp_us: microseconds since the Unix epoch; required for V3, absent for V1/V2
            (seed 002, "Timestamps"). The caller owns the clock.
    """

    type: MessageType
    data: Any
    version: StreamVersion = StreamVersion.V3
    flags: Flag = _NO_FLAGS
    timestamp_us: int | None = None

    def check(self) -> None:
        """Check the invariants :func:`encode_message` relies on.

        Raises:
            ValueError: unknown type or version, reserved or version-disallowed flags,
                ENCRYPTED (not supported), or a timestamp missing for V3, present for V1/V2,
                or outside u64.
        """
        MessageType(self.type)
        version = StreamVersion(self.version)
        flags = int(self.flags)
        if flags & ~_KNOWN_FLAG_BITS:
            raise ValueError(f"reserved flag bits set: {flags:#04x}")
        # COMPRESSED is the encoder's to decide, so it is never the caller's error.
        extra = flags & ~int(ALLOWED_FLAGS[version]) & ~Flag.COMPRESSED
        if extra:
            raise ValueError(f"{_flags_text(extra)} not allowed in {version.name}")
        if flags & Flag.ENCRYPTED:
            raise ValueError("encryption not supported (a placeholder in seed 002)")
        if version >= StreamVersion.V3:
            ts = self.timestamp_us
            if ts is None:
                raise ValueError("V3 messages need timestamp_us (the caller passes the clock)")
            if type(ts) is not int or not 0 <= ts <= _U64_MAX:
                raise ValueError(f"timestamp_us must be an int in 0..2**64-1, got {ts!r}")
        elif self.timestamp_us is not None:
            raise ValueError(f"{version.name} frames carry no timestamp; pass timestamp_us=None")


# --------------------------------------------------------------------------- MessagePack


def _pack_default(obj: Any) -> Any:
    """``msgpack`` ``default=`` hook: the seed's custom wrappers ("Custom Type Wrappers")."""
    if isinstance(obj, _dt.datetime):
        return {"__datetime__": obj.isoformat()}
    if isinstance(obj, uuid.UUID):
        return {"__uuid__": str(obj)}
    if isinstance(obj, NDArray):
        return {"__ndarray__": obj.data, "dtype": obj.dtype, "shape": list(obj.shape)}
    if all(hasattr(obj, name) for name in ("tolist", "dtype", "shape")):
        # numpy.ndarray, duck-typed so numpy stays optional.
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype), "shape": list(obj.shape)}
    raise TypeError(f"cannot pack {type(obj).__name__} into a stream message")


_DATETIME_KEYS: Final = frozenset({"__datetime__"})
_UUID_KEYS: Final = frozenset({"__uuid__"})
_NDARRAY_KEYS: Final = frozenset({"__ndarray__", "dtype", "shape"})


def _unpack_object_hook(obj: dict[Any, Any]) -> Any:
    """``msgpack`` ``object_hook=``: turn the seed's wrappers back into values.

    Only a map with exactly a wrapper's keys is a wrapper; any other map is left alone.

    Raises:
        InvalidMessage: a wrapper whose content is malformed.
    """
    keys = obj.keys()
    if keys == _DATETIME_KEYS:
        wrapper = "__datetime__"
    elif keys == _UUID_KEYS:
        wrapper = "__uuid__"
    elif keys == _NDARRAY_KEYS:
        wrapper = "__ndarray__"
    else:
        return obj
    try:
        if wrapper == "__ndarray__":
            shape = obj["shape"]
            if not isinstance(shape, list):
                raise ValueError(f"shape must be a list, got {shape!r}")
            return NDArray(data=obj["__ndarray__"], dtype=obj["dtype"], shape=tuple(shape))
        value = obj[wrapper]
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        if wrapper == "__uuid__":
            return uuid.UUID(value)
        return _dt.datetime.fromisoformat(value)
    except ValueError as err:
        raise InvalidMessage(f"bad {wrapper} wrapper: {err}", field=wrapper) from err
    return obj


def _unpack_ext_hook(code: int, data: bytes) -> Any:
    """Refuse extension types: seed 002 uses maps as wrappers, never MessagePack ext."""
    raise InvalidMessage(f"unsupported MessagePack extension type {code}")


def _pack(data: Any) -> bytes:
    packed: bytes = msgpack.packb(data, default=_pack_default, use_bin_type=True, datetime=False)
    return packed


def _unpack(payload: bytes) -> Any:
    """Unpack one MessagePack value, every container bounded by the payload's own size.

    MessagePack's native timestamp extension is accepted as an aware UTC ``datetime``
    (JavaScript clients send ``Date`` that way); other extension types are refused.
    """
    limit = len(payload)  # n bytes cannot hold more than n elements or n bytes of string
    try:
        return msgpack.unpackb(
            payload,
            raw=False,
            use_list=True,
            strict_map_key=False,
            timestamp=3,
            object_hook=_unpack_object_hook,
            ext_hook=_unpack_ext_hook,
            max_str_len=limit,
            max_bin_len=limit,
            max_array_len=limit,
            max_map_len=limit,
            max_ext_len=limit,
        )
    except WireError:
        raise
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as err:
        # Incomplete input, extra data, bad format, unhashable keys, out-of-range timestamps.
        raise InvalidMessage(f"payload is not valid MessagePack: {err}") from err


# --------------------------------------------------------------------------- zlib


def _inflate(payload: bytes, limit: int) -> bytes:
    """Inflate a zlib payload, never producing more than ``limit + 1`` bytes.

    Asking zlib for at most ``limit + 1`` bytes means a zip bomb costs us ``limit`` bytes of
    memory, not its full size (seed 002, "Security Considerations": size limits).

    Raises:
        PayloadTooLarge: the inflated payload would exceed ``limit``.
        DecompressionFailed: the stream is corrupt, truncated or followed by extra bytes.
    """
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(payload, limit + 1)
    except zlib.error as err:
        raise DecompressionFailed(f"zlib stream is corrupt: {err}") from err
    if len(out) > limit:
        raise PayloadTooLarge(size=len(out), limit=limit, what="inflated payload (at least)")
    if not inflater.eof:
        raise DecompressionFailed("zlib stream is truncated")
    if inflater.unused_data:
        raise DecompressionFailed(f"{len(inflater.unused_data)} B follow the zlib stream")
    return out


# --------------------------------------------------------------------------- codec


def encode_message(
    msg: StreamMessage, *, compress_threshold_bytes: int = COMPRESSION_THRESHOLD_BYTES
) -> bytes:
    """Serialize ``msg`` into one frame.

    The payload is MessagePack; for V2 and V3 it is zlib-compressed (level 6) when the packed
    bytes are larger than ``compress_threshold_bytes``, and ``COMPRESSED`` is set or cleared
    to match, whatever ``msg.flags`` said (seed 002, "Compression Flow"). Length and CRC32
    are those of the payload as sent (seed 002, "Checksum").

    Args:
        msg: the message; see :meth:`StreamMessage.check` for what it must satisfy.
        compress_threshold_bytes: packed size above which V2/V3 payloads are compressed.

    Returns:
        The frame bytes, ready for one binary WebSocket message.

    Raises:
        ValueError: ``msg`` breaks an invariant, or the payload exceeds u32.
        TypeError: ``msg.data`` holds a value MessagePack cannot carry.
    """
    msg.check()
    return _frame(
        StreamVersion(msg.version),
        msg.type,
        msg.flags,
        msg.timestamp_us,
        _pack(msg.data),
        compress_threshold_bytes,
    )


def _frame(
    version: StreamVersion,
    type: MessageType,
    flags: Flag,
    timestamp_us: int | None,
    payload: bytes,
    compress_threshold_bytes: int,
) -> bytes:
    """Header + payload: compression (V2+, above the threshold), length and CRC32 of what is
    sent (seed 002, "Compression Flow" and "Checksum")."""
    if compress_threshold_bytes < 0:
        raise ValueError(f"compress_threshold_bytes must be >= 0, got {compress_threshold_bytes}")
    wire_flags = int(flags) & ~Flag.COMPRESSED
    if version >= StreamVersion.V2 and len(payload) > compress_threshold_bytes:
        payload = zlib.compress(payload, COMPRESSION_LEVEL)
        wire_flags |= Flag.COMPRESSED
    if len(payload) > _U32_MAX:
        raise ValueError(f"payload of {len(payload)} B does not fit the u32 length field")
    crc = zlib.crc32(payload)
    fields = (int(version), int(type), wire_flags, len(payload), crc)
    if version >= StreamVersion.V3:
        header = HEADER_V3.pack(*fields, timestamp_us)
    else:
        header = HEADER_V1.pack(*fields)
    return header + payload


@dataclass(frozen=True, slots=True)
class PackedEntries:
    """Key/value pairs of a MessagePack map, packed once, without the map's header.

    A map's MessagePack is its header (the count of pairs) followed by the pairs in order, so
    maps that share most of their pairs can be packed by joining pairs: the hub packs a fleet
    message once and each session packs only its own ``seq`` in front
    (:func:`encode_entries`, :mod:`xiaozhi.stream_session`).
    """

    count: int
    raw: bytes


def _map_header(count: int) -> bytes:
    """MessagePack's map header for ``count`` pairs (fixmap, map 16 or map 32)."""
    if count < 16:
        return bytes((0x80 | count,))
    if count < 1 << 16:
        return b"\xde" + count.to_bytes(2, "big")
    return b"\xdf" + count.to_bytes(4, "big")


def pack_entries(data: dict[str, Any]) -> PackedEntries:
    """The pairs of ``data``, packed as :func:`encode_message` packs them inside a map.

    Raises:
        TypeError: a value MessagePack cannot carry.
    """
    packed = _pack(data)
    return PackedEntries(len(data), packed[len(_map_header(len(data))) :])


def encode_entries(
    type: MessageType,
    parts: Iterable[PackedEntries],
    *,
    version: StreamVersion,
    flags: Flag,
    timestamp_us: int | None,
    compress_threshold_bytes: int = COMPRESSION_THRESHOLD_BYTES,
) -> bytes:
    """One frame whose payload is the map made of ``parts``' pairs, in order.

    Byte for byte the frame :func:`encode_message` gives for the message whose data is the
    dict of all the parts' pairs, provided no key repeats (the caller sees to that): shared
    parts are packed once for every session, and only joined here. Compression, length and
    CRC32 are decided on the joined payload, exactly as :func:`encode_message` decides them.

    Raises:
        ValueError: as :func:`encode_message` (flags, version, timestamp, threshold).
    """
    StreamMessage(type, None, version, flags, timestamp_us).check()
    chunks = list(parts)
    payload = _map_header(sum(p.count for p in chunks)) + b"".join(p.raw for p in chunks)
    return _frame(version, type, flags, timestamp_us, payload, compress_threshold_bytes)


def decode_message(
    data: bytes, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> StreamMessage:
    """Parse one complete frame.

    Args:
        data: exactly one frame (one binary WebSocket message; no trailing bytes).
        max_message_bytes: cap on the payload as sent *and* once inflated. Checked against
            the header before the payload is sliced, and enforced while inflating.

    Returns:
        The message; ``flags`` are those on the wire (``COMPRESSED`` included).

    Raises:
        TruncatedFrame: shorter than its version's header.
        UnsupportedVersion: version byte is not 1, 2 or 3.
        PayloadTooLarge: declared length, or inflated size, over ``max_message_bytes``.
        LengthMismatch: declared length differs from the bytes after the header.
        ChecksumMismatch: CRC32 does not match; checked before anything reads the payload.
        UnknownFrameType: type byte outside the seed's table.
        InvalidMessage: reserved flag bits, a flag the version does not have, ENCRYPTED
            (unsupported), or a payload that is not valid MessagePack or has bad wrappers.
        DecompressionFailed: COMPRESSED payload that is not a valid zlib stream.

    Every error is a :class:`~xiaozhi.errors.WireError`; answer with its ``code`` (for
    instance through :func:`error_message`).
    """
    if max_message_bytes <= 0:
        raise ValueError(f"max_message_bytes must be > 0, got {max_message_bytes}")
    size = len(data)
    if size < HEADER_V1.size:
        raise TruncatedFrame(size=size, needed=HEADER_V1.size, what="stream frame header")
    raw_version = data[0]
    if raw_version not in _SUPPORTED:
        raise UnsupportedVersion(version=raw_version, supported=_SUPPORTED)
    version = StreamVersion(raw_version)
    timestamp_us: int | None = None
    if version >= StreamVersion.V3:
        if size < HEADER_V3.size:
            raise TruncatedFrame(size=size, needed=HEADER_V3.size, what="V3 stream frame header")
        _, raw_type, raw_flags, length, crc, timestamp_us = HEADER_V3.unpack_from(data)
        offset = HEADER_V3.size
    else:
        _, raw_type, raw_flags, length, crc = HEADER_V1.unpack_from(data)
        offset = HEADER_V1.size
    if length > max_message_bytes:
        raise PayloadTooLarge(size=length, limit=max_message_bytes)
    if size - offset != length:
        raise LengthMismatch(declared=length, actual=size - offset, what="stream frame length")
    payload = bytes(data[offset:])
    # Seed 002, "Checksum": verify before processing, so nothing below sees corrupt bytes.
    actual_crc = zlib.crc32(payload)
    if actual_crc != crc:
        raise ChecksumMismatch(expected=crc, actual=actual_crc)
    if raw_type not in _KNOWN_TYPES:
        raise UnknownFrameType(frame_type=raw_type, known=_KNOWN_TYPES)
    _check_wire_flags(raw_flags, version)
    flags = Flag(raw_flags)
    if flags & Flag.COMPRESSED:
        payload = _inflate(payload, max_message_bytes)
    return StreamMessage(
        type=MessageType(raw_type),
        data=_unpack(payload),
        version=version,
        flags=flags,
        timestamp_us=timestamp_us,
    )


def _flags_text(bits: int) -> str:
    """``bits`` as a person reads them (the message goes to clients in an ``ERROR``): "flag
    PRIORITY is", "flags PRIORITY, BROADCAST are"; never a Python repr."""
    names = [str(flag.name) for flag in Flag if bits & flag]
    if len(names) == 1:
        return f"flag {names[0]} is"
    return f"flags {', '.join(names)} are"


def _check_wire_flags(raw_flags: int, version: StreamVersion) -> None:
    """Refuse flags seed 002 ("Flags") does not allow for ``version``, and ENCRYPTED."""
    reserved = raw_flags & ~_KNOWN_FLAG_BITS
    if reserved:
        raise InvalidMessage(f"reserved flag bits set: {reserved:#04x}", field="flags")
    extra = raw_flags & ~int(ALLOWED_FLAGS[version])
    if extra:
        raise InvalidMessage(f"{_flags_text(extra)} not allowed in {version.name}", field="flags")
    if raw_flags & Flag.ENCRYPTED:
        # A placeholder in seed 002 ("Future Enhancements"): never hand ciphertext on as data.
        raise InvalidMessage("encryption not supported (ENCRYPTED flag set)", field="flags")


# --------------------------------------------------------------------------- helpers


def negotiate_version(
    client_supported: Iterable[int],
    server_supported: Iterable[int] = _SUPPORTED,
) -> StreamVersion:
    """Pick the highest version both sides speak (seed 002, "Compatibility").

    Args:
        client_supported: versions the peer offered; values that are not known versions
            are ignored, since they come from the peer.
        server_supported: versions we offer.

    Returns:
        The version to fix for the connection's life.

    Raises:
        UnsupportedVersion: no common version, or ``client_supported`` is not iterable;
            answer with an ERROR message and close.
        ValueError: ``server_supported`` names a version this codec does not have.
    """
    ours = {StreamVersion(v) for v in server_supported}
    try:
        offered = list(client_supported)
    except TypeError as err:
        raise UnsupportedVersion(version=client_supported, supported=_sorted(ours)) from err
    theirs = {v for v in offered if type(v) is int and v in _SUPPORTED}
    common = ours & {StreamVersion(v) for v in theirs}
    if not common:
        raise UnsupportedVersion(version=tuple(offered), supported=_sorted(ours))
    return max(common)


def _sorted(versions: set[StreamVersion]) -> tuple[int, ...]:
    return tuple(sorted(int(v) for v in versions))


def error_message(
    code: ErrorCode,
    message: str,
    *,
    version: StreamVersion,
    timestamp_us: int | None = None,
) -> StreamMessage:
    """Build the ERROR message answering a refusal (seed 002, "Error Codes").

    Typical use: ``error_message(err.code, str(err), version=v, timestamp_us=now_us)`` for a
    caught :class:`~xiaozhi.errors.WireError`.

    Returns:
        A message of type ERROR with data ``{"code": int, "name": str, "message": str}``.

    Raises:
        ValueError: the timestamp does not fit ``version`` (see :meth:`StreamMessage.check`).
    """
    code = ErrorCode(code)
    msg = StreamMessage(
        type=MessageType.ERROR,
        data={"code": int(code), "name": code.name, "message": message},
        version=StreamVersion(version),
        timestamp_us=timestamp_us,
    )
    msg.check()
    return msg
