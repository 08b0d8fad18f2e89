"""A device's utterance streamed to the speech worker that claims it (edge/streaming.py),
through the sans-I/O session: offered at its first frame, sent in numbered batches once
claimed, kept until the worker says ``received``, and sent whole whenever streaming fails
(no claim, refused, no ``received`` in time, the device gone)."""

from __future__ import annotations

import orjson

from tests.edge.helpers import WALL, hello_text, make_session, ready_session, tone_packets
from xiaozhi.binary import encode_opus
from xiaozhi.payloads import (
    ClaimState,
    UtteranceChunk,
    UtteranceClaim,
    UtterancePayload,
    UtteranceStart,
)
from xiaozhi.topics import TopicTree
from xiaozhi_edge.outputs import Publish, Subscribe
from xiaozhi_edge.session import DeviceSession
from xiaozhi_edge.streaming import RECEIVED_TIMEOUT_SECONDS

T = TopicTree()
LISTEN = '{"type":"listen","state":"start","mode":"manual"}'
STOP = '{"type":"listen","state":"stop"}'


def _session() -> tuple[DeviceSession, list[object]]:
    out: list[object] = []
    session = ready_session(forward_utterances=True, stream_utterances=True)
    out += session.on_text(LISTEN, 0.2, WALL)
    return session, out


def _publishes(outputs: list[object], topic: str) -> list[bytes]:
    return [o.payload for o in outputs if isinstance(o, Publish) and o.topic == topic]


def _frames(session: DeviceSession, packets: list[bytes], now: float) -> list[object]:
    out: list[object] = []
    for packet in packets:
        out += session.on_binary(encode_opus(packet, 1), now, WALL)
    return out


def _claim(session: DeviceSession, message_id: str, state: ClaimState, now: float) -> list:
    claim = UtteranceClaim(
        device_id=session.device_id or "", message_id=message_id, worker_id="w-1", state=state
    )
    return session.on_claim(claim.to_wire(), now, WALL)


def test_a_claimed_utterance_goes_in_batches_to_its_worker_and_is_kept_until_received() -> None:
    session, out = _session()
    device = session.device_id or ""
    assert session.stream_utterances
    subscribed = [f for o in _ready_outputs() for f in o.filters]
    assert T.utterance_claim(device) in subscribed
    packets = tone_packets(1200)  # 20 frames of 60 ms
    out = _frames(session, packets[:3], 1.0)
    (offer,) = _publishes(out, T.utterance_start(device))
    start = UtteranceStart.from_wire(offer)
    assert (start.mode, start.frame_duration_ms, start.edge_id) == ("manual", 60, "edge-1")
    stream = T.utterance_stream(device, "w-1")
    out = _claim(session, start.message_id, ClaimState.CLAIMED, 1.1)
    out += _frames(session, packets[3:], 1.2)
    out += session.on_text(STOP, 2.0, WALL)
    chunks = [UtteranceChunk.from_wire(p) for p in _publishes(out, stream)]
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert [c.final for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[0].opus_packets() == packets[:3]  # what was said before the claim
    assert all(len(c.frames) == 4 for c in chunks[1:-1])  # 240 ms batches
    assert [p for c in chunks for p in c.opus_packets()] == packets
    assert chunks[-1].reason == "stop"
    assert _publishes(out, T.utterance(device)) == []  # not sent whole
    assert _claim(session, start.message_id, ClaimState.RECEIVED, 2.1) == []
    assert session.on_timer(2.0 + RECEIVED_TIMEOUT_SECONDS, WALL) == []  # forgotten


def _ready_outputs() -> list[Subscribe]:
    """What a streaming session subscribes to when the device says hello."""
    session = make_session(header_version=1, forward_utterances=True, stream_utterances=True)
    return [o for o in session.on_text(hello_text(1, 60), 0.1, WALL) if isinstance(o, Subscribe)]


def test_an_unclaimed_utterance_is_sent_whole_with_the_offered_message_id() -> None:
    session, _ = _session()
    device = session.device_id or ""
    packets = tone_packets(600)
    out = _frames(session, packets, 1.0)
    start = UtteranceStart.from_wire(_publishes(out, T.utterance_start(device))[0])
    out = session.on_text(STOP, 2.0, WALL)
    (whole,) = _publishes(out, T.utterance(device))
    utterance = UtterancePayload.from_wire(whole)
    assert (utterance.message_id, utterance.opus_packets()) == (start.message_id, packets)
    # A claim that comes after the end is ignored: the worker lets its stream expire.
    assert _claim(session, start.message_id, ClaimState.CLAIMED, 2.1) == []


def test_a_worker_that_refuses_or_never_answers_gets_the_utterance_sent_whole() -> None:
    session, _ = _session()
    device = session.device_id or ""
    packets = tone_packets(600)
    for answer in (ClaimState.REFUSED, None):
        out = _frames(session, packets[:2], 1.0)
        start = UtteranceStart.from_wire(_publishes(out, T.utterance_start(device))[0])
        _claim(session, start.message_id, ClaimState.CLAIMED, 1.1)
        _frames(session, packets[2:], 1.2)
        out = session.on_text(STOP, 2.0, WALL)
        assert _publishes(out, T.utterance(device)) == []
        if answer is not None:
            out = _claim(session, start.message_id, answer, 2.1)
        else:  # the worker died after the claim
            assert session.next_deadline() == 2.0 + RECEIVED_TIMEOUT_SECONDS
            assert session.on_timer(2.5, WALL) == []
            out = session.on_timer(2.0 + RECEIVED_TIMEOUT_SECONDS, WALL)
        (whole,) = _publishes(out, T.utterance(device))
        assert UtterancePayload.from_wire(whole).opus_packets() == packets
        session.on_text(LISTEN, 3.0, WALL)


def test_a_refusal_while_speaking_sends_the_rest_whole_and_a_lost_device_flushes() -> None:
    session, _ = _session()
    device = session.device_id or ""
    packets = tone_packets(600)
    out = _frames(session, packets[:2], 1.0)
    start = UtteranceStart.from_wire(_publishes(out, T.utterance_start(device))[0])
    _claim(session, start.message_id, ClaimState.CLAIMED, 1.1)
    _claim(session, start.message_id, ClaimState.REFUSED, 1.2)
    out = _frames(session, packets[2:], 1.3)
    assert _publishes(out, T.utterance_stream(device, "w-1")) == []
    out = session.on_text(STOP, 2.0, WALL)
    assert len(_publishes(out, T.utterance(device))) == 1
    # Ended and claimed, then the device goes: what was not received is sent whole.
    session.on_text(LISTEN, 3.0, WALL)
    out = _frames(session, packets, 3.1)
    start = UtteranceStart.from_wire(_publishes(out, T.utterance_start(device))[0])
    _claim(session, start.message_id, ClaimState.CLAIMED, 3.2)
    session.on_text(STOP, 3.5, WALL)
    out = session.on_close(3.6, WALL)
    assert len(_publishes(out, T.utterance(device))) == 1
    assert orjson.loads(_publishes(out, T.utterance(device))[0])["message_id"] == start.message_id
