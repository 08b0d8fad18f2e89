"""Typed errors of the wire contract, in one tree.

Every error a codec or model raises is a subclass of :class:`XiaozhiError`. Errors caused by
what a *peer* sent are :class:`WireError`\\ s and carry the seed-002 error code that the edge
answers with, so the I/O layer maps error class to reply without parsing messages::

    XiaozhiError
    ├── WireError                  a peer sent something we refuse (has .code)
    │   ├── FrameError             binary framing is wrong
    │   │   ├── TruncatedFrame         shorter than its header or declared length
    │   │   ├── LengthMismatch         declared payload size disagrees with the bytes
    │   │   ├── UnknownFrameType       type byte not in the table
    │   │   ├── VersionMismatch        header version is not the negotiated one
    │   │   ├── StaleSequence          a UDP audio sequence at or below the last accepted
    │   │   ├── Undecryptable          a UDP audio packet that decrypts to no Opus packet
    │   │   └── MalformedPacket        an MQTT packet that breaks MQTT 3.1.1's framing
    │   ├── UnsupportedVersion     a version this codec does not speak
    │   ├── ChecksumMismatch       CRC32 over the payload does not match
    │   ├── PayloadTooLarge        over a size limit (checked before reading/inflating)
    │   ├── DecompressionFailed    zlib stream is corrupt
    │   ├── InvalidMessage         bad JSON, bad UTF-8 or a model that does not validate
    │   │   ├── MissingField           a required field is absent
    │   │   └── UnknownMessageType     a JSON `type` outside the message table
    │   ├── SerialCommandError     a serial console line that is not a command
    │   ├── AuthenticationFailed   a device token or credential is refused
    │   ├── UnsupportedPacket      an MQTT packet a protocol terminator does not serve
    │   └── RateLimited            a peer sends faster than its limit
    └── InvalidTopic               a topic or device id outside the topic grammar (caller misuse)

Peer violations (``WireError``) are kept apart from caller misuse (``InvalidTopic``), as
websockets keeps ``ProtocolError`` apart from ``InvalidState``.
"""

from __future__ import annotations

import enum

__all__ = [
    "AddressInUse",
    "AuthenticationFailed",
    "ChecksumMismatch",
    "ConfigurationError",
    "DecompressionFailed",
    "ErrorCode",
    "FrameError",
    "InvalidMessage",
    "InvalidTopic",
    "LengthMismatch",
    "MalformedPacket",
    "MissingField",
    "OperationFailed",
    "PayloadTooLarge",
    "RateLimited",
    "SerialCommandError",
    "StaleSequence",
    "StartupError",
    "TruncatedFrame",
    "Undecryptable",
    "UnknownFrameType",
    "UnknownMessageType",
    "UnsupportedPacket",
    "UnsupportedVersion",
    "VersionMismatch",
    "WireError",
    "XiaozhiError",
]


class ErrorCode(enum.IntEnum):
    """Error codes of seed 002 ("Error Codes"), reused for every `error` reply we send."""

    INVALID_PROTOCOL_VERSION = 0x100
    CHECKSUM_MISMATCH = 0x101
    MESSAGE_TOO_LARGE = 0x102
    DECOMPRESSION_FAILED = 0x103
    INVALID_MESSAGE_TYPE = 0x104
    INVALID_DATA_FORMAT = 0x200
    MISSING_REQUIRED_FIELDS = 0x201
    AUTHENTICATION_FAILED = 0x202
    PERMISSION_DENIED = 0x203
    RATE_LIMIT_EXCEEDED = 0x204

    @property
    def explanation(self) -> str:
        """One human sentence for operators and `error` replies."""
        return _EXPLANATIONS[self]


_EXPLANATIONS: dict[ErrorCode, str] = {
    ErrorCode.INVALID_PROTOCOL_VERSION: "Invalid protocol version",
    ErrorCode.CHECKSUM_MISMATCH: "Checksum mismatch",
    ErrorCode.MESSAGE_TOO_LARGE: "Message too large",
    ErrorCode.DECOMPRESSION_FAILED: "Decompression failed",
    ErrorCode.INVALID_MESSAGE_TYPE: "Invalid message type",
    ErrorCode.INVALID_DATA_FORMAT: "Invalid data format",
    ErrorCode.MISSING_REQUIRED_FIELDS: "Missing required fields",
    ErrorCode.AUTHENTICATION_FAILED: "Authentication failed",
    ErrorCode.PERMISSION_DENIED: "Permission denied",
    ErrorCode.RATE_LIMIT_EXCEEDED: "Rate limit exceeded",
}


class XiaozhiError(Exception):
    """Base of every error raised by the `xiaozhi` package."""


class WireError(XiaozhiError):
    """A peer sent bytes or JSON we refuse. ``code`` is the seed-002 code to answer with."""

    code: ErrorCode = ErrorCode.INVALID_DATA_FORMAT


class FrameError(WireError):
    """The binary framing of a message is wrong."""


class TruncatedFrame(FrameError):
    """The frame is shorter than its header, or than the payload its header declares."""

    def __init__(self, *, size: int, needed: int, what: str = "frame") -> None:
        super().__init__(f"{what} is {size} B, needs at least {needed} B")
        self.size, self.needed, self.what = size, needed, what


class LengthMismatch(FrameError):
    """A header's declared payload size disagrees with the bytes that follow it."""

    def __init__(self, *, declared: int, actual: int, what: str = "payload_size") -> None:
        super().__init__(f"{what} declares {declared} B but {actual} B follow the header")
        self.declared, self.actual, self.what = declared, actual, what


class UnknownFrameType(FrameError):
    """A type field holds a value outside the format's table."""

    code = ErrorCode.INVALID_MESSAGE_TYPE

    def __init__(self, *, frame_type: int, known: tuple[int, ...]) -> None:
        known_text = ", ".join(f"{k:#04x}" for k in known)
        super().__init__(f"unknown frame type {frame_type:#04x} (known: {known_text})")
        self.frame_type, self.known = frame_type, known


class VersionMismatch(FrameError):
    """A frame's header carries a version other than the one fixed for the connection."""

    code = ErrorCode.INVALID_PROTOCOL_VERSION

    def __init__(self, *, expected: int, got: int) -> None:
        super().__init__(f"frame says version {got}, connection speaks version {expected}")
        self.expected, self.got = expected, got


class StaleSequence(FrameError):
    """A UDP audio packet whose sequence is not above the last accepted one: a replay, a
    duplicate or a late packet (firmware reference §2.4 drops ``seq <= remote_sequence``)."""

    def __init__(self, *, sequence: int, last: int) -> None:
        super().__init__(f"sequence {sequence} is not above the last accepted {last}")
        self.sequence, self.last = sequence, last


class Undecryptable(FrameError):
    """A UDP audio packet that decrypts to something that is not an Opus packet of the
    session's frame duration: the wrong key, or bytes flipped in flight. AES-CTR itself has
    no integrity check, so the decrypted packet's Opus header is the only evidence."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"audio packet does not decrypt to Opus: {reason}")
        self.reason = reason


class MalformedPacket(FrameError):
    """An MQTT packet that breaks MQTT 3.1.1's framing (a remaining length over 4 bytes, a
    string that runs past its packet, reserved flags set)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed MQTT packet: {reason}")
        self.reason = reason


class UnsupportedVersion(WireError):
    """A version number this codec does not speak."""

    code = ErrorCode.INVALID_PROTOCOL_VERSION

    def __init__(self, *, version: object, supported: tuple[int, ...]) -> None:
        supported_text = "/".join(str(v) for v in supported)
        super().__init__(f"unsupported version {version!r} (supported: {supported_text})")
        self.version, self.supported = version, supported


class ChecksumMismatch(WireError):
    """The CRC32 in the header does not match the payload."""

    code = ErrorCode.CHECKSUM_MISMATCH

    def __init__(self, *, expected: int, actual: int) -> None:
        super().__init__(f"CRC32 in header {expected:#010x} != payload CRC32 {actual:#010x}")
        self.expected, self.actual = expected, actual


class PayloadTooLarge(WireError):
    """A size limit was exceeded; raised before the payload is read or inflated."""

    code = ErrorCode.MESSAGE_TOO_LARGE

    def __init__(self, *, size: int, limit: int, what: str = "payload") -> None:
        super().__init__(f"{what} {size} B > limit {limit} B")
        self.size, self.limit, self.what = size, limit, what


class DecompressionFailed(WireError):
    """A compressed payload is not a valid zlib stream."""

    code = ErrorCode.DECOMPRESSION_FAILED


class InvalidMessage(WireError):
    """Bad JSON, bad UTF-8, or a message that does not fit its model.

    ``field`` names the offending field (dotted path) when one is known.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class MissingField(InvalidMessage):
    """A required field is absent."""

    code = ErrorCode.MISSING_REQUIRED_FIELDS

    def __init__(self, *, field: str, model: str) -> None:
        super().__init__(f"{model}: missing required field {field!r}", field=field)
        self.model = model


class UnknownMessageType(InvalidMessage):
    """A JSON message whose ``type`` is not in the table for its direction."""

    code = ErrorCode.INVALID_MESSAGE_TYPE

    def __init__(self, *, msg_type: str, known: tuple[str, ...], side: str) -> None:
        super().__init__(
            f"unknown {side} message type {msg_type!r} (known: {', '.join(known)})", field="type"
        )
        self.msg_type, self.known = msg_type, known


class SerialCommandError(WireError):
    """A serial console line that is not a well-formed command (seed 003)."""


class AuthenticationFailed(WireError):
    """A device token or credential is refused; ``reason`` says why (safe to show the device)."""

    code = ErrorCode.AUTHENTICATION_FAILED

    def __init__(self, reason: str) -> None:
        super().__init__(f"authentication failed: {reason}")
        self.reason = reason


class UnsupportedPacket(WireError):
    """An MQTT packet the edge's device listener does not serve: it terminates the firmware's
    MQTT (CONNECT, PUBLISH QoS 0, PINGREQ, DISCONNECT) and is not a broker."""

    code = ErrorCode.INVALID_MESSAGE_TYPE

    def __init__(self, *, packet: str, reason: str) -> None:
        super().__init__(f"{packet} refused: {reason}")
        self.packet, self.reason = packet, reason


class RateLimited(WireError):
    """A peer sends faster than its limit allows."""

    code = ErrorCode.RATE_LIMIT_EXCEEDED

    def __init__(self, *, rate: float, limit: float, what: str = "messages") -> None:
        super().__init__(f"{what} at {rate:.0f}/s over the limit of {limit:.0f}/s")
        self.rate, self.limit, self.what = rate, limit, what


class InvalidTopic(XiaozhiError, ValueError):
    """A topic or id that does not fit the topic grammar; the caller built it wrong."""

    def __init__(self, message: str, *, value: str) -> None:
        super().__init__(message)
        self.value = value


class ConfigurationError(XiaozhiError, ValueError):
    """A setting, the home model or a scenario file is invalid; the message lists every problem."""


class StartupError(XiaozhiError, RuntimeError):
    """A process or service could not start (broker unreachable, port taken, child died)."""


class AddressInUse(StartupError, OSError):
    """A listening address cannot be bound (a taken port); the message names the address and
    the setting that moves it, so ``xiaozhi up`` can say it and exit instead of a traceback."""


class OperationFailed(XiaozhiError, ValueError):
    """A request we understood but cannot carry out (unknown device, busy, refused by a peer)."""
