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

import enum
from typing import Annotated, Any, Literal, Self

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
from xiaozhi.topics import DEVICE_ID_PATTERN, MAX_ID_LENGTH

__all__ = [
    "Action",
    "ActionType",
    "Availability",
    "BridgeRequest",
    "BridgeResponse",
    "BridgeState",
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
    "VoiceCommandEvent",
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
    """How a device reaches us: through an edge's WebSocket, or straight to the broker."""

    WEBSOCKET = "websocket"
    MQTT = "mqtt"


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
