"""The MCP client side of a device session: the device is the MCP server (reference §4).

Pure bookkeeping of JSON-RPC 2.0 requests and responses; the session wraps each request in
the firmware envelope ``{"session_id","type":"mcp","payload":...}`` with
:func:`mcp_message` and feeds the device's ``mcp`` payloads to :meth:`McpClient.on_response`.

Firmware facts this follows (reference §4, §6.6):

* ``id`` must be a number: the firmware silently drops string ids. Ids here count up from 1.
* ``initialize`` may carry ``capabilities.vision {url, token}`` (where a camera uploads).
* ``tools/list`` pages at about 8000 bytes; ``nextCursor`` names the next page and is absent
  on the last. ``withUserTools: true`` is sent, or user-only tools such as ``self.reboot``
  stay hidden.
* Errors come as ``{"error": {"message": ...}}`` **without** ``code``.
* Methods starting with ``notifications`` are notifications (no id): ignored here.
* A device may never answer: every request has a deadline and :meth:`McpClient.expire`
  turns the overdue ones into failures.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from xiaozhi import __version__, jsonutil
from xiaozhi.errors import InvalidMessage, OperationFailed
from xiaozhi.messages import Mcp

__all__ = [
    "MCP_PROTOCOL_VERSION",
    "McpBusy",
    "McpCallResult",
    "McpClient",
    "McpEvent",
    "McpIgnored",
    "McpInitialized",
    "McpRequestFailed",
    "McpTool",
    "McpToolsListed",
    "McpVision",
    "RequestKind",
    "mcp_message",
]

MCP_PROTOCOL_VERSION: Final = "2024-11-05"
"""The version the firmware answers with (reference §4)."""

_MAX_ID: Final = 2**31 - 1  # stay a small integer for the firmware's cJSON
_MAX_ERROR_CHARS: Final = 200


class RequestKind(enum.StrEnum):
    """The JSON-RPC methods this client sends."""

    INITIALIZE = "initialize"
    TOOLS_LIST = "tools/list"
    TOOLS_CALL = "tools/call"


class McpBusy(OperationFailed):
    """Too many calls in flight for this device; the caller answers with a failure."""


@dataclass(frozen=True, slots=True)
class McpVision:
    """``capabilities.vision`` of ``initialize``: where the device's camera uploads."""

    url: str
    token: str


@dataclass(frozen=True, slots=True)
class McpTool:
    """One tool from ``tools/list`` (reference §4 "Tool descriptor")."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class McpInitialized:
    """The device answered ``initialize``; ``followup`` is the ``tools/list`` to send next."""

    request_id: int
    server_name: str | None
    server_version: str | None
    protocol_version: str | None
    followup: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class McpToolsListed:
    """One ``tools/list`` page; ``followup`` asks for the next, ``complete`` when none is."""

    request_id: int
    tools: tuple[McpTool, ...]
    complete: bool
    followup: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class McpCallResult:
    """The outcome of one ``tools/call``: answered, refused by the device, or timed out.

    Attributes:
        ok: True when the device answered with ``isError`` false.
        result: The tool's value: a single text item parsed as JSON when it is JSON (the
            firmware stringifies objects), else the text; several items as a list.
        error: Why it failed (the device's ``error.message``, its error text, or a timeout).
        context: What the caller attached to :meth:`McpClient.call`, returned untouched.
    """

    request_id: int
    name: str
    ok: bool
    result: Any = None
    error: str | None = None
    context: Any = None


@dataclass(frozen=True, slots=True)
class McpRequestFailed:
    """``initialize`` or ``tools/list`` failed or timed out; tools stay unknown."""

    request_id: int
    method: RequestKind
    error: str


@dataclass(frozen=True, slots=True)
class McpIgnored:
    """A payload that answers nothing pending: a notification, a late or unknown id."""

    reason: str


McpEvent: TypeAlias = (
    McpInitialized | McpToolsListed | McpCallResult | McpRequestFailed | McpIgnored
)


@dataclass(slots=True)
class _Pending:
    kind: RequestKind
    deadline: float | None
    name: str = ""
    context: Any = None
    cursor: str = ""


def mcp_message(payload: dict[str, Any], session_id: str | None) -> Mcp:
    """Wrap a JSON-RPC object in the firmware's ``mcp`` envelope (reference §4)."""
    return Mcp(session_id=session_id, payload=payload)


def _error_text(error: object) -> str:
    """The firmware sends ``{"message": ...}`` without ``code``; accept either."""
    if isinstance(error, dict):
        message = error.get("message")
        text = message if isinstance(message, str) else jsonutil.dumps_text(error)
        code = error.get("code")
        if isinstance(code, int) and not isinstance(code, bool):
            text = f"{text} (code {code})"
    else:
        text = str(error)
    return text[:_MAX_ERROR_CHARS]


def _text_value(text: str) -> Any:
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return jsonutil.loads(stripped)
        except InvalidMessage:
            return text
    return text


def _content_value(result: dict[str, Any]) -> tuple[Any, str]:
    """The value of a ``tools/call`` result, and its text for an error message."""
    content = result.get("content")
    if not isinstance(content, list):
        return result, jsonutil.dumps_text(result)
    values: list[Any] = []
    texts: list[str] = []
    for item in content:
        if (
            isinstance(item, dict)
            and item.get("type") == "text"
            and isinstance(item.get("text"), str)
        ):
            values.append(_text_value(item["text"]))
            texts.append(item["text"])
        elif isinstance(item, dict):
            # An image's base64 data does not belong in an MQTT event: keep its kind only.
            values.append({k: v for k, v in item.items() if k in ("type", "mimeType")})
    value: Any = values[0] if len(values) == 1 else values
    return value, "; ".join(texts)


class McpClient:
    """Bookkeeping for the MCP client of one device connection.

    Args:
        vision: ``capabilities.vision`` to offer in ``initialize``, if any.
        request_timeout_seconds: Deadline given to ``initialize`` and ``tools/list`` when a
            ``now`` is passed.
        max_pending_calls: ``tools/call`` requests in flight; :meth:`call` raises beyond.
        max_tools: Tools kept; pagination stops once this many are known.
        max_pages: ``tools/list`` pages followed at most.
        client_name: ``clientInfo.name`` sent in ``initialize``.
    """

    __slots__ = (
        "_next_id",
        "_pages",
        "_pending",
        "client_name",
        "ignored",
        "initialized",
        "max_pages",
        "max_pending_calls",
        "max_tools",
        "request_timeout_seconds",
        "server_name",
        "server_version",
        "tools",
        "tools_complete",
        "vision",
    )

    def __init__(
        self,
        *,
        vision: McpVision | None = None,
        request_timeout_seconds: float = 10.0,
        max_pending_calls: int = 32,
        max_tools: int = 256,
        max_pages: int = 32,
        client_name: str = "xiaozhi-edge",
    ) -> None:
        self.vision = vision
        self.request_timeout_seconds = request_timeout_seconds
        self.max_pending_calls = max_pending_calls
        self.max_tools = max_tools
        self.max_pages = max_pages
        self.client_name = client_name
        self.tools: dict[str, McpTool] = {}
        self.tools_complete = False
        self.initialized = False
        self.server_name: str | None = None
        self.server_version: str | None = None
        self.ignored = 0
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1
        self._pages = 0

    # -- requests ------------------------------------------------------------------------

    def _new_id(self) -> int:
        request_id = self._next_id
        while request_id in self._pending:  # only after a wrap-around
            request_id = request_id % _MAX_ID + 1
        self._next_id = request_id % _MAX_ID + 1
        return request_id

    def _request(
        self, method: RequestKind, params: dict[str, Any], pending: _Pending
    ) -> dict[str, Any]:
        request_id = self._new_id()
        self._pending[request_id] = pending
        return {"jsonrpc": "2.0", "id": request_id, "method": str(method), "params": params}

    def _deadline(self, now: float | None) -> float | None:
        return None if now is None else now + self.request_timeout_seconds

    def initialize(self, now: float | None = None) -> dict[str, Any]:
        """The ``initialize`` request; forgets any tools known before.

        Args:
            now: Monotonic seconds; with it the request expires after the request timeout.
        """
        self.tools.clear()
        self.tools_complete = False
        self.initialized = False
        self._pages = 0
        capabilities: dict[str, Any] = {"tools": {}}
        if self.vision is not None:
            capabilities["vision"] = {"url": self.vision.url, "token": self.vision.token}
        params = {
            "protocolVersion": MCP_PROTOCOL_VERSION,
            "capabilities": capabilities,
            "clientInfo": {"name": self.client_name, "version": __version__},
        }
        return self._request(
            RequestKind.INITIALIZE, params, _Pending(RequestKind.INITIALIZE, self._deadline(now))
        )

    def tools_list(self, cursor: str = "", now: float | None = None) -> dict[str, Any]:
        """A ``tools/list`` request for the page at ``cursor`` ("" is the first)."""
        params = {"cursor": cursor, "withUserTools": True}
        pending = _Pending(RequestKind.TOOLS_LIST, self._deadline(now), cursor=cursor)
        return self._request(RequestKind.TOOLS_LIST, params, pending)

    def call(
        self,
        name: str,
        arguments: dict[str, Any],
        now: float,
        deadline: float,
        context: Any = None,
    ) -> dict[str, Any]:
        """A ``tools/call`` request with a fresh numeric id.

        Args:
            name: The tool (``self.audio_speaker.set_volume``).
            arguments: Its arguments object.
            now: Monotonic seconds (kept for symmetry with the session; not stored).
            deadline: Monotonic time after which :meth:`expire` fails the call.
            context: Anything; returned in the :class:`McpCallResult`.

        Raises:
            McpBusy: ``max_pending_calls`` calls are already waiting.
        """
        del now
        calls = sum(1 for p in self._pending.values() if p.kind is RequestKind.TOOLS_CALL)
        if calls >= self.max_pending_calls:
            raise McpBusy(f"{calls} MCP calls already pending (limit {self.max_pending_calls})")
        params = {"name": name, "arguments": arguments}
        pending = _Pending(RequestKind.TOOLS_CALL, deadline, name=name, context=context)
        return self._request(RequestKind.TOOLS_CALL, params, pending)

    # -- state -------------------------------------------------------------------------

    def resolve(self, name: str, arguments: dict[str, Any]) -> str | None:
        """The tool to call for the stock firmware's ``name``, on a device that may name it
        otherwise (third-party xiaozhi clients declare ``set_volume`` rather than
        ``self.audio_speaker.set_volume``).

        By exact name; else by the last dotted segment (``set_volume``,
        ``speaker.set_volume``); else, for a call with arguments, the one tool whose input
        schema has exactly those properties (``{"volume"}``). Never a guess: two candidates
        at a step are no match. While the tools are still being listed, ``name`` itself.

        Returns:
            The tool's name, or None when the device has none that fits.
        """
        if name in self.tools or not self.tools_complete:
            return name
        short = name.rsplit(".", 1)[-1]
        by_suffix = [t for t in self.tools if t.rsplit(".", 1)[-1] == short]
        if len(by_suffix) == 1:
            return by_suffix[0]
        if arguments:
            wanted = set(arguments)
            by_schema = [
                t.name
                for t in self.tools.values()
                if set(t.input_schema.get("properties") or {}) == wanted
            ]
            if len(by_schema) == 1:
                return by_schema[0]
        return None

    def has_tool(self, name: str) -> bool | None:
        """True/False once ``tools/list`` is complete; None while the tools are unknown."""
        if name in self.tools:
            return True
        return False if self.tools_complete else None

    @property
    def pending_count(self) -> int:
        """Requests waiting for the device."""
        return len(self._pending)

    def next_deadline(self) -> float | None:
        """The earliest deadline of a pending request, for the session's timer."""
        deadlines = [p.deadline for p in self._pending.values() if p.deadline is not None]
        return min(deadlines) if deadlines else None

    # -- responses ---------------------------------------------------------------------

    def on_response(self, payload: dict[str, Any], now: float | None = None) -> McpEvent:
        """Match one JSON-RPC object from the device to its request.

        Args:
            payload: The ``payload`` of the device's ``mcp`` message.
            now: Monotonic seconds, giving a follow-up ``tools/list`` its deadline.

        Returns:
            The event; follow-up requests are in ``followup`` for the session to send.
        """
        if "method" in payload:
            self.ignored += 1
            method = payload.get("method")
            return McpIgnored(f"device sent {method!r}: notifications and requests are ignored")
        request_id = payload.get("id")
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            self.ignored += 1
            return McpIgnored(f"response id {request_id!r} is not a number")
        pending = self._pending.pop(request_id, None)
        if pending is None:
            self.ignored += 1
            return McpIgnored(f"no request {request_id} is pending (late or unknown)")
        if "error" in payload:
            return self._failure(request_id, pending, _error_text(payload["error"]))
        result = payload.get("result")
        if not isinstance(result, dict):
            return self._failure(request_id, pending, "response has no result object")
        if pending.kind is RequestKind.INITIALIZE:
            return self._on_initialized(request_id, result, now)
        if pending.kind is RequestKind.TOOLS_LIST:
            return self._on_tools(request_id, pending, result, now)
        value, text = _content_value(result)
        if result.get("isError") is True:
            return McpCallResult(
                request_id,
                pending.name,
                ok=False,
                error=text[:_MAX_ERROR_CHARS] or "tool failed",
                context=pending.context,
            )
        return McpCallResult(
            request_id, pending.name, ok=True, result=value, context=pending.context
        )

    def _failure(
        self, request_id: int, pending: _Pending, error: str
    ) -> McpCallResult | McpRequestFailed:
        if pending.kind is RequestKind.TOOLS_CALL:
            return McpCallResult(
                request_id, pending.name, ok=False, error=error, context=pending.context
            )
        return McpRequestFailed(request_id, pending.kind, error)

    def _on_initialized(
        self, request_id: int, result: dict[str, Any], now: float | None
    ) -> McpInitialized:
        self.initialized = True
        info = result.get("serverInfo")
        if isinstance(info, dict):
            name, version = info.get("name"), info.get("version")
            self.server_name = name if isinstance(name, str) else None
            self.server_version = version if isinstance(version, str) else None
        protocol = result.get("protocolVersion")
        return McpInitialized(
            request_id,
            self.server_name,
            self.server_version,
            protocol if isinstance(protocol, str) else None,
            followup=self.tools_list("", now),
        )

    def _on_tools(
        self, request_id: int, pending: _Pending, result: dict[str, Any], now: float | None
    ) -> McpToolsListed:
        self._pages += 1
        added: list[McpTool] = []
        raw_tools = result.get("tools")
        for raw in raw_tools if isinstance(raw_tools, list) else ():
            if len(self.tools) >= self.max_tools:
                break
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                continue
            description = raw.get("description")
            schema = raw.get("inputSchema")
            tool = McpTool(
                raw["name"],
                description if isinstance(description, str) else "",
                schema if isinstance(schema, dict) else {},
            )
            self.tools[tool.name] = tool
            added.append(tool)
        cursor = result.get("nextCursor")
        more = (
            isinstance(cursor, str)
            # "" ends the list; a device repeating its cursor would loop forever
            and cursor not in ("", pending.cursor)
            and self._pages < self.max_pages
            and len(self.tools) < self.max_tools
        )
        followup = self.tools_list(cursor, now) if more and isinstance(cursor, str) else None
        self.tools_complete = followup is None
        return McpToolsListed(request_id, tuple(added), self.tools_complete, followup)

    def expire(self, now: float) -> list[McpCallResult | McpRequestFailed]:
        """Fail every request whose deadline has passed at ``now``."""
        overdue = [
            rid for rid, p in self._pending.items() if p.deadline is not None and now >= p.deadline
        ]
        return [self._failure(rid, self._pending.pop(rid), "timed out") for rid in overdue]

    def cancel_all(self, reason: str) -> list[McpCallResult | McpRequestFailed]:
        """Fail every pending request (the connection closed)."""
        pending, self._pending = self._pending, {}
        return [self._failure(rid, p, reason) for rid, p in pending.items()]
