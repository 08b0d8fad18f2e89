"""The live stream's server-side session (xiaozhi/stream_session.py), with real frames."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import pytest

from xiaozhi.errors import ErrorCode
from xiaozhi.stream_frame import (
    ALLOWED_FLAGS,
    Flag,
    MessageType,
    StreamMessage,
    StreamVersion,
    decode_message,
    encode_message,
)
from xiaozhi.stream_session import (
    MAX_FILTERS,
    Credentials,
    SessionState,
    StreamItem,
    StreamPolicy,
    StreamSession,
    Subscribed,
    topic_matches,
    valid_filter,
)

T0 = 1_800_000_000.0
NO_FLAGS = Flag(0)


def frame(
    kind: MessageType,
    data: Any,
    version: StreamVersion = StreamVersion.V3,
    flags: Flag = NO_FLAGS,
) -> bytes:
    ts = 1 if version >= StreamVersion.V3 else None
    return encode_message(StreamMessage(kind, data, version, flags, ts))


def sent(session: StreamSession, now: float = T0) -> list[StreamMessage]:
    return [decode_message(f) for f in session.frames(now)]


def opened(
    version: int = 3, *, ack: bool = False, topics: list[str] | None = None, **kwargs: Any
) -> StreamSession:
    session = StreamSession(
        check_credentials=lambda c: False, authenticated=True, policy=StreamPolicy(**kwargs)
    )
    session.start(T0)
    (hello,) = sent(session)
    assert hello.type is MessageType.PROTOCOL_NEGOTIATION
    assert hello.version == 1
    assert hello.data["auth"] == "header"
    v = StreamVersion(version)
    assert (
        session.receive(
            frame(MessageType.VERSION_CHECK, {"versions": [version], "ack": ack}, v), T0
        )
        == []
    )
    (answer,) = sent(session)
    assert answer.type is MessageType.VERSION_CHECK
    assert answer.data["version"] == version
    assert session.state is SessionState.OPEN
    if topics:
        assert session.receive(frame(MessageType.SUBSCRIBE, {"topics": topics}, v), T0) == [
            Subscribed(tuple(topics))
        ]
        (subscribed,) = sent(session)
        assert subscribed.type is MessageType.SUBSCRIPTION_ACK
    return session


def item(topic: str = "xiaozhi/status/a", **kwargs: Any) -> StreamItem:
    return StreamItem(MessageType.ECG_DATA, topic, {"topic": topic, "payload": {"x": 1}}, **kwargs)


def error_code(messages: list[StreamMessage]) -> int:
    (msg,) = messages
    assert msg.type is MessageType.ERROR
    return int(msg.data["code"])


@pytest.mark.parametrize(
    ("topic_filter", "ok"),
    [
        ("#", True),
        ("a/+/c", True),
        ("a/#", True),
        ("a/#/c", False),
        ("a+/b", False),
        ("a/b#", False),
        ("", False),
        (3, False),
        ("x" * 513, False),
    ],
)
def test_valid_filter(topic_filter: object, ok: bool) -> None:
    assert valid_filter(topic_filter) is ok


@pytest.mark.parametrize(
    ("topic_filter", "topic", "ok"),
    [
        ("#", "a/b", True),
        ("a/#", "a", True),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/b/c", "a/b", False),
        ("a/x", "a/b", False),
        ("a/b", "a/b", True),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, ok: bool) -> None:
    assert topic_matches(topic_filter, topic) is ok


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="queue_limit"):
        StreamPolicy(queue_limit=0)
    with pytest.raises(ValueError, match="timers"):
        StreamPolicy(heartbeat_seconds=0)


def test_negotiation_picks_the_highest_common_version_and_fixes_it() -> None:
    session = opened(2, topics=["xiaozhi/#"])
    assert session.version is StreamVersion.V2
    session.offer(item(priority=True, broadcast=True))
    (data,) = sent(session)
    assert data.version == 2
    assert data.flags == Flag(0)
    assert data.data == {"seq": 1, "topic": "xiaozhi/status/a", "payload": {"x": 1}}
    # A V3 frame on a V2 session is refused, and the session goes on.
    session.receive(frame(MessageType.PING, {}), T0)
    assert error_code(sent(session)) == ErrorCode.INVALID_PROTOCOL_VERSION
    # Renegotiating is refused with the seed's version error; the session keeps its version.
    for kind in (MessageType.PROTOCOL_NEGOTIATION, MessageType.VERSION_CHECK):
        session.receive(frame(kind, {"versions": [1]}, StreamVersion.V2), T0)
        (again,) = sent(session)
        assert again.data["code"] == ErrorCode.INVALID_PROTOCOL_VERSION
        assert "agreed (V2)" in again.data["message"]
    assert session.state is SessionState.OPEN
    assert session.version is StreamVersion.V2
    # A HEARTBEAT's "ack" is a data frame's int seq; without one it is only a keepalive.
    session.receive(frame(MessageType.HEARTBEAT, {"ack": "x"}, StreamVersion.V2), T0)
    assert error_code(sent(session)) == ErrorCode.INVALID_DATA_FORMAT
    session.receive(frame(MessageType.HEARTBEAT, {}, StreamVersion.V2), T0)
    assert sent(session) == []


def test_no_common_version_closes_with_0x100() -> None:
    session = StreamSession(check_credentials=lambda c: True, authenticated=True, versions=[3])
    session.start(T0)
    sent(session)
    session.receive(frame(MessageType.VERSION_CHECK, {"version": 1}, StreamVersion.V1), T0)
    (err,) = sent(session)
    assert err.type is MessageType.ERROR
    assert err.data["code"] == 0x100
    assert err.version == 1
    assert session.state is SessionState.CLOSED
    assert "INVALID_PROTOCOL_VERSION" in session.close_reason
    assert session.receive(frame(MessageType.PING, {}), T0) == []  # closed: ignored
    assert session.next_deadline() is None


def test_anything_before_the_version_check_is_refused_but_not_fatal() -> None:
    session = StreamSession(check_credentials=lambda c: True, authenticated=True)
    session.start(T0)
    sent(session)
    session.receive(frame(MessageType.SUBSCRIBE, {"topics": ["#"]}), T0)
    assert error_code(sent(session)) == ErrorCode.INVALID_MESSAGE_TYPE
    assert session.state is SessionState.NEGOTIATING
    assert not session.offer(item())  # not open: nothing queued


@pytest.mark.parametrize(
    ("authenticated", "code"),
    [(False, ErrorCode.AUTHENTICATION_FAILED), (True, ErrorCode.INVALID_PROTOCOL_VERSION)],
)
def test_a_client_that_does_not_negotiate_in_time_is_closed(
    authenticated: bool, code: ErrorCode
) -> None:
    """An idle socket may not stay open for free: the deadline is the session's own timer."""
    policy = StreamPolicy(negotiate_seconds=2)
    session = StreamSession(
        check_credentials=lambda c: True, authenticated=authenticated, policy=policy
    )
    session.start(T0)
    assert session.next_deadline() == T0 + 2
    sent(session)
    assert sent(session, T0 + 1.9) == []
    assert error_code(sent(session, T0 + 2)) == code
    assert session.state is SessionState.CLOSED
    assert session.timed_out
    assert session.next_deadline() is None
    # In time, the deadline is gone with the negotiation.
    session = StreamSession(check_credentials=lambda c: True, authenticated=True, policy=policy)
    session.start(T0)
    session.receive(frame(MessageType.VERSION_CHECK, {"versions": [3]}), T0 + 1)
    sent(session, T0 + 5)
    assert session.state is SessionState.OPEN


@pytest.mark.parametrize(
    ("data", "accepted"),
    [({"api_key": "good"}, True), ({"token": "jwt"}, True), ({"api_key": 5}, False), ({}, False)],
)
def test_credentials_in_the_version_check(data: dict[str, Any], accepted: bool) -> None:
    seen: list[Credentials] = []

    def check(credentials: Credentials) -> bool:
        seen.append(credentials)
        return credentials.api_key == "good" or credentials.token == "jwt"

    session = StreamSession(check_credentials=check, authenticated=False)
    session.start(T0)
    assert sent(session)[0].data["auth"] == "required"
    result = session.receive(frame(MessageType.VERSION_CHECK, {"versions": [3], **data}), T0)
    if accepted:
        assert result == seen
        assert session.state is SessionState.OPEN
        assert sent(session)[0].type is MessageType.VERSION_CHECK
    else:
        assert result == []
        assert session.state is SessionState.CLOSED
        assert error_code(sent(session)) == ErrorCode.AUTHENTICATION_FAILED


def test_a_bad_crc_gets_0x101_and_the_session_survives() -> None:
    session = opened(topics=["#"])
    good = bytearray(frame(MessageType.PING, {"n": 1}))
    good[-1] ^= 0xFF
    session.receive(bytes(good), T0)
    assert error_code(sent(session)) == ErrorCode.CHECKSUM_MISMATCH
    session.receive(frame(MessageType.PING, {"n": 2}), T0)
    (pong,) = sent(session)
    assert pong.type is MessageType.PONG
    assert pong.data == {"n": 2}
    assert pong.flags & Flag.PRIORITY
    assert session.stats.errors == 1
    assert session.stats.received == 4


def test_client_flags_and_types_that_are_refused() -> None:
    session = opened()
    session.receive(frame(MessageType.PING, {}, flags=Flag.BROADCAST), T0)
    assert error_code(sent(session)) == ErrorCode.PERMISSION_DENIED
    session.receive(frame(MessageType.ECG_DATA, {"x": 1}), T0)
    assert error_code(sent(session)) == ErrorCode.PERMISSION_DENIED
    session.receive(frame(MessageType.PING, {}, flags=Flag.ACK_REQUIRED), T0)
    assert error_code(sent(session)) == ErrorCode.MISSING_REQUIRED_FIELDS
    session.receive(frame(MessageType.PONG, {}), T0)
    session.receive(frame(MessageType.ERROR, {"code": 1}), T0)
    session.receive(frame(MessageType.HEARTBEAT, "alive"), T0)
    assert sent(session) == []


def test_ack_required_from_the_client_is_acknowledged() -> None:
    session = opened()
    session.receive(frame(MessageType.PING, {"seq": 7}, flags=Flag.ACK_REQUIRED), T0)
    ack, pong = sent(session)
    assert ack.type is MessageType.HEARTBEAT
    assert ack.data == {"ack": 7}
    assert pong.type is MessageType.PONG


def negotiating() -> StreamSession:
    session = StreamSession(check_credentials=lambda c: True, authenticated=True)
    session.start(T0)
    sent(session)
    return session


_VERSIONS = {"versions": [3]}
_TOPICS = {"topics": ["a/#"]}
#: Every client frame type with ACK_REQUIRED: its payload (a "seq" is added), and what follows
#: the ack, while negotiating and once open (an ERROR's code, or the answer's type, or nothing).
ACK_CASES: list[tuple[MessageType, dict[str, Any], object, object]] = [
    (MessageType.VERSION_CHECK, _VERSIONS, MessageType.VERSION_CHECK, 0x100),
    (MessageType.PROTOCOL_NEGOTIATION, _VERSIONS, MessageType.VERSION_CHECK, 0x100),
    (MessageType.SUBSCRIBE, _TOPICS, 0x104, MessageType.SUBSCRIPTION_ACK),
    (MessageType.UNSUBSCRIBE, _TOPICS, 0x104, MessageType.SUBSCRIPTION_ACK),
    (MessageType.PING, {}, 0x104, MessageType.PONG),
    (MessageType.HEARTBEAT, {}, 0x104, None),
    (MessageType.PONG, {}, 0x104, None),
    (MessageType.ERROR, {"code": 1}, 0x104, None),
    (MessageType.SUBSCRIPTION_ACK, {}, 0x104, 0x203),
    (MessageType.ECG_DATA, {}, 0x104, 0x203),
    (MessageType.ANOMALY_ALERT, {}, 0x104, 0x203),
    (MessageType.PREDICTION_RESULT, {}, 0x104, 0x203),
    (MessageType.FEATURE_DATA, {}, 0x104, 0x203),
]


def test_the_ack_cases_cover_every_message_type() -> None:
    assert {case[0] for case in ACK_CASES} == set(MessageType)


@pytest.mark.parametrize("state", ["negotiating", "open"])
@pytest.mark.parametrize(("kind", "data", "while_negotiating", "once_open"), ACK_CASES)
def test_every_frame_with_ack_required_is_acked_first_in_every_state(
    state: str,
    kind: MessageType,
    data: dict[str, Any],
    while_negotiating: object,
    once_open: object,
) -> None:
    """One rule: a verified ACK_REQUIRED frame gets HEARTBEAT {"ack": seq} before anything
    else it is answered with, refusals included; without an int seq, 0x201 and nothing else."""
    session = negotiating() if state == "negotiating" else opened()
    expected = while_negotiating if state == "negotiating" else once_open
    session.receive(frame(kind, {**data, "seq": 9}, flags=Flag.ACK_REQUIRED), T0)
    ack, *rest = sent(session)
    assert ack.type is MessageType.HEARTBEAT
    assert ack.data == {"ack": 9}
    assert ack.version == (1 if state == "negotiating" else 3)  # the framing of the moment
    if expected is None:
        assert rest == []
    elif isinstance(expected, MessageType):
        assert [m.type for m in rest] == [expected]
    else:
        assert error_code(rest) == expected
    # No seq to acknowledge: refused with 0x201, and the frame is not handled at all.
    before = session.state
    session.receive(frame(kind, data, flags=Flag.ACK_REQUIRED), T0)
    assert error_code(sent(session)) == ErrorCode.MISSING_REQUIRED_FIELDS
    assert session.state is before


def test_refused_frames_are_acked_before_their_error_and_closed_sessions_ack_nothing() -> None:
    session = opened(2)
    # A V3 frame on a V2 session: intact, so acked (in V2 framing), then refused with 0x100.
    session.receive(frame(MessageType.PING, {"seq": 1}, flags=Flag.ACK_REQUIRED), T0)
    ack, err = sent(session)
    assert (ack.data, ack.version, ack.flags) == ({"ack": 1}, 2, NO_FLAGS)
    assert err.data["code"] == ErrorCode.INVALID_PROTOCOL_VERSION
    # ACK_REQUIRED in a V2 frame is not a V2 flag: refused by the codec (0x200), no ack.
    v2 = StreamMessage(MessageType.PING, {"seq": 2}, StreamVersion.V2, Flag.ACK_REQUIRED)
    raw = bytearray(encode_message(StreamMessage(MessageType.PING, {"seq": 2}, StreamVersion.V2)))
    raw[2] = int(v2.flags)
    session.receive(bytes(raw), T0)
    assert error_code(sent(session)) == ErrorCode.INVALID_DATA_FORMAT
    session = opened()
    flags = Flag.ACK_REQUIRED | Flag.BROADCAST
    session.receive(frame(MessageType.PING, {"seq": 3}, flags=flags), T0)
    ack, err = sent(session)
    assert ack.data == {"ack": 3}
    assert err.data["code"] == ErrorCode.PERMISSION_DENIED
    # Bad credentials in an acked VERSION_CHECK: the ack, then the fatal 0x202.
    session = StreamSession(check_credentials=lambda c: False, authenticated=False)
    session.start(T0)
    sent(session)
    session.receive(
        frame(MessageType.VERSION_CHECK, {**_VERSIONS, "seq": 4}, flags=Flag.ACK_REQUIRED), T0
    )
    ack, err = sent(session)
    assert ack.data == {"ack": 4}
    assert err.data["code"] == ErrorCode.AUTHENTICATION_FAILED
    assert session.state is SessionState.CLOSED
    session.receive(frame(MessageType.PING, {"seq": 5}, flags=Flag.ACK_REQUIRED), T0)
    assert sent(session) == []


def test_an_ack_that_overflows_the_replies_closes_and_nothing_reopens() -> None:
    """A client that never read the hub's first frame: the ack of its version check is one
    reply too many (queue_limit 1), so it is cut off, and the version check opens nothing."""
    session = StreamSession(
        check_credentials=lambda c: True, authenticated=True, policy=StreamPolicy(queue_limit=1)
    )
    session.start(T0)  # PROTOCOL_NEGOTIATION waits, unread
    check = {**_VERSIONS, "seq": 1}
    assert (
        session.receive(frame(MessageType.VERSION_CHECK, check, flags=Flag.ACK_REQUIRED), T0) == []
    )
    assert session.state is SessionState.CLOSED
    assert error_code(sent(session)) == ErrorCode.RATE_LIMIT_EXCEEDED


def test_subscribe_and_unsubscribe() -> None:
    session = opened()
    for data, code in [
        ({}, ErrorCode.MISSING_REQUIRED_FIELDS),
        ({"topics": ["a/#/b"]}, ErrorCode.INVALID_DATA_FORMAT),
        ({"topics": [f"t/{i}" for i in range(MAX_FILTERS + 1)]}, ErrorCode.RATE_LIMIT_EXCEEDED),
    ]:
        session.receive(frame(MessageType.SUBSCRIBE, data), T0)
        assert error_code(sent(session)) == code
    session.receive(frame(MessageType.UNSUBSCRIBE, "nope"), T0)
    assert error_code(sent(session)) == ErrorCode.MISSING_REQUIRED_FIELDS
    assert session.receive(frame(MessageType.SUBSCRIBE, {"topics": ["a/+", "b"]}), T0) == [
        Subscribed(("a/+", "b"))
    ]
    assert sent(session)[0].data == {"topics": ["a/+", "b"], "added": ["a/+", "b"]}
    assert session.receive(frame(MessageType.SUBSCRIBE, {"topics": ["b"]}), T0) == []
    assert sent(session)[0].data == {"topics": ["a/+", "b"], "added": []}
    assert session.offer(item("a/x"))
    assert not session.offer(item("c"))
    session.receive(frame(MessageType.UNSUBSCRIBE, {"topics": ["a/+", "zz"]}), T0)
    ack, data = sent(session)
    assert ack.data == {"topics": ["b"], "removed": ["a/+"]}
    assert data.data["topic"] == "a/x"
    assert not session.offer(item("a/x"))
    assert session.offer(item("other", broadcast=True))  # broadcast: whatever the filters


def test_a_slow_client_is_skipped_ahead_and_told() -> None:
    session = opened(topics=["#"], queue_limit=3)
    for n in range(10):
        session.offer(item(f"t/{n}", priority=n == 0))
    assert session.queued == 3
    assert session.dropped == 7
    notice, *data = sent(session)
    assert notice.type is MessageType.HEARTBEAT
    assert notice.data == {"dropped": 7, "queued": 3}
    # The priority message survives and goes first; then the newest normal ones.
    assert [m.data["seq"] for m in data] == [1, 9, 10]
    assert data[0].flags == Flag.PRIORITY
    # Only priority messages left: the oldest of them goes.
    for _ in range(4):
        session.offer(item(priority=True))
    assert session.queued == 3
    assert session.dropped == 8


def test_retained_state_and_heartbeats() -> None:
    session = opened(topics=["#"], heartbeat_seconds=10)
    assert session.next_deadline() == T0 + 10
    session.offer(item(), retained=True)
    (data,) = sent(session, T0 + 1)
    assert data.data["retained"] is True
    assert data.timestamp_us == (T0 + 1) * 1_000_000
    assert sent(session, T0 + 5) == []
    (beat,) = sent(session, T0 + 11)
    assert beat.type is MessageType.HEARTBEAT
    assert beat.data == {"dropped": 0, "queued": 0}


def test_acks_awaited_resent_then_the_session_closes() -> None:
    session = opened(ack=True, topics=["#"], max_unacked=2, ack_timeout_seconds=5, ack_retries=1)
    assert session.acks
    for _ in range(3):
        session.offer(item())
    first, _ = sent(session)
    assert first.flags == Flag.ACK_REQUIRED
    assert session.unacked == 2
    assert session.queued == 1
    assert session.next_deadline() == T0 + 5
    session.receive(frame(MessageType.HEARTBEAT, {"ack": 1}), T0)
    (third,) = sent(session, T0 + 1)
    assert third.data["seq"] == 3
    (resent,) = sent(session, T0 + 5)  # seq 2 timed out: sent again
    assert resent.data["seq"] == 2
    assert session.stats.resent == 1
    session.receive(frame(MessageType.HEARTBEAT, {"ack": 2}), T0 + 5)
    (again,) = sent(session, T0 + 6.5)  # seq 3: its one retry
    assert again.data["seq"] == 3
    (err,) = sent(session, T0 + 12)  # sent and retried, no ack: over
    assert err.type is MessageType.ERROR
    assert err.data["code"] == ErrorCode.RATE_LIMIT_EXCEEDED
    assert session.state is SessionState.CLOSED


def test_acks_are_v3_only_and_close_is_final() -> None:
    session = opened(1, ack=True, topics=["#"])
    assert not session.acks
    session.close("hub stopping")
    session.close("again")
    assert session.close_reason == "hub stopping"
    assert sent(session) == []


def test_big_messages_are_compressed() -> None:
    session = opened(topics=["#"])
    big = StreamItem(MessageType.FEATURE_DATA, "t", {"payload": "x" * 5000})
    session.offer(big)
    (raw,) = session.frames(T0)
    assert raw[2] & Flag.COMPRESSED
    assert len(raw) < 200
    assert zlib.crc32(raw[19:]) == int.from_bytes(raw[7:11], "big")


def test_the_io_layer_refuses_through_the_session() -> None:
    session = opened()
    session.refuse(ErrorCode.INVALID_DATA_FORMAT, "text frame")
    assert error_code(sent(session)) == ErrorCode.INVALID_DATA_FORMAT
    session.close("gone")
    session.refuse(ErrorCode.INVALID_DATA_FORMAT, "text frame")
    assert sent(session) == []


# --------------------------------------------------------------------------- the documented session


def example_session() -> list[tuple[str, str, bytes]]:
    """The frame-by-frame session of docs/protocols.md §3.9: (who, what, bytes), every frame
    produced by the codec and this session, at a fixed clock."""
    now = 1_800_000_000.0
    session = StreamSession(check_credentials=lambda c: False, authenticated=True)
    session.start(T0)
    out: list[tuple[str, str, bytes]] = []

    def server(what: str) -> None:
        frames = session.frames(now)
        assert len(frames) == 1
        out.append(("server", what, frames[0]))

    def client(what: str, data: bytes) -> None:
        out.append(("client", what, data))
        session.receive(data, now)

    def v(kind: MessageType, data: Any, version: StreamVersion = StreamVersion.V3) -> bytes:
        ts = int(now * 1_000_000) if version >= StreamVersion.V3 else None
        return encode_message(StreamMessage(kind, data, version, NO_FLAGS, ts))

    server("PROTOCOL_NEGOTIATION, V1")
    client(
        "VERSION_CHECK, V1", v(MessageType.VERSION_CHECK, {"versions": [3, 2, 1]}, StreamVersion.V1)
    )
    server("VERSION_CHECK, V3 from now on")
    client("SUBSCRIBE", v(MessageType.SUBSCRIBE, {"topics": ["xiaozhi/status/+"]}))
    server("SUBSCRIPTION_ACK")
    status = {"status": "connected", "transport": "websocket"}
    session.offer(
        StreamItem(
            MessageType.ECG_DATA,
            "xiaozhi/status/kitchen",
            {
                "topic": "xiaozhi/status/kitchen",
                "kind": "status",
                "payload": status,
                "device_id": "kitchen",
            },
        ),
        retained=True,
    )
    server("ECG_DATA: the retained status")
    client("PING", v(MessageType.PING, {"n": 1}))
    server("PONG, PRIORITY")
    bad = bytearray(v(MessageType.PING, {"n": 2}))
    bad[-1] ^= 0x01
    client("PING with one payload bit flipped", bytes(bad))
    server("ERROR 0x101")
    return out


def test_the_documented_session_is_what_the_code_sends() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "protocols.md").read_text()
    for _, _, data in example_session():
        assert data.hex(" ") in doc


@pytest.mark.parametrize(("version", "ack"), [(1, False), (2, False), (3, False), (3, True)])
def test_data_frames_are_the_bytes_of_the_whole_map_with_the_item_packed_once(
    version: int, ack: bool
) -> None:
    """Each session joins its seq to the item's bytes packed once: the frames are exactly the
    encoding of ``{"seq", **data, "retained"}``, compressed (V2+) past 1 KB, one item or many."""
    small = StreamItem(MessageType.ECG_DATA, "a/b", {"topic": "a/b", "payload": 1}, priority=True)
    big = StreamItem(MessageType.ANOMALY_ALERT, "a/c", {"topic": "a/c", "payload": "x" * 3000})
    sessions = [opened(version, ack=ack, topics=["a/#"]) for _ in range(2)]
    sessions[1].offer(small)  # the second session's seqs run one ahead of the first's
    sessions[1].frames(T0)
    v = StreamVersion(version)
    for session in sessions:
        session.offer(small)
        session.offer(big, retained=True)
        first = session._seq - 1  # the seqs the session gave these two
        flags = Flag.ACK_REQUIRED if ack else NO_FLAGS
        ts = int(T0 * 1_000_000) if v >= StreamVersion.V3 else None
        expected = [
            StreamMessage(
                MessageType.ECG_DATA,
                {"seq": first, "topic": "a/b", "payload": 1},
                v,
                (Flag.PRIORITY | flags) & ALLOWED_FLAGS[v],
                ts,
            ),
            StreamMessage(
                MessageType.ANOMALY_ALERT,
                {"seq": first + 1, "topic": "a/c", "payload": "x" * 3000, "retained": True},
                v,
                flags & ALLOWED_FLAGS[v],
                ts,
            ),
        ]
        assert session.frames(T0) == [encode_message(m) for m in expected]
    assert small.entries() is small.entries()


def test_an_item_whose_data_has_our_keys_is_merged_as_a_dict() -> None:
    """Not what the hub offers, but the packed-once path must not change it: the item's value
    of ``seq`` wins the merge, the session's ``retained`` overrides the item's."""
    session = opened(topics=["a/#"])
    session.offer(StreamItem(MessageType.ECG_DATA, "a/b", {"seq": "theirs", "retained": 0}))
    session.offer(StreamItem(MessageType.ECG_DATA, "a/b", {"retained": 0}), retained=True)
    first, second = sent(session)
    assert first.data == {"seq": "theirs", "retained": 0}
    assert second.data == {"seq": 2, "retained": True}


def test_the_retained_replay_is_whole_whatever_the_queue_limit() -> None:
    session = opened(topics=["xiaozhi/status/+"], queue_limit=256)
    retained = [item(f"xiaozhi/status/d{n}") for n in range(1000)]
    assert session.replay([*retained, item("elsewhere")]) == 1000  # only what it wants
    assert session.replaying == 1000
    # Live traffic meanwhile: a new topic, and a newer state of a topic still waiting.
    assert session.offer(item("xiaozhi/status/live"))
    newer = StreamItem(
        MessageType.ECG_DATA, "xiaozhi/status/d999", {"topic": "xiaozhi/status/d999", "v": 2}
    )
    assert session.offer(newer)
    got: list[StreamMessage] = []
    while batch := sent(session):
        assert len(batch) <= 1 + 256  # the live message, then at most queue_limit replayed
        got.extend(batch)
        if session.replaying:
            session.offer(item("xiaozhi/status/live"))  # live goes on between passes
    assert session.dropped == 0
    assert [m.data["seq"] for m in got] == list(range(1, len(got) + 1))
    replayed = [m.data for m in got if m.data.get("retained")]
    assert len(replayed) == 1000
    assert len({d["topic"] for d in replayed}) == 1000
    assert replayed[-1] == {"seq": replayed[-1]["seq"], **newer.data, "retained": True}
    assert sum(1 for m in got if not m.data.get("retained")) == 4  # one before each pass
    assert session.replaying == 0


def test_the_replay_waits_for_acks_and_unsubscribing_drops_it() -> None:
    session = opened(ack=True, topics=["a/+", "b/+"], max_unacked=2)
    session.replay([item("a/1"), item("a/2"), item("b/1")])
    session.offer(item("a/live"))
    live, first = sent(session)
    assert (live.data["topic"], first.data["topic"]) == ("a/live", "a/1")
    assert sent(session) == []  # two unacked: the replay waits
    session.offer(item("b/live"))
    session.receive(frame(MessageType.HEARTBEAT, {"ack": live.data["seq"]}), T0)
    assert [m.data["topic"] for m in sent(session)] == ["b/live"]  # live first
    session.receive(frame(MessageType.HEARTBEAT, {"ack": first.data["seq"]}), T0)
    session.receive(frame(MessageType.UNSUBSCRIBE, {"topics": ["a/+"]}), T0)
    ack, b1 = sent(session)
    assert ack.type is MessageType.SUBSCRIPTION_ACK
    assert b1.data["topic"] == "b/1"  # a/2 went with its filter
    assert session.replaying == 0


def test_a_client_that_sends_but_does_not_read_is_cut_off() -> None:
    session = opened(topics=["#"], queue_limit=8)
    for n in range(100):  # each PING asks for an ack too: two replies a frame
        ping = frame(MessageType.PING, {"seq": n, "pad": "x" * 100}, flags=Flag.ACK_REQUIRED)
        session.receive(ping, T0)
        assert len(session._control) <= 8
    assert session.state is SessionState.CLOSED
    assert session.close_reason.startswith("RATE_LIMIT_EXCEEDED")
    (err,) = sent(session)  # the unread PONGs are not kept: only the fatal ERROR is left
    assert err.data["code"] == ErrorCode.RATE_LIMIT_EXCEEDED
    session.refuse(ErrorCode.INVALID_DATA_FORMAT, "closed: not answered")
    assert sent(session) == []
