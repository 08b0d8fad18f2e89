"""The xiaozhi-mqtt-gateway's audio frames on its WebSocket to the server (reference §2.6).

A fleet of MQTT + UDP firmware already behind the xinnan Node gateway
(``xinnan-tech/xiaozhi-mqtt-gateway``, ``app.js`` ``WebSocketBridge``) reaches a server by
one WebSocket per voice session, whose URL ends ``?from=mqtt_gateway``. Its text frames are
the firmware's JSON; each binary frame is one Opus packet behind a 16-byte header
(big-endian)::

    offset  0      1      2          4           8             12          16
            | type | flag | len u16  | seq u32   | timestamp u32 | opus_len u32 | opus ...

Both ends read only ``timestamp`` (@8) and ``opus_len`` (@12):

* uplink, gateway -> server (``WebSocketBridge.sendAudio``): bytes 0-7 are zero, the
  timestamp is the one of the device's UDP datagram, ``opus_len`` the packet's length;
* downlink, server -> gateway (xiaozhi-esp32-server ``sendAudioHandle._send_to_mqtt_gateway``):
  ``type`` 1, flag 0, ``len`` u16 and ``opus_len`` u32 both the packet's length, ``seq`` the
  packet's index in the answer, ``timestamp`` the server's clock in ms. The gateway takes
  ``opus[16:16 + opus_len]`` and re-sends it to the device as an encrypted datagram stamped
  with that timestamp (the firmware echoes it for server-side AEC).

It looks like the firmware's binary protocol v2 (timestamp @8, size @12) but its version
field is 0, so :func:`xiaozhi.binary.decode_frame` refuses it; this module is its codec.
Decoding ignores bytes 0-7 as both ends do, and is strict where they are not: ``opus_len``
must match the bytes that follow, and is checked against the limit before anything is sliced.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from xiaozhi.errors import LengthMismatch, PayloadTooLarge, TruncatedFrame

__all__ = [
    "GATEWAY_HEADER",
    "GATEWAY_QUERY",
    "GatewayAudio",
    "decode_gateway_audio",
    "encode_gateway_downlink",
    "encode_gateway_uplink",
    "is_gateway_query",
]

GATEWAY_HEADER: Final = struct.Struct(">BBHIII")
"""type u8, flag u8, len u16, seq u32, timestamp u32 (ms), opus_len u32."""

GATEWAY_QUERY: Final = "from=mqtt_gateway"
"""What the gateway's configured server URL ends with (xinnan docs/mqtt-gateway-integration.md)."""

_DOWNLINK_TYPE: Final = 1
_U16: Final = 0xFFFF
_U32: Final = 0xFFFF_FFFF


@dataclass(frozen=True, slots=True)
class GatewayAudio:
    """One Opus packet from a gateway frame.

    Attributes:
        opus: The Opus packet.
        timestamp_ms: The header's timestamp (uplink: the device datagram's; downlink: the
            server's clock).
        sequence: The header's ``seq`` (0 uplink; the packet's index downlink).
    """

    opus: bytes
    timestamp_ms: int = 0
    sequence: int = 0


def is_gateway_query(query: str) -> bool:
    """True when a WebSocket URL's query string says the gateway is calling.

    The xinnan server tests ``path.endswith("?from=mqtt_gateway")``; here the parameter may
    stand anywhere in the query (``device-id=...&from=mqtt_gateway`` too).
    """
    return any(part == GATEWAY_QUERY for part in query.split("&"))


def decode_gateway_audio(data: bytes, *, max_payload_bytes: int) -> GatewayAudio:
    """Decode one binary WebSocket frame of a gateway connection (either direction).

    Raises:
        TruncatedFrame: shorter than the header, or no Opus after it.
        PayloadTooLarge: ``opus_len`` exceeds ``max_payload_bytes``.
        LengthMismatch: ``opus_len`` disagrees with the bytes after the header.
    """
    size = GATEWAY_HEADER.size
    if len(data) <= size:
        raise TruncatedFrame(size=len(data), needed=size + 1, what="mqtt_gateway audio frame")
    _type, _flag, _len16, sequence, timestamp_ms, opus_len = GATEWAY_HEADER.unpack_from(data)
    if opus_len > max_payload_bytes:
        raise PayloadTooLarge(size=opus_len, limit=max_payload_bytes)
    if opus_len != len(data) - size:
        raise LengthMismatch(declared=opus_len, actual=len(data) - size)
    return GatewayAudio(bytes(data[size:]), timestamp_ms, sequence)


def _check(opus: bytes, timestamp_ms: int, sequence: int) -> None:
    if not opus:
        raise ValueError("a gateway audio frame carries one non-empty Opus packet")
    if len(opus) > _U16:
        raise ValueError(f"Opus packet of {len(opus)} bytes does not fit the u16 length")
    if not (0 <= timestamp_ms <= _U32 and 0 <= sequence <= _U32):
        raise ValueError("timestamp and sequence are u32")


def encode_gateway_downlink(opus: bytes, *, sequence: int, timestamp_ms: int) -> bytes:
    """One downlink frame, server -> gateway, as the xinnan server writes it.

    Raises:
        ValueError: empty or oversized packet, or a field out of its range (caller misuse).
    """
    _check(opus, timestamp_ms, sequence)
    size = len(opus)
    return GATEWAY_HEADER.pack(_DOWNLINK_TYPE, 0, size, sequence, timestamp_ms, size) + opus


def encode_gateway_uplink(opus: bytes, *, timestamp_ms: int) -> bytes:
    """One uplink frame, gateway -> server, as the gateway writes it (bytes 0-7 zero).

    Raises:
        ValueError: empty or oversized packet, or a timestamp out of range (caller misuse).
    """
    _check(opus, timestamp_ms, 0)
    return GATEWAY_HEADER.pack(0, 0, 0, 0, timestamp_ms, len(opus)) + opus
