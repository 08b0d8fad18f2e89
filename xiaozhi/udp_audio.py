"""Encrypted Opus over UDP: the audio half of the firmware's MQTT + UDP transport.

Firmware reference §2.4 (``mqtt_protocol.cc`` ``SendAudio`` and the UDP ``OnMessage``), both
directions, all big-endian. One datagram carries one Opus packet::

    offset 0     1       2            4       8            12          16
           | type | flags | payload_len | ssrc | timestamp | sequence | AES-128-CTR(opus) |
             u8     u8      u16           u32    u32 (ms)    u32

``type`` is always 0x01. The 16-byte header **is** the CTR initial counter block: the sender
copies the 16-byte ``nonce`` from the server hello, writes ``payload_len``, ``timestamp`` and
``sequence`` into it, encrypts with it and sends it in clear. ``type``, ``flags`` and ``ssrc``
are the nonce's own bytes, so the server builds its nonce as a header with its ssrc and zeros
(as the xinnan gateway does) and routes an incoming datagram by its ssrc.

The receiver (the firmware, and :class:`AudioChannel` here) drops a datagram whose length is
not ``16 + payload_len``, whose type is not 0x01, or whose sequence is not above the last
accepted one (a replay, duplicate or late packet); a gap is accepted (lost packets) and
counted. Sequences start at 1 after every hello (new key, new nonce, counters at 0).

AES-CTR has no integrity check: a datagram encrypted with another key decrypts to noise
without any error. :class:`AudioChannel` therefore checks what comes out against the Opus
packet header (RFC 6716 §3.1: the TOC byte's frame size and the frame count) and refuses a
packet whose duration is not the session's frame duration. About 93 % of noise packets fail
that check; the rest reach the Opus decoder, which counts them as decode errors.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from xiaozhi.errors import (
    LengthMismatch,
    PayloadTooLarge,
    StaleSequence,
    TruncatedFrame,
    Undecryptable,
    UnknownFrameType,
)

__all__ = [
    "AUDIO_PACKET_TYPE",
    "HEADER",
    "KEY_BYTES",
    "MAX_PAYLOAD_BYTES",
    "AudioChannel",
    "UdpHeader",
    "aes_ctr",
    "decode_datagram",
    "encode_datagram",
    "make_nonce",
    "opus_duration_ms",
]

HEADER: Final = struct.Struct(">BBHIII")
"""type u8, flags u8, payload_len u16, ssrc u32, timestamp u32, sequence u32 (16 bytes)."""

AUDIO_PACKET_TYPE: Final = 0x01
KEY_BYTES: Final = 16
"""AES-128 key and nonce are 16 bytes each; the firmware refuses any other length."""

MAX_PAYLOAD_BYTES: Final = 0xFFFF
"""``payload_len`` is a u16; the firmware refuses to send more."""

_U32: Final = 2**32

# RFC 6716 §3.1: the TOC byte's 5-bit config gives the frame size, in tenths of a ms (2.5 ms
# is the smallest). Configs 0-11 are SILK (10/20/40/60 ms), 12-15 hybrid (10/20 ms), 16-31
# CELT (2.5/5/10/20 ms).
_FRAME_TENTHS_MS: Final = (
    *(100, 200, 400, 600) * 3,
    *(100, 200) * 2,
    *(25, 50, 100, 200) * 4,
)


@dataclass(frozen=True, slots=True)
class UdpHeader:
    """The 16 clear bytes before the ciphertext; also the AES-CTR IV."""

    ssrc: int
    timestamp: int
    sequence: int
    payload_len: int = 0
    flags: int = 0
    type: int = AUDIO_PACKET_TYPE

    def encode(self) -> bytes:
        """The header's 16 bytes.

        Raises:
            struct.error: a field outside its width (a caller bug, not a peer's).
        """
        return HEADER.pack(
            self.type, self.flags, self.payload_len, self.ssrc, self.timestamp, self.sequence
        )


def make_nonce(ssrc: int) -> bytes:
    """The server's nonce: a header with ``ssrc`` and zeros (the xinnan gateway's form), so
    the device's datagrams carry ``ssrc`` in clear and can be routed by it."""
    return UdpHeader(ssrc=ssrc, timestamp=0, sequence=0).encode()


def aes_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-128-CTR with a 16-byte initial counter block; encrypting and decrypting are one.

    Raises:
        ValueError: ``key`` or ``iv`` is not 16 bytes.
    """
    if len(key) != KEY_BYTES or len(iv) != KEY_BYTES:
        raise ValueError(f"AES-128-CTR needs a 16-byte key and IV, got {len(key)} and {len(iv)}")
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def encode_datagram(
    key: bytes, nonce: bytes, payload: bytes, *, timestamp: int, sequence: int
) -> bytes:
    """One datagram as the firmware's ``SendAudio`` builds it: the nonce with length,
    timestamp and sequence written in, then the payload encrypted under that header.

    Raises:
        PayloadTooLarge: over 65535 bytes (``payload_len`` is a u16).
        ValueError: ``key`` or ``nonce`` is not 16 bytes.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(size=len(payload), limit=MAX_PAYLOAD_BYTES, what="audio packet")
    if len(nonce) != KEY_BYTES:
        raise ValueError(f"the nonce must be 16 bytes, got {len(nonce)}")
    header = bytearray(nonce)
    struct.pack_into(">H", header, 2, len(payload))
    struct.pack_into(">II", header, 8, timestamp % _U32, sequence % _U32)
    iv = bytes(header)
    return iv + aes_ctr(key, iv, payload)


def decode_datagram(data: bytes) -> tuple[UdpHeader, bytes]:
    """Split a datagram into its header and its (still encrypted) payload.

    Raises:
        TruncatedFrame: shorter than the 16-byte header.
        UnknownFrameType: ``type`` is not 0x01.
        LengthMismatch: the datagram is not exactly ``16 + payload_len`` bytes.
    """
    if len(data) < HEADER.size:
        raise TruncatedFrame(size=len(data), needed=HEADER.size, what="UDP audio datagram")
    packet_type, flags, payload_len, ssrc, timestamp, sequence = HEADER.unpack_from(data)
    if packet_type != AUDIO_PACKET_TYPE:
        raise UnknownFrameType(frame_type=packet_type, known=(AUDIO_PACKET_TYPE,))
    if len(data) - HEADER.size != payload_len:
        raise LengthMismatch(
            declared=payload_len, actual=len(data) - HEADER.size, what="payload_len"
        )
    header = UdpHeader(
        ssrc=ssrc,
        timestamp=timestamp,
        sequence=sequence,
        payload_len=payload_len,
        flags=flags,
        type=packet_type,
    )
    return header, data[HEADER.size :]


def opus_duration_ms(packet: bytes) -> float | None:
    """The audio one Opus packet holds (RFC 6716 §3.1-3.2), or None when its header is not
    a valid packet's: empty, or a code 3 packet without its frame count byte or with zero
    frames or over 120 ms."""
    if not packet:
        return None
    toc = packet[0]
    frame_tenths = _FRAME_TENTHS_MS[toc >> 3]
    code = toc & 0x03
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        if len(packet) < 2:
            return None
        frames = packet[1] & 0x3F
        if frames == 0 or frames * frame_tenths > 1200:
            return None
    return frames * frame_tenths / 10


@dataclass(slots=True)
class AudioChannel:
    """One device's UDP audio session, from one server hello to the next (sans-I/O).

    Build a new one on every hello: a fresh ``key`` and ``ssrc``, sequences at 0 (firmware
    reference §2.3). Feed each datagram routed to it to :meth:`open`; :meth:`seal` each Opus
    packet going down. ``peer`` is learnt from the first datagram that opens (the device's
    NAT mapping; the server cannot send before it, reference §2.4) and follows the device if
    its address changes.

    Attributes:
        key: The AES-128 key sent in the hello (hex).
        ssrc: This channel's id, bytes 4-7 of the nonce and of every datagram.
        frame_duration_ms: What each uplink Opus packet must hold (the hello's).
        remote_sequence: The last accepted uplink sequence; 0 before the first.
        local_sequence: The last downlink sequence sent; 0 before the first.
        gaps: Uplink packets skipped over (lost in flight), counted not refused.
    """

    key: bytes
    ssrc: int
    frame_duration_ms: int = 60
    peer: tuple[str, int] | None = None
    remote_sequence: int = 0
    local_sequence: int = 0
    gaps: int = 0
    nonce: bytes = field(init=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise ValueError(f"the key must be 16 bytes, got {len(self.key)}")
        self.nonce = make_nonce(self.ssrc)

    def open(self, data: bytes, source: tuple[str, int]) -> tuple[UdpHeader, bytes]:
        """Check and decrypt one uplink datagram; return its header and its Opus packet.

        The sequence is accepted (and ``peer`` set to ``source``) only once the packet
        decrypted to Opus, so a forged or replayed datagram moves neither.

        Raises:
            TruncatedFrame, UnknownFrameType, LengthMismatch: see :func:`decode_datagram`.
            Undecryptable: a datagram for another ssrc, or one that decrypts to no Opus
                packet of ``frame_duration_ms``.
            StaleSequence: the sequence is not above the last accepted one.
        """
        header, ciphertext = decode_datagram(data)
        if header.ssrc != self.ssrc:
            raise Undecryptable(f"ssrc {header.ssrc:#010x} is not this channel's")
        if header.sequence <= self.remote_sequence:
            raise StaleSequence(sequence=header.sequence, last=self.remote_sequence)
        opus = aes_ctr(self.key, data[: HEADER.size], ciphertext)
        duration = opus_duration_ms(opus)
        if duration != self.frame_duration_ms:
            shown = "no valid Opus header" if duration is None else f"{duration:g} ms of audio"
            raise Undecryptable(f"{shown}, expected {self.frame_duration_ms} ms")
        self.gaps += header.sequence - self.remote_sequence - 1
        self.remote_sequence = header.sequence
        self.peer = source
        return header, opus

    def seal(self, opus: bytes, timestamp: int) -> bytes:
        """One downlink datagram for ``opus``: the next sequence, encrypted.

        Raises:
            PayloadTooLarge: over 65535 bytes.
        """
        self.local_sequence += 1
        return encode_datagram(
            self.key, self.nonce, opus, timestamp=timestamp, sequence=self.local_sequence
        )
