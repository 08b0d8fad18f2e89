"""JSON messages on the device WebSocket: the real firmware's, and seed 003's envelope.

Two families share one socket (design.md §4):

* **Firmware messages** (reference/xiaozhi-firmware.md §1.3-1.6): ``hello``, ``listen``,
  ``abort``, ``mcp``, ``goodbye`` from the device; ``hello``, ``stt``, ``tts``, ``llm``,
  ``mcp``, ``system``, ``alert``, ``custom`` to it. Flat objects with an optional
  ``session_id``, which is never required inbound (some clients send ``""``, reference §6.2).
* **Seed 003 envelopes** (``WebSocket Protocol`` → ``Message Types``):
  ``{"type", "data", "timestamp", "device_id", "message_id"}`` with types ``device_register``,
  ``audio_data``, ``voice_command``, ``response``, ``error``, ``ping``, plus ``sensor`` carrying
  seed 003's MQTT sensor message (design.md §4).

Parse with :func:`parse_device_message` (what a server receives) or
:func:`parse_server_message` (what a device receives: the simulator); both dispatch on
``type`` and raise only our typed errors. Write with ``message.to_wire()`` (bytes) or
``message.to_text()`` (str). Every model keeps unknown fields and omits ``None`` optionals
(:mod:`xiaozhi._validation`).
"""

from __future__ import annotations

import base64
import binascii
import enum
from typing import Annotated, Any, Literal, Self, TypeAlias

from pydantic import ConfigDict, Field

from xiaozhi import jsonutil
from xiaozhi._validation import Number, Opt, Scalar, WireModel, validate_model
from xiaozhi.errors import InvalidMessage, MissingField, UnknownMessageType, WireError
from xiaozhi.payloads import Action, CommandPayload, SensorType

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEVICE_MESSAGE_TYPES",
    "SERVER_MESSAGE_TYPES",
    "Abort",
    "AbortReason",
    "Alert",
    "AudioChunk",
    "AudioData",
    "AudioDataMessage",
    "AudioFormat",
    "AudioParams",
    "CommandMessage",
    "Custom",
    "DeviceHello",
    "DeviceMessage",
    "DeviceRegisterData",
    "DeviceRegisterMessage",
    "ErrorData",
    "ErrorMessage",
    "Features",
    "Goodbye",
    "HardwareInfo",
    "Listen",
    "ListenMode",
    "ListenState",
    "Llm",
    "Mcp",
    "MessageType",
    "PingData",
    "PingMessage",
    "PongMessage",
    "ResponseData",
    "ResponseMessage",
    "SensorData",
    "SensorMessage",
    "ServerHello",
    "ServerMessage",
    "StreamHeader",
    "Stt",
    "System",
    "SystemCommand",
    "Transport",
    "Tts",
    "TtsState",
    "VoiceCommandData",
    "VoiceCommandMessage",
    "device_message_from_obj",
    "parse_device_message",
    "parse_server_message",
]

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024
"""Default size limit of one JSON message, in bytes. Text frames are small except seed 003's
``audio_data``, whose base64 WAV chunk of 1.5 s at 16 kHz/16 bit is about 64 KB; 256 KiB leaves
room for about 6 s per chunk. ``None`` disables the check (the socket layer may bound it)."""

Positive = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]
Confidence = Annotated[float, Field(ge=0.0, le=1.0)]


class MessageType(enum.StrEnum):
    """Every ``type`` of a JSON message on the device WebSocket."""

    # firmware, reference §1.3-1.6
    HELLO = "hello"
    LISTEN = "listen"
    ABORT = "abort"
    MCP = "mcp"
    GOODBYE = "goodbye"
    STT = "stt"
    TTS = "tts"
    LLM = "llm"
    SYSTEM = "system"
    ALERT = "alert"
    CUSTOM = "custom"
    # seed 003 envelopes
    DEVICE_REGISTER = "device_register"
    AUDIO_DATA = "audio_data"
    VOICE_COMMAND = "voice_command"
    RESPONSE = "response"
    ERROR = "error"
    PING = "ping"
    SENSOR = "sensor"
    # what the edge sends seed-style devices beyond seed 003 (docs/edge.md)
    PONG = "pong"
    COMMAND = "command"


class Transport(enum.StrEnum):
    """``transport`` of a hello: the firmware checks it (reference §1.4, §2.3)."""

    WEBSOCKET = "websocket"
    UDP = "udp"  # MQTT+UDP firmware mode, not served by this hub (reference §6.3)


class ListenState(enum.StrEnum):
    """``listen.state`` (reference §1.5)."""

    START = "start"  # the device starts streaming microphone audio
    STOP = "stop"  # manual mode: button released
    DETECT = "detect"  # wake word, or with ``text`` a typed command (reference §6.5)


class ListenMode(enum.StrEnum):
    """``listen.mode`` (reference §1.5)."""

    AUTO = "auto"  # server-side VAD ends the turn
    MANUAL = "manual"  # push to talk
    REALTIME = "realtime"  # full duplex, needs AEC


class TtsState(enum.StrEnum):
    """``tts.state`` (reference §1.6)."""

    START = "start"  # device enters Speaking
    SENTENCE_START = "sentence_start"  # ``text`` is the subtitle
    STOP = "stop"  # device returns to Listening (auto/realtime) or Idle (manual)


class AudioFormat(enum.StrEnum):
    """Known audio formats; the fields stay open strings."""

    OPUS = "opus"  # firmware, reference §1.3
    WAV = "wav"  # seed 003 "Audio Data Transmission"


class AbortReason(enum.StrEnum):
    """Known ``abort.reason`` values (reference §1.5)."""

    WAKE_WORD_DETECTED = "wake_word_detected"


class SystemCommand(enum.StrEnum):
    """Known ``system.command`` values; the firmware logs any other (reference §1.6)."""

    REBOOT = "reboot"


# -- firmware messages -------------------------------------------------------------------


class AudioParams(WireModel):
    """``audio_params`` of a hello; all four fields are always written (reference §6.2)."""

    format: str
    sample_rate: Positive
    channels: Positive
    frame_duration: Positive  # ms; firmware uses 60, accept 20/40/60


class Features(WireModel):
    """``features`` of the device hello (reference §1.3); ``text_font`` etc. stay as extras."""

    mcp: Opt[bool] = None  # the device is an MCP server (always true in firmware)
    aec: Opt[bool] = None  # built with server-side AEC
    glyph_push: Opt[bool] = None


class _FirmwareMessage(WireModel):
    type: str
    session_id: Opt[str] = None


class DeviceHello(_FirmwareMessage):
    """First text frame from the device (reference §1.3).

    ``version`` is the binary protocol version when the ``Protocol-Version`` header is missing;
    the edge fixes it for the connection (design.md §4).
    """

    type: Literal["hello"] = "hello"
    version: Opt[int] = None
    transport: Opt[Transport] = None
    features: Opt[Features] = None
    audio_params: Opt[AudioParams] = None


class ServerHello(_FirmwareMessage):
    """The server's answer to the hello, sent well within the device's 10 s (reference §1.4).

    The firmware ignores a hello whose ``transport`` is not ``websocket``; we always send
    ``session_id`` and the four ``audio_params`` (reference §6.2).
    """

    type: Literal["hello"] = "hello"
    transport: Transport = Transport.WEBSOCKET
    session_id: str  # required here, optional on inbound messages
    audio_params: AudioParams


class Listen(_FirmwareMessage):
    """``listen`` start/stop/detect (reference §1.5); ``stop`` carries no mode."""

    type: Literal["listen"] = "listen"
    state: ListenState
    mode: Opt[ListenMode] = None
    text: Opt[str] = None


class Abort(_FirmwareMessage):
    """``abort``: stop speaking now; the server answers ``tts stop`` (reference §6.4)."""

    type: Literal["abort"] = "abort"
    reason: Opt[str] = None


class Mcp(_FirmwareMessage):
    """``mcp`` in either direction: ``payload`` is one JSON-RPC 2.0 object (reference §4)."""

    type: Literal["mcp"] = "mcp"
    payload: dict[str, Any]


class Goodbye(_FirmwareMessage):
    """``goodbye``: end of a session (MQTT in firmware, reference §2.5; accepted on WS too)."""

    type: Literal["goodbye"] = "goodbye"


class Stt(_FirmwareMessage):
    """``stt``: echo what the user said (reference §1.6)."""

    type: Literal["stt"] = "stt"
    text: str


class Tts(_FirmwareMessage):
    """``tts`` start / sentence_start (with ``text``) / stop (reference §1.6)."""

    type: Literal["tts"] = "tts"
    state: TtsState
    text: Opt[str] = None


class Llm(_FirmwareMessage):
    """``llm``: sets the face; ``text`` is the matching emoji, unused by firmware (§1.6)."""

    type: Literal["llm"] = "llm"
    emotion: str
    text: Opt[str] = None


class System(_FirmwareMessage):
    """``system``: ``command: "reboot"`` reboots the device (reference §1.6)."""

    type: Literal["system"] = "system"
    command: str


class Alert(_FirmwareMessage):
    """``alert``: on-screen alert; firmware needs all three fields (reference §1.6)."""

    type: Literal["alert"] = "alert"
    status: str
    message: str
    emotion: str


class Custom(_FirmwareMessage):
    """``custom``: application-defined ``payload`` (firmware with CONFIG_RECEIVE_CUSTOM_MESSAGE)."""

    type: Literal["custom"] = "custom"
    payload: Opt[Any] = None


# -- seed 003 envelope -------------------------------------------------------------------


class _Envelope(WireModel):
    """``{"type","data","timestamp","device_id","message_id"}`` (seed 003 "Message Format").

    ``timestamp`` is the ISO 8601 string as given; nothing here reads a clock.
    """

    type: str
    data: WireModel
    timestamp: Opt[str] = None
    device_id: Opt[str] = None
    message_id: Opt[str] = None


def _b64decode(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as err:
        raise InvalidMessage(f"field {field!r} is not valid base64: {err}", field=field) from err


class HardwareInfo(WireModel):
    """``device_register`` ``hardware_info`` (seed 003): descriptive, every field optional."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    chip_model: Opt[str] = None
    chip_revision: Opt[str] = None  # the seed sends "0"; a number is taken as its string
    cpu_freq: Opt[int] = None  # MHz
    flash_size: Opt[int] = None  # bytes
    psram_size: Opt[int] = None  # bytes


class DeviceRegisterData(WireModel):
    """``device_register`` data (seed 003 "Device Registration")."""

    device_id: str
    device_type: str
    firmware_version: str
    capabilities: list[str] = Field(default_factory=list)
    hardware_info: Opt[HardwareInfo] = None


class DeviceRegisterMessage(_Envelope):
    """``device_register``: a seed-style client introduces itself."""

    type: Literal["device_register"] = "device_register"
    data: DeviceRegisterData


class AudioData(WireModel):
    """``audio_data`` data (seed 003 "Audio Data Transmission"): base64 audio in ``data``.

    Defaults are the seed's microphone format ("Input Audio": WAV, 16 kHz, mono, 16 bit,
    uncompressed). ``stream_id``/``chunk_number``/``total_chunks`` (seed 003 "Audio Streaming
    Protocol") mark one chunk of a longer upload.
    """

    data: str
    device_id: Opt[str] = None
    audio_format: str = AudioFormat.WAV.value
    sample_rate: Positive = 16000
    channels: Positive = 1
    bit_depth: Positive = 16
    duration_ms: Opt[NonNegative] = None
    compression: str = "none"
    stream_id: Opt[str] = None
    chunk_number: Opt[NonNegative] = None
    total_chunks: Opt[Positive] = None


class AudioDataMessage(_Envelope):
    """``audio_data``: base64 WAV (or chunk of it) from a seed-style client."""

    type: Literal["audio_data"] = "audio_data"
    data: AudioData

    def audio_bytes(self) -> bytes:
        """The decoded audio.

        Raises:
            InvalidMessage: ``data.data`` is not valid base64 (field ``data.data``).
        """
        return _b64decode(self.data.data, "data.data")


class VoiceCommandData(WireModel):
    """``voice_command`` data (seed 003 "Voice Command Processing"): text recognised on device."""

    command: str
    device_id: Opt[str] = None
    confidence: Opt[Confidence] = None
    language: Opt[str] = None
    processing_time_ms: Opt[NonNegative] = None
    audio_duration_ms: Opt[NonNegative] = None


class VoiceCommandMessage(_Envelope):
    """``voice_command``: routed like speech (design.md §6)."""

    type: Literal["voice_command"] = "voice_command"
    data: VoiceCommandData


class ResponseData(WireModel):
    """``response`` data (seed 003 "Response Delivery"); ``actions`` as in design.md §6."""

    text: Opt[str] = None
    device_id: Opt[str] = None
    audio_url: Opt[str] = None
    audio_data: Opt[str] = None  # base64
    actions: list[Action] = Field(default_factory=list)
    processing_time_ms: Opt[NonNegative] = None


class ResponseMessage(_Envelope):
    """``response``: what the hub answers a seed-style device (design.md §6)."""

    type: Literal["response"] = "response"
    data: ResponseData


class ErrorData(WireModel):
    """``error`` data (seed 003 "Error Handling"); the seed puts ``timestamp`` inside."""

    error_code: str
    error_message: str
    details: Opt[dict[str, Any]] = None
    device_id: Opt[str] = None
    timestamp: Opt[str] = None


class ErrorMessage(_Envelope):
    """``error`` in either direction; the edge answers bad input with one (design.md §4)."""

    type: Literal["error"] = "error"
    data: ErrorData

    @classmethod
    def from_error(
        cls,
        exc: WireError,
        *,
        device_id: str | None = None,
        timestamp: str | None = None,
        message_id: str | None = None,
    ) -> Self:
        """The reply to a peer's bad input: ``error_code`` is the seed-002 code's name.

        ``details`` carries the numeric ``code`` and, when known, the offending ``field``.
        Only build this from our own :class:`~xiaozhi.errors.WireError`\\ s: their messages
        are written to be shown to the peer; anything else deserves a generic reply.
        """
        details: dict[str, Any] = {"code": int(exc.code)}
        field = getattr(exc, "field", None)
        if field is not None:
            details["field"] = field
        return cls(
            data=ErrorData(
                error_code=exc.code.name,
                error_message=str(exc),
                details=details,
                device_id=device_id,
                timestamp=timestamp,
            ),
            device_id=device_id,
            timestamp=timestamp,
            message_id=message_id,
        )


class PingData(WireModel):
    """``ping`` data (seed 003 "Heartbeat/Ping"): the device's telemetry."""

    device_id: Opt[str] = None
    uptime: Opt[NonNegative] = None  # seconds
    memory_usage: Opt[Number] = None  # percent
    cpu_usage: Opt[Number] = None  # percent
    wifi_signal: Opt[Number] = None  # dBm
    free_heap: Opt[NonNegative] = None  # bytes


class PingMessage(_Envelope):
    """``ping``: heartbeat with telemetry, republished as status (design.md §5)."""

    type: Literal["ping"] = "ping"
    data: PingData


class PongMessage(WireModel):
    """``pong``: the edge's answer to a seed ``ping``, echoing its ``message_id``.

    Not in seed 003, whose client ignores types it does not know; it has no ``data``.
    """

    type: Literal["pong"] = "pong"
    timestamp: Opt[str] = None
    device_id: Opt[str] = None
    message_id: Opt[str] = None


class CommandMessage(_Envelope):
    """``command``: a command from the topic tree delivered to a seed-style device.

    ``data`` is the :class:`~xiaozhi.payloads.CommandPayload` as published (design.md §5);
    the device runs it (:mod:`xiaozhi.commands`), the edge publishes the result.
    """

    type: Literal["command"] = "command"
    data: CommandPayload


class SensorData(WireModel):
    """``sensor`` data: seed 003's MQTT "Sensor Message" carried over WebSocket (design.md §4).

    ``sensor_type`` becomes a topic level, so it obeys the id grammar.
    """

    sensor_type: SensorType
    value: Scalar
    unit: Opt[str] = None
    device_id: Opt[str] = None


class SensorMessage(_Envelope):
    """``sensor``: republished on ``xiaozhi/sensors/{device_id}/{sensor_type}``."""

    type: Literal["sensor"] = "sensor"
    data: SensorData


# -- seed 003 "Audio Streaming Protocol" -------------------------------------------------


class StreamHeader(WireModel):
    """Announces a chunked audio stream (seed 003 "Streaming Header")."""

    stream_id: str
    format: str
    sample_rate: Positive
    channels: Positive
    bit_depth: Positive
    chunk_size: Opt[Positive] = None  # bytes
    total_chunks: Opt[Positive] = None  # None: a live stream of unknown length


class AudioChunk(WireModel):
    """One chunk of a stream (seed 003 "Audio Chunk"); the seed numbers chunks from 1."""

    stream_id: str
    chunk_number: NonNegative
    chunk_data: str  # base64
    timestamp: Opt[str] = None

    def chunk_bytes(self) -> bytes:
        """The decoded chunk.

        Raises:
            InvalidMessage: ``chunk_data`` is not valid base64 (field ``chunk_data``).
        """
        return _b64decode(self.chunk_data, "chunk_data")


# -- dispatch ----------------------------------------------------------------------------

DeviceMessage: TypeAlias = (
    DeviceHello
    | Listen
    | Abort
    | Mcp
    | Goodbye
    | DeviceRegisterMessage
    | AudioDataMessage
    | VoiceCommandMessage
    | PingMessage
    | SensorMessage
    | ResponseMessage
    | ErrorMessage
)
"""What a server receives from a device."""

ServerMessage: TypeAlias = (
    ServerHello
    | Stt
    | Tts
    | Llm
    | Mcp
    | System
    | Alert
    | Custom
    | ResponseMessage
    | ErrorMessage
    | Goodbye
    | PongMessage
    | CommandMessage
)
"""What a device receives from a server."""

DEVICE_MESSAGE_TYPES: dict[str, type[DeviceMessage]] = {
    MessageType.HELLO: DeviceHello,
    MessageType.LISTEN: Listen,
    MessageType.ABORT: Abort,
    MessageType.MCP: Mcp,
    MessageType.GOODBYE: Goodbye,
    MessageType.DEVICE_REGISTER: DeviceRegisterMessage,
    MessageType.AUDIO_DATA: AudioDataMessage,
    MessageType.VOICE_COMMAND: VoiceCommandMessage,
    MessageType.PING: PingMessage,
    MessageType.SENSOR: SensorMessage,
    MessageType.RESPONSE: ResponseMessage,
    MessageType.ERROR: ErrorMessage,
}
"""``type`` → model for :func:`parse_device_message`."""

SERVER_MESSAGE_TYPES: dict[str, type[ServerMessage]] = {
    MessageType.HELLO: ServerHello,
    MessageType.STT: Stt,
    MessageType.TTS: Tts,
    MessageType.LLM: Llm,
    MessageType.MCP: Mcp,
    MessageType.SYSTEM: System,
    MessageType.ALERT: Alert,
    MessageType.CUSTOM: Custom,
    MessageType.RESPONSE: ResponseMessage,
    MessageType.ERROR: ErrorMessage,
    MessageType.GOODBYE: Goodbye,
    MessageType.PONG: PongMessage,
    MessageType.COMMAND: CommandMessage,
}
"""``type`` → model for :func:`parse_server_message`."""


def _dispatch(obj: dict[str, Any], table: dict[str, type[Any]], side: str) -> Any:
    if "type" not in obj:
        raise MissingField(field="type", model=f"{side} message")
    msg_type = obj["type"]
    if not isinstance(msg_type, str):
        # The firmware ignores messages without a string type (reference §1.6); we say why.
        raise InvalidMessage(
            f"{side} message: field 'type' must be a string, got {msg_type!r}", field="type"
        )
    model_cls = table.get(msg_type)
    if model_cls is None:
        raise UnknownMessageType(msg_type=msg_type, known=tuple(table), side=side)
    return validate_model(model_cls, obj)


def parse_device_message(
    raw: bytes | bytearray | memoryview | str,
    *,
    max_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
) -> DeviceMessage:
    """Parse one JSON text frame from a device, dispatching on ``type``.

    Args:
        raw: the frame (or the JSON payload of a v2 type-1 binary frame).
        max_bytes: size limit, checked before parsing; ``None`` for none.

    Returns:
        A firmware message or a seed 003 envelope; match on its class.

    Raises:
        PayloadTooLarge: over ``max_bytes``.
        MissingField: ``type`` or a required field is absent (``field`` names it).
        InvalidMessage: bad UTF-8 or JSON, not an object, an unknown ``type`` (``field`` is
            ``"type"``), or a field of the wrong type. Answer with
            :meth:`ErrorMessage.from_error` and keep the connection.
    """
    return device_message_from_obj(jsonutil.loads_object(raw, max_bytes=max_bytes))


def device_message_from_obj(obj: dict[str, Any]) -> DeviceMessage:
    """Like :func:`parse_device_message`, for a JSON object already parsed.

    For a caller that looked at the object first (the edge's telemetry fast path) and must
    not parse the text twice. Same errors, but for size and JSON syntax.
    """
    result: DeviceMessage = _dispatch(obj, DEVICE_MESSAGE_TYPES, "device")
    return result


def parse_server_message(
    raw: bytes | bytearray | memoryview | str,
    *,
    max_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
) -> ServerMessage:
    """Parse one JSON text frame a device receives (the simulator's side).

    Same errors as :func:`parse_device_message`. Stricter than the firmware, which ignores
    what it cannot use: the simulator is a QA tool, so a bad server message is reported.
    """
    obj = jsonutil.loads_object(raw, max_bytes=max_bytes)
    result: ServerMessage = _dispatch(obj, SERVER_MESSAGE_TYPES, "server")
    return result
