"""MQTT payloads (xiaozhi.payloads) and the shared validation helpers (xiaozhi._validation).

Literal examples come verbatim from seed 003 ("MQTT Protocol" → "Message Format").
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from xiaozhi import jsonutil
from xiaozhi._validation import field_path
from xiaozhi.errors import ErrorCode, InvalidMessage, MissingField, PayloadTooLarge
from xiaozhi.payloads import (
    Action,
    ActionType,
    Availability,
    BridgeRequest,
    BridgeResponse,
    BridgeState,
    ClaimState,
    CommandPayload,
    ConnectionEvent,
    DeviceStatus,
    DeviceTransport,
    EdgeState,
    EventPayload,
    EventType,
    ResponseStatus,
    SensorPayload,
    StatusPayload,
    UtteranceChunk,
    UtteranceClaim,
    UtterancePayload,
    UtteranceStart,
    VoiceCommandEvent,
    is_simulator_user_agent,
    parse_payload,
    validate_model,
)

SEED_COMMAND = """{
    "command": "turn_on_light",
    "parameters": {
        "entity_id": "light.living_room",
        "brightness": 255
    },
    "timestamp": "2024-01-01T00:00:00Z",
    "device_id": "esp32_device_001"
}"""

SEED_STATUS = """{
    "status": "connected",
    "uptime": 3600,
    "memory_usage": 65,
    "cpu_usage": 45,
    "wifi_signal": -45,
    "timestamp": "2024-01-01T00:00:00Z",
    "device_id": "esp32_device_001"
}"""

SEED_SENSOR = """{
    "sensor_type": "temperature",
    "value": 22.5,
    "unit": "celsius",
    "timestamp": "2024-01-01T00:00:00Z",
    "device_id": "esp32_device_001"
}"""

# seed 003's sample MQTT client publishes this command result on the status topic
SEED_CLIENT_COMMAND_RESULT = """{
    "command": "turn_on_light",
    "status": "success",
    "entity_id": "light.living_room",
    "timestamp": "2024-01-01T00:00:00Z"
}"""


def as_obj(raw: str | bytes) -> Any:
    return orjson.loads(raw)


# -- seed examples -----------------------------------------------------------------------


def test_seed_command() -> None:
    cmd = parse_payload(CommandPayload, SEED_COMMAND)
    assert cmd.command == "turn_on_light"
    assert cmd.parameters == {"entity_id": "light.living_room", "brightness": 255}
    assert cmd.message_id is None
    assert as_obj(cmd.to_wire()) == as_obj(SEED_COMMAND)


def test_seed_status() -> None:
    status = parse_payload(StatusPayload, SEED_STATUS)
    assert status.status is DeviceStatus.CONNECTED
    assert (status.uptime, status.memory_usage, status.cpu_usage, status.wifi_signal) == (
        3600,
        65,
        45,
        -45,
    )
    assert status.device_id == "esp32_device_001"
    assert as_obj(status.to_wire()) == as_obj(SEED_STATUS)


def test_seed_sensor() -> None:
    sensor = SensorPayload.from_wire(SEED_SENSOR)
    assert (sensor.sensor_type, sensor.value, sensor.unit) == ("temperature", 22.5, "celsius")
    assert as_obj(sensor.to_wire()) == as_obj(SEED_SENSOR)


def test_seed_clients_command_result_is_not_a_status() -> None:
    with pytest.raises(MissingField) as info:
        parse_payload(StatusPayload, SEED_CLIENT_COMMAND_RESULT)
    assert info.value.field == "device_id"
    obj = as_obj(SEED_CLIENT_COMMAND_RESULT) | {"device_id": "esp32_device_001"}
    with pytest.raises(InvalidMessage) as info2:
        parse_payload(StatusPayload, orjson.dumps(obj))
    assert info2.value.field == "status"
    assert "'success'" in str(info2.value)


# -- golden wire output ------------------------------------------------------------------


def test_golden_command() -> None:
    cmd = CommandPayload(command="set_volume", parameters={"volume": 80}, message_id="m1")
    assert cmd.to_wire() == b'{"command":"set_volume","parameters":{"volume":80},"message_id":"m1"}'
    assert CommandPayload(command="reboot").to_wire() == b'{"command":"reboot","parameters":{}}'


def test_golden_status_lwt() -> None:
    lwt = StatusPayload(status=DeviceStatus.DISCONNECTED, device_id="aabbccddeeff")
    assert lwt.to_wire() == b'{"status":"disconnected","device_id":"aabbccddeeff"}'


def test_golden_status_with_telemetry() -> None:
    status = StatusPayload(
        status=DeviceStatus.CONNECTED,
        device_id="aabbccddeeff",
        timestamp="2024-01-01T00:00:00Z",
        transport=DeviceTransport.WEBSOCKET,
        edge_id="edge-1",
        free_heap=204800,
        memory_usage=65.5,
    )
    assert status.to_wire() == (
        b'{"status":"connected","device_id":"aabbccddeeff","timestamp":"2024-01-01T00:00:00Z",'
        b'"memory_usage":65.5,"free_heap":204800,"transport":"websocket","edge_id":"edge-1"}'
    )


def test_golden_voice_command_event() -> None:
    event = VoiceCommandEvent(
        device_id="aabbccddeeff",
        command="turn on the living room light",
        confidence=0.95,
        language="en",
        transport=DeviceTransport.WEBSOCKET,
        edge_id="edge-1",
        session_id="s1",
    )
    assert event.to_wire() == (
        b'{"event_type":"voice_command","device_id":"aabbccddeeff",'
        b'"command":"turn on the living room light","confidence":0.95,"language":"en",'
        b'"session_id":"s1","transport":"websocket","edge_id":"edge-1"}'
    )
    assert VoiceCommandEvent.from_wire(event.to_wire()) == event
    # a seed device's voice_command data, as published by an MQTT device, parses too
    seed = (
        '{"device_id":"esp32_device_001","command":"turn on the living room light",'
        '"confidence":0.95,"language":"en","processing_time_ms":1200,"audio_duration_ms":1500}'
    )
    from_seed = VoiceCommandEvent.from_wire(seed)
    assert from_seed.event_type == EventType.VOICE_COMMAND
    assert from_seed.processing_time_ms == 1200


def test_golden_connection_events() -> None:
    up = ConnectionEvent(
        event_type="device_connected",
        device_id="aabbccddeeff",
        transport=DeviceTransport.WEBSOCKET,
        edge_id="edge-1",
        timestamp="t",
    )
    assert up.to_wire() == (
        b'{"event_type":"device_connected","device_id":"aabbccddeeff","timestamp":"t",'
        b'"transport":"websocket","edge_id":"edge-1"}'
    )
    down = ConnectionEvent.from_wire(
        '{"event_type":"device_disconnected","device_id":"x","transport":"mqtt"}'
    )
    assert (down.transport, down.edge_id) == (DeviceTransport.MQTT, None)
    with pytest.raises(InvalidMessage) as info:
        ConnectionEvent.from_wire(
            '{"event_type":"voice_command","device_id":"x","transport":"mqtt"}'
        )
    assert info.value.field == "event_type"


def test_golden_bridge_state_and_edges() -> None:
    assert BridgeState(state=Availability.ONLINE).to_wire() == b'{"state":"online"}'
    assert BridgeState.from_wire(b'{"state":"offline"}').state is Availability.OFFLINE
    edge = EdgeState(state=Availability.ONLINE, edge_id="edge-1")
    assert edge.to_wire() == b'{"state":"online","edge_id":"edge-1"}'
    with pytest.raises(InvalidMessage) as info:
        BridgeState.from_wire(b'{"state":"up"}')
    assert info.value.field == "state"


def test_golden_bridge_responses() -> None:
    assert BridgeResponse.ok({"id": "x"}, transaction="23ab").to_wire() == (
        b'{"status":"ok","data":{"id":"x"},"transaction":"23ab"}'
    )
    assert BridgeResponse.ok().to_wire() == b'{"status":"ok","data":{}}'
    assert BridgeResponse.failure("device 'x' not found", transaction=7).to_wire() == (
        b'{"status":"error","data":{},"error":"device \'x\' not found","transaction":7}'
    )
    parsed = BridgeResponse.from_wire(b'{"status":"error","data":{},"error":"e"}')
    assert parsed.status is ResponseStatus.ERROR


@pytest.mark.parametrize("transaction", ["23ab", 42, None])
def test_bridge_request_echoes_transaction_as_given(transaction: str | int | None) -> None:
    obj: dict[str, Any] = {"id": "old", "to": "new"}
    if transaction is not None:
        obj["transaction"] = transaction
    req = BridgeRequest.from_wire(orjson.dumps(obj))
    assert req.transaction == transaction
    assert req.model_extra == {"id": "old", "to": "new"}
    answer = BridgeResponse.ok(transaction=req.transaction)
    assert as_obj(answer.to_wire()).get("transaction") == transaction
    assert as_obj(req.to_wire()) == obj


def test_action_defaults() -> None:
    action = Action(action="turn_on", entity_id="light.kitchen")
    assert action.type == ActionType.HOMEASSISTANT
    assert action.to_wire() == (
        b'{"type":"homeassistant","action":"turn_on","entity_id":"light.kitchen","parameters":{}}'
    )


def test_event_payload_is_open() -> None:
    raw = '{"event_type":"action_result","device_id":"a","action":{"x":1},"ok":true}'
    event = EventPayload.from_wire(raw)
    assert event.event_type == EventType.ACTION_RESULT
    assert event.model_extra == {"action": {"x": 1}, "ok": True}
    assert as_obj(event.to_wire()) == as_obj(raw)
    custom = EventPayload(event_type="button_pressed", timestamp="t")
    assert custom.to_wire() == b'{"event_type":"button_pressed","timestamp":"t"}'


def test_to_json_dict() -> None:
    status = StatusPayload(status=DeviceStatus.CONNECTED, device_id="a", x_extra=None)  # type: ignore[call-arg]
    assert status.to_json_dict() == {"status": "connected", "device_id": "a", "x_extra": None}
    assert status.to_text() == '{"status":"connected","device_id":"a","x_extra":null}'


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "raw", "field"),
    [
        (CommandPayload, "{}", "command"),
        (StatusPayload, '{"device_id":"a"}', "status"),
        (StatusPayload, '{"status":"connected"}', "device_id"),
        (SensorPayload, '{"value":1,"device_id":"a"}', "sensor_type"),
        (SensorPayload, '{"sensor_type":"t","device_id":"a"}', "value"),
        (SensorPayload, '{"sensor_type":"t","value":1}', "device_id"),
        (EventPayload, '{"device_id":"a"}', "event_type"),
        (VoiceCommandEvent, '{"device_id":"a","confidence":1,"language":"en"}', "command"),
        (VoiceCommandEvent, '{"device_id":"a","command":"x","language":"en"}', "confidence"),
        (VoiceCommandEvent, '{"device_id":"a","command":"x","confidence":1}', "language"),
        (VoiceCommandEvent, '{"command":"x","confidence":1,"language":"en"}', "device_id"),
        (ConnectionEvent, '{"device_id":"a","transport":"mqtt"}', "event_type"),
        (ConnectionEvent, '{"event_type":"device_connected","device_id":"a"}', "transport"),
        (BridgeState, "{}", "state"),
        (EdgeState, '{"edge_id":"e"}', "state"),
        (BridgeResponse, '{"data":{}}', "status"),
        (Action, '{"entity_id":"light.x"}', "action"),
        (Action, '{"action":"turn_on"}', "entity_id"),
    ],
)
def test_missing_fields_are_named(model: type[BaseModel], raw: str, field: str) -> None:
    with pytest.raises(MissingField) as info:
        parse_payload(model, raw)
    assert info.value.field == field
    assert info.value.model == model.__name__
    assert info.value.code is ErrorCode.MISSING_REQUIRED_FIELDS


@pytest.mark.parametrize(
    ("model", "raw", "field"),
    [
        (CommandPayload, '{"command":["x"]}', "command"),
        (CommandPayload, '{"command":"x","parameters":"p"}', "parameters"),
        (StatusPayload, '{"status":"online","device_id":"a"}', "status"),
        (StatusPayload, '{"status":"connected","device_id":"a","uptime":"long"}', "uptime"),
        (
            StatusPayload,
            '{"status":"connected","device_id":"a","memory_usage":false}',
            "memory_usage",
        ),
        (StatusPayload, '{"status":"connected","device_id":"a","transport":"serial"}', "transport"),
        (SensorPayload, '{"sensor_type":"Temp","value":1,"device_id":"a"}', "sensor_type"),
        (SensorPayload, '{"sensor_type":"t","value":[1],"device_id":"a"}', "value"),
        (
            SensorPayload,
            '{"sensor_type":"' + "t" * 65 + '","value":1,"device_id":"a"}',
            "sensor_type",
        ),
        (
            VoiceCommandEvent,
            '{"device_id":"a","command":"x","confidence":-0.1,"language":"en"}',
            "confidence",
        ),
        (
            VoiceCommandEvent,
            '{"event_type":"response","device_id":"a","command":"x","confidence":1,"language":"en"}',
            "event_type",
        ),
        (BridgeRequest, '{"transaction":true}', "transaction"),
        (BridgeRequest, '{"transaction":{"id":1}}', "transaction"),
        (BridgeResponse, '{"status":"ok","data":[]}', "data"),
        (Action, '{"action":"a","entity_id":"b","parameters":null}', "parameters"),
    ],
)
def test_mistyped_fields_are_named(model: type[BaseModel], raw: str, field: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_payload(model, raw)
    assert not isinstance(info.value, MissingField)
    assert info.value.field == field
    assert isinstance(info.value.__cause__, ValidationError)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [(b"", "invalid JSON"), (b"\xff", "UTF-8"), (b"[]", "JSON array"), (b"online", "invalid JSON")],
)
def test_bad_payloads(raw: bytes, needle: str) -> None:
    with pytest.raises(InvalidMessage, match=needle):
        parse_payload(BridgeState, raw)


def test_payload_size_limit() -> None:
    with pytest.raises(PayloadTooLarge):
        parse_payload(CommandPayload, SEED_COMMAND, max_bytes=16)
    assert parse_payload(CommandPayload, SEED_COMMAND, max_bytes=4096).command == "turn_on_light"


def test_validate_model_on_parsed_values() -> None:
    assert validate_model(BridgeState, {"state": "online"}) == BridgeState(
        state=Availability.ONLINE
    )
    with pytest.raises(InvalidMessage):
        validate_model(BridgeState, "online")


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        ((), ""),
        (("data",), "data"),
        (("data", "command"), "data.command"),
        (("data", "actions", 0, "entity_id"), "data.actions[0].entity_id"),
        ((0, "a"), "[0].a"),
        (("a", 1, 2), "a[1][2]"),
    ],
)
def test_field_path(loc: tuple[int | str, ...], path: str) -> None:
    assert field_path(loc) == path


def test_building_with_bad_values_in_code_is_a_caller_bug() -> None:
    with pytest.raises(ValidationError):
        StatusPayload(status="sleeping", device_id="a")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        SensorPayload(sensor_type="t", value=float("nan"), device_id="a")


# -- property tests ----------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
opt_text = st.none() | st.text(max_size=20)
ids = st.from_regex(r"[a-z0-9_-]{1,64}", fullmatch=True)
numbers = st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)


def extras_for(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    names = st.from_regex(r"x_[a-z]{1,8}", fullmatch=True)
    return st.dictionaries(names, json_values, max_size=3).filter(
        lambda d: not set(d) & set(model.model_fields)
    )


@st.composite
def payloads(draw: st.DrawFn) -> BaseModel:
    kind = draw(st.sampled_from(["command", "status", "sensor", "voice", "bridge"]))
    if kind == "command":
        return CommandPayload(
            command=draw(st.text(max_size=20)),
            parameters=draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3)),
            message_id=draw(opt_text),
            timestamp=draw(opt_text),
            device_id=draw(opt_text),
            **draw(extras_for(CommandPayload)),
        )
    if kind == "status":
        return StatusPayload(
            status=draw(st.sampled_from(DeviceStatus)),
            device_id=draw(ids),
            uptime=draw(st.none() | st.integers(0, 2**40)),
            memory_usage=draw(st.none() | numbers),
            transport=draw(st.none() | st.sampled_from(DeviceTransport)),
            **draw(extras_for(StatusPayload)),
        )
    if kind == "sensor":
        return SensorPayload(
            sensor_type=draw(ids),
            value=draw(st.booleans() | numbers | st.text(max_size=10)),
            device_id=draw(ids),
            unit=draw(opt_text),
            **draw(extras_for(SensorPayload)),
        )
    if kind == "voice":
        return VoiceCommandEvent(
            device_id=draw(ids),
            command=draw(st.text(max_size=30)),
            confidence=draw(st.floats(0, 1)),
            language=draw(st.sampled_from(["en", "zh"])),
            area=draw(opt_text),
            **draw(extras_for(VoiceCommandEvent)),
        )
    return BridgeResponse(
        status=draw(st.sampled_from(ResponseStatus)),
        data=draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3)),
        error=draw(opt_text),
        transaction=draw(st.none() | st.text(max_size=8) | st.integers(-(2**31), 2**31)),
    )


@given(payloads())
def test_payloads_round_trip(payload: BaseModel) -> None:
    wire = payload.to_wire()  # type: ignore[attr-defined]
    back = parse_payload(type(payload), wire)
    assert back == payload
    assert back.to_wire() == wire


@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_arbitrary_objects_raise_only_typed_errors(obj: dict[str, Any]) -> None:
    raw = orjson.dumps(obj)
    for model in (CommandPayload, StatusPayload, SensorPayload, VoiceCommandEvent, BridgeResponse):
        with contextlib.suppress(InvalidMessage):
            parse_payload(model, raw)


# -- utterances (xiaozhi/utterances/{device_id}) --------------------------------------------


def test_an_opus_utterance_carries_its_packets_in_order_as_base64() -> None:
    packets = [b"\xf8\xff\xfe", b"\x78\x01"]
    utterance = UtterancePayload.from_opus(
        packets, sample_rate=16000, frame_duration_ms=60, device_id="d1", message_id="m1"
    )
    wire = jsonutil.loads(utterance.to_wire())
    assert wire == {
        "device_id": "d1",
        "message_id": "m1",
        "encoding": "opus",
        "sample_rate": 16000,
        "channels": 1,
        "frame_duration_ms": 60,
        "frames": ["+P/+", "eAE="],
        "duration_ms": 120,
    }
    assert UtterancePayload.from_wire(utterance.to_wire()).opus_packets() == packets


def test_a_streamed_utterance_starts_is_claimed_and_comes_in_numbered_batches() -> None:
    start = UtteranceStart(
        device_id="d1", message_id="m1", sample_rate=16000, frame_duration_ms=60, edge_id="e"
    )
    assert UtteranceStart.from_wire(start.to_wire()) == start
    claim = UtteranceClaim(device_id="d1", message_id="m1", worker_id="w", state="claimed")
    assert UtteranceClaim.from_wire(claim.to_wire()).state is ClaimState.CLAIMED
    packets = [b"\xf8\xff\xfe"] * 4
    chunk = UtteranceChunk.from_opus(
        packets, sample_rate=16000, frame_duration_ms=60, device_id="d1", message_id="m1", seq=2
    )
    back = UtteranceChunk.from_wire(chunk.to_wire())
    assert (back.seq, back.final, back.duration_ms, back.opus_packets()) == (2, False, 240, packets)
    with pytest.raises(ValueError, match="at most 50"):
        UtteranceChunk.from_opus(
            packets * 13, sample_rate=16000, frame_duration_ms=60, device_id="d1",
            message_id="m1", seq=0,
        )  # fmt: skip


def test_a_pcm_utterance_round_trips_and_knows_its_duration() -> None:
    pcm = b"\x01\x00" * 16000  # one second at 16 kHz
    utterance = UtterancePayload.from_pcm(pcm, sample_rate=16000, device_id="d1", message_id="m")
    assert utterance.duration_ms == 1000
    assert UtterancePayload.from_wire(utterance.to_wire()).pcm_bytes() == pcm


@pytest.mark.parametrize(
    ("fields", "call", "field"),
    [
        ({"encoding": "opus", "frames": ["not base64!"]}, "opus_packets", "frames[0]"),
        ({"encoding": "opus", "frames": ["A" * 2000]}, "opus_packets", "frames[0]"),
        ({"encoding": "pcm_s16le", "pcm": "AA=="}, "pcm_bytes", "pcm"),  # 1 byte: odd
        ({"encoding": "pcm_s16le"}, "pcm_bytes", "pcm"),
        ({"encoding": "opus", "frames": []}, "pcm_bytes", "pcm"),
        ({"encoding": "pcm_s16le", "pcm": "AAAA"}, "opus_packets", "encoding"),
    ],
)
def test_bad_utterance_audio_is_refused_naming_the_field(
    fields: dict[str, Any], call: str, field: str
) -> None:
    utterance = UtterancePayload.from_obj(
        {"device_id": "d1", "message_id": "m", "sample_rate": 16000, "duration_ms": 0, **fields}
    )
    with pytest.raises(InvalidMessage) as caught:
        getattr(utterance, call)()
    assert caught.value.field == field


def test_an_utterance_with_too_many_frames_is_refused() -> None:
    raw = {
        "device_id": "d1",
        "message_id": "m",
        "encoding": "opus",
        "sample_rate": 16000,
        "duration_ms": 0,
        "frames": ["AA=="] * 1001,
    }
    with pytest.raises(InvalidMessage, match="frames"):
        UtterancePayload.from_obj(raw)


@pytest.mark.parametrize(
    ("user_agent", "simulated"),
    [
        ("bread-compact-wifi/1.8.2 xiaozhi-sim/0.1.0", True),
        ("Xiaozhi-Sim/1 esp-box/1.0", True),
        ("bread-compact-wifi/1.8.2", False),
        ("xiaozhi-simulator/1.0", False),
        ("", False),
        (None, False),
    ],
)
def test_simulator_user_agent(user_agent: str | None, simulated: bool) -> None:
    assert is_simulator_user_agent(user_agent) is simulated


def test_simulated_mark_in_status_and_connection_event() -> None:
    status = StatusPayload.from_wire(b'{"status":"connected","device_id":"d1","simulated":true}')
    assert status.simulated is True
    assert b"simulated" not in StatusPayload(status="connected", device_id="d1").to_wire()
    event = ConnectionEvent.from_wire(
        b'{"event_type":"device_connected","device_id":"d1","transport":"mqtt","simulated":true}'
    )
    assert event.simulated is True
