"""The device command vocabulary: what travels on ``xiaozhi/commands/...`` and what a device does.

The hub (and integrators) publish a :class:`~xiaozhi.payloads.CommandPayload` whose
``command`` is one of :class:`DeviceCommand` and whose ``parameters`` fit that command's
model below. Whoever delivers the command to the device follows the same table:

* an **edge** translates it for a real-firmware device: ``respond`` becomes ``stt`` + ``tts``
  (+ audio), device functions become MCP ``tools/call`` (firmware reference section 4),
  ``reboot`` becomes ``system``; a seed-style device gets the command as JSON;
* an **MQTT device** (seed 003's client, the simulator) reads it from its own topic.

Every command's outcome is a ``command_result`` event on ``xiaozhi/events/{device_id}``
(:class:`CommandResult`), naming the command's ``message_id``. A command outside the table is
not an error on the wire: it is passed to seed-style devices as is, and answered with a
failed ``command_result`` by devices that cannot run it.
"""

from __future__ import annotations

import enum
from typing import Any

from pydantic import Field

from xiaozhi._validation import Opt, WireModel, validate_model
from xiaozhi.payloads import Action, AudioClip, CommandPayload, ResponseStatus

__all__ = [
    "COMMAND_PARAMETERS",
    "MCP_TOOL_FOR_COMMAND",
    "AlertParameters",
    "CommandResult",
    "DeviceCommand",
    "LedParameters",
    "McpCallParameters",
    "McpTool",
    "RespondParameters",
    "VolumeParameters",
    "parse_parameters",
]


class DeviceCommand(enum.StrEnum):
    """Commands every xiaozhi device understands (design.md sections 5 and 6)."""

    RESPOND = "respond"  # answer the speaking device: stt echo, tts sentence, audio
    SET_VOLUME = "set_volume"  # speaker volume 0-100
    LED = "led"  # LED / light on or off, with brightness
    REBOOT = "reboot"
    ALERT = "alert"  # on-screen alert (firmware `alert` message)
    GET_STATUS = "get_status"  # publish a fresh status now
    MCP_CALL = "mcp_call"  # any MCP tool by name (real firmware only)


class RespondParameters(WireModel):
    """``respond``: what the device says back after a voice command."""

    text: str  # the sentence to speak / show
    stt: Opt[str] = None  # the words the device heard, echoed as `stt` first
    emotion: Opt[str] = None  # firmware `llm` emotion (e.g. "happy")
    actions: list[Action] = Field(default_factory=list)  # what was done, for seed devices
    session_id: Opt[str] = None  # the voice session this answers, when known
    # The spoken answer (Opus from the hub's text-to-speech). The edge plays it to firmware
    # devices paced at the frame duration and gives seed devices a WAV; without it the edge
    # can only play a short chime.
    audio: Opt[AudioClip] = None


class VolumeParameters(WireModel):
    volume: int = Field(ge=0, le=100)


class LedParameters(WireModel):
    on: bool
    brightness: Opt[int] = Field(default=None, ge=0, le=255)


class AlertParameters(WireModel):
    """Firmware ``alert`` requires all three (reference section 1.6)."""

    status: str
    message: str
    emotion: str = "neutral"


class McpCallParameters(WireModel):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class _NoParameters(WireModel):
    pass


COMMAND_PARAMETERS: dict[DeviceCommand, type[WireModel]] = {
    DeviceCommand.RESPOND: RespondParameters,
    DeviceCommand.SET_VOLUME: VolumeParameters,
    DeviceCommand.LED: LedParameters,
    DeviceCommand.REBOOT: _NoParameters,
    DeviceCommand.ALERT: AlertParameters,
    DeviceCommand.GET_STATUS: _NoParameters,
    DeviceCommand.MCP_CALL: McpCallParameters,
}
"""Each command's parameter model; extras are kept, as everywhere on the wire."""


class McpTool(enum.StrEnum):
    """MCP tool names of the stock firmware that commands map onto (reference section 4).

    The one vocabulary: the edge calls these, the simulator serves them, tests name them.
    """

    GET_DEVICE_STATUS = "self.get_device_status"
    SET_VOLUME = "self.audio_speaker.set_volume"
    LIGHT_ON = "self.light.turn_on"
    LIGHT_OFF = "self.light.turn_off"
    GET_SYSTEM_INFO = "self.get_system_info"  # user-only: listed with `withUserTools: true`
    REBOOT = "self.reboot"  # user-only


MCP_TOOL_FOR_COMMAND: dict[DeviceCommand, McpTool] = {
    DeviceCommand.SET_VOLUME: McpTool.SET_VOLUME,
    DeviceCommand.GET_STATUS: McpTool.GET_DEVICE_STATUS,
    DeviceCommand.REBOOT: McpTool.REBOOT,
}
"""Device functions that real firmware exposes as MCP tools (reference section 4).
``led`` maps to :attr:`McpTool.LIGHT_ON` / :attr:`McpTool.LIGHT_OFF` by its ``on`` parameter."""


def parse_parameters(command: CommandPayload) -> tuple[DeviceCommand, WireModel] | None:
    """Validate a known command's parameters; None for a command outside the table.

    Raises:
        MissingField, InvalidMessage: a known command with parameters that do not fit,
            naming the field as ``parameters.<name>``.
    """
    try:
        known = DeviceCommand(command.command)
    except ValueError:
        return None
    model = COMMAND_PARAMETERS[known]
    return known, validate_model(model, command.parameters, path_prefix="parameters")


class CommandResult(WireModel):
    """``command_result`` event on ``xiaozhi/events/{device_id}``: the outcome of one command."""

    event_type: str = "command_result"
    device_id: str
    command: str
    status: ResponseStatus
    message_id: Opt[str] = None
    result: Opt[Any] = None
    error: Opt[str] = None
    timestamp: Opt[str] = None
