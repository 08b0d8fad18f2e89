"""Hostile and broken input: every refusal has its error reply, code and (when hostile) close.

Design.md §4: "a malformed frame gets an error reply naming what was wrong (and the connection
closes only for hostile patterns: oversize, flood, bad auth), a counter goes up".
"""

from __future__ import annotations

import struct
from typing import Any

import orjson
import pytest

from xiaozhi.binary import encode_opus
from xiaozhi_edge.counters import EdgeCounters
from xiaozhi_edge.delivery import CommandDelivery
from xiaozhi_edge.limits import EdgeLimits
from xiaozhi_edge.mcp_client import McpClient
from xiaozhi_edge.outputs import Close
from xiaozhi_edge.session import DeviceSession, SessionState

from .helpers import (
    WALL,
    close_of,
    error_codes,
    hello_text,
    make_session,
    ready_session,
    sent,
)

OPUS = bytes.fromhex("58e0ad57")  # any bytes: these frames fail before decoding


def _v2(frame_type: int, payload: bytes, declared: int | None = None, version: int = 2) -> bytes:
    size = len(payload) if declared is None else declared
    return struct.pack(">HHIII", version, frame_type, 0, 0, size) + payload


def _v3(frame_type: int, payload: bytes, declared: int | None = None) -> bytes:
    size = len(payload) if declared is None else declared
    return struct.pack(">BBH", frame_type, 0, size) + payload


# (name, binary version, text or bytes, expected error code, expected field or None)
HOSTILE: list[tuple[str, int, str | bytes, str, str | None]] = [
    ("bad json", 1, "{oops", "INVALID_DATA_FORMAT", None),
    ("not an object", 1, "[1,2]", "INVALID_DATA_FORMAT", None),
    ("bad utf-8 in v2 json", 2, _v2(1, b'{"type":"\xff"}'), "INVALID_DATA_FORMAT", None),
    ("no type", 1, '{"state":"start"}', "MISSING_REQUIRED_FIELDS", "type"),
    ("type not a string", 1, '{"type":7}', "INVALID_DATA_FORMAT", "type"),
    ("unknown type", 1, '{"type":"iot"}', "INVALID_MESSAGE_TYPE", "type"),
    ("bad listen state", 1, '{"type":"listen","state":"sing"}', "INVALID_DATA_FORMAT", "state"),
    ("listen without state", 1, '{"type":"listen"}', "MISSING_REQUIRED_FIELDS", "state"),
    (
        "mcp payload not an object",
        1,
        '{"type":"mcp","payload":3}',
        "INVALID_DATA_FORMAT",
        "payload",
    ),
    ("server-only message", 1, '{"type":"response","data":{}}', "INVALID_MESSAGE_TYPE", "type"),
    (
        "bad sensor type",
        1,
        '{"type":"sensor","data":{"sensor_type":"a/b","value":1}}',
        "INVALID_DATA_FORMAT",
        "data.sensor_type",
    ),
    (
        "bad base64",
        1,
        '{"type":"audio_data","data":{"data":"@@@"}}',
        "INVALID_DATA_FORMAT",
        "data.data",
    ),
    ("not a wav", 1, '{"type":"audio_data","data":{"data":"AAAA"}}', "INVALID_DATA_FORMAT", None),
    ("truncated v2 header", 2, b"\x00\x02\x00\x00\x00", "INVALID_DATA_FORMAT", None),
    ("truncated v3 header", 3, b"\x00\x00\x01", "INVALID_DATA_FORMAT", None),
    ("empty v1 frame", 1, b"", "INVALID_DATA_FORMAT", None),
    ("v2 lying length (short)", 2, _v2(0, OPUS, declared=400), "INVALID_DATA_FORMAT", None),
    ("v2 lying length (trailing)", 2, _v2(0, OPUS, declared=2), "INVALID_DATA_FORMAT", None),
    ("v3 lying length", 3, _v3(0, OPUS, declared=400), "INVALID_DATA_FORMAT", None),
    ("v2 declares 4 GB", 2, _v2(0, OPUS, declared=0xFFFFFFFF), "MESSAGE_TOO_LARGE", None),
    ("v2 wrong header version", 2, _v2(0, OPUS, version=3), "INVALID_PROTOCOL_VERSION", None),
    ("v2 unknown frame type", 2, _v2(9, OPUS), "INVALID_MESSAGE_TYPE", None),
    ("v3 unknown frame type", 3, _v3(5, OPUS), "INVALID_MESSAGE_TYPE", None),
]


@pytest.mark.parametrize(
    ("name", "version", "data", "code", "field"), HOSTILE, ids=[h[0] for h in HOSTILE]
)
def test_bad_input_gets_an_error_reply_and_the_session_survives(
    name: str, version: int, data: str | bytes, code: str, field: str | None
) -> None:
    counters = EdgeCounters()
    session = ready_session(version, counters=counters)
    if isinstance(data, str):
        outputs = session.on_text(data, 1.0, WALL)
    else:
        outputs = session.on_binary(data, 1.0, WALL)
    assert close_of(outputs) is None, name
    (reply,) = sent(outputs)
    assert reply["type"] == "error"
    assert reply["data"]["error_code"] == code
    assert reply["data"]["details"]["code"] == int(_CODES[code])
    if field is not None:
        assert reply["data"]["details"]["field"] == field
    assert reply["data"]["error_message"]
    assert counters.errors == {code: 1}
    assert session.state is SessionState.READY
    # The connection still works.
    follow = session.on_text('{"type":"listen","state":"detect","text":"hello there"}', 1.1, WALL)
    assert sent(follow) == []
    assert follow


_CODES = {
    "INVALID_PROTOCOL_VERSION": 0x100,
    "MESSAGE_TOO_LARGE": 0x102,
    "INVALID_MESSAGE_TYPE": 0x104,
    "INVALID_DATA_FORMAT": 0x200,
    "MISSING_REQUIRED_FIELDS": 0x201,
    "PERMISSION_DENIED": 0x203,
    "RATE_LIMIT_EXCEEDED": 0x204,
}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('{"type":"listen","state":"start","mode":"auto"}', "'listen' before hello"),
        ('{"type":"ping","data":{}}', "'ping' before hello"),
        (b"\x01\x02\x03", "binary frame before hello"),
    ],
)
def test_wrong_first_message_gets_an_error_and_no_close(data: str | bytes, message: str) -> None:
    session = make_session()
    outputs = (
        session.on_text(data, 0.1, WALL)
        if isinstance(data, str)
        else session.on_binary(data, 0.1, WALL)
    )
    (reply,) = sent(outputs)
    assert reply["data"]["error_code"] == "INVALID_MESSAGE_TYPE"
    assert message in reply["data"]["error_message"]
    assert close_of(outputs) is None
    assert session.state is SessionState.AWAIT_HELLO
    # The real hello still works afterwards.
    session.on_text(hello_text(1), 0.2, WALL)
    assert session.state is SessionState.READY


def test_unsupported_hello_version_is_refused_without_a_header() -> None:
    session = make_session()
    outputs = session.on_text('{"type":"hello","version":7}', 0.1, WALL)
    assert error_codes(outputs) == ["INVALID_PROTOCOL_VERSION"]
    assert session.state is SessionState.AWAIT_HELLO


@pytest.mark.parametrize("kind", ["text", "binary"])
def test_oversize_frame_closes_1009(kind: str) -> None:
    counters = EdgeCounters()
    session = ready_session(1, counters=counters, limits=EdgeLimits(max_frame_bytes=1024))
    if kind == "text":
        outputs = session.on_text('{"type":"listen","text":"' + "é" * 600 + '"}', 1.0, WALL)
    else:
        outputs = session.on_binary(bytes(1025), 1.0, WALL)
    assert error_codes(outputs) == ["MESSAGE_TOO_LARGE"]
    assert "> limit 1024 B" in sent(outputs)[0]["data"]["error_message"]
    assert close_of(outputs) == Close(1009, "message too big")
    assert session.state is SessionState.ERROR
    assert session.on_text(hello_text(), 1.1, WALL) == []
    assert counters.closes == {"message too big": 1}


def test_rate_limit_drops_the_message_with_an_error() -> None:
    counters = EdgeCounters()
    limits = EdgeLimits(max_messages_per_second=10, burst_messages=5)
    session = ready_session(1, counters=counters, limits=limits)  # the hello took one token
    detect = '{"type":"listen","state":"detect","text":"go"}'
    for _ in range(4):
        assert error_codes(session.on_text(detect, 0.1, WALL)) == []
    outputs = session.on_text(detect, 0.1, WALL)
    assert error_codes(outputs) == ["RATE_LIMIT_EXCEEDED"]
    assert "over the limit of 10/s" in sent(outputs)[0]["data"]["error_message"]
    assert len(outputs) == 1  # dropped: no voice command published
    assert counters.rate_limited == 1
    # Tokens come back with time.
    assert error_codes(session.on_text(detect, 0.25, WALL)) == []


def test_a_persistent_flood_closes_1008() -> None:
    counters = EdgeCounters()
    session = ready_session(1, counters=counters)
    frame = encode_opus(OPUS, 1)
    outputs: list[Any] = []
    for _ in range(200):
        outputs += session.on_binary(frame, 1.0, WALL)
    assert close_of(outputs) == Close(1008, "flood")
    assert error_codes(outputs).count("RATE_LIMIT_EXCEEDED") == 20
    assert counters.rate_limited == 20
    assert counters.closes == {"flood": 1}
    assert session.on_binary(frame, 1.0, WALL) == []


def test_rate_violations_spread_out_do_not_close() -> None:
    limits = EdgeLimits(max_messages_per_second=1, burst_messages=1)
    session = ready_session(1, limits=limits)
    now = 1.0
    for _ in range(30):  # one violation per second: never 20 within 10 s
        session.on_text('{"type":"listen","state":"detect"}', now, WALL)
        outputs = session.on_text('{"type":"listen","state":"detect"}', now, WALL)
        assert error_codes(outputs) == ["RATE_LIMIT_EXCEEDED"]
        now += 1.0
    assert session.state is SessionState.READY


def test_a_garbage_streak_closes_1008() -> None:
    counters = EdgeCounters()
    session = ready_session(1, counters=counters)
    outputs: list[Any] = []
    for i in range(10):
        outputs += session.on_text("not json", 1.0 + i * 0.5, WALL)
    assert error_codes(outputs) == ["INVALID_DATA_FORMAT"] * 10
    assert close_of(outputs) == Close(1008, "too many malformed frames")
    assert counters.closes == {"too many malformed frames": 1}


def test_garbage_spread_over_time_does_not_close() -> None:
    session = ready_session(1)
    for i in range(30):
        assert close_of(session.on_text("not json", 1.0 + i * 2.0, WALL)) is None
    assert session.state is SessionState.READY


# -- bugs never escape -------------------------------------------------------------------


def _boom(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("secret detail")


def test_a_bug_in_a_handler_gets_a_generic_reply_and_the_session_lives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counters = EdgeCounters()
    session = ready_session(1, counters=counters)
    monkeypatch.setattr(DeviceSession, "_on_listen", _boom)  # slots: patch the class
    outputs = session.on_text('{"type":"listen","state":"start"}', 1.0, WALL)
    (reply,) = sent(outputs)
    assert reply["data"]["error_code"] == "INTERNAL_ERROR"
    assert "secret" not in orjson.dumps(reply).decode()
    assert counters.errors == {"INTERNAL_ERROR": 1}
    assert isinstance(session.last_fault, RuntimeError)
    assert session.state is SessionState.READY
    monkeypatch.undo()
    assert session.on_text('{"type":"ping","data":{}}', 1.1, WALL)


@pytest.mark.parametrize("method", ["on_binary", "on_command", "on_timer", "on_close", "on_groups"])
def test_bugs_in_other_entry_points_do_not_escape(
    monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    counters = EdgeCounters()
    session = ready_session(1, counters=counters)
    for name in ("_handle_binary", "status_publish", "_filters"):
        monkeypatch.setattr(DeviceSession, name, _boom)  # slots: patch the class
    monkeypatch.setattr(CommandDelivery, "on_command", _boom)
    assert session.mcp.pending_count == 1  # the hello's initialize: on_timer runs expire
    monkeypatch.setattr(McpClient, "expire", _boom)
    session.last_activity = 0.0
    if method == "on_binary":
        outputs = session.on_binary(b"\x01", 1.0, WALL)
        assert sent(outputs)[0]["data"]["error_code"] == "INTERNAL_ERROR"
    elif method == "on_command":
        assert session.on_command(b"{}", 1.0, WALL) == []
    elif method == "on_timer":
        assert session.on_timer(1.0, WALL) == []
    elif method == "on_close":
        session.on_close(1.0, WALL)
        assert session.state is SessionState.CLOSED
    else:
        assert session.on_groups(["kitchen"], 1.0, WALL) == []
    assert counters.errors == {"INTERNAL_ERROR": 1}


def test_a_bug_after_a_close_sends_no_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    session: DeviceSession = ready_session(1)

    def close_then_fail(*args: Any) -> None:
        session.state = SessionState.CLOSING
        raise RuntimeError("late bug")

    monkeypatch.setattr(DeviceSession, "_handle_binary", close_then_fail)
    assert session.on_binary(b"\x01", 1.0, WALL) == []
