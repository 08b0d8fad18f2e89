"""McpClient bookkeeping against the firmware's JSON-RPC behaviour (reference §4)."""

from __future__ import annotations

from typing import Any

import pytest

from xiaozhi_edge.mcp_client import (
    McpBusy,
    McpCallResult,
    McpClient,
    McpIgnored,
    McpInitialized,
    McpRequestFailed,
    McpToolsListed,
    McpVision,
    RequestKind,
    mcp_message,
)


def _tool(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"{name} tool",
        "inputSchema": {"type": "object", "properties": {}},
    }


def test_initialize_request_with_vision() -> None:
    client = McpClient(vision=McpVision("http://hub:8003/vision", "tok"))
    request = client.initialize()
    assert request == {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2024-11-05",
            "capabilities": {
                "tools": {},
                "vision": {"url": "http://hub:8003/vision", "token": "tok"},
            },
            "clientInfo": {"name": "xiaozhi-edge", "version": "0.1.0"},
        },
    }
    assert client.next_deadline() is None  # no `now`: no deadline


def test_envelope_is_the_firmware_mcp_message() -> None:
    message = mcp_message({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, "s1")
    assert message.to_text() == (
        '{"type":"mcp","session_id":"s1","payload":{"jsonrpc":"2.0","id":1,"method":"tools/list"}}'
    )


def test_initialize_then_paginated_tools_list() -> None:
    client = McpClient()
    client.initialize(now=0.0)
    assert client.next_deadline() == 10.0
    event = client.on_response(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "result": {
                "protocolVersion": "2024-11-05",
                "serverInfo": {"name": "b", "version": "1.2"},
            },
        },
        now=1.0,
    )
    assert isinstance(event, McpInitialized)
    assert (event.server_name, event.server_version, event.protocol_version) == (
        "b",
        "1.2",
        "2024-11-05",
    )
    assert client.initialized
    assert event.followup is not None
    assert event.followup["params"] == {"cursor": "", "withUserTools": True}
    assert client.has_tool("self.reboot") is None  # unknown until the list is complete
    page = client.on_response(
        {
            "jsonrpc": "2.0",
            "id": event.followup["id"],
            "result": {"tools": [_tool("a"), "junk", {"name": 3}], "nextCursor": "b"},
        },
        now=2.0,
    )
    assert isinstance(page, McpToolsListed)
    assert [t.name for t in page.tools] == ["a"]
    assert page.tools[0].description == "a tool"
    assert not page.complete
    assert page.followup is not None
    assert page.followup["params"]["cursor"] == "b"
    last = client.on_response(
        {"jsonrpc": "2.0", "id": page.followup["id"], "result": {"tools": [{"name": "b"}]}}
    )
    assert isinstance(last, McpToolsListed)
    assert last.complete
    assert last.followup is None
    assert last.tools[0].input_schema == {}
    assert client.has_tool("b") is True
    assert client.has_tool("c") is False
    assert client.pending_count == 0


def test_pagination_stops_on_a_repeated_cursor_and_at_the_limits() -> None:
    client = McpClient()
    request = client.tools_list("x")
    event = client.on_response({"id": request["id"], "result": {"tools": [], "nextCursor": "x"}})
    assert isinstance(event, McpToolsListed)
    assert event.complete
    client = McpClient(max_pages=1)
    request = client.tools_list()
    event = client.on_response({"id": request["id"], "result": {"tools": [], "nextCursor": "y"}})
    assert isinstance(event, McpToolsListed)
    assert event.complete
    client = McpClient(max_tools=2)
    request = client.tools_list()
    tools = [_tool(n) for n in "abcd"]
    event = client.on_response({"id": request["id"], "result": {"tools": tools, "nextCursor": "e"}})
    assert isinstance(event, McpToolsListed)
    assert (len(client.tools), event.complete) == (2, True)


def test_initialize_forgets_previous_tools() -> None:
    client = McpClient()
    request = client.tools_list()
    client.on_response({"id": request["id"], "result": {"tools": [_tool("a")]}})
    client.initialize()
    assert client.tools == {}
    assert not client.tools_complete


def test_call_ids_are_fresh_numbers_and_results_carry_context() -> None:
    client = McpClient()
    first = client.call("self.audio_speaker.set_volume", {"volume": 5}, 0.0, 10.0, context="ctx")
    second = client.call("self.get_device_status", {}, 0.0, 10.0)
    assert (first["id"], second["id"]) == (1, 2)
    assert first["params"] == {"name": "self.audio_speaker.set_volume", "arguments": {"volume": 5}}
    event = client.on_response(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "result": {"content": [{"type": "text", "text": "true"}], "isError": False},
        }
    )
    assert event == McpCallResult(
        1, "self.audio_speaker.set_volume", ok=True, result="true", context="ctx"
    )


@pytest.mark.parametrize(
    ("result", "ok", "value", "error"),
    [
        ({"content": [{"type": "text", "text": '{"a": 1}'}]}, True, {"a": 1}, None),
        ({"content": [{"type": "text", "text": "[1, 2"}]}, True, "[1, 2", None),
        (
            {"content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]},
            True,
            ["x", "y"],
            None,
        ),
        (
            {"content": [{"type": "image", "mimeType": "image/jpeg", "data": "AAAA"}]},
            True,
            {"type": "image", "mimeType": "image/jpeg"},
            None,
        ),
        (
            {"content": [{"type": "text", "text": "bad volume"}], "isError": True},
            False,
            None,
            "bad volume",
        ),
        ({"content": [], "isError": True}, False, None, "tool failed"),
        ({"value": 3}, True, {"value": 3}, None),
    ],
)
def test_call_result_shapes(
    result: dict[str, Any], ok: bool, value: Any, error: str | None
) -> None:
    client = McpClient()
    request = client.call("t", {}, 0.0, 1.0)
    event = client.on_response({"id": request["id"], "result": result})
    assert isinstance(event, McpCallResult)
    assert (event.ok, event.result, event.error) == (ok, value, error)


@pytest.mark.parametrize(
    ("error", "text"),
    [
        ({"message": "Unknown tool: x"}, "Unknown tool: x"),  # the firmware: no code
        ({"code": -32601, "message": "Method not found"}, "Method not found (code -32601)"),
        ({"code": -1}, '{"code":-1} (code -1)'),
        ("plain", "plain"),
    ],
)
def test_errors_with_and_without_code(error: Any, text: str) -> None:
    client = McpClient()
    request = client.call("t", {}, 0.0, 1.0)
    event = client.on_response({"id": request["id"], "error": error})
    assert isinstance(event, McpCallResult)
    assert (event.ok, event.error) == (False, text)


def test_malformed_responses() -> None:
    client = McpClient()
    request = client.call("t", {}, 0.0, 1.0)
    event = client.on_response({"id": request["id"], "result": "nope"})
    assert isinstance(event, McpCallResult)
    assert event.error == "response has no result object"
    init = client.initialize()
    failed = client.on_response({"id": init["id"], "error": {"message": "no"}})
    assert failed == McpRequestFailed(init["id"], RequestKind.INITIALIZE, "no")


@pytest.mark.parametrize(
    "payload",
    [
        {"jsonrpc": "2.0", "method": "notifications/state_changed"},
        {"jsonrpc": "2.0", "id": "1", "result": {}},
        {"jsonrpc": "2.0", "id": True, "result": {}},
        {"jsonrpc": "2.0", "id": 99, "result": {}},
    ],
)
def test_notifications_and_unknown_ids_are_ignored(payload: dict[str, Any]) -> None:
    client = McpClient()
    client.call("t", {}, 0.0, 1.0)
    assert isinstance(client.on_response(payload), McpIgnored)
    assert client.ignored == 1
    assert client.pending_count == 1


def test_expire_and_cancel_all() -> None:
    client = McpClient(request_timeout_seconds=5.0)
    client.initialize(now=0.0)
    client.call("a", {}, 0.0, 3.0, context=1)
    client.call("b", {}, 0.0, 8.0, context=2)
    assert client.next_deadline() == 3.0
    assert client.expire(2.9) == []
    (expired,) = client.expire(3.0)
    assert isinstance(expired, McpCallResult)
    assert (expired.name, expired.error, expired.context) == ("a", "timed out", 1)
    (init,) = client.expire(5.0)
    assert isinstance(init, McpRequestFailed)
    assert init.method is RequestKind.INITIALIZE
    (cancelled,) = client.cancel_all("device disconnected")
    assert isinstance(cancelled, McpCallResult)
    assert cancelled.error == "device disconnected"
    assert client.next_deadline() is None


def test_pending_calls_are_bounded() -> None:
    client = McpClient(max_pending_calls=2)
    client.call("a", {}, 0.0, 1.0)
    client.call("b", {}, 0.0, 1.0)
    with pytest.raises(McpBusy):
        client.call("c", {}, 0.0, 1.0)
    client.initialize()  # requests other than calls are not counted


def test_ids_wrap_around_and_skip_pending_ones() -> None:
    client = McpClient()
    client.call("a", {}, 0.0, 1.0)  # id 1 stays pending
    client._next_id = 2**31 - 1
    assert client.call("b", {}, 0.0, 1.0)["id"] == 2**31 - 1
    assert client.call("c", {}, 0.0, 1.0)["id"] == 2  # 1 is still pending
