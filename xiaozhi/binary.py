"""The xiaozhi WebSocket binary protocol, versions 1, 2 and 3 (all big-endian).

One WebSocket binary message carries one frame. The layouts are those of the real firmware
(reference ``xiaozhi-firmware.md`` §1.7, ``websocket_protocol.cc``/``protocol.h``) and of
seeds 000 (v2) and 001 (v3)::

    v1  | payload ...                                        raw Opus, no header (default)
    v2  | version u16 | type u16 | reserved u32 | timestamp u32 ms | payload_size u32 | payload
    v3  | type u8 | reserved u8 | payload_size u16 | payload

``type`` is 0 (Opus) or 1 (JSON). The version is fixed per connection by the
``Protocol-Version`` header or the hello ``version`` (design.md §4); it is always passed in by
the caller and never guessed from the bytes: seed 001's auto-detect takes a v1 Opus packet
that starts ``00 00`` or ``01 00`` and whose bytes 2-3 happen to equal its length - 4 for a
v3 frame, and strips four bytes of audio.

Decoding is strict where the firmware is not (reference §1.7: it trusts ``payload_size``):
the declared size must match the bytes that follow exactly, and is checked against
``max_payload_bytes`` before anything is sliced. ``reserved`` fields are ignored on receive and
written as 0, as the firmware does.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any, Final

from xiaozhi import jsonutil
from xiaozhi.errors import (
    LengthMismatch,
    PayloadTooLarge,
    TruncatedFrame,
    UnknownFrameType,
    UnsupportedVersion,
    VersionMismatch,
)

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "HEADER_SIZES",
    "SUPPORTED_VERSIONS",
    "V2_HEADER",
    "V3_HEADER",
    "V3_MAX_PAYLOAD_BYTES",
    "BinaryFrame",
    "BinaryVersion",
    "FrameType",
    "decode_frame",
    "decode_json_payload",
    "encode_frame",
    "encode_opus",
]


class BinaryVersion(enum.IntEnum):
    """Binary protocol versions (reference §1.7); fixed per connection."""

    V1 = 1  # raw Opus, no header; the firmware default
    V2 = 2  # 16-byte header with a timestamp, for server-side AEC (seed 000)
    V3 = 3  # 4-byte compact header (seed 001)


class FrameType(enum.IntEnum):
    """The ``type`` field of v2/v3 headers (seed 000 "Struct Mapping", seed 001)."""

    OPUS = 0
    JSON = 1


V2_HEADER: Final = struct.Struct(">HHIII")
"""v2 header: version u16, type u16, reserved u32, timestamp u32 (ms), payload_size u32."""

V3_HEADER: Final = struct.Struct(">BBH")
"""v3 header: type u8, reserved u8, payload_size u16."""

HEADER_SIZES: Final[dict[int, int]] = {
    BinaryVersion.V1: 0,
    BinaryVersion.V2: V2_HEADER.size,
    BinaryVersion.V3: V3_HEADER.size,
}
"""Header size in bytes per version: v1 0, v2 16, v3 4 (seed 001 size table)."""

SUPPORTED_VERSIONS: Final[tuple[int, ...]] = tuple(BinaryVersion)

DEFAULT_MAX_PAYLOAD_BYTES: Final = 64 * 1024
"""Default decode limit. One 60 ms Opus packet is a few hundred bytes (reference §1.7)."""

V3_MAX_PAYLOAD_BYTES: Final = 0xFFFF
"""v3's ``payload_size`` is a u16 (seed 001: "max 65535 bytes")."""

_U32_MAX: Final = 0xFFFF_FFFF
_KNOWN_TYPES: Final[tuple[int, ...]] = tuple(FrameType)


@dataclass(frozen=True, slots=True)
class BinaryFrame:
    """One decoded binary frame.

    Attributes:
        type: Opus audio or JSON (v2/v3 only; v1 frames are always Opus).
        payload: The Opus packet or the UTF-8 JSON text.
        timestamp_ms: v2 only, else 0. Uplink it echoes the timestamp of the last downlink
            packet the device played, for server AEC; it is not a capture clock
            (reference §1.7).

    Raises:
        ValueError: ``type`` is not a frame type, ``payload`` is not bytes, or
            ``timestamp_ms`` does not fit a u32 (caller misuse, checked when built).
    """

    type: FrameType
    payload: bytes
    timestamp_ms: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.type, FrameType):
            object.__setattr__(self, "type", FrameType(self.type))
        if not isinstance(self.payload, bytes):
            raise ValueError(f"payload must be bytes, got {type(self.payload).__name__}")
        if not 0 <= self.timestamp_ms <= _U32_MAX:
            raise ValueError(f"timestamp_ms {self.timestamp_ms} does not fit a u32")


# Lookup tables instead of enum calls: these run once per audio frame on the edge.
_VERSION_BY_NUMBER = {int(v): v for v in BinaryVersion}
_TYPE_BY_NUMBER = {int(t): t for t in FrameType}


def _check_version(version: int) -> BinaryVersion:
    # bool is an int subclass, and True must not pass for version 1.
    is_number = isinstance(version, int) and not isinstance(version, bool)
    checked = _VERSION_BY_NUMBER.get(version) if is_number else None
    if checked is None:
        raise UnsupportedVersion(version=version, supported=SUPPORTED_VERSIONS)
    return checked


def _check_type(frame_type: int) -> FrameType:
    checked = _TYPE_BY_NUMBER.get(frame_type)
    if checked is None:
        raise UnknownFrameType(frame_type=frame_type, known=_KNOWN_TYPES)
    return checked


def _check_payload_size(declared: int, actual: int, limit: int) -> None:
    # The limit comes first: a hostile size is refused before anything is copied.
    if declared > limit:
        raise PayloadTooLarge(size=declared, limit=limit)
    if declared != actual:
        raise LengthMismatch(declared=declared, actual=actual)


def decode_frame(
    data: bytes, version: int, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> BinaryFrame:
    """Decode one WebSocket binary message of the connection's protocol version.

    Args:
        data: The whole binary message.
        version: The connection's negotiated version (1, 2 or 3); never guessed from ``data``.
        max_payload_bytes: Largest payload accepted, in bytes; checked against the declared
            size before the payload is sliced.

    Returns:
        The frame. v1 frames are Opus with timestamp 0; v3 frames have timestamp 0.

    Raises:
        UnsupportedVersion: ``version`` is not 1, 2 or 3.
        TruncatedFrame: ``data`` is shorter than the header, or a v1 frame is empty.
        VersionMismatch: a v2 header's version field is not 2. The xiaozhi-mqtt-gateway's
            offset-compatible variant writes 0 there (and other bytes in the type and reserved
            fields, reference §2.6); we stay strict, so such a peer needs its own decoder.
        UnknownFrameType: the type field is not 0 (Opus) or 1 (JSON).
        PayloadTooLarge: the declared (v2/v3) or actual (v1) payload exceeds
            ``max_payload_bytes``.
        LengthMismatch: ``payload_size`` disagrees with the bytes after the header, whether
            some are missing or trailing bytes follow (the firmware does not check this,
            reference §1.7 and §6.1).
    """
    checked = _check_version(version)
    if checked is BinaryVersion.V1:
        if not data:
            raise TruncatedFrame(size=0, needed=1, what="v1 frame")
        if len(data) > max_payload_bytes:
            raise PayloadTooLarge(size=len(data), limit=max_payload_bytes)
        return BinaryFrame(FrameType.OPUS, bytes(data))
    if checked is BinaryVersion.V2:
        if len(data) < V2_HEADER.size:
            raise TruncatedFrame(size=len(data), needed=V2_HEADER.size, what="v2 frame")
        header_version, frame_type, _reserved, timestamp_ms, payload_size = V2_HEADER.unpack_from(
            data
        )
        if header_version != BinaryVersion.V2:
            raise VersionMismatch(expected=BinaryVersion.V2, got=header_version)
        kind = _check_type(frame_type)
        _check_payload_size(payload_size, len(data) - V2_HEADER.size, max_payload_bytes)
        return BinaryFrame(kind, bytes(data[V2_HEADER.size :]), timestamp_ms)
    # v3. Seed 001 first unpacked ">BBI" (6 bytes) from this 4-byte header; it is ">BBH".
    if len(data) < V3_HEADER.size:
        raise TruncatedFrame(size=len(data), needed=V3_HEADER.size, what="v3 frame")
    frame_type, _reserved, payload_size = V3_HEADER.unpack_from(data)
    kind = _check_type(frame_type)
    _check_payload_size(payload_size, len(data) - V3_HEADER.size, max_payload_bytes)
    return BinaryFrame(kind, bytes(data[V3_HEADER.size :]))


def encode_frame(frame: BinaryFrame, version: int) -> bytes:
    """Encode one frame for a connection of the given protocol version.

    v1 and v3 carry no timestamp: ``frame.timestamp_ms`` is dropped there, as the firmware
    uses 0 for them (reference §1.7), so one caller can stamp frames for any version.

    Args:
        frame: The frame to send.
        version: The connection's negotiated version (1, 2 or 3).

    Returns:
        The bytes of one WebSocket binary message.

    Raises:
        UnsupportedVersion: ``version`` is not 1, 2 or 3.
        ValueError: a v1 frame that is JSON or empty: v1 has no type field and an empty
            message is not an Opus packet (caller misuse).
        PayloadTooLarge: the payload does not fit the size field (v3: 65535 bytes, v2: u32).
    """
    payload = frame.payload
    checked = _check_version(version)
    if checked is BinaryVersion.V1:
        if frame.type is not FrameType.OPUS:
            raise ValueError("v1 frames are raw Opus; send JSON as a WebSocket text frame")
        if not payload:
            raise ValueError("v1 cannot carry an empty payload")
        return payload
    if checked is BinaryVersion.V2:
        if len(payload) > _U32_MAX:
            raise PayloadTooLarge(size=len(payload), limit=_U32_MAX)
        header = V2_HEADER.pack(BinaryVersion.V2, frame.type, 0, frame.timestamp_ms, len(payload))
        return header + payload
    if len(payload) > V3_MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(size=len(payload), limit=V3_MAX_PAYLOAD_BYTES)
    return V3_HEADER.pack(frame.type, 0, len(payload)) + payload


def encode_opus(payload: bytes, version: int, *, timestamp_ms: int = 0) -> bytes:
    """Encode one Opus packet as a binary frame; shorthand for :func:`encode_frame`.

    Args:
        payload: One Opus packet (one per WebSocket message, reference §1.7).
        version: The connection's negotiated version.
        timestamp_ms: v2 timestamp (the server's downlink clock); ignored by v1 and v3.

    Returns:
        The bytes of one WebSocket binary message.

    Raises:
        Everything :func:`encode_frame` and :class:`BinaryFrame` raise.
    """
    return encode_frame(BinaryFrame(FrameType.OPUS, payload, timestamp_ms), version)


def decode_json_payload(frame: BinaryFrame) -> dict[str, Any]:
    """Parse the JSON object carried by a type-1 frame (seed 000 "JSON in binary").

    Args:
        frame: A decoded frame of type :attr:`FrameType.JSON`.

    Returns:
        The JSON object.

    Raises:
        ValueError: ``frame`` is an Opus frame (caller misuse: dispatch on ``frame.type``).
        InvalidMessage: the payload is not UTF-8, not JSON, or not a JSON object.
    """
    if frame.type is not FrameType.JSON:
        raise ValueError(f"frame type is {frame.type.name}, not JSON")
    # The payload size was bounded by decode_frame; jsonutil turns orjson errors into ours.
    return jsonutil.loads_object(frame.payload)
