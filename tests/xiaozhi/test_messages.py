"""Device WebSocket JSON messages (xiaozhi.messages) and the JSON entry point (xiaozhi.jsonutil).

Literal examples come verbatim from seed 003 ("WebSocket Protocol" → "Message Types",
"Audio Streaming Protocol") and from reference/xiaozhi-firmware.md §1.3-1.6.
"""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from tests.seed_samples import (
    SEED_AUDIO_CHUNK,
    SEED_AUDIO_DATA,
    SEED_DEVICE_REGISTER,
    SEED_ERROR,
    SEED_PING,
    SEED_RESPONSE,
    SEED_STREAM_HEADER,
    SEED_VOICE_COMMAND,
)
from xiaozhi import jsonutil
from xiaozhi.errors import ErrorCode, InvalidMessage, MissingField, PayloadTooLarge
from xiaozhi.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEVICE_MESSAGE_TYPES,
    SERVER_MESSAGE_TYPES,
    Abort,
    AbortReason,
    Alert,
    AudioChunk,
    AudioDataMessage,
    AudioParams,
    Custom,
    DeviceHello,
    DeviceRegisterMessage,
    ErrorMessage,
    Goodbye,
    Listen,
    ListenMode,
    ListenState,
    Llm,
    Mcp,
    MessageType,
    PingData,
    PingMessage,
    ResponseData,
    ResponseMessage,
    SensorData,
    SensorMessage,
    ServerHello,
    StreamHeader,
    Stt,
    System,
    SystemCommand,
    Transport,
    Tts,
    TtsState,
    VoiceCommandData,
    VoiceCommandMessage,
    parse_device_message,
    parse_server_message,
)
from xiaozhi.payloads import Action

SEED_ENVELOPES = [
    SEED_DEVICE_REGISTER,
    SEED_AUDIO_DATA,
    SEED_VOICE_COMMAND,
    SEED_RESPONSE,
    SEED_ERROR,
    SEED_PING,
]

# -- firmware (reference §1.3-1.6) -------------------------------------------------------

FW_HELLO = (
    '{"type":"hello","version":1,"features":{"mcp":true,"glyph_push":false,'
    '"text_font":{"bundle":"x","charset":"utf8","size":14,"bpp":1}},"transport":"websocket",'
    '"audio_params":{"format":"opus","sample_rate":16000,"channels":1,"frame_duration":60}}'
)
FW_LISTEN_START = '{"session_id":"s1","type":"listen","state":"start","mode":"auto"}'
FW_LISTEN_STOP = '{"session_id":"s1","type":"listen","state":"stop"}'
FW_LISTEN_DETECT = '{"session_id":"s1","type":"listen","state":"detect","text":"你好小智"}'
FW_ABORT = '{"session_id":"s1","type":"abort","reason":"wake_word_detected"}'
FW_MCP = (
    '{"session_id":"s1","type":"mcp","payload":{"jsonrpc":"2.0","id":1,'
    '"result":{"content":[{"type":"text","text":"true"}],"isError":false}}}'
)
FW_GOODBYE = '{"session_id":"s1","type":"goodbye"}'


def as_obj(raw: str | bytes) -> Any:
    return orjson.loads(raw)


# -- parsing seed envelopes --------------------------------------------------------------


def test_seed_device_register() -> None:
    msg = parse_device_message(SEED_DEVICE_REGISTER)
    assert isinstance(msg, DeviceRegisterMessage)
    assert msg.timestamp == "2024-01-01T00:00:00Z"
    assert msg.device_id is None
    assert msg.data.device_id == "esp32_device_001"
    assert msg.data.capabilities == ["audio_input", "audio_output", "wifi"]
    hw = msg.data.hardware_info
    assert hw is not None
    assert (hw.chip_model, hw.chip_revision, hw.cpu_freq) == ("ESP32-S3", "0", 240)
    assert (hw.flash_size, hw.psram_size) == (16777216, 8388608)


def test_hardware_info_takes_a_numeric_revision_as_text() -> None:
    obj = as_obj(SEED_DEVICE_REGISTER)
    obj["data"]["hardware_info"]["chip_revision"] = 3
    msg = parse_device_message(orjson.dumps(obj))
    assert isinstance(msg, DeviceRegisterMessage)
    assert msg.data.hardware_info is not None
    assert msg.data.hardware_info.chip_revision == "3"


def test_seed_browser_client_register_without_hardware_info() -> None:
    # seed 003 "WebSocket Client (JavaScript)" registerDevice()
    raw = (
        '{"type":"device_register","data":{"device_id":"web_client_001","device_type":"web",'
        '"firmware_version":"1.0.0","capabilities":["audio_input","audio_output"]},'
        '"timestamp":"2024-05-01T10:00:00.123Z"}'
    )
    msg = parse_device_message(raw)
    assert isinstance(msg, DeviceRegisterMessage)
    assert msg.data.hardware_info is None
    assert as_obj(msg.to_wire()) == as_obj(raw)


def test_seed_audio_data() -> None:
    msg = parse_device_message(SEED_AUDIO_DATA)
    assert isinstance(msg, AudioDataMessage)
    d = msg.data
    assert (d.audio_format, d.sample_rate, d.channels, d.bit_depth) == ("wav", 16000, 1, 16)
    assert (d.duration_ms, d.data, d.compression) == (1500, "base64_encoded_audio_data", "none")
    assert d.stream_id is None


def test_audio_data_decodes_base64_and_refuses_bad_base64() -> None:
    pcm = bytes(range(256))
    raw = orjson.dumps({"type": "audio_data", "data": {"data": base64.b64encode(pcm).decode()}})
    msg = parse_device_message(raw)
    assert isinstance(msg, AudioDataMessage)
    assert msg.audio_bytes() == pcm
    # seed defaults: WAV, 16 kHz, mono, 16 bit, uncompressed
    assert (msg.data.audio_format, msg.data.sample_rate, msg.data.bit_depth) == ("wav", 16000, 16)
    bad = parse_device_message('{"type":"audio_data","data":{"data":"not base64!"}}')
    assert isinstance(bad, AudioDataMessage)
    with pytest.raises(InvalidMessage) as info:
        bad.audio_bytes()
    assert info.value.field == "data.data"


def test_audio_data_streaming_fields() -> None:
    raw = (
        '{"type":"audio_data","data":{"data":"AAAA","stream_id":"stream_123456",'
        '"chunk_number":2,"total_chunks":10}}'
    )
    msg = parse_device_message(raw)
    assert isinstance(msg, AudioDataMessage)
    assert (msg.data.stream_id, msg.data.chunk_number, msg.data.total_chunks) == (
        "stream_123456",
        2,
        10,
    )


def test_seed_voice_command() -> None:
    msg = parse_device_message(SEED_VOICE_COMMAND)
    assert isinstance(msg, VoiceCommandMessage)
    assert msg.data.command == "turn on the living room light"
    assert msg.data.confidence == 0.95
    assert msg.data.language == "en"
    assert (msg.data.processing_time_ms, msg.data.audio_duration_ms) == (1200, 1500)


@pytest.mark.parametrize("parse", [parse_device_message, parse_server_message])
def test_seed_response(parse: Any) -> None:
    msg = parse(SEED_RESPONSE)
    assert isinstance(msg, ResponseMessage)
    assert msg.data.text == "I'll turn on the living room light for you."
    assert msg.data.actions == [
        Action(action="turn_on", entity_id="light.living_room", parameters={})
    ]
    assert msg.data.processing_time_ms == 2500


@pytest.mark.parametrize("parse", [parse_device_message, parse_server_message])
def test_seed_error(parse: Any) -> None:
    msg = parse(SEED_ERROR)
    assert isinstance(msg, ErrorMessage)
    assert msg.timestamp is None
    assert msg.data.timestamp == "2024-01-01T00:00:00Z"
    assert msg.data.error_code == "AUDIO_PROCESSING_FAILED"
    assert msg.data.details == {
        "reason": "Invalid audio format",
        "expected_format": "wav",
        "received_format": "mp3",
    }


def test_seed_ping_keeps_integers_as_integers() -> None:
    msg = parse_device_message(SEED_PING)
    assert isinstance(msg, PingMessage)
    d = msg.data
    assert (d.uptime, d.memory_usage, d.cpu_usage, d.wifi_signal, d.free_heap) == (
        3600,
        65,
        45,
        -45,
        204800,
    )
    assert isinstance(d.memory_usage, int)
    assert b'"memory_usage":65,' in msg.to_wire()


@pytest.mark.parametrize("raw", SEED_ENVELOPES)
def test_seed_envelopes_round_trip_to_the_same_json(raw: str) -> None:
    msg = parse_device_message(raw)
    assert as_obj(msg.to_wire()) == as_obj(raw)
    assert parse_device_message(msg.to_wire()) == msg


def test_seed_stream_header_and_chunk() -> None:
    header = StreamHeader.from_wire(SEED_STREAM_HEADER)
    assert (header.stream_id, header.format, header.chunk_size, header.total_chunks) == (
        "stream_123456",
        "wav",
        1024,
        10,
    )
    assert as_obj(header.to_wire()) == as_obj(SEED_STREAM_HEADER)
    chunk = AudioChunk.from_wire(SEED_AUDIO_CHUNK)
    assert (chunk.chunk_number, chunk.timestamp) == (1, "2024-01-01T00:00:00Z")
    assert as_obj(chunk.to_wire()) == as_obj(SEED_AUDIO_CHUNK)
    # the seed's placeholder is not base64 (its length is not a multiple of 4)
    with pytest.raises(InvalidMessage) as info:
        chunk.chunk_bytes()
    assert info.value.field == "chunk_data"
    good = AudioChunk(stream_id="s", chunk_number=0, chunk_data="AQID")
    assert good.chunk_bytes() == b"\x01\x02\x03"


def test_sensor_message() -> None:
    raw = (
        '{"type":"sensor","data":{"sensor_type":"temperature","value":22.5,"unit":"celsius"},'
        '"timestamp":"2024-01-01T00:00:00Z","device_id":"esp32_device_001"}'
    )
    msg = parse_device_message(raw)
    assert isinstance(msg, SensorMessage)
    assert msg.data == SensorData(sensor_type="temperature", value=22.5, unit="celsius")
    assert msg.device_id == "esp32_device_001"
    assert msg.to_wire() == raw.encode()


@pytest.mark.parametrize("value", [True, 3, 22.5, "open"])
def test_sensor_values_keep_their_json_type(value: object) -> None:
    msg = SensorMessage(data=SensorData(sensor_type="door", value=value))  # type: ignore[arg-type]
    back = parse_device_message(msg.to_wire())
    assert isinstance(back, SensorMessage)
    assert back.data.value == value
    assert type(back.data.value) is type(value)


# -- firmware messages -------------------------------------------------------------------


def test_firmware_device_hello_keeps_unknown_features() -> None:
    msg = parse_device_message(FW_HELLO)
    assert isinstance(msg, DeviceHello)
    assert msg.version == 1
    assert msg.transport is Transport.WEBSOCKET
    assert msg.session_id is None
    assert msg.features is not None
    assert msg.features.mcp is True
    assert msg.features.aec is None
    assert msg.features.glyph_push is False
    assert msg.features.model_extra == {
        "text_font": {"bundle": "x", "charset": "utf8", "size": 14, "bpp": 1}
    }
    assert msg.audio_params == AudioParams(
        format="opus", sample_rate=16000, channels=1, frame_duration=60
    )
    assert as_obj(msg.to_wire()) == as_obj(FW_HELLO)


def test_minimal_device_hello_from_a_third_party_client() -> None:
    msg = parse_device_message('{"type":"hello"}')
    assert msg == DeviceHello()
    assert msg.to_wire() == b'{"type":"hello"}'


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            FW_LISTEN_START,
            Listen(session_id="s1", state=ListenState.START, mode=ListenMode.AUTO),
        ),
        (FW_LISTEN_STOP, Listen(session_id="s1", state=ListenState.STOP)),
        (FW_LISTEN_DETECT, Listen(session_id="s1", state=ListenState.DETECT, text="你好小智")),
        (FW_ABORT, Abort(session_id="s1", reason=AbortReason.WAKE_WORD_DETECTED)),
        (
            FW_MCP,
            Mcp(
                session_id="s1",
                payload={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "result": {"content": [{"type": "text", "text": "true"}], "isError": False},
                },
            ),
        ),
        (FW_GOODBYE, Goodbye(session_id="s1")),
        ('{"session_id":"","type":"abort"}', Abort(session_id="")),
        (
            '{"type":"listen","state":"start","mode":"realtime"}',
            Listen(state="start", mode="realtime"),
        ),  # type: ignore[arg-type]
    ],
)
def test_firmware_device_messages(raw: str, expected: BaseModel) -> None:
    msg = parse_device_message(raw)
    assert msg == expected
    assert as_obj(msg.to_wire()) == as_obj(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            '{"type":"hello","transport":"websocket","session_id":"abc",'
            '"audio_params":{"format":"opus","sample_rate":24000,"channels":1,"frame_duration":60}}',
            ServerHello(
                session_id="abc",
                audio_params=AudioParams(
                    format="opus", sample_rate=24000, channels=1, frame_duration=60
                ),
            ),
        ),
        ('{"type":"stt","text":"turn on the light"}', Stt(text="turn on the light")),
        ('{"type":"tts","state":"start"}', Tts(state=TtsState.START)),
        (
            '{"type":"tts","state":"sentence_start","text":"OK."}',
            Tts(state=TtsState.SENTENCE_START, text="OK."),
        ),
        ('{"type":"tts","state":"stop","session_id":"abc"}', Tts(state="stop", session_id="abc")),  # type: ignore[arg-type]
        ('{"type":"llm","text":"😊","emotion":"happy"}', Llm(emotion="happy", text="😊")),
        ('{"type":"system","command":"reboot"}', System(command=SystemCommand.REBOOT)),
        (
            '{"type":"alert","status":"Warning","message":"Low battery","emotion":"sad"}',
            Alert(status="Warning", message="Low battery", emotion="sad"),
        ),
        ('{"type":"custom","payload":{"k":[1,2]}}', Custom(payload={"k": [1, 2]})),
        (
            '{"type":"mcp","payload":{"jsonrpc":"2.0","id":2,"method":"tools/list",'
            '"params":{"cursor":""}}}',
            Mcp(
                payload={
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "tools/list",
                    "params": {"cursor": ""},
                }
            ),
        ),
        ('{"type":"goodbye","session_id":"abc"}', Goodbye(session_id="abc")),
    ],
)
def test_server_messages(raw: str, expected: BaseModel) -> None:
    msg = parse_server_message(raw)
    assert msg == expected
    assert as_obj(msg.to_wire()) == as_obj(raw)


def test_server_hello_for_udp_keeps_the_udp_block() -> None:
    raw = (
        '{"type":"hello","transport":"udp","session_id":"x","audio_params":{"format":"opus",'
        '"sample_rate":24000,"channels":1,"frame_duration":60},"udp":{"server":"1.2.3.4",'
        '"port":8884,"key":"00","nonce":"01"}}'
    )
    msg = parse_server_message(raw)
    assert isinstance(msg, ServerHello)
    assert msg.transport is Transport.UDP
    assert msg.model_extra == {
        "udp": {"server": "1.2.3.4", "port": 8884, "key": "00", "nonce": "01"}
    }
    assert as_obj(msg.to_wire()) == as_obj(raw)


# -- golden wire output ------------------------------------------------------------------


def test_golden_server_hello() -> None:
    hello = ServerHello(
        session_id="9f0c",
        audio_params=AudioParams(format="opus", sample_rate=24000, channels=1, frame_duration=60),
    )
    assert hello.to_wire() == (
        b'{"type":"hello","session_id":"9f0c","transport":"websocket",'
        b'"audio_params":{"format":"opus","sample_rate":24000,"channels":1,"frame_duration":60}}'
    )
    assert hello.to_text() == hello.to_wire().decode()


def test_golden_tts_and_listen_stop_carry_no_nulls() -> None:
    assert Tts(state=TtsState.START).to_wire() == b'{"type":"tts","state":"start"}'
    assert Tts(state=TtsState.STOP, session_id="s").to_wire() == (
        b'{"type":"tts","session_id":"s","state":"stop"}'
    )
    assert Listen(state=ListenState.STOP).to_wire() == b'{"type":"listen","state":"stop"}'


def test_golden_response_to_a_seed_device() -> None:
    msg = ResponseMessage(
        data=ResponseData(
            text="Turning on the living room light.",
            actions=[Action(action="turn_on", entity_id="light.living_room")],
        ),
        device_id="esp32_device_001",
        timestamp="2024-01-01T00:00:00Z",
        message_id="msg_1",
    )
    assert msg.to_wire() == (
        b'{"type":"response","data":{"text":"Turning on the living room light.",'
        b'"actions":[{"type":"homeassistant","action":"turn_on",'
        b'"entity_id":"light.living_room","parameters":{}}]},'
        b'"timestamp":"2024-01-01T00:00:00Z","device_id":"esp32_device_001","message_id":"msg_1"}'
    )


def test_error_reply_from_a_wire_error() -> None:
    with pytest.raises(MissingField) as info:
        parse_device_message('{"type":"voice_command","data":{"language":"en"}}')
    reply = ErrorMessage.from_error(info.value, device_id="aabb", timestamp="t0", message_id="m")
    assert as_obj(reply.to_wire()) == {
        "type": "error",
        "data": {
            "error_code": "MISSING_REQUIRED_FIELDS",
            "error_message": "VoiceCommandMessage: missing required field 'data.command'",
            "details": {"code": int(ErrorCode.MISSING_REQUIRED_FIELDS), "field": "data.command"},
            "device_id": "aabb",
            "timestamp": "t0",
        },
        "timestamp": "t0",
        "device_id": "aabb",
        "message_id": "m",
    }
    too_big = ErrorMessage.from_error(PayloadTooLarge(size=10, limit=5))
    assert too_big.data.error_code == "MESSAGE_TOO_LARGE"
    assert too_big.data.details == {"code": 0x102}
    assert parse_server_message(too_big.to_wire()) == too_big


# -- extras ------------------------------------------------------------------------------


def test_unknown_fields_survive_a_round_trip_at_every_level() -> None:
    raw = (
        '{"type":"voice_command","data":{"command":"hi","new_field":[1,{"a":null}]},'
        '"session_id":"","future":{"x":1},"nothing":null}'
    )
    msg = parse_device_message(raw)
    assert isinstance(msg, VoiceCommandMessage)
    assert msg.model_extra == {"session_id": "", "future": {"x": 1}, "nothing": None}
    assert msg.data.model_extra == {"new_field": [1, {"a": None}]}
    # extras are written as received, None included; declared optionals that are None are not
    assert as_obj(msg.to_wire()) == as_obj(raw)


def test_extras_given_in_code_are_written() -> None:
    listen = Listen(state=ListenState.START, mode=ListenMode.MANUAL, vendor="x")  # type: ignore[call-arg]
    assert listen.to_wire() == b'{"type":"listen","state":"start","mode":"manual","vendor":"x"}'


def test_models_are_frozen_values() -> None:
    msg = Tts(state=TtsState.START)
    with pytest.raises(ValueError, match="frozen"):
        msg.state = TtsState.STOP  # type: ignore[misc]
    assert msg.model_copy(update={"text": "hi"}).text == "hi"


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field", "model"),
    [
        ("{}", "type", "device message"),
        ('{"type":"listen"}', "state", "Listen"),
        ('{"type":"mcp"}', "payload", "Mcp"),
        (
            '{"type":"hello","audio_params":{"format":"opus"}}',
            "audio_params.sample_rate",
            "DeviceHello",
        ),
        ('{"type":"device_register"}', "data", "DeviceRegisterMessage"),
        (
            '{"type":"device_register","data":{"device_id":"a","device_type":"b"}}',
            "data.firmware_version",
            "DeviceRegisterMessage",
        ),
        ('{"type":"audio_data","data":{}}', "data.data", "AudioDataMessage"),
        (
            '{"type":"voice_command","data":{"confidence":0.5}}',
            "data.command",
            "VoiceCommandMessage",
        ),
        (
            '{"type":"response","data":{"actions":[{"action":"turn_on"}]}}',
            "data.actions[0].entity_id",
            "ResponseMessage",
        ),
        ('{"type":"error","data":{"error_code":"X"}}', "data.error_message", "ErrorMessage"),
        ('{"type":"sensor","data":{"sensor_type":"temperature"}}', "data.value", "SensorMessage"),
        ('{"type":"sensor","data":{"value":1}}', "data.sensor_type", "SensorMessage"),
        ('{"type":"ping"}', "data", "PingMessage"),
    ],
)
def test_missing_fields_are_named(raw: str, field: str, model: str) -> None:
    with pytest.raises(MissingField) as info:
        parse_device_message(raw)
    assert info.value.field == field
    assert info.value.model == model
    assert info.value.code is ErrorCode.MISSING_REQUIRED_FIELDS
    assert repr(field) in str(info.value)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"type":"stt"}', "text"),
        ('{"type":"tts"}', "state"),
        ('{"type":"llm"}', "emotion"),
        ('{"type":"system"}', "command"),
        ('{"type":"alert","status":"a","message":"b"}', "emotion"),
        (
            '{"type":"hello","transport":"websocket","audio_params":{"format":"opus","sample_rate":1,"channels":1,"frame_duration":60}}',
            "session_id",
        ),
        (
            '{"type":"hello","session_id":"x","audio_params":{"format":"opus","channels":1,"frame_duration":60}}',
            "audio_params.sample_rate",
        ),
    ],
)
def test_server_messages_missing_fields(raw: str, field: str) -> None:
    with pytest.raises(MissingField) as info:
        parse_server_message(raw)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("raw", "field", "quoted"),
    [
        ('{"type":"listen","state":"pause"}', "state", "'pause'"),
        ('{"type":"listen","state":"start","mode":"auto2"}', "mode", "'auto2'"),
        ('{"type":"hello","version":"three"}', "version", "'three'"),
        ('{"type":"hello","transport":"tcp"}', "transport", "'tcp'"),
        ('{"type":"hello","features":{"mcp":"maybe"}}', "features.mcp", "'maybe'"),
        (
            '{"type":"hello","audio_params":{"format":"opus","sample_rate":0,"channels":1,"frame_duration":60}}',
            "audio_params.sample_rate",
            "0",
        ),
        ('{"type":"mcp","payload":[1,2]}', "payload", "[1, 2]"),
        ('{"type":"abort","session_id":5}', "session_id", "5"),
        ('{"type":"ping","data":{"memory_usage":"65"}}', "data.memory_usage", "'65'"),
        ('{"type":"ping","data":{"cpu_usage":true}}', "data.cpu_usage", "True"),
        ('{"type":"ping","data":{"uptime":-1}}', "data.uptime", "-1"),
        ('{"type":"ping","data":"up"}', "data", "'up'"),
        (
            '{"type":"voice_command","data":{"command":"x","confidence":1.5}}',
            "data.confidence",
            "1.5",
        ),
        (
            '{"type":"response","data":{"actions":[{"action":"a","entity_id":"b","parameters":[]}]}}',
            "data.actions[0].parameters",
            "[]",
        ),
        (
            '{"type":"sensor","data":{"sensor_type":"temp/x","value":1}}',
            "data.sensor_type",
            "'temp/x'",
        ),
        (
            '{"type":"sensor","data":{"sensor_type":"temp","value":{"a":1}}}',
            "data.value",
            "{'a': 1}",
        ),
        ('{"type":"sensor","data":{"sensor_type":"temp","value":null}}', "data.value", "None"),
        (
            '{"type":"device_register","data":{"device_id":"a","device_type":"b","firmware_version":"1","capabilities":"wifi"}}',
            "data.capabilities",
            "'wifi'",
        ),
        (
            '{"type":"audio_data","data":{"data":"AAAA","chunk_number":-1}}',
            "data.chunk_number",
            "-1",
        ),
        (
            '{"type":"error","data":{"error_code":"X","error_message":"y"},"timestamp":1}',
            "timestamp",
            "1",
        ),
    ],
)
def test_mistyped_fields_are_named(raw: str, field: str, quoted: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_device_message(raw)
    assert not isinstance(info.value, MissingField)
    assert info.value.field == field
    assert info.value.code is ErrorCode.INVALID_DATA_FORMAT
    assert quoted in str(info.value)


def test_several_errors_are_counted_and_long_values_shortened() -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_device_message(
            orjson.dumps({"type": "listen", "state": "x" * 100, "mode": "y", "text": 5})
        )
    assert info.value.field == "state"
    assert "(and 2 more)" in str(info.value)
    assert "x" * 100 not in str(info.value)
    assert "..." in str(info.value)


def test_a_missing_field_is_reported_before_a_mistyped_one() -> None:
    with pytest.raises(MissingField) as info:
        parse_server_message('{"type":"alert","status":1}')
    assert info.value.field == "message"


def test_a_model_given_a_non_object() -> None:
    with pytest.raises(InvalidMessage) as info:
        Listen.from_obj([1, 2])
    assert info.value.field is None
    assert "Listen: message:" in str(info.value)


def test_a_model_given_another_type() -> None:
    with pytest.raises(InvalidMessage) as info:
        Listen.from_wire('{"type":"abort","state":"start"}')
    assert info.value.field == "type"


@pytest.mark.parametrize(
    ("parse", "raw", "known"),
    [
        (parse_device_message, '{"type":"iot","descriptors":[]}', DEVICE_MESSAGE_TYPES),
        (parse_device_message, '{"type":"stt","text":"x"}', DEVICE_MESSAGE_TYPES),
        (parse_server_message, '{"type":"listen","state":"start"}', SERVER_MESSAGE_TYPES),
        (parse_server_message, '{"type":""}', SERVER_MESSAGE_TYPES),
    ],
)
def test_unknown_type_names_it_and_lists_known_ones(parse: Any, raw: str, known: Any) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse(raw)
    assert info.value.field == "type"
    text = str(info.value)
    assert repr(as_obj(raw)["type"]) in text
    assert all(t in text for t in known)


@pytest.mark.parametrize("type_value", [None, 1, ["hello"], {"t": 1}])
def test_type_must_be_a_string(type_value: object) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_device_message(orjson.dumps({"type": type_value}))
    assert info.value.field == "type"
    assert not isinstance(info.value, MissingField)


def test_missing_type_in_server_message() -> None:
    with pytest.raises(MissingField) as info:
        parse_server_message(b'{"text":"x"}')
    assert info.value.field == "type"
    assert info.value.model == "server message"


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"\xff\xfe{}", "UTF-8"),
        (b'{"type":"hello","x":"\xc3"}', "UTF-8"),
        ("\ud800", "UTF-8"),
        (b"\xef\xbb\xbf{}", "UTF-8"),
        (b"{", "invalid JSON"),
        (b"", "invalid JSON"),
        (b'{"type":"hello",}', "invalid JSON"),
        (b"NaN", "invalid JSON"),
        (b"[1,2]", "got a JSON array"),
        (b'"hello"', "got a JSON string"),
        (b"42", "got a JSON number"),
        (b"4.2", "got a JSON number"),
        (b"true", "got a JSON boolean"),
        (b"null", "got a JSON null"),
    ],
)
def test_bad_json_bad_utf8_and_non_objects(raw: bytes | str, needle: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_device_message(raw)
    assert needle in str(info.value)
    assert info.value.field is None
    assert info.value.code is ErrorCode.INVALID_DATA_FORMAT
    cause = info.value.__cause__
    assert cause is None or isinstance(cause, orjson.JSONDecodeError)


def test_size_limit_is_checked_before_parsing() -> None:
    raw = b"{" + b" " * DEFAULT_MAX_MESSAGE_BYTES + b"}"
    with pytest.raises(PayloadTooLarge) as info:
        parse_device_message(raw)
    assert (info.value.size, info.value.limit) == (len(raw), DEFAULT_MAX_MESSAGE_BYTES)
    # without a limit the same (valid, whitespace-padded) document parses as JSON
    with pytest.raises(MissingField):
        parse_device_message(raw, max_bytes=None)
    with pytest.raises(PayloadTooLarge):
        parse_server_message(b"not even json", max_bytes=4)


# -- jsonutil ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "limit", "too_large"),
    [
        (b'{"a":1}', 7, False),
        (b'{"a":1}', 6, True),
        (bytearray(b'{"a":1}'), 6, True),
        (memoryview(b'{"a":1}'), 7, False),
        ('{"a":"é"}', 10, False),  # 9 chars, 10 bytes: needs the encode
        ('{"a":"é"}', 9, True),
        ('{"a":"é"}', 8, True),  # more chars than the limit: no encode needed
        ('{"a":"é"}', 100, False),  # 4 bytes per char still fits: no encode needed
        ('{"a":"😊"}', 12, False),
        ('{"a":"😊"}', 11, True),
    ],
)
def test_loads_size_in_utf8_bytes(data: Any, limit: int, too_large: bool) -> None:
    if too_large:
        with pytest.raises(PayloadTooLarge):
            jsonutil.loads(data, max_bytes=limit)
    else:
        assert isinstance(jsonutil.loads(data, max_bytes=limit), dict)


def test_loads_values_and_objects() -> None:
    assert jsonutil.loads("[1, 2.5, null, true]") == [1, 2.5, None, True]
    assert jsonutil.loads_object(b'{"a":{"b":[]}}') == {"a": {"b": []}}


def test_dumps_models_enums_and_plain_values() -> None:
    doc = {"msg": Tts(state=TtsState.START), "kind": MessageType.TTS, "n": [1, 2.5, None]}
    assert (
        jsonutil.dumps(doc)
        == b'{"msg":{"type":"tts","state":"start"},"kind":"tts","n":[1,2.5,null]}'
    )
    assert jsonutil.dumps_text({"t": "小智"}) == '{"t":"小智"}'
    with pytest.raises(TypeError):
        jsonutil.dumps({"x": object()})
    with pytest.raises(TypeError):
        jsonutil.dumps(2**70)


# -- property tests ----------------------------------------------------------------------

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def extras_for(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    names = st.from_regex(r"x_[a-z_]{1,10}", fullmatch=True)
    return st.dictionaries(names, json_values, max_size=3).filter(
        lambda d: not set(d) & set(model.model_fields)
    )


opt_text = st.none() | st.text(max_size=30)


@st.composite
def listen_messages(draw: st.DrawFn) -> Listen:
    return Listen(
        state=draw(st.sampled_from(ListenState)),
        mode=draw(st.none() | st.sampled_from(ListenMode)),
        text=draw(opt_text),
        session_id=draw(opt_text),
        **draw(extras_for(Listen)),
    )


@st.composite
def device_hellos(draw: st.DrawFn) -> DeviceHello:
    params = draw(
        st.none()
        | st.builds(
            AudioParams,
            format=st.sampled_from(["opus", "pcm"]),
            sample_rate=st.sampled_from([8000, 16000, 24000, 48000]),
            channels=st.integers(1, 2),
            frame_duration=st.sampled_from([20, 40, 60]),
        )
    )
    return DeviceHello(
        version=draw(st.none() | st.integers(1, 3)),
        transport=draw(st.none() | st.sampled_from(Transport)),
        audio_params=params,
        **draw(extras_for(DeviceHello)),
    )


numbers = st.integers(-(2**31), 2**31) | st.floats(-1e6, 1e6, allow_nan=False)


@st.composite
def envelopes(draw: st.DrawFn) -> BaseModel:
    common = {
        "timestamp": draw(opt_text),
        "device_id": draw(opt_text),
        "message_id": draw(opt_text),
    }
    kind = draw(st.sampled_from(["voice", "ping", "sensor", "response"]))
    if kind == "voice":
        data: BaseModel = VoiceCommandData(
            command=draw(st.text(max_size=40)),
            confidence=draw(st.none() | st.floats(0, 1)),
            language=draw(opt_text),
            **draw(extras_for(VoiceCommandData)),
        )
        return VoiceCommandMessage(data=data, **common)  # type: ignore[arg-type]
    if kind == "ping":
        data = PingData(
            uptime=draw(st.none() | st.integers(0, 2**40)),
            memory_usage=draw(st.none() | numbers),
            wifi_signal=draw(st.none() | numbers),
        )
        return PingMessage(data=data, **common)  # type: ignore[arg-type]
    if kind == "sensor":
        data = SensorData(
            sensor_type=draw(st.from_regex(r"[a-z0-9_-]{1,64}", fullmatch=True)),
            value=draw(st.booleans() | numbers | st.text(max_size=10)),
            unit=draw(opt_text),
        )
        return SensorMessage(data=data, **common)  # type: ignore[arg-type]
    actions = draw(
        st.lists(
            st.builds(
                Action,
                action=st.sampled_from(["turn_on", "turn_off"]),
                entity_id=st.text(max_size=20),
                parameters=st.dictionaries(st.text(max_size=5), json_values, max_size=2),
            ),
            max_size=3,
        )
    )
    data = ResponseData(text=draw(opt_text), actions=actions)
    return ResponseMessage(data=data, **common, **draw(extras_for(ResponseMessage)))  # type: ignore[arg-type]


@given(listen_messages() | device_hellos() | envelopes())
def test_device_messages_round_trip(msg: BaseModel) -> None:
    wire = msg.to_wire()  # type: ignore[attr-defined]
    back = parse_device_message(wire)
    assert back == msg
    assert back.to_wire() == wire


@given(
    st.builds(Tts, state=st.sampled_from(TtsState), text=opt_text, session_id=opt_text)
    | st.builds(Stt, text=st.text(max_size=30))
    | st.builds(Llm, emotion=st.text(max_size=10), text=opt_text)
    | st.builds(Mcp, payload=st.dictionaries(st.text(max_size=8), json_values, max_size=4))
    | st.builds(Custom, payload=json_values)
)
def test_server_messages_round_trip(msg: BaseModel) -> None:
    wire = msg.to_wire()  # type: ignore[attr-defined]
    assert parse_server_message(wire) == msg


@given(st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_parsing_arbitrary_objects_raises_only_typed_errors(obj: dict[str, Any]) -> None:
    for parse in (parse_device_message, parse_server_message):
        for msg_type in [None, *DEVICE_MESSAGE_TYPES, *SERVER_MESSAGE_TYPES]:
            candidate = obj if msg_type is None else {**obj, "type": msg_type}
            with contextlib.suppress(InvalidMessage):
                parse(orjson.dumps(candidate))


@given(st.binary(max_size=64))
def test_parsing_arbitrary_bytes_raises_only_typed_errors(raw: bytes) -> None:
    with contextlib.suppress(InvalidMessage):
        parse_device_message(raw)
