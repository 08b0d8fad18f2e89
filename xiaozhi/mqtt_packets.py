"""The MQTT 3.1.1 packets real xiaozhi firmware uses, for the edge's device listener.

Firmware in MQTT mode (firmware reference §2.2) connects, publishes JSON at QoS 0 on one
topic, pings, and disconnects; since January 2025 it never subscribes, and the server pushes
to ``devices/p2p/<mac>`` anyway. The edge terminates that connection itself (it is not a
broker: the system's bus stays Mosquitto), so this codec covers only those packets, plus
enough of SUBSCRIBE to refuse it properly (older firmware still sends one).

Every packet (MQTT 3.1.1 §2.2)::

    | type u4 | flags u4 | remaining length: 1-4 bytes, 7 bits each, low first | body |

Strings are ``u16 length + UTF-8`` (§1.5.3). Decoding takes complete bytes:
:func:`split_packet` finds one whole packet in a stream buffer (checking the declared length
against the limit before anything waits for it), and ``decode_*`` read one body. Encoders
return the bytes to write.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from xiaozhi.errors import MalformedPacket, PayloadTooLarge, UnsupportedVersion

__all__ = [
    "MAX_REMAINING_LENGTH",
    "PROTOCOL_LEVEL",
    "SUBACK_FAILURE",
    "ConnackCode",
    "Connect",
    "PacketType",
    "Publish",
    "Subscribe",
    "decode_connect",
    "decode_publish",
    "decode_subscribe",
    "encode_connack",
    "encode_connect",
    "encode_packet",
    "encode_pingresp",
    "encode_publish",
    "encode_suback",
    "split_packet",
]

PROTOCOL_LEVEL: Final = 4
"""MQTT 3.1.1 (§3.1.2.2); the firmware's esp-mqtt speaks it."""

SUBACK_FAILURE: Final = 0x80
"""SUBACK return code "Failure" (§3.9.3): how 3.1.1 refuses a subscription in-protocol."""

_MAX_REMAINING_LENGTH_BYTES: Final = 4  # §2.2.3: at most 268,435,455 bytes
_U16: Final = struct.Struct(">H")


class PacketType(enum.IntEnum):
    """Control packet types (§2.2.1)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14


class ConnackCode(enum.IntEnum):
    """CONNACK return codes (§3.2.2.3); the only refusal reasons 3.1.1 can carry."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2  # a client id not in the xinnan form
    SERVER_UNAVAILABLE = 3  # the edge is shutting down
    BAD_USERNAME_OR_PASSWORD = 4  # a password that is not this device's token or signature
    NOT_AUTHORIZED = 5  # a device not on the allow-list


@dataclass(frozen=True, slots=True)
class Connect:
    """What a CONNECT says (§3.1); a will, if any, is skipped: no broker here to deliver it."""

    client_id: str
    username: str | None
    password: str | None
    keepalive_seconds: int
    clean_session: bool = True


@dataclass(frozen=True, slots=True)
class Publish:
    """One PUBLISH (§3.3); ``packet_id`` only for QoS 1 and 2."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    """One SUBSCRIBE (§3.8): its packet id and the filters it asks for."""

    packet_id: int
    filters: tuple[str, ...]


def split_packet(
    buffer: bytes | bytearray, *, max_packet_bytes: int
) -> tuple[int, bytes, int] | None:
    """The first whole packet in ``buffer``: ``(first byte, body, bytes used)``, or None while
    it is incomplete.

    Raises:
        MalformedPacket: the remaining length runs over 4 bytes.
        PayloadTooLarge: the declared body exceeds ``max_packet_bytes`` (raised as soon as
            the length is read, before any of the body is awaited).
    """
    if len(buffer) < 2:
        return None
    remaining = 0
    for index in range(_MAX_REMAINING_LENGTH_BYTES):
        position = 1 + index
        if position >= len(buffer):
            return None
        byte = buffer[position]
        remaining |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            break
    else:
        raise MalformedPacket("remaining length longer than 4 bytes")
    if remaining > max_packet_bytes:
        raise PayloadTooLarge(size=remaining, limit=max_packet_bytes, what="MQTT packet")
    start = position + 1
    end = start + remaining
    if len(buffer) < end:
        return None
    return buffer[0], bytes(buffer[start:end]), end


class _Reader:
    """Reads MQTT fields off one packet body, refusing anything that runs past its end."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.at = 0

    def take(self, size: int, what: str) -> bytes:
        end = self.at + size
        if end > len(self.body):
            raise MalformedPacket(f"{what} runs past the end of the packet")
        chunk = self.body[self.at : end]
        self.at = end
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int(_U16.unpack(self.take(2, what))[0])

    def binary(self, what: str) -> bytes:
        return self.take(self.u16(f"{what} length"), what)

    def text(self, what: str) -> str:
        raw = self.binary(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise MalformedPacket(f"{what} is not UTF-8") from err

    def rest(self) -> bytes:
        chunk = self.body[self.at :]
        self.at = len(self.body)
        return chunk


def decode_connect(body: bytes) -> Connect:
    """Read a CONNECT body (§3.1).

    Raises:
        MalformedPacket: a field runs past the packet, the reserved flag is set, or a
            password comes without a username (§3.1.2.9).
        UnsupportedVersion: not MQTT 3.1.1 (answer CONNACK 1, §3.1.2.2).
    """
    reader = _Reader(body)
    name = reader.text("protocol name")
    level = reader.u8("protocol level")
    if name != "MQTT" or level != PROTOCOL_LEVEL:
        raise UnsupportedVersion(version=f"{name} level {level}", supported=(PROTOCOL_LEVEL,))
    flags = reader.u8("connect flags")
    if flags & 0x01:
        raise MalformedPacket("the reserved connect flag is set")
    keepalive = reader.u16("keep alive")
    client_id = reader.text("client id")
    if flags & 0x04:  # a will: read past it, nobody here would deliver it
        reader.text("will topic")
        reader.binary("will message")
    username = reader.text("user name") if flags & 0x80 else None
    password = None
    if flags & 0x40:
        if username is None:
            raise MalformedPacket("a password without a user name")
        password = reader.binary("password").decode("utf-8", "replace")
    return Connect(
        client_id=client_id,
        username=username,
        password=password,
        keepalive_seconds=keepalive,
        clean_session=bool(flags & 0x02),
    )


def decode_publish(flags: int, body: bytes) -> Publish:
    """Read a PUBLISH body (§3.3) given the low nibble of its first byte.

    Raises:
        MalformedPacket: QoS 3, or the topic runs past the packet.
    """
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")
    reader = _Reader(body)
    topic = reader.text("topic name")
    packet_id = reader.u16("packet id") if qos else None
    return Publish(
        topic=topic,
        payload=reader.rest(),
        qos=qos,
        retain=bool(flags & 0x01),
        dup=bool(flags & 0x08),
        packet_id=packet_id,
    )


def decode_subscribe(body: bytes) -> Subscribe:
    """Read a SUBSCRIBE body (§3.8): enough to answer it.

    Raises:
        MalformedPacket: a filter runs past the packet, or there is none.
    """
    reader = _Reader(body)
    packet_id = reader.u16("packet id")
    filters = []
    while reader.at < len(body):
        filters.append(reader.text("topic filter"))
        reader.u8("requested QoS")
    if not filters:
        raise MalformedPacket("SUBSCRIBE without a topic filter")
    return Subscribe(packet_id=packet_id, filters=tuple(filters))


def _remaining_length(size: int) -> bytes:
    out = bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        out.append(byte | (0x80 if size else 0))
        if not size:
            return bytes(out)


def _string(text: str | bytes) -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return _U16.pack(len(raw)) + raw


def encode_packet(packet_type: PacketType, body: bytes = b"", flags: int = 0) -> bytes:
    """One packet: the fixed header, then ``body``."""
    return bytes([(packet_type << 4) | flags]) + _remaining_length(len(body)) + body


def encode_connack(code: ConnackCode, *, session_present: bool = False) -> bytes:
    """CONNACK (§3.2); a session is never kept, so ``session_present`` is normally False."""
    return encode_packet(PacketType.CONNACK, bytes([int(session_present), code]))


MAX_REMAINING_LENGTH: Final = 268_435_455
"""MQTT's largest packet body (four remaining-length bytes, §2.2.3)."""


def encode_publish(
    topic: str | bytes,
    payload: bytes,
    *,
    retain: bool = False,
    mqtt5: bool = False,
    packet_id: int | None = None,
) -> bytes:
    """PUBLISH (MQTT 3.1.1 §3.3, or MQTT 5 §3.3 with no properties): at QoS 0, how the edge
    pushes JSON to a firmware device and how processes publish telemetry to the broker; with
    a ``packet_id``, at QoS 1, how processes publish what must arrive (the caller keeps the
    message until the broker's PUBACK for that id).

    Raises:
        ValueError: ``topic`` is empty, holds a wildcard or is over 65,535 bytes, the packet
            is over MQTT's size limit (what paho's ``publish`` raises for them), or
            ``packet_id`` is not 1-65,535 (§2.3.1: 0 is not an id).
    """
    raw = topic.encode("utf-8") if isinstance(topic, str) else topic
    if not raw or len(raw) > 65_535 or b"+" in raw or b"#" in raw:
        raise ValueError(f"invalid topic to publish on: {raw[:80]!r}")
    flags = int(retain)
    head = _string(raw)
    if packet_id is not None:
        if not 0 < packet_id <= 0xFFFF:
            raise ValueError(f"packet id out of range: {packet_id}")
        head += _U16.pack(packet_id)
        flags |= 0x02  # QoS 1
    body = head + (b"\x00" if mqtt5 else b"") + payload
    if len(body) > MAX_REMAINING_LENGTH:
        raise ValueError(f"payload too large: {len(payload)} bytes")
    return encode_packet(PacketType.PUBLISH, body, flags=flags)


def encode_pingresp() -> bytes:
    """PINGRESP (§3.13)."""
    return encode_packet(PacketType.PINGRESP)


def encode_suback(packet_id: int, codes: tuple[int, ...]) -> bytes:
    """SUBACK (§3.9): one return code per filter asked for."""
    return encode_packet(PacketType.SUBACK, _U16.pack(packet_id) + bytes(codes), flags=0)


def encode_connect(
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
    keepalive_seconds: int = 240,
) -> bytes:
    """CONNECT as the firmware sends it (clean session, no will); for simulators and tests."""
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = _string("MQTT") + bytes([PROTOCOL_LEVEL, flags]) + _U16.pack(keepalive_seconds)
    body += _string(client_id)
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _string(password)
    return encode_packet(PacketType.CONNECT, body)
