"""EdgeLimits, TokenBucket, EventWindow and the output values."""

from __future__ import annotations

import pytest

from xiaozhi.topics import TopicKind
from xiaozhi_edge.limits import EdgeLimits, EventWindow, TokenBucket
from xiaozhi_edge.outputs import Close, CloseCode, PlayAudio, Publish, SendText, StopAudio


def test_limit_defaults() -> None:
    limits = EdgeLimits()
    assert limits.max_frame_bytes == 65536
    assert (limits.max_messages_per_second, limits.burst_messages) == (50.0, 100)
    assert (limits.hello_timeout_seconds, limits.idle_timeout_seconds) == (10.0, 120.0)
    assert limits.max_utterance_seconds == 15.0
    assert limits.max_reassembly_bytes == 1024 * 1024
    assert limits.mcp_call_timeout_seconds == 10.0


def test_limits_list_every_bad_field() -> None:
    with pytest.raises(
        ValueError, match=r"max_frame_bytes=0, .*burst_messages=-1, .*silence_ms=True"
    ):
        EdgeLimits(max_frame_bytes=0, burst_messages=-1, silence_ms=True)


def test_token_bucket_refills_with_time_and_caps_at_burst() -> None:
    bucket = TokenBucket(2.0, 3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.tokens(0.5) == pytest.approx(1.0)
    assert bucket.take(0.5)
    assert not bucket.take(0.5)
    assert bucket.tokens(100.0) == 3.0
    assert bucket.tokens(50.0) == 3.0  # a clock stepping back refills nothing
    assert not bucket.take(100.0, cost=4)


def test_token_bucket_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(0, 1, now=0.0)
    with pytest.raises(ValueError, match="burst >= 1"):
        TokenBucket(1, 0, now=0.0)


def test_event_window_trips_at_the_threshold_within_the_window() -> None:
    window = EventWindow(3, 10.0)
    assert [window.record(t) for t in (0.0, 1.0)] == [False, False]
    assert window.record(2.0)
    assert window.count(2.0) == 3
    assert window.count(11.5) == 1
    slow = EventWindow(3, 1.0)
    assert not any(slow.record(t) for t in (0.0, 2.0, 4.0, 6.0))
    with pytest.raises(ValueError, match="threshold >= 1"):
        EventWindow(0, 1.0)


def test_publish_takes_qos_and_retain_from_the_topic_kind() -> None:
    status = Publish.of(TopicKind.STATUS, "xiaozhi/status/x", b"{}")
    assert (status.qos, status.retain) == (1, True)
    sensor = Publish.of(TopicKind.SENSOR, "xiaozhi/sensors/x/t", b"{}")
    assert (sensor.qos, sensor.retain) == (0, True)
    event = Publish.of(TopicKind.VOICE_COMMAND_EVENTS, "xiaozhi/events/voice_command", b"{}")
    assert (event.qos, event.retain) == (1, False)
    with pytest.raises(ValueError, match="qos 2"):
        Publish("t", b"", 2, False)


def test_play_audio_and_close_check_themselves() -> None:
    play = PlayAudio((b"a", b"b"), 60, 5, then=(SendText("x"),))
    assert play.duration_ms == 120
    with pytest.raises(ValueError, match="frame_duration_ms"):
        PlayAudio((), 0, 5)
    with pytest.raises(ValueError, match="prebuffer_frames"):
        PlayAudio((), 60, -1)
    assert Close(CloseCode.POLICY_VIOLATION, "flood").code == 1008
    with pytest.raises(ValueError, match="123 bytes"):
        Close(1000, "x" * 124)
    assert StopAudio() == StopAudio()
