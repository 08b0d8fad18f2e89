"""The telemetry fast path (edge/telemetry.py) answers exactly as the models do.

Every ``sensor`` and ``ping`` is fed to two sessions: one as the edge runs, one with the fast
path switched off, so the models (`xiaozhi.messages`, `xiaozhi.payloads`) decide everything.
What a device or a subscriber sees, published bytes, replies and errors, must not differ.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.edge.helpers import (
    SEED_REGISTER,
    WALL,
    hello_text,
    make_session,
    published,
    ready_session,
    sent,
)
from tests.edge.test_session import mcp_reply
from xiaozhi.payloads import DeviceStatus, DeviceTransport, SensorPayload, StatusPayload
from xiaozhi_edge import session as session_module
from xiaozhi_edge.limits import EdgeLimits
from xiaozhi_edge.outputs import Output, Publish
from xiaozhi_edge.session import DeviceSession

_UNLIMITED = EdgeLimits(
    max_messages_per_second=1_000_000,
    burst_messages=1_000_000,
    garbage_close_after_errors=1_000_000,
)


def _pair(seed: bool = False) -> tuple[DeviceSession, DeviceSession]:
    """Two READY sessions of the same device: (fast path on, fast path off)."""
    sessions = []
    for _ in range(2):
        if seed:
            session = make_session(no_identity=True, limits=_UNLIMITED)
            session.on_text(SEED_REGISTER, 0.1, WALL)
        else:
            session = make_session(limits=_UNLIMITED)
            session.on_text(hello_text(), 0.1, WALL)
        sessions.append(session)
    return sessions[0], sessions[1]


def _slow(session: DeviceSession, text: str, now: float, monkeypatch: Any) -> list[Output]:
    with monkeypatch.context() as patch:
        patch.setattr(session_module, "plain_sensor", lambda obj: None)
        patch.setattr(session_module, "plain_ping", lambda obj: None)
        return session.on_text(text, now, WALL)


def _same(fast: DeviceSession, slow: DeviceSession, text: str, monkeypatch: Any) -> None:
    expected = _slow(slow, text, 1.0, monkeypatch)
    assert fast.on_text(text, 1.0, WALL) == expected
    assert fast.counters.snapshot() == slow.counters.snapshot()
    assert fast.state is slow.state


# Inputs chosen where a hand-written check could go wrong.
_HOSTILE = [
    # plain, with and without unit and timestamps
    '{"type":"sensor","data":{"sensor_type":"temperature","value":22.5,"unit":"celsius"}}',
    '{"type":"sensor","data":{"sensor_type":"door","value":true}}',
    '{"type":"sensor","data":{"sensor_type":"t","value":1},"timestamp":"2024-01-01T00:00:00Z"}',
    '{"type":"sensor","data":{"sensor_type":"t","value":1},"timestamp":""}',
    '{"type":"sensor","data":{"sensor_type":"t","value":1},"timestamp":null}',
    # unicode: a value and a unit outside ASCII, escaped and not; a non-ASCII sensor type
    '{"type":"sensor","data":{"sensor_type":"t","value":"温度 ☃","unit":"°C"}}',
    '{"type":"sensor","data":{"sensor_type":"t","value":"\\u00e9\\ud83d\\ude00"}}',
    '{"type":"sensor","data":{"sensor_type":"温度","value":1}}',
    '{"type":"sensor","data":{"sensor_type":"t","value":"\\ud800"}}',
    # huge and odd numbers
    '{"type":"sensor","data":{"sensor_type":"t","value":18446744073709551615}}',
    '{"type":"sensor","data":{"sensor_type":"t","value":18446744073709551616}}',
    '{"type":"sensor","data":{"sensor_type":"t","value":-9223372036854775809}}',
    '{"type":"sensor","data":{"sensor_type":"t","value":1e308}}',
    '{"type":"sensor","data":{"sensor_type":"t","value":1e400}}',
    '{"type":"sensor","data":{"sensor_type":"t","value":-0.0}}',
    '{"type":"sensor","data":{"sensor_type":"t","value":NaN}}',
    # missing fields
    '{"type":"sensor","data":{"value":1}}',
    '{"type":"sensor","data":{"sensor_type":"t"}}',
    '{"type":"sensor"}',
    '{"type":"sensor","data":null}',
    # extra fields, in data and in the envelope
    '{"type":"sensor","data":{"sensor_type":"t","value":1,"room":"kitchen"},"extra":[1]}',
    '{"type":"sensor","data":{"sensor_type":"t","value":1,"device_id":"someone-else"}}',
    # wrong types
    '{"type":"sensor","data":{"sensor_type":"t","value":null}}',
    '{"type":"sensor","data":{"sensor_type":"t","value":[1]}}',
    '{"type":"sensor","data":{"sensor_type":"t","value":{"a":1}}}',
    '{"type":"sensor","data":{"sensor_type":"t","value":1,"unit":5}}',
    '{"type":"sensor","data":{"sensor_type":"t","value":1,"device_id":5}}',
    '{"type":"sensor","data":{"sensor_type":"t","value":1},"timestamp":5}',
    '{"type":"sensor","data":{"sensor_type":"t","value":1},"message_id":5}',
    '{"type":"sensor","data":{"sensor_type":"t","value":1},"device_id":false}',
    '{"type":"sensor","data":{"sensor_type":5,"value":1}}',
    '{"type":"sensor","data":"t=1"}',
    # sensor types outside the id grammar
    '{"type":"sensor","data":{"sensor_type":"a/b","value":1}}',
    '{"type":"sensor","data":{"sensor_type":"Temp","value":1}}',
    '{"type":"sensor","data":{"sensor_type":"","value":1}}',
    '{"type":"sensor","data":{"sensor_type":"t\\n","value":1}}',
    '{"type":"sensor","data":{"sensor_type":"%s","value":1}}' % ("t" * 65),
    '{"type":"sensor","data":{"sensor_type":"%s","value":1}}' % ("t" * 64),
    # pings
    '{"type":"ping","data":{}}',
    '{"type":"ping","data":{},"message_id":"p1"}',
    '{"type":"ping","data":{"uptime":3600,"memory_usage":65.5,"cpu_usage":45,"wifi_signal":-45,'
    '"free_heap":204800},"message_id":"p2"}',
    '{"type":"ping","data":{"uptime":3601,"wifi_signal":-50.25,"extra":"kept out"}}',
    '{"type":"ping","data":{"uptime":18446744073709551615}}',
    '{"type":"ping","data":{"uptime":null,"free_heap":null}}',
    '{"type":"ping","data":{"uptime":-1}}',
    '{"type":"ping","data":{"uptime":3600.0}}',
    '{"type":"ping","data":{"uptime":"3600"}}',
    '{"type":"ping","data":{"free_heap":true}}',
    '{"type":"ping","data":{"memory_usage":"65"}}',
    '{"type":"ping","data":{"memory_usage":false}}',
    '{"type":"ping","data":{"cpu_usage":[1]}}',
    '{"type":"ping","data":{"device_id":7}}',
    '{"type":"ping","data":{"device_id":"esp32_device_001"}}',
    '{"type":"ping","data":{},"message_id":7}',
    '{"type":"ping","data":{},"timestamp":"2024-01-01T00:00:00Z","message_id":"é"}',
    '{"type":"ping"}',
    '{"type":"ping","data":[]}',
    # neither: the fast path must leave them alone
    '{"type":"abort"}',
    '{"type":"Sensor","data":{"sensor_type":"t","value":1}}',
    '{"data":{"sensor_type":"t","value":1}}',
    '[{"type":"sensor"}]',
]


@pytest.mark.parametrize("seed", [False, True], ids=["firmware", "seed"])
def test_hostile_telemetry_is_answered_as_the_models_answer(seed: bool, monkeypatch: Any) -> None:
    fast, slow = _pair(seed)
    for text in _HOSTILE:
        _same(fast, slow, text, monkeypatch)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(), inner, max_size=2),
    max_leaves=4,
)
_maybe_text = st.one_of(st.none(), st.text(), st.sampled_from(["", "celsius", "°C"]), _json_values)
_sensor_types = st.one_of(
    st.sampled_from(["temperature", "t", "a-b_c", "A", "a/b", "", "t\n", "x" * 64, "x" * 65]),
    st.from_regex(r"[a-z0-9_-]{1,70}", fullmatch=True),
    _json_values,
)
_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
)


def _message(msg_type: str, data: Any, envelope: dict[str, Any]) -> dict[str, Any]:
    return {"type": msg_type, "data": data, **envelope}


_envelopes = st.fixed_dictionaries(
    {},
    optional={
        "timestamp": _maybe_text,
        "device_id": _maybe_text,
        "message_id": _maybe_text,
        "extra": _json_values,
    },
)
_sensor_data = st.fixed_dictionaries(
    {},
    optional={
        "sensor_type": _sensor_types,
        "value": st.one_of(_numbers, st.booleans(), st.text(), _json_values),
        "unit": _maybe_text,
        "device_id": _maybe_text,
        "room": _json_values,
    },
)
_ping_field = st.one_of(_numbers, _json_values)
_ping_data = st.fixed_dictionaries(
    {},
    optional={
        name: _ping_field
        for name in ("uptime", "memory_usage", "cpu_usage", "wifi_signal", "free_heap")
    }
    | {"device_id": _maybe_text},
)
_messages = st.one_of(
    st.builds(_message, st.just("sensor"), _sensor_data | _json_values, _envelopes),
    st.builds(_message, st.just("ping"), _ping_data | _json_values, _envelopes),
)


@settings(max_examples=300, deadline=None)
@given(messages=st.lists(_messages, min_size=1, max_size=4), ascii_only=st.booleans())
def test_any_sensor_or_ping_is_answered_as_the_models_answer(
    messages: list[dict[str, Any]], ascii_only: bool
) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        fast, slow = _pair()
        for message in messages:
            text = json.dumps(message, ensure_ascii=ascii_only)
            _same(fast, slow, text, monkeypatch)


def test_the_republished_sensor_is_the_sensor_payload_byte_for_byte() -> None:
    session = make_session()
    session.on_text(hello_text(), 0.1, WALL)
    text = '{"type":"sensor","data":{"sensor_type":"bench","value":-0.0,"unit":"é"}}'
    (publish,) = session.on_text(text, 1.0, WALL)
    assert isinstance(publish, Publish)
    expected = SensorPayload(
        sensor_type="bench", value=-0.0, device_id="aabbccddeeff", unit="é", timestamp=WALL
    )
    assert publish.payload == expected.to_wire()


def test_a_ping_republishes_the_status_payload_byte_for_byte() -> None:
    session = make_session(no_identity=True)
    session.on_text(SEED_REGISTER, 0.1, WALL)
    register = orjson.loads(SEED_REGISTER)["data"]
    for uptime, wifi in ((10, -40), (20, -41.5)):
        text = orjson.dumps({"type": "ping", "data": {"uptime": uptime, "wifi_signal": wifi}})
        outputs = session.on_text(text.decode(), 1.0, WALL)
        (status,) = (o for o in outputs if isinstance(o, Publish))
        expected = StatusPayload(
            status=DeviceStatus.CONNECTED,
            device_id=session.device_id,
            timestamp=WALL,
            uptime=uptime,
            wifi_signal=wifi,
            transport=DeviceTransport.WEBSOCKET,
            edge_id="edge-1",
            firmware_version=register["firmware_version"],
            session_id=session.session_id,
            device_type=register["device_type"],
            capabilities=register["capabilities"],
            hardware_info=register["hardware_info"],
            protocol_version=1,
            device_kind="seed",
        )
        assert status.payload == expected.to_wire()
        assert sent(outputs) == [
            {"type": "pong", "timestamp": WALL, "device_id": "esp32_device_001"}
        ]


def test_what_mcp_initialize_learns_reaches_the_next_pings_status() -> None:
    """The cached part of the status follows the session: board and firmware from MCP."""
    session = ready_session(1)
    ping = '{"type":"ping","data":{}}'
    assert "firmware_version" not in published(session.on_text(ping, 1.0, WALL))[0]
    server_info = {"name": "esp-hi", "version": "2.0.1"}
    mcp_reply(
        session, {"id": 1, "result": {"protocolVersion": "2024-11-05", "serverInfo": server_info}}
    )
    (status,) = published(session.on_text(ping, 2.0, WALL))
    assert (status["board"], status["firmware_version"]) == ("esp-hi", "2.0.1")
