"""The device MCP server, quirks included (reference section 4)."""

from __future__ import annotations

from typing import Any

import pytest

from xiaozhi import jsonutil
from xiaozhi_sim.identity import make_identity
from xiaozhi_sim.mcp_server import McpServer, Property, PropertyType, Tool, device_tools
from xiaozhi_sim.model import DeviceModel


@pytest.fixture
def model() -> DeviceModel:
    return DeviceModel(make_identity(name="mcp"))


@pytest.fixture
def server(model: DeviceModel) -> McpServer:
    return McpServer("bread-compact-wifi", "1.8.2", device_tools(model, lambda: {"chip": "s3"}))


def rpc(method: str, params: Any = None, rid: Any = 1) -> dict[str, Any]:
    out: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        out["params"] = params
    return out


def test_initialize_answers_server_info_and_keeps_the_vision_endpoint(server: McpServer) -> None:
    vision = {"url": "http://hub/vision", "token": "t"}
    reply = server.handle(rpc("initialize", {"capabilities": {"vision": vision}}))
    assert reply == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {
            "protocolVersion": "2024-11-05",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "bread-compact-wifi", "version": "1.8.2"},
        },
    }
    assert server.vision == vision


def test_tools_list_hides_user_only_tools_unless_asked(server: McpServer) -> None:
    names = [t["name"] for t in server.handle(rpc("tools/list", {"cursor": ""}))["result"]["tools"]]
    assert names == [
        "self.get_device_status",
        "self.audio_speaker.set_volume",
        "self.light.turn_on",
        "self.light.turn_off",
    ]
    everything = server.handle(rpc("tools/list", {"withUserTools": True}))["result"]["tools"]
    user = [t for t in everything if "annotations" in t]
    assert [t["name"] for t in user] == ["self.get_system_info", "self.reboot"]
    assert user[0]["annotations"] == {"audience": ["user"]}
    volume = everything[1]["inputSchema"]
    assert volume == {
        "type": "object",
        "properties": {"volume": {"type": "integer", "minimum": 0, "maximum": 100}},
        "required": ["volume"],
    }


def test_tools_list_pages_by_size_and_follows_next_cursor(server: McpServer) -> None:
    server.max_page_bytes = 500  # two or three descriptors per page
    names: list[str] = []
    cursor = ""
    pages = 0
    while True:
        reply = server.handle(rpc("tools/list", {"cursor": cursor, "withUserTools": True}, 2))
        result = reply["result"]
        assert len(jsonutil.dumps(result)) <= 500
        names += [t["name"] for t in result["tools"]]
        pages += 1
        if "nextCursor" not in result:
            break
        cursor = result["nextCursor"]
        assert cursor == [t.name for t in server.tools][len(names)]  # first tool left out
    assert pages > 1
    assert names == [t.name for t in server.tools]


def test_a_tool_too_big_for_any_page_is_an_error(server: McpServer) -> None:
    server.max_page_bytes = 60
    reply = server.handle(rpc("tools/list"))
    assert reply["error"] == {
        "message": "Failed to add tool self.get_device_status because of payload size limit"
    }


def test_tools_call_changes_the_device_and_answers_text(
    server: McpServer, model: DeviceModel
) -> None:
    reply = server.handle(
        rpc("tools/call", {"name": "self.audio_speaker.set_volume", "arguments": {"volume": 33}}, 7)
    )
    assert reply == {
        "jsonrpc": "2.0",
        "id": 7,
        "result": {"content": [{"type": "text", "text": "true"}], "isError": False},
    }
    assert model.volume == 33
    server.handle(rpc("tools/call", {"name": "self.light.turn_on"}))
    assert model.light_on
    status = server.handle(rpc("tools/call", {"name": "self.get_device_status"}))
    text = status["result"]["content"][0]["text"]
    assert jsonutil.loads(text)["audio_speaker"] == {"volume": 33}
    server.handle(rpc("tools/call", {"name": "self.light.turn_off", "arguments": {}}))
    assert not model.light_on
    assert server.calls == 4


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"name": "self.nope"}, "Unknown tool: self.nope"),
        ({"arguments": {}}, "Missing name"),
        ({"name": "self.light.turn_on", "arguments": [1]}, "Invalid arguments"),
        ({"name": "self.audio_speaker.set_volume"}, "Missing valid argument: volume"),
        (
            {"name": "self.audio_speaker.set_volume", "arguments": {"volume": "loud"}},
            "Missing valid argument: volume",
        ),
        (
            {"name": "self.audio_speaker.set_volume", "arguments": {"volume": 101}},
            "Value is above maximum allowed: 100",
        ),
        (
            {"name": "self.audio_speaker.set_volume", "arguments": {"volume": -1}},
            "Value is below minimum allowed: 0",
        ),
    ],
)
def test_errors_carry_a_message_and_no_code(
    server: McpServer, params: dict[str, Any], message: str
) -> None:
    assert server.handle(rpc("tools/call", params, 3)) == {
        "jsonrpc": "2.0",
        "id": 3,
        "error": {"message": message},
    }


@pytest.mark.parametrize(
    "payload",
    [
        rpc("tools/list", rid="1"),  # string ids are dropped silently
        rpc("tools/list", rid=None),
        rpc("tools/list", rid=True),
        {"jsonrpc": "1.0", "id": 1, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 1},
        rpc("notifications/initialized"),
        rpc("tools/list", params=[1]),
        "not an object",
    ],
)
def test_requests_the_firmware_drops_get_no_answer(server: McpServer, payload: Any) -> None:
    assert server.handle(payload) is None


def test_unknown_methods_and_local_calls(server: McpServer, model: DeviceModel) -> None:
    assert server.handle(rpc("resources/list")) == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"message": "Method not implemented: resources/list"},
    }
    assert server.call("self.get_system_info", {}) == (True, '{"chip":"s3"}')
    assert server.call("self.reboot", {}) == (True, "true")
    assert model.reboot_pending
    assert server.call("self.nope", {}) == (False, "Unknown tool: self.nope")


def test_property_types_and_defaults() -> None:
    seen: dict[str, Any] = {}
    tool = Tool(
        "t",
        "test",
        lambda args: seen.update(args) or 5,
        (
            Property("flag", PropertyType.BOOLEAN, default=False),
            Property("name", PropertyType.STRING),
            Property("n", PropertyType.INTEGER, default=1),
        ),
    )
    server = McpServer("b", "1", [tool])
    reply = server.handle(rpc("tools/call", {"name": "t", "arguments": {"name": "x", "n": 2.0}}))
    assert reply["result"]["content"][0]["text"] == "5"
    assert seen == {"flag": False, "name": "x", "n": 2}
    assert tool.descriptor()["inputSchema"]["properties"]["flag"] == {
        "type": "boolean",
        "default": False,
    }
