"""The firmware's WebSocket session, sans I/O: frames and times in, frames and events out.

Times are plain numbers (seconds), so the 10 s hello and 120 s silence timeouts and the
2.4 s decode queue are checked exactly, without waiting (reference section 1, 6.7).
"""

from __future__ import annotations

from typing import Any

import pytest

from xiaozhi import jsonutil
from xiaozhi.binary import BinaryFrame, FrameType, decode_frame, encode_frame, encode_opus
from xiaozhi.messages import ListenMode
from xiaozhi_sim.firmware_protocol import (
    MAX_DECODE_PACKETS,
    AudioDropped,
    AudioReceived,
    ChannelTimeout,
    FirmwareSession,
    HelloAccepted,
    MessageReceived,
    ProtocolError,
    RebootRequested,
    SeedSession,
    handshake_headers,
)
from xiaozhi_sim.identity import make_identity
from xiaozhi_sim.mcp_server import McpServer, device_tools
from xiaozhi_sim.model import DeviceModel
from xiaozhi_sim.state import DeviceState

SERVER_HELLO = {
    "type": "hello",
    "transport": "websocket",
    "session_id": "s-1",
    "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60},
}


def make_session(
    version: int = 1, mode: ListenMode = ListenMode.AUTO
) -> tuple[FirmwareSession, DeviceModel]:
    identity = make_identity(name="session")
    model = DeviceModel(identity)
    model.machine.go(DeviceState.IDLE)
    mcp = McpServer(identity.board, identity.firmware_version)
    mcp.add_tools(device_tools(model, identity.system_info))
    return FirmwareSession(identity, model, mcp, version=version, mode=mode), model


def texts(session: FirmwareSession | SeedSession) -> list[dict[str, Any]]:
    return [jsonutil.loads_object(m) for m in session.data_to_send() if isinstance(m, str)]


def open_session(version: int = 1, mode: ListenMode = ListenMode.AUTO) -> FirmwareSession:
    session, _ = make_session(version, mode)
    session.begin_connect(0.0)
    session.connected(0.0)
    session.data_to_send()
    session.receive_text(jsonutil.dumps_text(SERVER_HELLO), 0.5)
    session.events_received()
    return session


def test_handshake_headers_follow_the_firmware() -> None:
    identity = make_identity(name="h")
    assert handshake_headers(identity, token="abc", version=3) == {
        "Protocol-Version": "3",
        "Device-Id": identity.mac,
        "Client-Id": identity.client_id,
        "Authorization": "Bearer abc",
    }
    with_scheme = handshake_headers(identity, token="Token xyz", version=1)
    assert with_scheme["Authorization"] == "Token xyz"  # a token with a space is sent as is
    assert "Authorization" not in handshake_headers(identity, token="", version=1)
    assert identity.mac.count(":") == 5
    assert identity.mac == identity.mac.lower()


@pytest.mark.parametrize("version", [1, 2, 3])
def test_the_hello_is_the_first_frame_and_a_say_waits_for_the_server_hello(version: int) -> None:
    session, model = make_session(version)
    session.say("turn on the light", 0.0)  # woken by a typed command: nothing to send yet
    assert session.data_to_send() == []
    session.begin_connect(0.0)
    assert model.state is DeviceState.CONNECTING
    session.connected(0.1)
    assert texts(session) == [
        {
            "type": "hello",
            "version": version,
            "transport": "websocket",
            "features": {"mcp": True},
            "audio_params": {
                "format": "opus",
                "sample_rate": 16000,
                "channels": 1,
                "frame_duration": 60,
            },
        }
    ]
    session.receive_text(jsonutil.dumps_text(SERVER_HELLO), 0.2)
    assert session.events_received() == [HelloAccepted("s-1", 16000, 60)]
    assert model.state is DeviceState.LISTENING
    # The pending typed command goes out now, carrying the session id the server gave.
    assert texts(session) == [
        {"session_id": "s-1", "type": "listen", "state": "detect", "text": "turn on the light"}
    ]


def test_realtime_mode_announces_aec() -> None:
    session, _ = make_session(mode=ListenMode.REALTIME)
    assert session.hello().features is not None
    assert session.hello().to_json_dict()["features"] == {"mcp": True, "aec": True}


def test_server_hello_defaults_and_refusals() -> None:
    session, _ = make_session()
    session.begin_connect(0)
    session.connected(0)
    session.receive_text('{"type":"hello","transport":"udp","session_id":"x"}', 1)
    (refused,) = session.events_received()
    assert isinstance(refused, ProtocolError)
    assert "transport" in str(refused.error)
    assert not session.channel_open
    # No audio_params: firmware defaults to 24 kHz / 60 ms, and QA hears about it.
    session.receive_text('{"type":"hello","transport":"websocket"}', 2)
    events = session.events_received()
    assert isinstance(events[0], ProtocolError)
    assert events[1] == HelloAccepted(None, 24000, 60)
    assert session.channel_open
    # A second hello on an open channel changes nothing but is reported as a message.
    session.receive_text(jsonutil.dumps_text(SERVER_HELLO), 3)
    assert isinstance(session.events_received()[0], MessageReceived)


def test_hello_timeout_after_ten_seconds() -> None:
    session, model = make_session()
    session.begin_connect(0.0)
    session.connected(0.0)
    assert session.next_deadline() == 10.0
    session.tick(9.99)
    assert session.close_requested is None
    session.tick(10.0)
    assert session.events_received() == [ChannelTimeout("hello")]
    assert session.close_requested == "server timeout"
    session.channel_closed(10.0)
    assert model.state is DeviceState.IDLE
    assert session.next_deadline() is None


def test_silence_timeout_after_120_seconds_of_nothing_received() -> None:
    session = open_session()
    assert session.next_deadline() == 120.5
    session.receive_text('{"type":"stt","text":"hi"}', 60.0)  # any frame refreshes the timer
    session.events_received()
    assert session.next_deadline() == 180.0
    session.tick(179.9)
    assert session.close_requested is None
    session.tick(180.0)
    assert session.events_received() == [ChannelTimeout("silence")]
    assert session.close_requested == "silence timeout"


@pytest.mark.parametrize(
    ("mode", "after_stop"),
    [
        (ListenMode.AUTO, DeviceState.LISTENING),
        (ListenMode.REALTIME, DeviceState.LISTENING),
        (ListenMode.MANUAL, DeviceState.IDLE),
    ],
)
def test_tts_start_speaks_and_tts_stop_returns_per_mode(
    mode: ListenMode, after_stop: DeviceState
) -> None:
    session = open_session(mode=mode)
    model = session.model
    session.receive_text('{"type":"tts","state":"start"}', 1)
    assert model.state is DeviceState.SPEAKING
    session.receive_text('{"type":"tts","state":"sentence_start","text":"Done."}', 1)
    assert model.last_response == "Done."
    session.receive_text('{"type":"tts","state":"stop"}', 2)
    assert model.state is after_stop


def test_audio_is_played_only_while_speaking_and_the_queue_holds_2_4_seconds() -> None:
    session = open_session(version=3)
    session.receive_binary(encode_opus(b"\x01", 3), 1.0)
    assert session.events_received() == [AudioDropped("not_speaking")]
    session.receive_text('{"type":"tts","state":"start"}', 1.0)
    session.events_received()
    for _ in range(MAX_DECODE_PACKETS + 2):  # a server that does not pace its audio
        session.receive_binary(encode_opus(b"\x02", 3), 1.0)
    events = session.events_received()
    assert sum(isinstance(e, AudioReceived) for e in events) == MAX_DECODE_PACKETS
    assert events[-2:] == [AudioDropped("queue_full")] * 2
    assert session.dropped_packets == 3
    # 60 ms later one packet has played, so one more fits.
    session.receive_binary(encode_opus(b"\x03", 3), 1.06)
    assert isinstance(session.events_received()[0], AudioReceived)


def test_v2_uplink_timestamp_echoes_the_last_played_downlink_packet() -> None:
    session = open_session(version=2)
    assert session.uplink_timestamp(1.0) == 0  # nothing played yet
    session.receive_text('{"type":"tts","state":"start"}', 1.0)
    for index in range(3):
        session.receive_binary(encode_opus(b"\x05", 2, timestamp_ms=5000 + 60 * index), 1.0)
    # Playback of packet n starts at 1.0 + 0.06 n.
    assert session.uplink_timestamp(1.0) == 5000
    assert session.uplink_timestamp(1.07) == 5060
    assert session.uplink_timestamp(1.5) == 5120
    assert session.queued_packets == 0
    assert session.audio_frame(b"\x09\x09", 1.5)
    (frame,) = session.data_to_send()
    assert isinstance(frame, bytes)
    assert decode_frame(frame, 2) == BinaryFrame(FrameType.OPUS, b"\x09\x09", 5120)


@pytest.mark.parametrize("version", [1, 3])
def test_v1_and_v3_uplink_carry_no_timestamp(version: int) -> None:
    session = open_session(version=version)
    assert session.audio_frame(b"\x07", 1.0)
    (frame,) = session.data_to_send()
    assert isinstance(frame, bytes)
    assert decode_frame(frame, version).payload == b"\x07"
    assert frame == encode_opus(b"\x07", version)


def test_bad_server_frames_become_protocol_errors_never_exceptions() -> None:
    session = open_session(version=2)
    for bad in ("{not json", '{"type":"nope"}', '{"type":"tts"}', "[1]"):
        session.receive_text(bad, 1)
    session.receive_binary(b"\x00\x02", 1)  # truncated v2 header
    session.receive_binary(encode_frame(BinaryFrame(FrameType.JSON, b"{oops"), 2), 1)
    events = session.events_received()
    assert len(events) == 6
    assert all(isinstance(e, ProtocolError) for e in events)
    assert session.channel_open


def test_json_in_a_binary_frame_is_read_as_a_message() -> None:
    session = open_session(version=2)
    frame = encode_frame(BinaryFrame(FrameType.JSON, b'{"type":"stt","text":"hi"}'), 2)
    session.receive_binary(frame, 1)
    (event,) = session.events_received()
    assert isinstance(event, MessageReceived)


def test_mcp_requests_are_answered_on_the_channel_with_the_session_id() -> None:
    session = open_session()
    request = {
        "type": "mcp",
        "payload": {
            "jsonrpc": "2.0",
            "id": 4,
            "method": "tools/call",
            "params": {"name": "self.audio_speaker.set_volume", "arguments": {"volume": 55}},
        },
    }
    session.receive_text(jsonutil.dumps_text(request), 1)
    assert texts(session) == [
        {
            "session_id": "s-1",
            "type": "mcp",
            "payload": {
                "jsonrpc": "2.0",
                "id": 4,
                "result": {"content": [{"type": "text", "text": "true"}], "isError": False},
            },
        }
    ]
    assert session.model.volume == 55
    # A string id is dropped silently: nothing is sent.
    request["payload"]["id"] = "5"
    session.receive_text(jsonutil.dumps_text(request), 1)
    assert session.data_to_send() == []


def test_reboot_by_system_message_or_mcp_tool() -> None:
    session = open_session()
    session.receive_text('{"type":"system","command":"reboot"}', 1)
    assert RebootRequested() in session.events_received()
    assert session.close_requested == "reboot"
    other = open_session()
    call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "self.reboot"}}
    other.receive_text(jsonutil.dumps_text({"type": "mcp", "payload": call}), 1)
    assert RebootRequested() in other.events_received()


def test_alert_llm_and_seed_response_reach_the_model() -> None:
    session = open_session()
    model = session.model
    session.receive_text('{"type":"alert","status":"warn","message":"Door","emotion":"sad"}', 1)
    session.receive_text('{"type":"llm","emotion":"happy","text":"x"}', 1)
    session.receive_text('{"type":"response","data":{"text":"Hello"}}', 1)
    session.receive_text('{"type":"goodbye","session_id":"s-1"}', 1)  # ignored on WS
    assert model.last_alert == {"status": "warn", "message": "Door", "emotion": "sad"}
    assert model.last_emotion == "happy"
    assert model.last_response == "Hello"
    assert session.channel_open


def test_saying_while_speaking_aborts_first_and_listen_start_stop() -> None:
    session = open_session(mode=ListenMode.MANUAL)
    session.receive_text('{"type":"tts","state":"start"}', 1)
    session.say("stop", 1.5)
    assert [m["type"] for m in texts(session)] == ["abort", "listen"]
    session.start_listening(2)
    session.stop_listening(3)
    assert texts(session) == [
        {"session_id": "s-1", "type": "listen", "state": "start", "mode": "manual"},
        {"session_id": "s-1", "type": "listen", "state": "stop"},
    ]
    session.channel_closed(4)
    assert not session.audio_frame(b"\x01", 4)


def test_seed_session_registers_talks_and_beats() -> None:
    identity = make_identity(name="seed")
    model = DeviceModel(identity)
    session = SeedSession(identity, model)
    session.connected(0.0, timestamp="2026-01-01T00:00:00.000Z")
    (register,) = texts(session)
    assert register["type"] == "device_register"
    assert register["data"]["hardware_info"] == {
        "chip_model": "ESP32-S3",
        "chip_revision": "0",
        "cpu_freq": 240,
        "flash_size": 16777216,
        "psram_size": 8388608,
    }
    session.say("turn on the light", 1.0)
    (voice,) = texts(session)
    assert voice["type"] == "voice_command"
    assert voice["data"]["command"] == "turn on the light"
    assert voice["data"]["language"] == "en"
    assert model.state is DeviceState.LISTENING
    session.heartbeat(30.0)
    beat = texts(session)
    assert [m["type"] for m in beat] == ["ping", "sensor", "sensor", "sensor"]
    assert beat[0]["data"]["uptime"] == 30
    assert {m["data"]["sensor_type"] for m in beat[1:]} == {
        "temperature",
        "humidity",
        "audio_level",
    }
    session.receive_text('{"type":"response","data":{"text":"On."}}', 31)
    assert model.last_response == "On."
    assert model.state is DeviceState.IDLE
    session.receive_text("{bad", 31)
    session.receive_binary(b"\x01", 31)
    kinds = [type(e).__name__ for e in session.events_received()]
    assert kinds == ["MessageReceived", "ProtocolError", "AudioDropped"]
