"""The device's MCP server (JSON-RPC 2.0): the device serves, the backend calls.

Behaviour copied from ``FW:main/mcp_server.cc`` (reference section 4), quirks included, since
QA uses the simulator to check that a backend copes with real devices:

* a request is dropped *silently* unless ``jsonrpc`` is ``"2.0"``, ``method`` is a string,
  ``params`` (if present) is an object and ``id`` is a **number** (string ids are dropped);
  methods starting with ``notifications`` are ignored;
* errors are ``{"jsonrpc":"2.0","id":N,"error":{"message":"..."}}`` with **no** ``code``;
* ``tools/list`` pages at about 8000 bytes per reply; ``nextCursor`` is the name of the first
  tool left out; user-only tools (``annotations.audience: ["user"]``) are listed only with
  ``withUserTools: true``;
* ``tools/call`` checks each property: a missing or mistyped argument without a default is
  ``Missing valid argument: X``; an integer out of range fails with the firmware's message;
  results are text: booleans ``"true"``/``"false"``, integers in decimal, objects as JSON.

Pure: :meth:`McpServer.handle` takes the JSON-RPC object and returns the reply object (or
``None``); the transport wraps it in ``{"session_id","type":"mcp","payload":...}``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from xiaozhi import jsonutil
from xiaozhi.commands import McpTool
from xiaozhi.errors import OperationFailed
from xiaozhi_sim.model import DeviceModel

__all__ = [
    "DEFAULT_MAX_PAGE_BYTES",
    "PROTOCOL_VERSION",
    "McpServer",
    "Property",
    "PropertyType",
    "Tool",
    "ToolError",
    "device_tools",
]

PROTOCOL_VERSION: Final = "2024-11-05"
DEFAULT_MAX_PAGE_BYTES: Final = 8000
"""``tools/list`` reply budget in bytes (firmware ``max_payload_size``)."""
_PAGE_SLACK_BYTES: Final = 30  # the firmware keeps this much room for the reply's tail

ToolResult = bool | int | str | dict[str, Any]


class ToolError(OperationFailed):
    """A tool refused its call; the message goes to the caller as the JSON-RPC error."""


class PropertyType(enum.StrEnum):
    """Argument types the firmware supports (reference section 4)."""

    BOOLEAN = "boolean"
    INTEGER = "integer"
    STRING = "string"


@dataclass(frozen=True, slots=True)
class Property:
    """One tool argument. ``default`` None = required; integers may carry a range."""

    name: str
    type: PropertyType
    default: bool | int | str | None = None
    minimum: int | None = None
    maximum: int | None = None

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": str(self.type)}
        if self.default is not None:
            out["default"] = self.default
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out

    def take(self, arguments: dict[str, Any]) -> tuple[bool, Any]:
        """``(found, value)`` from the call's arguments, as ``DoToolCall`` reads them.

        Raises:
            ToolError: an integer outside its range (the firmware's own message).
        """
        if self.name not in arguments:
            return False, self.default
        value = arguments[self.name]
        if self.type is PropertyType.BOOLEAN:
            ok = isinstance(value, bool)
        elif self.type is PropertyType.INTEGER:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = int(value) if ok else value
        else:
            ok = isinstance(value, str)
        if not ok:
            return False, self.default
        if self.type is PropertyType.INTEGER:
            if self.minimum is not None and value < self.minimum:
                raise ToolError(f"Value is below minimum allowed: {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise ToolError(f"Value is above maximum allowed: {self.maximum}")
        return True, value


@dataclass(frozen=True, slots=True)
class Tool:
    """One MCP tool: its descriptor and the function that runs it."""

    name: str
    description: str
    handler: Callable[[dict[str, Any]], ToolResult]
    properties: tuple[Property, ...] = ()
    user_only: bool = False

    def descriptor(self) -> dict[str, Any]:
        """``{name, description, inputSchema[, annotations]}`` as ``tools/list`` lists it."""
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {p.name: p.schema() for p in self.properties},
        }
        required = [p.name for p in self.properties if p.default is None]
        if required:
            schema["required"] = required
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "inputSchema": schema,
        }
        if self.user_only:
            out["annotations"] = {"audience": ["user"]}
        return out


def _text(result: ToolResult) -> str:
    if isinstance(result, bool):
        return "true" if result else "false"
    if isinstance(result, int):
        return str(result)
    if isinstance(result, dict):
        return jsonutil.dumps_text(result)
    return result


@dataclass(slots=True)
class McpServer:
    """A device's MCP server.

    Args:
        name: ``serverInfo.name`` (the board name).
        version: ``serverInfo.version`` (the firmware version).
        tools: the tools, listed in this order.
        max_page_bytes: ``tools/list`` reply budget (firmware: about 8000).
    """

    name: str
    version: str
    tools: list[Tool] = field(default_factory=list)
    max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES
    vision: dict[str, Any] | None = None
    calls: int = 0

    def add_tools(self, tools: Iterable[Tool]) -> None:
        self.tools.extend(tools)

    def handle(self, payload: Any) -> dict[str, Any] | None:
        """Answer one JSON-RPC request; ``None`` when the firmware would stay silent."""
        if not isinstance(payload, dict) or payload.get("jsonrpc") != "2.0":
            return None
        method = payload.get("method")
        if not isinstance(method, str) or method.startswith("notifications"):
            return None
        params = payload.get("params", {})
        if not isinstance(params, dict):
            return None
        request_id = payload.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, int | float):
            return None  # string ids are dropped silently (reference section 4)
        rid = int(request_id)
        if method == "initialize":
            vision = params.get("capabilities", {})
            if isinstance(vision, dict) and isinstance(vision.get("vision"), dict):
                self.vision = vision["vision"]
            return _result(
                rid,
                {
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": self.name, "version": self.version},
                },
            )
        if method == "tools/list":
            cursor = params.get("cursor", "")
            with_user = params.get("withUserTools", False) is True
            return self._list(rid, cursor if isinstance(cursor, str) else "", with_user)
        if method == "tools/call":
            return self._call(rid, params)
        return _error(rid, f"Method not implemented: {method}")

    def _list(self, rid: int, cursor: str, with_user: bool) -> dict[str, Any]:
        page: list[dict[str, Any]] = []
        size = len('{"tools":[')
        found = not cursor
        next_cursor: str | None = None
        for tool in self.tools:
            if not found:
                if tool.name != cursor:
                    continue
                found = True
            if tool.user_only and not with_user:
                continue
            descriptor = tool.descriptor()
            cost = len(jsonutil.dumps(descriptor)) + 1
            if size + cost + _PAGE_SLACK_BYTES > self.max_page_bytes:
                next_cursor = tool.name
                break
            page.append(descriptor)
            size += cost
        if not page and next_cursor is not None:
            return _error(rid, f"Failed to add tool {next_cursor} because of payload size limit")
        result: dict[str, Any] = {"tools": page}
        if next_cursor is not None:
            result["nextCursor"] = next_cursor
        return _result(rid, result)

    def _call(self, rid: int, params: dict[str, Any]) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str):
            return _error(rid, "Missing name")
        arguments = params.get("arguments", {})
        if not isinstance(arguments, dict):
            return _error(rid, "Invalid arguments")
        tool = next((t for t in self.tools if t.name == name), None)
        if tool is None:
            return _error(rid, f"Unknown tool: {name}")
        values: dict[str, Any] = {}
        try:
            for prop in tool.properties:
                found, value = prop.take(arguments)
                if not found and prop.default is None:
                    return _error(rid, f"Missing valid argument: {prop.name}")
                values[prop.name] = value
            result = tool.handler(values)
        except (ToolError, ValueError) as err:
            return _error(rid, str(err))
        self.calls += 1
        content = [{"type": "text", "text": _text(result)}]
        return _result(rid, {"content": content, "isError": False})

    def call(self, name: str, arguments: dict[str, Any]) -> tuple[bool, str]:
        """Run a tool locally (an MQTT ``mcp_call`` command): ``(ok, text or error)``."""
        reply = self._call(0, {"name": name, "arguments": arguments})
        if "error" in reply:
            return False, str(reply["error"]["message"])
        return True, str(reply["result"]["content"][0]["text"])


def _result(rid: int, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "result": result}


def _error(rid: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"message": message}}


def device_tools(model: DeviceModel, system_info: Callable[[], dict[str, Any]]) -> list[Tool]:
    """The tools of a simulated device (reference section 4, common tools and ``esp-hi``).

    ``self.reboot`` only sets ``model.reboot_pending``: the session reboots after replying,
    as firmware schedules the restart after its answer.
    """

    def get_status(_: dict[str, Any]) -> ToolResult:
        return model.device_status()

    def set_volume(args: dict[str, Any]) -> ToolResult:
        model.set_volume(args["volume"])
        return True

    def light(on: bool) -> Callable[[dict[str, Any]], ToolResult]:
        def run(_: dict[str, Any]) -> ToolResult:
            model.set_light(on)
            return True

        return run

    def reboot(_: dict[str, Any]) -> ToolResult:
        model.reboot_pending = True
        return True

    return [
        Tool(
            McpTool.GET_DEVICE_STATUS,
            "Provides the real-time information of the device, including the current status of "
            "the audio speaker, screen, light and network. Use it to answer questions about the "
            "device and as the first step before changing a setting.",
            get_status,
        ),
        Tool(
            McpTool.SET_VOLUME,
            "Set the volume of the audio speaker. If the current volume is unknown, call "
            "`self.get_device_status` first.",
            set_volume,
            (Property("volume", PropertyType.INTEGER, minimum=0, maximum=100),),
        ),
        Tool(McpTool.LIGHT_ON, "Turn on the light.", light(True)),
        Tool(McpTool.LIGHT_OFF, "Turn off the light.", light(False)),
        Tool(
            McpTool.GET_SYSTEM_INFO,
            "Get the system information (chip, firmware, partitions).",
            lambda _: system_info(),
            user_only=True,
        ),
        Tool(McpTool.REBOOT, "Reboot the device.", reboot, user_only=True),
    ]
