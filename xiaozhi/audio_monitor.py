"""Audio monitor packets: a device's live Opus audio streamed to listeners (seed 004).

The edge's ``/api/ws/audio`` endpoint sends one packet per WebSocket binary message, in the
layout of seed 004's ``encode_audio_packet`` (all little-endian, 15-byte header)::

    offset size  field
    0      1     type: 0x02 (audio)
    1      4     timestamp u32 LE, ms since the stream started
    5      2     duration u16 LE, ms of audio in this packet
    7      4     sequence u32 LE
    11     4     data length u32 LE
    15     N     Opus packet

Seed 004 removed its decoder ("decode_audio_packet function was removed"); this module gives
the pair back, with the data length checked against the limit before the slice and against
the bytes that actually follow. A zero-length Opus packet is valid: to an Opus decoder it means
"a packet was lost here" (packet-loss concealment).
"""

from __future__ import annotations

import collections
import enum
import struct
from dataclasses import dataclass
from typing import Final

from xiaozhi.errors import LengthMismatch, PayloadTooLarge, TruncatedFrame, UnknownFrameType

__all__ = [
    "AUDIO_HEADER",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "AudioPacket",
    "ListenerStream",
    "MonitorPacketType",
    "decode_audio_packet",
    "encode_audio_packet",
]


class MonitorPacketType(enum.IntEnum):
    """Byte 0 of a monitor packet (seed 004 ``AUDIO_PACKET_TYPE``)."""

    AUDIO = 0x02


AUDIO_HEADER: Final = struct.Struct("<BIHII")
"""type u8, timestamp u32, duration u16, sequence u32, data length u32: 15 bytes, no padding."""

DEFAULT_MAX_PAYLOAD_BYTES: Final = 64 * 1024
"""Default decode limit for the Opus data; one 60 ms packet is a few hundred bytes."""

_U16_MAX: Final = 0xFFFF
_U32_MAX: Final = 0xFFFF_FFFF
_KNOWN_TYPES: Final[tuple[int, ...]] = tuple(MonitorPacketType)


@dataclass(frozen=True, slots=True)
class AudioPacket:
    """One audio monitor packet.

    Attributes:
        timestamp_ms: ms since the listener's stream started (u32; seed 004 casts its elapsed
            time with ``as u32``, so the sender wraps it modulo 2**32).
        duration_ms: ms of audio in ``opus`` (u16).
        sequence: the source frame's sequence number (u32); a gap means the listener lagged
            and frames were skipped (seed 004 ``RecvError::Lagged``).
        opus: one Opus packet.

    Raises:
        ValueError: a field does not fit its wire width, or ``opus`` is not bytes
            (caller misuse, checked when built).
    """

    timestamp_ms: int
    duration_ms: int
    sequence: int
    opus: bytes

    def __post_init__(self) -> None:
        for name, value, limit in (
            ("timestamp_ms", self.timestamp_ms, _U32_MAX),
            ("duration_ms", self.duration_ms, _U16_MAX),
            ("sequence", self.sequence, _U32_MAX),
        ):
            if not 0 <= value <= limit:
                raise ValueError(f"{name} {value} outside 0..{limit}")
        if not isinstance(self.opus, bytes):
            raise ValueError(f"opus must be bytes, got {type(self.opus).__name__}")


def encode_audio_packet(packet: AudioPacket) -> bytes:
    """Encode one packet in seed 004's layout.

    Args:
        packet: The packet to send.

    Returns:
        The bytes of one WebSocket binary message.

    Raises:
        PayloadTooLarge: the Opus data does not fit the u32 length field.
    """
    if len(packet.opus) > _U32_MAX:
        raise PayloadTooLarge(size=len(packet.opus), limit=_U32_MAX, what="opus data")
    header = AUDIO_HEADER.pack(
        MonitorPacketType.AUDIO,
        packet.timestamp_ms,
        packet.duration_ms,
        packet.sequence,
        len(packet.opus),
    )
    return header + packet.opus


def decode_audio_packet(
    data: bytes, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> AudioPacket:
    """Decode one audio monitor packet.

    Args:
        data: The whole WebSocket binary message.
        max_payload_bytes: Largest Opus data accepted, in bytes; checked against the declared
            length before the data is sliced.

    Returns:
        The packet.

    Raises:
        TruncatedFrame: ``data`` is shorter than the 15-byte header (including empty).
        UnknownFrameType: byte 0 is not 0x02.
        PayloadTooLarge: the declared data length exceeds ``max_payload_bytes``.
        LengthMismatch: the declared data length disagrees with the bytes after the header
            (missing or trailing bytes).
    """
    if len(data) < AUDIO_HEADER.size:
        raise TruncatedFrame(size=len(data), needed=AUDIO_HEADER.size, what="audio packet")
    packet_type, timestamp_ms, duration_ms, sequence, length = AUDIO_HEADER.unpack_from(data)
    if packet_type not in _KNOWN_TYPES:
        raise UnknownFrameType(frame_type=packet_type, known=_KNOWN_TYPES)
    if length > max_payload_bytes:
        raise PayloadTooLarge(size=length, limit=max_payload_bytes, what="opus data")
    actual = len(data) - AUDIO_HEADER.size
    if length != actual:
        raise LengthMismatch(declared=length, actual=actual, what="data length")
    return AudioPacket(timestamp_ms, duration_ms, sequence, bytes(data[AUDIO_HEADER.size :]))


class ListenerStream:
    """One listener's packets, numbered and timestamped for it (as seed 004 stamps them).

    The edge's ``/api/ws/audio`` and the hub's ``/api/v1/devices/{id}/listen`` keep one per
    listener: a bounded queue, so one that falls behind loses its oldest packets (a
    ``sequence`` gap, seed 004's ``RecvError::Lagged``) and never slows the device or the
    other listeners.

    Args:
        started: The listener's start, in the clock ``now`` is given in (seconds).
        limit: Packets kept waiting at most.
    """

    def __init__(self, started: float, limit: int) -> None:
        self.started = started
        self.queue: collections.deque[bytes] = collections.deque(maxlen=limit)
        self.sequence = 0
        self.lagged = 0

    def offer(self, opus: bytes, duration_ms: int, now: float) -> bool:
        """Queue one packet; True when the oldest had to go (the listener skips ahead)."""
        lagging = len(self.queue) == self.queue.maxlen
        self.lagged += lagging
        timestamp = int((now - self.started) * 1000) & _U32_MAX
        packet = AudioPacket(timestamp, duration_ms, self.sequence & _U32_MAX, opus)
        self.sequence += 1
        self.queue.append(encode_audio_packet(packet))
        return lagging
