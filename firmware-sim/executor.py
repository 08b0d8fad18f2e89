"""What an MQTT device does with a command, sans I/O (seed 003's device client).

A command arrives on ``xiaozhi/commands/{device_id}``, its group topic or the broadcast topic
as a :class:`~xiaozhi.payloads.CommandPayload`; the vocabulary and parameter models are
:mod:`xiaozhi.commands`. Every command gets exactly one answer on the device's events topic: a
:class:`~xiaozhi.commands.CommandResult` naming its ``message_id`` (``ok`` or ``error``), or an
``error`` event when the payload is not a command at all. Nothing here publishes: the transport
publishes what :meth:`CommandExecutor.execute` returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xiaozhi.commands import (
    AlertParameters,
    CommandResult,
    DeviceCommand,
    LedParameters,
    McpCallParameters,
    RespondParameters,
    VolumeParameters,
    parse_parameters,
)
from xiaozhi.dedup import RecentIds
from xiaozhi.errors import WireError
from xiaozhi.payloads import CommandPayload, EventPayload, EventType, ResponseStatus
from xiaozhi_sim.mcp_server import McpServer
from xiaozhi_sim.model import DeviceModel
from xiaozhi_sim.state import DeviceState

__all__ = ["CommandExecutor", "Execution"]

MAX_COMMAND_BYTES = 64 * 1024
"""Largest command payload a device parses; commands are small JSON (design.md section 5)."""

RECENT_MESSAGE_IDS = 256
"""How many command ``message_id`` s a device remembers to drop repeats: a group command
reaches a member on its group topic and again on its own topic when the hub fans it out, and
QoS 1 may redeliver. The edge drops repeats the same way."""


@dataclass(frozen=True, slots=True)
class Execution:
    """The outcome of one incoming command message.

    Attributes:
        event: what to publish on the device's events topic: a ``command_result``, or an
            ``error`` event for a payload that is not a command.
        command: the parsed command, None when the payload did not parse.
        publish_status: the device's state changed (or ``get_status``): publish a status now.
        reboot: reboot after publishing ``event``.
    """

    event: CommandResult | EventPayload
    command: CommandPayload | None
    publish_status: bool = False
    reboot: bool = False

    @property
    def ok(self) -> bool:
        return isinstance(self.event, CommandResult) and self.event.status is ResponseStatus.OK


class CommandExecutor:
    """Runs :mod:`xiaozhi.commands` on a :class:`DeviceModel`.

    Args:
        model: the device's hardware state.
        mcp: its MCP server, for ``mcp_call``.
    """

    def __init__(self, model: DeviceModel, mcp: McpServer) -> None:
        self.model = model
        self.mcp = mcp
        self.executed = 0
        self.failed = 0
        self.duplicates = 0
        self._recent = RecentIds(RECENT_MESSAGE_IDS)

    def _seen_before(self, message_id: str | None) -> bool:
        if self._recent.seen(message_id):
            self.duplicates += 1
            return True
        return False

    def execute(self, raw: bytes, *, timestamp: str | None) -> Execution | None:
        """Parse and run one command message.

        Args:
            raw: the MQTT payload.
            timestamp: ISO 8601 time for the answer (from the transport's clock).

        Returns:
            What to publish, or None for a ``message_id`` already run (nothing to do).
        """
        device_id = self.model.identity.device_id
        try:
            command = CommandPayload.from_wire(raw, max_bytes=MAX_COMMAND_BYTES)
        except WireError as err:
            self.failed += 1
            error = EventPayload(
                event_type=EventType.ERROR,
                device_id=device_id,
                timestamp=timestamp,
                error=str(err),
                error_code=err.code.name,
            )
            return Execution(event=error, command=None)
        if self._seen_before(command.message_id):
            return None  # already run and answered: a repeat is not a second command
        try:
            outcome = self._run(command)
        except (WireError, ValueError) as err:
            self.failed += 1
            failure = self._result(command, timestamp, error=str(err))
            return Execution(event=failure, command=command)
        self.executed += 1
        result, publish_status, reboot = outcome
        return Execution(
            event=self._result(command, timestamp, result=result),
            command=command,
            publish_status=publish_status,
            reboot=reboot,
        )

    def _result(
        self,
        command: CommandPayload,
        timestamp: str | None,
        *,
        result: Any = None,
        error: str | None = None,
    ) -> CommandResult:
        return CommandResult(
            device_id=self.model.identity.device_id,
            command=command.command,
            status=ResponseStatus.ERROR if error is not None else ResponseStatus.OK,
            message_id=command.message_id,
            result=result,
            error=error,
            timestamp=timestamp,
        )

    def _run(self, command: CommandPayload) -> tuple[Any, bool, bool]:
        """``(result, publish_status, reboot)``; raises for a refused command."""
        parsed = parse_parameters(command)
        if parsed is None:
            known = ", ".join(c.value for c in DeviceCommand)
            raise ValueError(f"unknown command {command.command!r} (known: {known})")
        kind, params = parsed
        model = self.model
        match kind, params:
            case DeviceCommand.SET_VOLUME, VolumeParameters(volume=volume):
                model.set_volume(volume)
                return {"volume": model.volume}, True, False
            case DeviceCommand.LED, LedParameters(on=on, brightness=brightness):
                model.set_light(on, brightness)
                return {"on": model.light_on, "brightness": model.brightness}, True, False
            case DeviceCommand.RESPOND, RespondParameters(text=text):
                model.last_response = text
                for state in (DeviceState.SPEAKING, DeviceState.IDLE):
                    if model.machine.can(state):
                        model.machine.go(state, "respond")
                return {"spoken": text}, False, False
            case DeviceCommand.GET_STATUS, _:
                return model.device_status(), True, False
            case DeviceCommand.REBOOT, _:
                return {"rebooting": True}, False, True
            case DeviceCommand.ALERT, AlertParameters(status=status, message=text, emotion=emo):
                model.last_alert = {"status": status, "message": text, "emotion": emo}
                return {"shown": True}, False, False
            case DeviceCommand.MCP_CALL, McpCallParameters(name=name, arguments=arguments):
                ok, text = self.mcp.call(name, arguments)
                if not ok:
                    raise ValueError(text)
                return {"text": text}, True, model.reboot_pending
        raise ValueError(f"command {command.command!r} is not supported by this device")
