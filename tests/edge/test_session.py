"""DeviceSession without sockets: literal text and bytes in, outputs asserted (style.md §1)."""

from __future__ import annotations

import array
import base64
import json
from typing import Any

import opuslib
import orjson
import pytest

from tests.seed_samples import SEED_PING as SEED_003_PING
from xiaozhi.binary import BinaryFrame, FrameType, decode_frame, encode_frame, encode_opus
from xiaozhi.errors import InvalidTopic, UnsupportedVersion
from xiaozhi.payloads import AudioClip, UtterancePayload
from xiaozhi.topics import TopicTree
from xiaozhi.wav import UPLINK_FORMAT, WavFormat, decode_wav, encode_wav
from xiaozhi_edge.counters import EdgeCounters
from xiaozhi_edge.identity import ConnectionIdentity
from xiaozhi_edge.limits import EdgeLimits
from xiaozhi_edge.outputs import (
    Close,
    Output,
    PlayAudio,
    Publish,
    SendText,
    StopAudio,
    Subscribe,
    Unsubscribe,
)
from xiaozhi_edge.session import (
    DeviceKind,
    DeviceSession,
    SessionState,
)
from xiaozhi_edge.utterances import ToneSynthesizer, Utterance

from .helpers import (
    DEVICE_ID,
    MAC,
    SEED_REGISTER,
    SESSION_ID,
    WALL,
    close_of,
    error_codes,
    hello_text,
    make_session,
    of_type,
    opus_packets,
    pcm_tone,
    published,
    ready_seed_session,
    ready_session,
    sent,
    silence_packets,
    tone_packets,
)

VOICE_TOPIC = "xiaozhi/events/voice_command"
EVENTS = f"xiaozhi/events/{DEVICE_ID}"
STATUS = f"xiaozhi/status/{DEVICE_ID}"


def feed(
    session: DeviceSession, packets: list[bytes], version: int, now: float, frame_ms: int = 60
) -> tuple[list[Any], float]:
    """Send Opus packets as binary frames of ``version``, one per frame duration."""
    outputs: list[Any] = []
    for packet in packets:
        now += frame_ms / 1000
        outputs += session.on_binary(encode_opus(packet, version), now, WALL)
    return outputs, now


def listen(session: DeviceSession, state: str, now: float, **extra: str) -> list[Any]:
    message = {"session_id": SESSION_ID, "type": "listen", "state": state, **extra}
    return session.on_text(orjson.dumps(message).decode(), now, WALL)


def command(session: DeviceSession, name: str, /, now: float = 1.0, **parameters: Any) -> list[Any]:
    message_id = parameters.pop("message_id", f"cmd-{name}")
    payload = {"command": name, "parameters": parameters, "message_id": message_id}
    return session.on_command(orjson.dumps(payload), now, WALL)


def mcp_requests(outputs: list[Any]) -> list[dict[str, Any]]:
    return [m["payload"] for m in sent(outputs) if m["type"] == "mcp"]


def mcp_reply(session: DeviceSession, payload: dict[str, Any], now: float = 1.0) -> list[Any]:
    message = {"session_id": SESSION_ID, "type": "mcp", "payload": {"jsonrpc": "2.0", **payload}}
    return session.on_text(orjson.dumps(message).decode(), now, WALL)


# -- identity ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"), [(None, None), ("", None), ("0", None), ("1", 1), (" 2 ", 2), (3, 3)]
)
def test_identity_from_handshake_reads_the_version_header(header: Any, expected: Any) -> None:
    identity = ConnectionIdentity.from_handshake(MAC, client_id="uuid-1", protocol_version=header)
    assert identity.device_id == DEVICE_ID
    assert identity.raw_device_id == MAC
    assert identity.client_id == "uuid-1"
    assert identity.protocol_version == expected
    assert identity.authenticated is False


@pytest.mark.parametrize("header", ["4", "v2", "-1", True])
def test_identity_refuses_unknown_versions(header: Any) -> None:
    with pytest.raises(UnsupportedVersion):
        ConnectionIdentity.from_handshake(MAC, protocol_version=header)


def test_identity_refuses_bad_device_ids() -> None:
    with pytest.raises(InvalidTopic):
        ConnectionIdentity.from_handshake("a/b")
    with pytest.raises(InvalidTopic):
        ConnectionIdentity.from_handshake("broadcast")


# -- hello ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
def test_hello_fixes_the_version_from_the_header(version: int) -> None:
    counters = EdgeCounters()
    session = make_session(header_version=version, counters=counters)
    outputs = session.on_text(hello_text(version), 0.5, WALL)
    assert session.state is SessionState.READY
    assert session.kind is DeviceKind.FIRMWARE
    assert session.binary_version == version
    assert counters.version_conflicts == 0
    server_hello = sent(outputs)[0]
    assert server_hello == {
        "type": "hello",
        "session_id": SESSION_ID,
        "transport": "websocket",
        "audio_params": {
            "format": "opus",
            "sample_rate": 16000,
            "channels": 1,
            "frame_duration": 60,
        },
    }


@pytest.mark.parametrize("version", [1, 2, 3])
def test_hello_version_is_used_without_a_header(version: int) -> None:
    session = make_session()
    session.on_text(hello_text(version), 0.5, WALL)
    assert session.binary_version == version


@pytest.mark.parametrize(("header", "hello"), [(1, 3), (2, 3), (3, 1)])
def test_the_header_wins_over_a_disagreeing_hello(header: int, hello: int) -> None:
    counters = EdgeCounters()
    session = make_session(header_version=header, counters=counters)
    session.on_text(hello_text(hello), 0.5, WALL)
    assert session.binary_version == header
    assert counters.version_conflicts == 1


def test_no_version_anywhere_means_version_1() -> None:
    session = make_session()
    session.on_text('{"type":"hello","transport":"websocket"}', 0.5, WALL)
    assert session.binary_version == 1
    session = make_session()
    session.on_text('{"type":"hello","version":0}', 0.5, WALL)
    assert session.binary_version == 1


@pytest.mark.parametrize("version", [1, 2, 3])
def test_binary_frames_decode_with_the_fixed_version(version: int) -> None:
    """Audio framed in the negotiated version ends up in the utterance, for each version."""
    utterances: list[Utterance] = []
    session = ready_session(version, on_utterance=utterances.append)
    listen(session, "start", 1.0, mode="manual")
    outputs, now = feed(session, tone_packets(600), version, 1.0)
    assert error_codes(outputs) == []
    listen(session, "stop", now + 0.1)
    assert len(utterances) == 1
    assert utterances[0].frames == 10


@pytest.mark.parametrize("duration", [20, 40, 60])
def test_frame_durations_20_40_60_are_accepted(duration: int) -> None:
    session = make_session()
    outputs = session.on_text(hello_text(1, duration), 0.5, WALL)
    assert error_codes(outputs) == []
    assert session.frame_duration_ms == duration
    assert sent(outputs)[0]["audio_params"]["frame_duration"] == duration


def test_other_frame_durations_get_an_error_and_60() -> None:
    session = make_session()
    outputs = session.on_text(hello_text(1, 30), 0.5, WALL)
    errors = [m for m in sent(outputs) if m["type"] == "error"]
    assert errors[0]["data"]["details"] == {"code": 0x200, "field": "audio_params.frame_duration"}
    assert session.state is SessionState.READY
    assert session.frame_duration_ms == 60
    assert sent(outputs)[1]["audio_params"]["frame_duration"] == 60
    assert close_of(outputs) is None


def test_hello_subscribes_publishes_status_and_starts_mcp() -> None:
    session = make_session(header_version=2)
    outputs = session.on_text(hello_text(2), 0.5, WALL)
    assert of_type(outputs, Subscribe) == [
        Subscribe(("xiaozhi/commands/aabbccddeeff", "xiaozhi/commands/broadcast"))
    ]
    assert session.subscriptions == ("xiaozhi/commands/aabbccddeeff", "xiaozhi/commands/broadcast")
    status = [p for p in of_type(outputs, Publish) if p.topic == STATUS]
    assert len(status) == 1
    assert (status[0].qos, status[0].retain) == (1, True)
    assert orjson.loads(status[0].payload) == {
        "status": "connected",
        "device_id": DEVICE_ID,
        "timestamp": WALL,
        "transport": "websocket",
        "edge_id": "edge-1",
        "session_id": SESSION_ID,
        "protocol_version": 2,
        "device_kind": "firmware",
    }
    connected = [p for p in of_type(outputs, Publish) if p.topic.endswith("device_connected")]
    assert (connected[0].qos, connected[0].retain) == (1, False)
    event = orjson.loads(connected[0].payload)
    assert event["event_type"] == "device_connected"
    assert (event["device_id"], event["transport"], event["edge_id"]) == (
        DEVICE_ID,
        "websocket",
        "edge-1",
    )
    (initialize,) = mcp_requests(outputs)
    assert initialize["method"] == "initialize"
    assert initialize["id"] == 1
    assert initialize["params"]["protocolVersion"] == "2024-11-05"
    # The subscription first (the I/O layer holds what follows until the broker has it, so
    # a command sent the moment the device is greeted reaches it), then the server hello,
    # then everything else.
    assert isinstance(outputs[0], Subscribe)
    assert isinstance(outputs[1], SendText)
    assert orjson.loads(outputs[1].text)["type"] == "hello"


def test_hello_without_mcp_feature_sends_no_initialize() -> None:
    session = make_session()
    outputs = session.on_text('{"type":"hello","version":1,"features":{"mcp":false}}', 0.5, WALL)
    assert mcp_requests(outputs) == []
    assert session.features_mcp is False


def test_hello_without_device_id_closes_1008() -> None:
    session = make_session(no_identity=True)
    outputs = session.on_text(hello_text(1), 0.5, WALL)
    assert error_codes(outputs) == ["MISSING_REQUIRED_FIELDS"]
    assert close_of(outputs) == Close(1008, "device id required")
    assert session.state is SessionState.ERROR


def test_a_second_hello_gets_the_same_answer() -> None:
    session = ready_session(3)
    outputs = session.on_text(hello_text(1), 2.0, WALL)
    assert sent(outputs) == [
        {
            "type": "hello",
            "session_id": SESSION_ID,
            "transport": "websocket",
            "audio_params": {
                "format": "opus",
                "sample_rate": 16000,
                "channels": 1,
                "frame_duration": 60,
            },
        }
    ]
    assert session.binary_version == 3
    assert of_type(outputs, Subscribe) == []


# -- listen: typed commands and wake words ------------------------------------------------


def test_listen_detect_text_is_a_voice_command_on_the_shared_topic() -> None:
    counters = EdgeCounters()
    session = ready_session(counters=counters, language="en")
    outputs = listen(session, "detect", 1.0, text="Turn on the living room light")
    shared = [p for p in of_type(outputs, Publish) if p.topic == VOICE_TOPIC]
    assert len(shared) == 1
    assert (shared[0].qos, shared[0].retain) == (1, False)
    assert orjson.loads(shared[0].payload) == {
        "event_type": "voice_command",
        "device_id": DEVICE_ID,
        "timestamp": WALL,
        "command": "Turn on the living room light",
        "confidence": 1.0,
        "language": "en",
        "session_id": SESSION_ID,
        "transport": "websocket",
        "edge_id": "edge-1",
        "message_id": "msg-1",
    }
    per_device = published(outputs, EVENTS)
    assert per_device[0]["event_type"] == "voice_command"
    assert counters.voice_commands == 1


@pytest.mark.parametrize("text", ["你好小智", "  Hi ESP ", "hi lexin!"])
def test_listen_detect_wake_word_is_a_wake_word_event(text: str) -> None:
    session = ready_session()
    outputs = listen(session, "detect", 1.0, text=text)
    assert published(outputs, VOICE_TOPIC) == []
    (event,) = published(outputs, EVENTS)
    assert event["event_type"] == "wake_word"
    assert event["wake_word"] == text.strip()


def test_listen_detect_without_text_does_nothing() -> None:
    session = ready_session()
    assert listen(session, "detect", 1.0) == []
    assert listen(session, "detect", 1.0, text="   ") == []


def test_custom_wake_words() -> None:
    session = ready_session(wake_words=("Hey Jarvis",))
    outputs = listen(session, "detect", 1.0, text="hey   jarvis")
    assert published(outputs, EVENTS)[0]["event_type"] == "wake_word"


# -- uplink audio -----------------------------------------------------------------------


def test_manual_listen_start_stop_gives_an_utterance_of_the_right_duration() -> None:
    """A real 440 Hz tone, encoded by opuslib, arrives as 1.2 s of PCM."""
    utterances: list[Utterance] = []
    counters = EdgeCounters()
    session = ready_session(2, counters=counters, on_utterance=utterances.append)
    assert listen(session, "start", 1.0, mode="manual") == []
    assert session.listening
    outputs, now = feed(session, tone_packets(1200), 2, 1.0)
    assert outputs == []
    outputs = listen(session, "stop", now)
    (event,) = published(outputs, EVENTS)
    assert event["event_type"] == "utterance"
    assert event["duration_ms"] == 1200
    assert event["frames"] == 20
    assert event["dropped_frames"] == 0
    assert event["reason"] == "stop"
    assert event["mode"] == "manual"
    assert event["source"] == "opus"
    (utterance,) = utterances
    assert len(utterance.pcm) == 16000 * 2 * 12 // 10
    samples = array.array("h", utterance.pcm)
    assert max(samples) > 5000  # the tone survived the codec
    assert counters.utterances == 1
    assert not session.listening


def test_a_finished_utterance_is_forwarded_to_speech_as_the_opus_the_device_sent() -> None:
    """One message per utterance on xiaozhi/utterances/{id}: whole, so a shared speech group
    never splits a device's audio (design.md sections 8 and 10)."""
    session = ready_session(3, forward_utterances=True)
    listen(session, "start", 1.0, mode="manual")
    packets = tone_packets(600)
    outputs, now = feed(session, packets, 3, 1.0)
    assert outputs == []
    outputs = listen(session, "stop", now)
    (forwarded,) = [p for p in of_type(outputs, Publish) if "/utterances/" in p.topic]
    assert forwarded.topic == f"xiaozhi/utterances/{DEVICE_ID}"
    assert (forwarded.qos, forwarded.retain) == (1, False)
    utterance = UtterancePayload.from_wire(forwarded.payload)
    assert utterance.opus_packets() == packets
    assert (utterance.sample_rate, utterance.frame_duration_ms, utterance.duration_ms) == (
        16000,
        60,
        600,
    )
    assert (utterance.device_id, utterance.session_id, utterance.mode, utterance.reason) == (
        DEVICE_ID,
        SESSION_ID,
        "manual",
        "stop",
    )
    assert (utterance.edge_id, utterance.language, utterance.transport) == (
        "edge-1",
        "en",
        "websocket",
    )


def test_auto_mode_forwards_the_pre_roll_with_the_speech() -> None:
    session = ready_session(1, forward_utterances=True)
    listen(session, "start", 1.0, mode="auto")
    packets = silence_packets(300) + tone_packets(900) + silence_packets(1200)
    outputs, _ = feed(session, packets, 1, 1.0)
    (forwarded,) = published(outputs, f"xiaozhi/utterances/{DEVICE_ID}")
    frames = forwarded["frames"]
    assert forwarded["reason"] == "silence"
    # the kept packets are a run of what was sent: pre-roll, speech, closing silence
    sent = [base64.b64encode(p).decode() for p in packets]
    start = sent.index(frames[0])
    assert sent[start : start + len(frames)] == frames
    assert forwarded["duration_ms"] == len(frames) * 60


def test_utterances_are_not_forwarded_when_forwarding_is_off() -> None:
    session = ready_session(1)
    listen(session, "start", 1.0, mode="manual")
    _, now = feed(session, tone_packets(300), 1, 1.0)
    outputs = listen(session, "stop", now)
    assert published(outputs, f"xiaozhi/utterances/{DEVICE_ID}") == []
    assert published(outputs, EVENTS)[0]["event_type"] == "utterance"


def test_auto_mode_segments_by_silence() -> None:
    session = ready_session(1)
    listen(session, "start", 1.0, mode="auto")
    packets = silence_packets(300) + tone_packets(900) + silence_packets(1200)
    outputs, now = feed(session, packets, 1, 1.0)
    (event,) = published(outputs, EVENTS)
    assert event["reason"] == "silence"
    assert event["mode"] == "auto"
    # pre-roll (300 ms) + 900 ms of tone + 600 ms of closing silence (+/- codec tail)
    assert 1620 <= event["duration_ms"] <= 1860
    # Still listening: the next sentence is a new utterance.
    assert session.listening
    outputs, now = feed(session, tone_packets(600) + silence_packets(900), 1, now)
    assert [e["reason"] for e in published(outputs, EVENTS)] == ["silence"]


def test_audio_while_not_listening_is_dropped_and_counted() -> None:
    counters = EdgeCounters()
    session = ready_session(3, counters=counters)
    outputs, _ = feed(session, tone_packets(180), 3, 1.0)
    assert outputs == []
    assert counters.dropped_audio_frames == 3


def test_manual_utterance_over_the_limit_drops_frames() -> None:
    counters = EdgeCounters()
    session = ready_session(1, counters=counters, limits=EdgeLimits(max_utterance_seconds=0.6))
    listen(session, "start", 1.0, mode="manual")
    _, now = feed(session, tone_packets(900), 1, 1.0)
    (event,) = published(listen(session, "stop", now), EVENTS)
    assert (event["reason"], event["frames"], event["dropped_frames"]) == ("limit", 10, 5)
    assert counters.dropped_audio_frames == 5


def test_a_corrupt_opus_frame_is_an_error_and_loses_nothing_else() -> None:
    counters = EdgeCounters()
    session = ready_session(1, counters=counters)
    listen(session, "start", 1.0, mode="manual")
    good = tone_packets(300)
    outputs, now = feed(session, [*good[:2], b"\xff\xff\xff", *good[2:]], 1, 1.0)
    assert error_codes(outputs) == ["INVALID_DATA_FORMAT"]
    assert "Opus packet of 3 B does not decode" in sent(outputs)[0]["data"]["error_message"]
    (event,) = published(listen(session, "stop", now), EVENTS)
    assert (event["frames"], event["decode_errors"]) == (5, 1)


def test_new_listen_start_ends_the_previous_utterance() -> None:
    session = ready_session(1)
    listen(session, "start", 1.0, mode="manual")
    _, now = feed(session, tone_packets(300), 1, 1.0)
    outputs = listen(session, "start", now, mode="manual")
    assert published(outputs, EVENTS)[0]["reason"] == "stop"


def test_v2_json_frame_is_handled_like_a_text_frame() -> None:
    session = ready_session(2)
    payload = b'{"type":"listen","state":"detect","text":"what time is it"}'
    outputs = session.on_binary(encode_frame(BinaryFrame(FrameType.JSON, payload), 2), 1.0, WALL)
    assert published(outputs, VOICE_TOPIC)[0]["command"] == "what time is it"


# -- respond, tts and abort --------------------------------------------------------------


@pytest.mark.parametrize(("version", "duration"), [(1, 60), (2, 20), (3, 40)])
def test_respond_sends_stt_tts_and_paced_audio_then_tts_stop(version: int, duration: int) -> None:
    counters = EdgeCounters()
    session = ready_session(version, duration, counters=counters)
    outputs = command(
        session, "respond", text="The light is on", stt="turn on the light", emotion="happy"
    )
    texts = sent(outputs)
    assert texts == [
        {"type": "stt", "session_id": SESSION_ID, "text": "turn on the light"},
        {"type": "llm", "session_id": SESSION_ID, "emotion": "happy"},
        {"type": "tts", "session_id": SESSION_ID, "state": "start"},
        {
            "type": "tts",
            "session_id": SESSION_ID,
            "state": "sentence_start",
            "text": "The light is on",
        },
    ]
    (play,) = of_type(outputs, PlayAudio)
    assert outputs.index(play) > max(outputs.index(o) for o in of_type(outputs, SendText))
    assert play.frame_duration_ms == duration
    assert play.prebuffer_frames == 5
    # tts stop waits for the audio: it is the playback's `then`, not an immediate send.
    assert play.then == (SendText('{"type":"tts","session_id":"sess-1","state":"stop"}'),)
    # 4 words x 80 ms = 320 ms, padded to whole frames
    assert play.duration_ms == -(-320 // duration) * duration
    decoder = opuslib.Decoder(16000, 1)
    timestamps = []
    for frame_bytes in play.frames:
        frame = decode_frame(frame_bytes, version)
        assert frame.type is FrameType.OPUS
        timestamps.append(frame.timestamp_ms)
        pcm = decoder.decode(frame.payload, 16 * duration)
        assert len(pcm) == 16 * duration * 2
    if version == 2:
        assert timestamps == [i * duration for i in range(len(play.frames))]
    result = published(outputs, EVENTS)[-1]
    assert result == {
        "event_type": "command_result",
        "device_id": DEVICE_ID,
        "command": "respond",
        "status": "ok",
        "message_id": "cmd-respond",
        "result": "delivered",
        "timestamp": WALL,
    }
    assert counters.commands_delivered == 1


def _spoken(ms: int = 600, frame_ms: int = 60) -> dict[str, Any]:
    """A respond ``audio`` clip: a real Opus tone, as the hub's text-to-speech sends it."""
    clip = AudioClip.from_opus(
        opus_packets(pcm_tone(330, ms), frame_ms), sample_rate=16000, frame_duration_ms=frame_ms
    )
    return clip.to_json_dict()


def test_respond_plays_the_hubs_speech_packets_as_sent() -> None:
    session = ready_session(3, 60)
    audio = _spoken(600)
    outputs = command(session, "respond", text="The light is on", audio=audio)
    (play,) = of_type(outputs, PlayAudio)
    payloads = [decode_frame(frame, 3).payload for frame in play.frames]
    assert payloads == [base64.b64decode(f) for f in audio["frames"]]
    assert play.duration_ms == 600
    assert published(outputs, EVENTS)[-1]["status"] == "ok"


def test_respond_speech_is_reframed_for_a_device_on_20_ms_frames() -> None:
    session = ready_session(1, 20)
    outputs = command(session, "respond", text="The light is on", audio=_spoken(600, 60))
    (play,) = of_type(outputs, PlayAudio)
    assert (play.frame_duration_ms, len(play.frames)) == (20, 30)
    decoder = opuslib.Decoder(16000, 1)
    pcm = b"".join(decoder.decode(decode_frame(f, 1).payload, 320) for f in play.frames)
    samples = array.array("h", pcm)
    assert max(samples) > 3000  # the tone, not silence


@pytest.mark.parametrize(
    ("frame_ms", "bad_frame", "error"),
    [
        (60, "not base64!", "frames[1] is not base64"),
        # A 20 ms device needs the 60 ms packets decoded: a corrupt one is found there.
        (20, base64.b64encode(b"\xff" * 40).decode(), "opus packet 1 does not decode"),
    ],
)
def test_respond_with_undecodable_speech_plays_nothing_and_fails(
    frame_ms: int, bad_frame: str, error: str
) -> None:
    session = ready_session(1, frame_ms)
    audio = _spoken(180)
    audio["frames"][1] = bad_frame
    outputs = command(session, "respond", text="The light is on", audio=audio)
    assert of_type(outputs, PlayAudio) == []
    assert sent(outputs) == []
    (result,) = published(outputs, EVENTS)
    assert result["status"] == "error"
    assert error in result["error"]


def test_seed_respond_carries_the_speech_as_a_wav_file() -> None:
    session = ready_seed_session()
    outputs = command(session, "respond", text="Done.", audio=_spoken(300))
    (response,) = sent(outputs)
    fmt, pcm = decode_wav(base64.b64decode(response["data"]["audio_data"]))
    assert fmt == UPLINK_FORMAT
    assert len(pcm) == 300 * 16 * 2
    assert max(array.array("h", pcm)) > 3000


def test_abort_stops_audio_and_sends_tts_stop_once() -> None:
    session = ready_session(1)
    command(session, "respond", text="a long answer")
    outputs = session.on_text(
        '{"session_id":"sess-1","type":"abort","reason":"wake_word_detected"}', 2.0, WALL
    )
    assert isinstance(outputs[0], StopAudio)
    assert sent(outputs) == [{"type": "tts", "session_id": SESSION_ID, "state": "stop"}]
    (event,) = published(outputs, EVENTS)
    assert (event["event_type"], event["reason"]) == ("abort", "wake_word_detected")


def test_alert_command_becomes_the_firmware_alert_message() -> None:
    session = ready_session(1)
    outputs = command(session, "alert", status="Warning", message="Door open", emotion="sad")
    assert sent(outputs) == [
        {
            "type": "alert",
            "session_id": SESSION_ID,
            "status": "Warning",
            "message": "Door open",
            "emotion": "sad",
        }
    ]
    assert published(outputs, EVENTS)[0]["status"] == "ok"


# -- MCP ------------------------------------------------------------------------------


def _tools(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "description": n, "inputSchema": {"type": "object"}} for n in names]


def mcp_ready(**kwargs: Any) -> DeviceSession:
    """A firmware session whose MCP initialize and tools/list are answered."""
    session = ready_session(1, **kwargs)
    mcp_reply(
        session,
        {
            "id": 1,
            "result": {
                "protocolVersion": "2024-11-05",
                "serverInfo": {"name": "esp-hi", "version": "2.0.1"},
            },
        },
    )
    mcp_reply(
        session,
        {
            "id": 2,
            "result": {
                "tools": _tools(
                    "self.get_device_status",
                    "self.audio_speaker.set_volume",
                    "self.light.turn_on",
                    "self.light.turn_off",
                    "self.reboot",
                )
            },
        },
    )
    return session


def test_mcp_initialize_then_tools_list_following_next_cursor() -> None:
    session = ready_session(1)
    outputs = mcp_reply(
        session,
        {
            "id": 1,
            "result": {
                "protocolVersion": "2024-11-05",
                "serverInfo": {"name": "esp-hi", "version": "2.0.1"},
            },
        },
    )
    (tools_list,) = mcp_requests(outputs)
    assert tools_list == {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/list",
        "params": {"cursor": "", "withUserTools": True},
    }
    status = published(outputs, STATUS)[0]
    assert (status["board"], status["firmware_version"]) == ("esp-hi", "2.0.1")
    outputs = mcp_reply(
        session,
        {
            "id": 2,
            "result": {
                "tools": _tools("self.get_device_status"),
                "nextCursor": "self.light.turn_on",
            },
        },
    )
    (page_two,) = mcp_requests(outputs)
    assert page_two["params"] == {"cursor": "self.light.turn_on", "withUserTools": True}
    assert published(outputs) == []
    before: list[Output] = []
    assert not session.announce_tools(before)  # half a listing: nothing to announce again
    assert before == []
    outputs = mcp_reply(
        session, {"id": page_two["id"], "result": {"tools": _tools("self.light.turn_on")}}
    )
    assert mcp_requests(outputs) == []
    (event,) = published(outputs, EVENTS)
    assert event["event_type"] == "mcp_tools"
    assert event["tools"] == ["self.get_device_status", "self.light.turn_on"]
    # For a hub replica that comes online later (edge/monitor.py): the same event again.
    again: list[Output] = []
    assert session.announce_tools(again)
    assert published(again, EVENTS) == [event]


def test_set_volume_is_an_mcp_tools_call_and_its_result_an_event() -> None:
    session = mcp_ready()
    outputs = command(session, "set_volume", volume=40, message_id="m-vol")
    (call,) = mcp_requests(outputs)
    assert call["method"] == "tools/call"
    assert isinstance(call["id"], int)
    assert call["params"] == {"name": "self.audio_speaker.set_volume", "arguments": {"volume": 40}}
    assert published(outputs) == []  # the result comes with the device's answer
    outputs = mcp_reply(
        session,
        {
            "id": call["id"],
            "result": {"content": [{"type": "text", "text": "true"}], "isError": False},
        },
    )
    (result,) = published(outputs, EVENTS)
    assert result["event_type"] == "command_result"
    assert (result["command"], result["status"], result["message_id"]) == (
        "set_volume",
        "ok",
        "m-vol",
    )
    assert (result["result"], result["tool"]) == ("true", "self.audio_speaker.set_volume")


def test_get_status_result_is_parsed_json() -> None:
    session = mcp_ready()
    (call,) = mcp_requests(command(session, "get_status"))
    assert call["params"]["name"] == "self.get_device_status"
    text = '{"audio_speaker":{"volume":40}}'
    outputs = mcp_reply(
        session, {"id": call["id"], "result": {"content": [{"type": "text", "text": text}]}}
    )
    assert published(outputs, EVENTS)[0]["result"] == {"audio_speaker": {"volume": 40}}


def test_mcp_error_without_code_is_a_failed_result() -> None:
    session = mcp_ready()
    (call,) = mcp_requests(command(session, "led", on=False))
    assert call["params"] == {"name": "self.light.turn_off", "arguments": {}}
    outputs = mcp_reply(
        session, {"id": call["id"], "error": {"message": "Unknown tool: self.light.turn_off"}}
    )
    (result,) = published(outputs, EVENTS)
    assert (result["status"], result["error"]) == ("error", "Unknown tool: self.light.turn_off")


def test_mcp_call_timeout_becomes_a_failed_result() -> None:
    counters = EdgeCounters()
    session = mcp_ready(counters=counters)
    (call,) = mcp_requests(command(session, "led", now=5.0, on=True))
    assert call["params"]["name"] == "self.light.turn_on"
    assert session.next_deadline() == 15.0
    assert session.on_timer(14.9, WALL) == []
    outputs = session.on_timer(15.0, WALL)
    (result,) = published(outputs, EVENTS)
    assert result["status"] == "error"
    assert result["error"] == "no answer to self.light.turn_on within 10 s"
    assert counters.mcp_timeouts == 1
    # A late answer is ignored.
    assert mcp_reply(session, {"id": call["id"], "result": {"content": []}}, 16.0) == []


def test_mcp_initialize_timeout_is_an_error_event() -> None:
    session = ready_session(1)
    outputs = session.on_timer(10.1, WALL)
    (event,) = published(outputs, EVENTS)
    assert (event["event_type"], event["source"], event["method"]) == ("error", "mcp", "initialize")
    assert event["error_message"] == "no answer within 10 s"
    # A device that refuses initialize: same event, its message.
    session = ready_session(1)
    outputs = mcp_reply(session, {"id": 1, "error": {"message": "Method not implemented"}})
    assert published(outputs, EVENTS)[0]["error_message"] == "Method not implemented"


def test_reboot_uses_the_mcp_tool_when_listed_else_system_reboot() -> None:
    session = mcp_ready()
    (call,) = mcp_requests(command(session, "reboot"))
    assert call["params"]["name"] == "self.reboot"
    session = make_session()
    session.on_text('{"type":"hello","version":1}', 0.5, WALL)
    outputs = command(session, "reboot")
    assert sent(outputs) == [{"type": "system", "session_id": SESSION_ID, "command": "reboot"}]
    assert published(outputs, EVENTS)[0]["result"] == "delivered"


def test_device_functions_without_mcp_fail() -> None:
    session = make_session()
    session.on_text('{"type":"hello","version":1}', 0.5, WALL)
    for name, params in [
        ("set_volume", {"volume": 5}),
        ("led", {"on": True}),
        ("mcp_call", {"name": "x"}),
    ]:
        outputs = command(session, name, **params)
        (result,) = published(outputs, EVENTS)
        assert result["status"] == "error"
        assert result["error"] == "device did not announce MCP (features.mcp)"
    outputs = command(session, "get_status")
    assert published(outputs, STATUS)[0]["status"] == "connected"
    assert published(outputs, EVENTS)[0]["result"] == "status published"


def test_tools_missing_from_a_complete_list_are_refused() -> None:
    session = mcp_ready()
    outputs = command(
        session, "mcp_call", name="self.camera.take_photo", arguments={"question": "?"}
    )
    (result,) = published(outputs, EVENTS)
    assert result["error"] == "device has no MCP tool 'self.camera.take_photo'"
    outputs = command(session, "mcp_call", name="self.light.turn_on", message_id="x2")
    (call,) = mcp_requests(outputs)
    assert call["params"] == {"name": "self.light.turn_on", "arguments": {}}


def test_tools_are_tried_while_the_list_is_unknown() -> None:
    session = ready_session(1)  # initialize not answered yet
    (call,) = mcp_requests(command(session, "set_volume", volume=10))
    assert call["params"]["name"] == "self.audio_speaker.set_volume"


def test_too_many_pending_mcp_calls_fail_at_once() -> None:
    session = mcp_ready(limits=EdgeLimits(max_pending_mcp_calls=1))
    command(session, "set_volume", volume=1, message_id="a")
    outputs = command(session, "set_volume", volume=2, message_id="b")
    (result,) = published(outputs, EVENTS)
    assert "already pending" in result["error"]


def test_unknown_command_for_firmware_fails() -> None:
    session = ready_session(1)
    (result,) = published(command(session, "dance"), EVENTS)
    assert (result["status"], result["error"]) == (
        "error",
        "unsupported command 'dance' for a firmware device",
    )


def test_device_notifications_are_ignored() -> None:
    session = ready_session(1)
    assert mcp_reply(session, {"method": "notifications/state_changed", "params": {}}) == []


# -- commands: validation, duplicates, groups --------------------------------------------


def test_bad_command_json_is_an_error_event_not_a_device_reply() -> None:
    counters = EdgeCounters()
    session = ready_session(1, counters=counters)
    outputs = session.on_command(b"{not json", 1.0, WALL)
    assert sent(outputs) == []
    (event,) = published(outputs, EVENTS)
    assert (event["event_type"], event["source"], event["error_code"]) == (
        "error",
        "command",
        "INVALID_DATA_FORMAT",
    )
    assert counters.errors == {"INVALID_DATA_FORMAT": 1}


def test_bad_parameters_are_a_failed_result_naming_the_field() -> None:
    session = ready_session(1)
    (result,) = published(command(session, "set_volume", volume=300), EVENTS)
    assert result["status"] == "error"
    assert "parameters.volume" in result["error"]


def test_a_redelivered_command_is_handled_once() -> None:
    counters = EdgeCounters()
    session = ready_session(1, counters=counters)
    assert command(session, "alert", status="s", message="m", message_id="same") != []
    assert command(session, "alert", status="s", message="m", message_id="same") == []
    assert counters.duplicate_commands == 1
    for n in range(200):  # the window is bounded
        command(session, "alert", status="s", message="m", message_id=f"id-{n}")
    assert command(session, "alert", status="s", message="m", message_id="same") != []


def test_commands_before_hello_are_ignored() -> None:
    session = make_session()
    assert command(session, "respond", text="hi") == []


def test_groups_are_subscribed_beside_own_and_broadcast() -> None:
    session = make_session(header_version=1)
    assert session.on_groups(["kitchen", "Bad Group"], 0.0, WALL) == []
    outputs = session.on_text(hello_text(1), 0.5, WALL)
    assert of_type(outputs, Subscribe)[0].filters == (
        "xiaozhi/commands/aabbccddeeff",
        "xiaozhi/commands/broadcast",
        "xiaozhi/commands/group/kitchen",
    )
    outputs = session.on_groups(["upstairs"], 1.0, WALL)
    assert outputs == [
        Unsubscribe(("xiaozhi/commands/group/kitchen",)),
        Subscribe(("xiaozhi/commands/group/upstairs",)),
    ]
    assert session.on_groups(["upstairs"], 1.0, WALL) == []


# -- seed 003 clients --------------------------------------------------------------------

SEED_ID = "esp32_device_001"
SEED_EVENTS = f"xiaozhi/events/{SEED_ID}"


def test_seed_register_answers_subscribes_and_publishes_status() -> None:
    session = make_session(no_identity=True)
    outputs = session.on_text(SEED_REGISTER, 0.5, WALL)
    assert session.state is SessionState.READY
    assert session.kind is DeviceKind.SEED
    assert session.device_id == SEED_ID
    assert sent(outputs) == [
        {
            "type": "response",
            "data": {
                "text": "registered",
                "device_id": SEED_ID,
                "actions": [],
                "status": "registered",
                "session_id": SESSION_ID,
            },
            "timestamp": WALL,
            "device_id": SEED_ID,
        }
    ]
    assert of_type(outputs, Subscribe)[0].filters == (
        f"xiaozhi/commands/{SEED_ID}",
        "xiaozhi/commands/broadcast",
    )
    (status,) = published(outputs, f"xiaozhi/status/{SEED_ID}")
    assert status["firmware_version"] == "1.0.0"
    assert status["device_type"] == "esp32s3"
    assert status["capabilities"] == ["audio_input", "audio_output", "wifi"]
    assert status["hardware_info"]["chip_model"] == "ESP32-S3"
    assert status["device_kind"] == "seed"


def test_seed_register_must_match_the_handshake_identity() -> None:
    session = make_session(header_version=None)
    outputs = session.on_text(SEED_REGISTER, 0.5, WALL)
    assert error_codes(outputs) == ["PERMISSION_DENIED"]
    assert close_of(outputs) == Close(1008, "device id mismatch")
    matching = make_session(ConnectionIdentity.from_handshake("ESP32_DEVICE_001"))
    matching.on_text(SEED_REGISTER, 0.5, WALL)
    assert matching.state is SessionState.READY
    # Registering again is answered again; a different id is refused.
    assert sent(matching.on_text(SEED_REGISTER, 1.0, WALL))[0]["data"]["status"] == "registered"
    other = SEED_REGISTER.replace("esp32_device_001", "esp32_device_002")
    assert close_of(matching.on_text(other, 1.5, WALL)) == Close(1008, "device id mismatch")


def test_seed_register_with_an_invalid_id_is_an_error() -> None:
    session = make_session(no_identity=True)
    outputs = session.on_text(SEED_REGISTER.replace("esp32_device_001", "esp32/001"), 0.5, WALL)
    assert sent(outputs)[0]["data"]["details"]["field"] == "data.device_id"
    assert session.state is SessionState.AWAIT_HELLO


SEED_PING = json.dumps({**json.loads(SEED_003_PING), "message_id": "p1"})


def test_seed_ping_republishes_status_with_telemetry_and_pongs() -> None:
    session = ready_seed_session()
    outputs = session.on_text(SEED_PING, 1.0, WALL)
    (status,) = published(outputs, f"xiaozhi/status/{SEED_ID}")
    assert {
        k: status[k] for k in ("uptime", "memory_usage", "cpu_usage", "wifi_signal", "free_heap")
    } == {
        "uptime": 3600,
        "memory_usage": 65,
        "cpu_usage": 45,
        "wifi_signal": -45,
        "free_heap": 204800,
    }
    assert status["status"] == "connected"
    assert sent(outputs) == [
        {"type": "pong", "timestamp": WALL, "device_id": SEED_ID, "message_id": "p1"}
    ]
    assert "message_id" not in sent(session.on_text('{"type":"ping","data":{}}', 2.0, WALL))[0]


def test_seed_sensor_is_republished_retained_qos0() -> None:
    session = ready_seed_session()
    text = '{"type":"sensor","data":{"sensor_type":"temperature","value":22.5,"unit":"celsius"}}'
    outputs = session.on_text(text, 1.0, WALL)
    (publish,) = of_type(outputs, Publish)
    assert publish.topic == f"xiaozhi/sensors/{SEED_ID}/temperature"
    assert (publish.qos, publish.retain) == (0, True)
    assert orjson.loads(publish.payload) == {
        "sensor_type": "temperature",
        "value": 22.5,
        "device_id": SEED_ID,
        "unit": "celsius",
        "timestamp": WALL,
    }


def test_seed_voice_command_keeps_confidence_and_language() -> None:
    session = ready_seed_session()
    text = """{
        "type": "voice_command",
        "data": {
            "device_id": "esp32_device_001",
            "command": "turn on the living room light",
            "confidence": 0.95,
            "language": "en",
            "processing_time_ms": 1200,
            "audio_duration_ms": 1500
        },
        "timestamp": "2024-01-01T00:00:00Z",
        "message_id": "v1"
    }"""
    outputs = session.on_text(text, 1.0, WALL)
    (event,) = published(outputs, VOICE_TOPIC)
    assert (event["command"], event["confidence"], event["language"]) == (
        "turn on the living room light",
        0.95,
        "en",
    )
    assert (event["message_id"], event["processing_time_ms"], event["audio_duration_ms"]) == (
        "v1",
        1200,
        1500,
    )
    empty = '{"type":"voice_command","data":{"command":"  "}}'
    assert sent(session.on_text(empty, 1.1, WALL))[0]["data"]["details"]["field"] == "data.command"


def _wav(ms: int) -> bytes:
    return encode_wav(pcm_tone(440, ms), UPLINK_FORMAT)


def _audio_data(chunk: bytes, **fields: Any) -> str:
    data = {"data": base64.b64encode(chunk).decode(), **fields}
    return orjson.dumps({"type": "audio_data", "data": data}).decode()


def test_seed_audio_data_single_wav_is_an_utterance() -> None:
    utterances: list[Utterance] = []
    session = ready_seed_session(on_utterance=utterances.append)
    outputs = session.on_text(_audio_data(_wav(1500), duration_ms=1500), 1.0, WALL)
    (event,) = published(outputs, SEED_EVENTS)
    assert (event["event_type"], event["source"], event["duration_ms"]) == (
        "utterance",
        "audio_data",
        1500,
    )
    assert len(utterances[0].pcm) == 48000


def test_seed_audio_data_is_forwarded_to_speech_as_pcm() -> None:
    session = ready_seed_session(forward_utterances=True)
    wav = _wav(1500)
    outputs = session.on_text(_audio_data(wav, duration_ms=1500), 1.0, WALL)
    (forwarded,) = published(outputs, f"xiaozhi/utterances/{SEED_ID}")
    utterance = UtterancePayload.from_obj(forwarded)
    assert (utterance.encoding, utterance.sample_rate, utterance.duration_ms) == (
        "pcm_s16le",
        16000,
        1500,
    )
    assert utterance.pcm_bytes() == wav[44:]


def test_seed_audio_data_chunks_reassemble_out_of_order() -> None:
    session = ready_seed_session()
    wav = _wav(1000)
    chunks = [wav[i : i + 10000] for i in range(0, len(wav), 10000)]
    assert len(chunks) == 4
    order = [3, 1, 4, 2]  # numbered from 1, as seed 003 does
    for n in order[:-1]:
        text = _audio_data(chunks[n - 1], stream_id="s1", chunk_number=n, total_chunks=4)
        assert session.on_text(text, 1.0, WALL) == []
    text = _audio_data(chunks[1], stream_id="s1", chunk_number=2, total_chunks=4)
    (event,) = published(session.on_text(text, 1.0, WALL), SEED_EVENTS)
    assert (event["duration_ms"], event["frames"], event["stream_id"]) == (1000, 4, "s1")


def test_seed_audio_data_other_wav_formats_give_events_but_no_pcm() -> None:
    utterances: list[Utterance] = []
    session = ready_seed_session(on_utterance=utterances.append)
    wav = encode_wav(bytes(22050 * 2), WavFormat(22050, 1, 16))
    (event,) = published(session.on_text(_audio_data(wav), 1.0, WALL), SEED_EVENTS)
    assert (event["sample_rate"], event["duration_ms"]) == (22050, 1000)
    assert utterances == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"audio_format": "mp3"}, "data.audio_format"),
        ({"compression": "zlib"}, "data.compression"),
        ({"stream_id": "s", "chunk_number": 1}, "data.total_chunks"),
        ({"stream_id": "s", "total_chunks": 2}, "data.chunk_number"),
        ({"stream_id": "s", "chunk_number": 1, "total_chunks": 5000}, "data.total_chunks"),
        ({"stream_id": "s", "chunk_number": 9, "total_chunks": 2}, "data.chunk_number"),
    ],
)
def test_seed_audio_data_refusals_name_the_field(fields: dict[str, Any], field: str) -> None:
    session = ready_seed_session()
    outputs = session.on_text(_audio_data(b"RIFF", **fields), 1.0, WALL)
    assert sent(outputs)[0]["data"]["details"]["field"] == field


def test_seed_audio_data_reassembly_is_bounded() -> None:
    limits = EdgeLimits(max_reassembly_bytes=20000, max_reassembly_streams=2)
    session = ready_seed_session(limits=limits)
    chunk = bytes(8000)
    for stream in ("a", "b", "c"):  # "a" is evicted when "c" opens
        session.on_text(
            _audio_data(chunk, stream_id=stream, chunk_number=1, total_chunks=3), 1.0, WALL
        )
    outputs = session.on_text(
        _audio_data(chunk, stream_id="c", chunk_number=2, total_chunks=3), 1.0, WALL
    )
    assert error_codes(outputs) == ["MESSAGE_TOO_LARGE"]
    assert "audio stream 24000 B > limit 20000 B" in sent(outputs)[0]["data"]["error_message"]
    # total_chunks may not change mid-stream
    outputs = session.on_text(
        _audio_data(chunk, stream_id="b", chunk_number=2, total_chunks=4), 1.0, WALL
    )
    assert sent(outputs)[0]["data"]["details"]["field"] == "data.total_chunks"
    # A resent chunk replaces the first copy.
    session.on_text(_audio_data(chunk, stream_id="d", chunk_number=0, total_chunks=2), 1.0, WALL)
    session.on_text(_audio_data(chunk, stream_id="d", chunk_number=0, total_chunks=2), 1.0, WALL)
    assert close_of(outputs) is None


def test_seed_commands_are_delivered_as_json() -> None:
    session = ready_seed_session()
    outputs = command(session, "turn_on_light", entity_id="light.living_room", brightness=255)
    assert sent(outputs) == [
        {
            "type": "command",
            "data": {
                "command": "turn_on_light",
                "parameters": {"entity_id": "light.living_room", "brightness": 255},
                "message_id": "cmd-turn_on_light",
            },
            "timestamp": WALL,
            "device_id": SEED_ID,
            "message_id": "cmd-turn_on_light",
        }
    ]
    (result,) = published(outputs, SEED_EVENTS)
    assert (result["status"], result["result"]) == ("ok", "delivered")


def test_seed_respond_is_a_response_envelope() -> None:
    session = ready_seed_session()
    action = {
        "type": "homeassistant",
        "action": "turn_on",
        "entity_id": "light.living_room",
        "parameters": {},
    }
    outputs = command(session, "respond", text="I'll turn on the light.", actions=[action])
    assert sent(outputs) == [
        {
            "type": "response",
            "data": {"text": "I'll turn on the light.", "device_id": SEED_ID, "actions": [action]},
            "timestamp": WALL,
            "device_id": SEED_ID,
            "message_id": "cmd-respond",
        }
    ]
    assert of_type(outputs, PlayAudio) == []


def test_device_error_messages_become_error_events() -> None:
    session = ready_seed_session()
    text = '{"type":"error","data":{"error_code":"AUDIO_PROCESSING_FAILED","error_message":"bad"}}'
    (event,) = published(session.on_text(text, 1.0, WALL), SEED_EVENTS)
    assert (event["event_type"], event["source"], event["error_code"]) == (
        "error",
        "device",
        "AUDIO_PROCESSING_FAILED",
    )


# -- timers and closing ------------------------------------------------------------------


def test_hello_timeout_closes() -> None:
    counters = EdgeCounters()
    session = make_session(counters=counters, now=100.0)
    assert session.next_deadline() == 110.0
    assert session.on_timer(109.9, WALL) == []
    assert session.on_timer(110.0, WALL) == [Close(1008, "hello timeout")]
    assert session.state is SessionState.ERROR
    assert session.next_deadline() is None
    assert counters.closes == {"hello timeout": 1}


def test_idle_timeout_closes_1001_and_any_frame_refreshes_it() -> None:
    session = ready_session(1)
    session.on_timer(11.0, WALL)  # expire the unanswered initialize
    assert session.next_deadline() == pytest.approx(120.1)
    listen(session, "detect", 100.0, text="hi esp")
    assert session.next_deadline() == 220.0
    assert session.on_timer(219.0, WALL) == []
    assert session.on_timer(220.0, WALL) == [Close(1001, "idle timeout")]


def test_commands_to_the_device_count_as_activity() -> None:
    session = ready_session(1)
    session.on_timer(11.0, WALL)
    command(session, "alert", now=110.0, status="s", message="m")
    assert session.next_deadline() == 230.0


def test_goodbye_closes_normally_and_later_input_is_ignored() -> None:
    session = ready_session(1)
    outputs = session.on_text('{"session_id":"sess-1","type":"goodbye"}', 1.0, WALL)
    assert outputs == [Close(1000, "goodbye")]
    assert session.state is SessionState.CLOSING
    assert session.on_text(hello_text(), 1.1, WALL) == []
    assert session.on_binary(b"\x00", 1.1, WALL) == []
    assert session.on_timer(500.0, WALL) == []
    (result,) = published(command(session, "respond", text="late"), EVENTS)
    assert (result["status"], result["error"]) == ("error", "device is disconnecting")


def test_a_device_that_breaks_the_rules_reaches_error_and_nothing_is_accepted_after() -> None:
    counters = EdgeCounters()
    session = ready_session(1, counters=counters)
    outputs: list[Output] = []
    for i in range(10):  # a garbage streak: 10 malformed frames within 10 s
        outputs += session.on_text("not json", 1.0 + i * 0.1, WALL)
    # What the device sees: an error reply for each frame, then the close, last.
    assert error_codes(outputs) == ["INVALID_DATA_FORMAT"] * 10
    assert outputs[-1] == Close(1008, "too many malformed frames")
    assert session.state is SessionState.ERROR
    assert session.next_deadline() is None
    # Nothing is accepted after: frames, a hello, a timer make nothing...
    assert session.on_text('{"type":"listen","state":"detect","text":"lights on"}', 2.0, WALL) == []
    assert session.on_text(hello_text(), 2.0, WALL) == []
    assert session.on_binary(b"\x00", 2.0, WALL) == []
    assert session.on_timer(500.0, WALL) == []
    # ...and a command is refused on the events topic, never sent on the socket.
    late = command(session, "respond", now=2.0, text="late")
    assert sent(late) == []
    (result,) = published(late, EVENTS)
    assert (result["status"], result["error"]) == ("error", "device is disconnecting")
    assert counters.errors == {"INVALID_DATA_FORMAT": 10}
    # The socket's end is the close the session sent, not a lost connection.
    gone = session.on_close(3.0, WALL)
    assert [p["status"] for p in published(gone, STATUS)] == ["disconnected"]
    assert session.state is SessionState.CLOSED
    assert counters.closes == {"too many malformed frames": 1}


def test_on_close_publishes_disconnected_and_unsubscribes() -> None:
    counters = EdgeCounters()
    session = mcp_ready(counters=counters)
    command(session, "set_volume", volume=3, message_id="pending")
    outputs = session.on_close(2.0, "T-close")
    results = [e for e in published(outputs, EVENTS) if e["event_type"] == "command_result"]
    assert [(r["message_id"], r["error"]) for r in results] == [("pending", "device disconnected")]
    (status,) = [p for p in of_type(outputs, Publish) if p.topic == STATUS]
    assert (status.qos, status.retain) == (1, True)
    assert orjson.loads(status.payload) == {
        "status": "disconnected",
        "device_id": DEVICE_ID,
        "timestamp": "T-close",
        "transport": "websocket",
        "edge_id": "edge-1",
        "session_id": SESSION_ID,
    }
    (event,) = published(outputs, "xiaozhi/events/device_disconnected")
    assert (event["event_type"], event["device_id"]) == ("device_disconnected", DEVICE_ID)
    assert of_type(outputs, Unsubscribe) == [
        Unsubscribe(("xiaozhi/commands/aabbccddeeff", "xiaozhi/commands/broadcast"))
    ]
    assert session.state is SessionState.CLOSED
    assert session.on_close(3.0, WALL) == []
    assert counters.closes == {"connection lost": 1}


def test_on_close_before_hello_publishes_nothing() -> None:
    session = make_session()
    assert session.on_close(1.0, WALL) == []
    assert session.state is SessionState.CLOSED


def test_counters_snapshot_sums_errors() -> None:
    counters = EdgeCounters()
    session = ready_session(1, counters=counters)
    session.on_text("nope", 1.0, WALL)
    session.on_text('{"type":"nope"}', 1.1, WALL)
    snapshot = counters.snapshot()
    assert snapshot["errors"] == {"INVALID_DATA_FORMAT": 1, "INVALID_MESSAGE_TYPE": 1}
    assert snapshot["errors_total"] == 2
    assert snapshot["frames_received"] == 3
    assert snapshot["text_messages"] == 3


def test_a_superseded_session_closes_without_marking_the_device_disconnected() -> None:
    counters = EdgeCounters()
    old = mcp_ready(counters=counters)
    command(old, "set_volume", volume=3, message_id="in-flight")
    assert old.supersede(5.0, WALL) == [Close(1000, "replaced by a new connection")]
    assert old.supersede(5.0, WALL) == []
    outputs = old.on_close(6.0, WALL)
    assert published(outputs, STATUS) == []
    assert published(outputs, "xiaozhi/events/device_disconnected") == []
    (result,) = published(outputs, EVENTS)
    assert result["error"] == "connection replaced"
    assert of_type(outputs, Unsubscribe) == [
        Unsubscribe(("xiaozhi/commands/aabbccddeeff", "xiaozhi/commands/broadcast"))
    ]
    assert counters.closes == {"replaced by a new connection": 1}


def _default_factory_session() -> DeviceSession:
    """A session built with the default id factories (no test seam)."""
    return DeviceSession(
        ConnectionIdentity.from_handshake(MAC),
        edge_id="edge-1",
        topics=TopicTree(),
        limits=EdgeLimits(),
        counters=EdgeCounters(),
        synthesizer=ToneSynthesizer(),
        now=0.0,
        wall=WALL,
    )


def test_the_default_session_id_is_32_hex_digits() -> None:
    session = _default_factory_session()
    session.on_text('{"type":"hello"}', 0.1, WALL)
    assert session.session_id is not None
    assert len(session.session_id) == 32
    int(session.session_id, 16)  # uuid4().hex


def test_a_hello_without_the_mcp_feature_starts_no_mcp_call() -> None:
    session = _default_factory_session()
    outputs = session.on_text('{"type":"hello"}', 0.1, WALL)
    assert mcp_requests(outputs) == []
    assert session.mcp.pending_count == 0


def test_listen_stop_with_nothing_said_publishes_nothing() -> None:
    session = ready_session(1)
    assert listen(session, "stop", 0.2) == []


def test_a_command_without_message_id_is_delivered_every_time() -> None:
    """Duplicates are recognised by message_id; without one, a repeat is a new command."""
    session = ready_session(1)
    payload = b'{"command":"alert","parameters":{"status":"s","message":"m"}}'
    for now in (0.3, 0.4):
        outputs = session.on_command(payload, now, WALL)
        assert [m["type"] for m in sent(outputs)] == ["alert"]
        assert [r["status"] for r in published(outputs, EVENTS)] == ["ok"]


def test_an_mcp_initialize_answer_without_server_info_leaves_the_board_unset() -> None:
    session = ready_session(1)
    outputs = mcp_reply(session, {"id": 1, "result": {}})
    assert published(outputs, STATUS)[0].get("board") is None


def test_goodbye_then_the_socket_closing_counts_one_close_as_goodbye() -> None:
    counters = EdgeCounters()
    seed = ready_seed_session(counters=counters)
    seed.on_text('{"type":"goodbye"}', 1.0, WALL)
    seed.on_close(1.1, WALL)
    assert counters.closes == {"goodbye": 1}


def test_seed_register_without_hardware_info() -> None:
    session = make_session(no_identity=True)
    text = (
        '{"type":"device_register",'
        '"data":{"device_id":"d1","device_type":"t","firmware_version":"1"}}'
    )
    outputs = session.on_text(text, 0.1, WALL)
    (status,) = published(outputs, "xiaozhi/status/d1")
    assert "hardware_info" not in status
    assert status["capabilities"] == []


def _third_party(*tools: dict[str, Any]) -> DeviceSession:
    """A firmware-protocol client whose MCP tools carry names of its own."""
    session = ready_session(1)
    mcp_reply(session, {"id": 1, "result": {"protocolVersion": "2024-11-05"}})
    mcp_reply(session, {"id": 2, "result": {"tools": list(tools)}})
    return session


def _schema(*properties: str) -> dict[str, Any]:
    return {"type": "object", "properties": {p: {"type": "integer"} for p in properties}}


@pytest.mark.parametrize(
    ("tools", "called"),
    [
        # by the last dotted segment of the firmware's name
        ([{"name": "set_volume", "inputSchema": _schema("volume")}], "set_volume"),
        ([{"name": "speaker.set_volume", "inputSchema": _schema("volume")}], "speaker.set_volume"),
        # by schema: the one tool taking exactly {"volume"}
        (
            [
                {"name": "volume", "inputSchema": _schema("volume")},
                {"name": "brightness", "inputSchema": _schema("brightness")},
            ],
            "volume",
        ),
    ],
)
def test_a_third_party_clients_own_tool_name_is_found(
    tools: list[dict[str, Any]], called: str
) -> None:
    session = _third_party(*tools)
    outputs = command(session, "set_volume", volume=40, message_id="v1")
    (call,) = mcp_requests(outputs)
    assert call["params"] == {"name": called, "arguments": {"volume": 40}}
    answer = mcp_reply(session, {"id": call["id"], "result": {"content": []}})
    (result,) = published(answer, EVENTS)
    assert (result["status"], result["tool"]) == ("ok", called)  # which tool was called


def test_no_guess_when_two_tools_fit_or_none_does() -> None:
    session = _third_party(
        {"name": "a.set_volume", "inputSchema": _schema("volume")},
        {"name": "b.set_volume", "inputSchema": _schema("volume")},
    )
    (result,) = published(command(session, "set_volume", volume=40), EVENTS)
    assert result["error"] == "device has no MCP tool 'self.audio_speaker.set_volume'"
    session = _third_party({"name": "play", "inputSchema": _schema("url")})
    (result,) = published(command(session, "led", on=True), EVENTS)
    assert result["error"] == "device has no MCP tool 'self.light.turn_on'"
    # An explicit mcp_call names its tool exactly: no matching.
    session = _third_party({"name": "set_volume", "inputSchema": _schema("volume")})
    outputs = command(session, "mcp_call", name="self.audio_speaker.set_volume")
    (result,) = published(outputs, EVENTS)
    assert result["error"] == "device has no MCP tool 'self.audio_speaker.set_volume'"
