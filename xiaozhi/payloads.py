"""JSON payloads of the MQTT topic tree (design.md §5).

One model per row of the topic table; :mod:`xiaozhi.topics` names the topics. Shapes follow
seed 003 ("MQTT Protocol" → "Message Format") where it has one, and zigbee2mqtt's bridge
conventions (``bridge/state``, request/response with ``transaction``) for the rest
(reference/home-automation.md, "Implications for our hub").

Every model keeps unknown fields and leaves ``None`` optionals out of its wire form (see
:mod:`xiaozhi._validation`). Parse with :func:`parse_payload` (or ``Model.from_wire``), write
with ``model.to_wire()``.
"""

from __future__ import annotations

import base64
import binascii
import enum
from typing import Annotated, Any, Final, Literal, Self

from pydantic import Field

from xiaozhi._validation import (
    Number,
    Opt,
    Scalar,
    TransactionId,
    WireModel,
    parse_payload,
    validate_model,
)
from xiaozhi.errors import InvalidMessage
from xiaozhi.topics import DEVICE_ID_PATTERN, MAX_ID_LENGTH

__all__ = [
    "SIMULATOR_PRODUCT",
    "Action",
    "ActionType",
    "AudioClip",
    "Availability",
    "BridgeRequest",
    "BridgeResponse",
    "BridgeState",
    "ClaimState",
    "CommandPayload",
    "ConnectionEvent",
    "DeviceKind",
    "DeviceStatus",
    "DeviceTransport",
    "EdgeState",
    "EventPayload",
    "EventType",
    "ResponseStatus",
    "SensorPayload",
    "SensorType",
    "StatusPayload",
    "UtteranceChunk",
    "UtteranceClaim",
    "UtteranceEncoding",
    "UtterancePayload",
    "UtteranceStart",
    "VoiceCommandEvent",
    "is_simulator_user_agent",
    "parse_payload",
    "validate_model",
]


class DeviceStatus(enum.StrEnum):
    """``status`` of ``xiaozhi/status/{device_id}`` (design.md §5)."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # also the LWT an MQTT device registers


class Availability(enum.StrEnum):
    """``state`` of ``bridge/state`` and ``bridge/edges/{edge_id}`` (zigbee2mqtt's values)."""

    ONLINE = "online"
    OFFLINE = "offline"  # the retained LWT of the hub or edge


class ResponseStatus(enum.StrEnum):
    """``status`` of a bridge response (zigbee2mqtt ``getResponse``)."""

    OK = "ok"
    ERROR = "error"


class DeviceTransport(enum.StrEnum):
    """How a device reaches us: through an edge's WebSocket, straight to the broker, or
    through an edge's listener for real firmware's MQTT + UDP mode."""

    WEBSOCKET = "websocket"
    MQTT = "mqtt"
    MQTT_UDP = "mqtt-udp"


SIMULATOR_PRODUCT: Final = "xiaozhi-sim"
"""The product token our firmware simulator adds to its ``User-Agent`` (after the firmware's own
``<board>/<version>``), in its setup call and its WebSocket handshake: the edge marks such a
device ``simulated`` in its status and connection events."""


def is_simulator_user_agent(user_agent: str | None) -> bool:
    """True when a ``User-Agent`` carries the :data:`SIMULATOR_PRODUCT` token
    (``bread-compact-wifi/1.8.2 xiaozhi-sim/0.1.0``); a token is compared up to its ``/``."""
    if not user_agent:
        return False
    return any(token.split("/", 1)[0].lower() == SIMULATOR_PRODUCT for token in user_agent.split())


class DeviceKind(enum.StrEnum):
    """Which client a device is, as its first message says; ``device_kind`` in status payloads.

    It decides how commands reach the device: real firmware gets ``stt``/``tts`` and MCP tool
    calls, a seed 003 client the JSON envelopes. The simulator plays either.
    """

    FIRMWARE = "firmware"  # `hello`: real xiaozhi firmware (stt/tts/audio, MCP tools)
    SEED = "seed"  # `device_register`: seed 003 client (commands as JSON envelopes)


class EventType(enum.StrEnum):
    """Known ``event_type`` values. The field is open: integrators may add their own."""

    VOICE_COMMAND = "voice_command"
    RESPONSE = "response"  # what the hub answered a device
    ACTION = "action"  # an action the hub is executing (design.md §6)
    ACTION_RESULT = "action_result"
    COMMAND_RESULT = "command_result"  # a device's answer to a command
    ERROR = "error"
    UTTERANCE = "utterance"  # the edge buffered one utterance of speech (PCM, no ASR yet)
    WAKE_WORD = "wake_word"  # the device heard its wake word
    ABORT = "abort"  # the device interrupted what it was saying
    MCP_TOOLS = "mcp_tools"  # the tools a firmware device announced over MCP
    DEVICE_CONNECTED = "device_connected"
    DEVICE_DISCONNECTED = "device_disconnected"


class ActionType(enum.StrEnum):
    """``type`` of an :class:`Action`; the field stays open for other executors."""

    HOMEASSISTANT = "homeassistant"


SensorType = Annotated[str, Field(pattern=f"^{DEVICE_ID_PATTERN}$", max_length=MAX_ID_LENGTH)]
"""A sensor type is a topic level (``xiaozhi/sensors/{device_id}/{sensor_type}``), so it obeys
the id grammar of :mod:`xiaozhi.topics`; a bad one is refused at parse time, naming the field."""


class Action(WireModel):
    """One Home Assistant-style action (seed 003 "Response Delivery", design.md §6).

    ``{"type":"homeassistant","action":"turn_on","entity_id":"light.living_room","parameters":{}}``
    """

    type: str = ActionType.HOMEASSISTANT.value
    action: str
    entity_id: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class CommandPayload(WireModel):
    """``xiaozhi/commands/{device_id}`` (and group / broadcast); never retained.

    Seed 003 "Command Message" plus ``message_id`` (design.md §5) so a result can name it.
    """

    command: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    message_id: Opt[str] = None
    timestamp: Opt[str] = None
    device_id: Opt[str] = None


class StatusPayload(WireModel):
    """``xiaozhi/status/{device_id}``, retained: ``connected`` with telemetry, or the LWT.

    Seed 003 "Status Message". Note that the seed's sample MQTT client also publishes command
    results (``"status":"success"``) here; those are refused: results are events (design.md §5).
    """

    status: DeviceStatus
    device_id: str
    timestamp: Opt[str] = None
    uptime: Opt[int] = None  # seconds
    memory_usage: Opt[Number] = None  # percent
    cpu_usage: Opt[Number] = None  # percent
    wifi_signal: Opt[Number] = None  # dBm
    free_heap: Opt[int] = None  # bytes
    transport: Opt[DeviceTransport] = None
    edge_id: Opt[str] = None
    firmware_version: Opt[str] = None
    simulated: Opt[bool] = None  # True: a simulator's device (absent: a real one)


class SensorPayload(WireModel):
    """``xiaozhi/sensors/{device_id}/{sensor_type}``, retained (seed 003 "Sensor Message")."""

    sensor_type: SensorType
    value: Scalar
    device_id: str
    unit: Opt[str] = None
    timestamp: Opt[str] = None


class EventPayload(WireModel):
    """Any event on ``xiaozhi/events/...``: always a JSON object with ``event_type``.

    The rest of the event is free-form (extras are kept); see :class:`EventType`.
    """

    event_type: str
    device_id: Opt[str] = None
    timestamp: Opt[str] = None


class VoiceCommandEvent(EventPayload):
    """``xiaozhi/events/voice_command``: what a device heard, for the hub's shared subscription.

    Same fields as seed 003's ``voice_command`` data, plus where it came from.
    """

    event_type: Literal["voice_command"] = "voice_command"
    device_id: str
    command: str
    confidence: float = Field(ge=0.0, le=1.0)
    language: str
    session_id: Opt[str] = None
    transport: Opt[DeviceTransport] = None
    edge_id: Opt[str] = None
    area: Opt[str] = None
    message_id: Opt[str] = None
    processing_time_ms: Opt[int] = None
    audio_duration_ms: Opt[int] = None


class ConnectionEvent(EventPayload):
    """``xiaozhi/events/device_connected`` / ``device_disconnected``.

    ``edge_id`` is absent for devices that talk MQTT straight to the broker.
    """

    event_type: Literal["device_connected", "device_disconnected"]
    device_id: str
    transport: DeviceTransport
    edge_id: Opt[str] = None
    simulated: Opt[bool] = None  # True: a simulator's device (absent: a real one)


class BridgeState(WireModel):
    """``xiaozhi/bridge/state``, retained; the hub's LWT is ``{"state":"offline"}``."""

    state: Availability


class EdgeState(WireModel):
    """``xiaozhi/bridge/edges/{edge_id}``, retained; the edge's LWT is ``offline``.

    When an edge goes offline the hub marks that edge's devices disconnected.
    """

    state: Availability
    edge_id: Opt[str] = None
    timestamp: Opt[str] = None


class BridgeRequest(WireModel):
    """``xiaozhi/bridge/request/{path}``: free-form fields plus an optional ``transaction``."""

    transaction: Opt[TransactionId] = None


class BridgeResponse(WireModel):
    """``xiaozhi/bridge/response/{path}``: zigbee2mqtt's envelope, ``transaction`` echoed.

    Every request gets one, also when it fails (``status: "error"`` with ``error`` set).
    """

    status: ResponseStatus
    data: dict[str, Any] = Field(default_factory=dict)
    error: Opt[str] = None
    transaction: Opt[TransactionId] = None

    @classmethod
    def ok(
        cls, data: dict[str, Any] | None = None, *, transaction: str | int | None = None
    ) -> Self:
        """A success answer carrying ``data``."""
        return cls(status=ResponseStatus.OK, data=data or {}, transaction=transaction)

    @classmethod
    def failure(cls, error: str, *, transaction: str | int | None = None) -> Self:
        """An error answer; ``data`` stays ``{}`` as zigbee2mqtt sends it."""
        return cls(status=ResponseStatus.ERROR, error=error, transaction=transaction)


MAX_UTTERANCE_FRAMES: Final = 1000
"""Opus packets in one utterance message: 60 s of 60 ms frames."""

MAX_OPUS_PACKET_BYTES: Final = 1275
"""The largest Opus packet RFC 6716 allows (section 3.2.1)."""

MAX_UTTERANCE_PCM_BYTES: Final = 30 * 16000 * 2
"""PCM in one utterance message: 30 s of 16 kHz 16-bit mono (under the broker's packet limit)."""


class UtteranceEncoding(enum.StrEnum):
    """How an :class:`AudioClip`'s audio travels (an utterance, a spoken answer)."""

    OPUS = "opus"  # ``frames``: one base64 Opus packet per frame, as the device sent them
    PCM_S16LE = "pcm_s16le"  # ``pcm``: base64 of 16-bit little-endian mono PCM (seed WAV uploads)


def _b64decode(text: str, *, field: str, limit: int) -> bytes:
    if len(text) > (limit * 4) // 3 + 4:
        raise InvalidMessage(f"audio: {field} is over {limit} bytes", field=field)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidMessage(f"audio: {field} is not base64: {err}", field=field) from err


class AudioClip(WireModel):
    """A whole piece of mono audio on the wire: Opus packets or 16-bit PCM, base64.

    The one audio shape of the contract: an utterance going to the speech workers
    (:class:`UtterancePayload`) and a spoken answer in a ``respond`` command
    (:class:`~xiaozhi.commands.RespondParameters` ``audio``) both carry one. Build with
    :meth:`from_opus` / :meth:`from_pcm`, read with :meth:`opus_packets` / :meth:`pcm_bytes`,
    which check every limit before decoding.
    """

    encoding: UtteranceEncoding
    sample_rate: int = Field(gt=0, le=48000)
    channels: Literal[1] = 1
    frame_duration_ms: Opt[int] = Field(default=None, gt=0, le=120)
    frames: list[str] = Field(default_factory=list, max_length=MAX_UTTERANCE_FRAMES)
    pcm: Opt[str] = None
    duration_ms: int = Field(ge=0)

    @classmethod
    def from_opus(
        cls,
        packets: list[bytes] | tuple[bytes, ...],
        *,
        sample_rate: int,
        frame_duration_ms: int,
        **fields: Any,
    ) -> Self:
        """Opus audio; ``duration_ms`` is the packet count times the frame duration."""
        return cls(
            encoding=UtteranceEncoding.OPUS,
            sample_rate=sample_rate,
            frame_duration_ms=frame_duration_ms,
            frames=[base64.b64encode(p).decode("ascii") for p in packets],
            duration_ms=len(packets) * frame_duration_ms,
            **fields,
        )

    @classmethod
    def from_pcm(cls, pcm: bytes, *, sample_rate: int, **fields: Any) -> Self:
        """16-bit mono PCM audio."""
        return cls(
            encoding=UtteranceEncoding.PCM_S16LE,
            sample_rate=sample_rate,
            pcm=base64.b64encode(pcm).decode("ascii"),
            duration_ms=len(pcm) * 1000 // (2 * sample_rate),
            **fields,
        )

    def opus_packets(self) -> list[bytes]:
        """The Opus packets, in order.

        Raises:
            InvalidMessage: not Opus audio, or a frame that is not base64 or is over the
                Opus packet size limit.
        """
        if self.encoding is not UtteranceEncoding.OPUS:
            raise InvalidMessage(f"audio is {self.encoding}, not opus", field="encoding")
        return [
            _b64decode(frame, field=f"frames[{index}]", limit=MAX_OPUS_PACKET_BYTES)
            for index, frame in enumerate(self.frames)
        ]

    def pcm_bytes(self) -> bytes:
        """The PCM samples.

        Raises:
            InvalidMessage: not PCM audio, no ``pcm``, not base64, over the size limit, or an
                odd number of bytes.
        """
        if self.encoding is not UtteranceEncoding.PCM_S16LE or self.pcm is None:
            raise InvalidMessage("audio carries no pcm", field="pcm")
        pcm = _b64decode(self.pcm, field="pcm", limit=MAX_UTTERANCE_PCM_BYTES)
        if len(pcm) % 2:
            raise InvalidMessage("audio: pcm has an odd number of bytes", field="pcm")
        return pcm


class UtterancePayload(AudioClip):
    """``xiaozhi/utterances/{device_id}``: one whole utterance, QoS 1, for the speech workers.

    The edge publishes one when a listen turn ends (``listen stop``, or its VAD in auto mode);
    a speech worker transcribes it and publishes the ``voice_command``. Whole utterances travel
    as one message: a shared subscription is round-robin per message (design.md section 8).
    Opus is sent as the device sent it (no decoding at the edge); seed devices' WAV uploads as
    PCM.
    """

    device_id: str
    message_id: str
    session_id: Opt[str] = None
    mode: Opt[str] = None  # listen mode: auto, manual, realtime
    reason: Opt[str] = None  # why it ended: stop, silence, max_duration...
    language: Opt[str] = None
    transport: Opt[DeviceTransport] = None
    edge_id: Opt[str] = None
    timestamp: Opt[str] = None


class UtteranceStart(WireModel):
    """``xiaozhi/utterances/{device_id}/start``: a device began an utterance (QoS 1).

    The edge publishes it when the turn's audio begins; the speech worker the shared group
    hands it to may claim it (:class:`UtteranceClaim`) and then receives its Opus frames as
    they come (:class:`UtteranceChunk`), decoding while the user speaks. Unclaimed, the edge
    publishes the whole :class:`UtterancePayload` at the end as before. Its fields are the
    whole utterance's, but the audio and the end's ``reason``.
    """

    device_id: str
    message_id: str
    sample_rate: int = Field(gt=0, le=48000)
    frame_duration_ms: int = Field(gt=0, le=120)
    session_id: Opt[str] = None
    mode: Opt[str] = None
    language: Opt[str] = None
    transport: Opt[DeviceTransport] = None
    edge_id: Opt[str] = None
    timestamp: Opt[str] = None


class ClaimState(enum.StrEnum):
    """What a speech worker says of an utterance it was offered (:class:`UtteranceClaim`)."""

    CLAIMED = "claimed"  # send me its frames, on utterances/{device_id}/stream/{worker_id}
    RECEIVED = "received"  # I have all of it (the final batch): the edge may forget it
    REFUSED = "refused"  # I lost it (a batch missing, my decoder died): send it whole


class UtteranceClaim(WireModel):
    """``xiaozhi/utterances/{device_id}/claim``: a speech worker to the device's edge."""

    device_id: str
    message_id: str
    worker_id: str
    state: ClaimState


MAX_CHUNK_FRAMES: Final = 50
"""Opus packets in one :class:`UtteranceChunk` (3 s of 60 ms frames; edges send about 4)."""


class UtteranceChunk(AudioClip):
    """``xiaozhi/utterances/{device_id}/stream/{worker_id}``: the next Opus frames of a
    claimed utterance (QoS 1), numbered from 0 by ``seq``; ``final`` ends it and carries
    why (``reason``). ``duration_ms`` is this batch's."""

    device_id: str
    message_id: str
    seq: int = Field(ge=0)
    final: bool = False
    reason: Opt[str] = None
    frames: list[str] = Field(default_factory=list, max_length=MAX_CHUNK_FRAMES)
