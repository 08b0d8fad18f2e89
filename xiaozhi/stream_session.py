"""One live-stream connection, server side, without I/O (seed 002 served; docs/protocols.md §3.9).

The hub's ``/api/v1/stream`` WebSocket speaks seed 002's frames (:mod:`xiaozhi.stream_frame`).
This class is the connection's protocol: the I/O layer hands it every binary message received
(:meth:`StreamSession.receive`) and every fleet message to offer (:meth:`StreamSession.offer`),
and sends what :meth:`StreamSession.frames` returns; it passes the clock (``now``, seconds
since the Unix epoch) and wakes up again at :meth:`StreamSession.next_deadline`.

The conversation (every payload is a MessagePack map):

1. server → ``PROTOCOL_NEGOTIATION`` (always V1 framing, which every client reads):
   ``{"versions": [1, 2, 3], "auth": "header"|"required", ...}``;
2. client → ``VERSION_CHECK`` (or ``PROTOCOL_NEGOTIATION``) ``{"versions": [...]}``, plus
   ``"api_key"`` or ``"token"`` when the upgrade request carried no credentials, and
   ``"ack": true`` to have data frames sent with ``ACK_REQUIRED`` (V3);
3. server → ``VERSION_CHECK`` ``{"version": v, ...}`` in version ``v``, fixed from then on;
   no common version: ``ERROR`` 0x100 and the session closes; bad credentials: 0x202, closes;
4. client → ``SUBSCRIBE`` / ``UNSUBSCRIBE`` ``{"topics": [MQTT filters]}``, answered by
   ``SUBSCRIPTION_ACK`` ``{"topics": every filter now held, "added"|"removed": [...]}``;
   ``PING`` → ``PONG`` (same data); ``HEARTBEAT`` ``{"ack": seq}`` acknowledges a data frame
   (an ``"ack"`` that is not an int: ``ERROR`` 0x200); a second ``VERSION_CHECK`` gets
   ``ERROR`` 0x100, the version stays as agreed;
5. any client frame with ``ACK_REQUIRED`` and an int ``seq`` (step 2's included) is acked by
   the server's ``HEARTBEAT`` ``{"ack": seq}`` ahead of its answer or refusal (one rule).

Data frames carry ``{"seq", "topic", "kind", "payload", ...}``: ``seq`` counts per session
from 1 at the offer, so a gap shows what a slow client was skipped.

What this class guarantees:

- **Bounded memory.** At most ``queue_limit`` live data messages wait; past it the oldest
  normal one is dropped (a priority one only when nothing else is left), counted in
  :attr:`StreamSession.dropped`, and the client is told by a ``HEARTBEAT``
  ``{"dropped": total, "queued": n}`` sent ahead of the next data. At most ``queue_limit``
  control frames (``PONG``, ``ERROR``, acks) wait: one more and the client, which sends but
  does not read, is cut off with ``ERROR`` 0x204.
- **The retained replay is whole.** The state a new subscription starts with
  (:meth:`StreamSession.replay`) is not queued with the live messages, so none of it is
  dropped: it waits as one entry per topic (the hub's retained state bounds it), and at most
  ``queue_limit`` of it goes out per :meth:`StreamSession.frames`, after the live messages
  due. A live message on a topic still waiting there replaces its entry (the newest state,
  sent once, in the replay's place).
- **Every frame is verified** (CRC32 and the rest, :func:`~xiaozhi.stream_frame.decode_message`):
  a bad one is answered with an ``ERROR`` carrying the seed's code, and the session goes on.
- **Flags** (V3): ``PRIORITY`` messages are sent before queued normal ones; ``BROADCAST``
  ones reach a session whatever its filters (a client may not send one: 0x203);
  ``ACK_REQUIRED`` from the client, on any frame in any state, is answered by ``HEARTBEAT``
  ``{"ack": its seq}`` before anything else (:meth:`StreamSession._acknowledge`); on data
  frames (``"ack": true``) at most ``max_unacked`` wait for an ack, each is sent again after
  ``ack_timeout_seconds`` up to ``ack_retries`` times, then the session closes.
- V1 and V2 sessions get the same messages without the flags their version lacks.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from xiaozhi.errors import ErrorCode, UnsupportedVersion, WireError
from xiaozhi.stream_frame import (
    ALLOWED_FLAGS,
    DEFAULT_MAX_MESSAGE_BYTES,
    Flag,
    MessageType,
    PackedEntries,
    StreamMessage,
    StreamVersion,
    decode_message,
    encode_entries,
    encode_message,
    error_message,
    negotiate_version,
    pack_entries,
)

__all__ = [
    "DATA_TYPES",
    "MAX_FILTERS",
    "Credentials",
    "SessionState",
    "StreamItem",
    "StreamPolicy",
    "StreamSession",
    "Subscribed",
    "topic_matches",
    "valid_filter",
]

#: The seed's data types: what the server sends, never what a client may send.
DATA_TYPES: Final = frozenset(
    {
        MessageType.ECG_DATA,
        MessageType.ANOMALY_ALERT,
        MessageType.PREDICTION_RESULT,
        MessageType.FEATURE_DATA,
    }
)
#: Most topic filters one session may hold (a bound on what a client makes us keep).
MAX_FILTERS: Final = 64
_MAX_FILTER_CHARS: Final = 512
_RETAINED: Final = pack_entries({"retained": True})


def valid_filter(topic_filter: object) -> bool:
    """An MQTT topic filter: non-empty text, ``+`` a whole level, ``#`` only as the last one."""
    if not isinstance(topic_filter, str) or not 0 < len(topic_filter) <= _MAX_FILTER_CHARS:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT matching of a concrete ``topic`` against a filter (``valid_filter`` already)."""
    want = topic_filter.split("/")
    have = topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(have) or (level != "+" and level != have[i]):
            return False
    return len(want) == len(have)


class SessionState(enum.Enum):
    """Where the connection is."""

    NEGOTIATING = "negotiating"  # PROTOCOL_NEGOTIATION sent, waiting for the client's versions
    OPEN = "open"  # version fixed: subscriptions served
    CLOSED = "closed"  # over: send what is left, then close the socket


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """A session's bounds and timers.

    Args:
        queue_limit: most data messages waiting to be sent (normal and priority together).
        heartbeat_seconds: a ``HEARTBEAT`` goes out after this long without a frame sent.
        ack_timeout_seconds: how long a data frame sent with ``ACK_REQUIRED`` waits for its ack
            before it is sent again.
        ack_retries: sends after the first; one more timeout closes the session.
        max_unacked: data frames awaiting an ack at once; the rest wait in the queue.
        max_message_bytes: cap on a received frame's payload (seed 002 size limits).
        negotiate_seconds: how long a client has from :meth:`StreamSession.start` to agree a
            version (and sign in): past it the session closes with ``ERROR`` 0x202 (0x100
            when the upgrade request was authenticated). An idle socket costs the server
            memory and is not yet anyone's: it may not hold it open for free.

    Raises:
        ValueError: a bound below 1 (``ack_retries`` below 0) or a timer not above 0.
    """

    queue_limit: int = 256
    heartbeat_seconds: float = 15.0
    ack_timeout_seconds: float = 5.0
    ack_retries: int = 2
    max_unacked: int = 64
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    negotiate_seconds: float = 10.0

    def __post_init__(self) -> None:
        if min(self.queue_limit, self.max_unacked, self.max_message_bytes) < 1:
            raise ValueError("queue_limit, max_unacked and max_message_bytes must be >= 1")
        timers = (self.heartbeat_seconds, self.ack_timeout_seconds, self.negotiate_seconds)
        if self.ack_retries < 0 or min(timers) <= 0:
            raise ValueError("ack_retries must be >= 0, the timers > 0")


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One fleet message to offer every session; built once, shared by all of them.

    ``data`` is the frame's map without ``seq`` (the session adds it). It is packed once, at
    the first session that sends it (:meth:`entries`): every session's frame is then its own
    ``seq`` joined to the same bytes, not a MessagePack encoding of its own.
    """

    type: MessageType
    topic: str
    data: dict[str, Any]
    priority: bool = False
    broadcast: bool = False
    _packed: PackedEntries | None = field(default=None, init=False, repr=False, compare=False)

    def entries(self) -> PackedEntries:
        """``data``'s pairs packed (once; the item is not changed otherwise)."""
        packed = self._packed
        if packed is None:
            packed = pack_entries(self.data)
            object.__setattr__(self, "_packed", packed)  # a cache, not state
        return packed


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the client's ``VERSION_CHECK`` carried, for the I/O layer's check."""

    api_key: str | None
    token: str | None


@dataclass(frozen=True, slots=True)
class Subscribed:
    """Filters a client just added: the I/O layer offers the matching retained state."""

    filters: tuple[str, ...]


_Control = tuple[MessageType, Any, Flag, StreamVersion]
"""A control frame waiting: type, data, flags, and the version it is framed in."""


@dataclass(slots=True)
class _InFlight:
    seq: int
    item: StreamItem
    retained: bool
    sent_at: float
    attempts: int = 1


@dataclass(slots=True)
class _Queued:
    seq: int
    item: StreamItem
    retained: bool


@dataclass(slots=True)
class _Stats:
    received: int = 0
    sent: int = 0
    errors: int = 0
    resent: int = 0
    counts: collections.Counter[str] = field(default_factory=collections.Counter)


class StreamSession:
    """The server side of one stream connection (module docstring).

    Args:
        check_credentials: called with the client's credentials when the upgrade carried
            none (``authenticated=False``); True lets the session open.
        authenticated: the upgrade request's headers were already accepted.
        policy: the bounds and timers (:class:`StreamPolicy`).
        versions: versions offered.
        server: the name the first frame gives.
    """

    def __init__(
        self,
        *,
        check_credentials: Callable[[Credentials], bool],
        authenticated: bool,
        policy: StreamPolicy | None = None,
        versions: Iterable[int] = (1, 2, 3),
        server: str = "xiaozhi-hub",
    ) -> None:
        self._check = check_credentials
        self._authenticated = authenticated
        self.policy = policy = policy or StreamPolicy()
        self.versions = tuple(sorted({StreamVersion(v) for v in versions}))
        self.queue_limit = policy.queue_limit
        self.heartbeat_seconds = policy.heartbeat_seconds
        self.ack_timeout_seconds = policy.ack_timeout_seconds
        self.ack_retries = policy.ack_retries
        self.max_unacked = policy.max_unacked
        self.max_message_bytes = policy.max_message_bytes
        self.server = server
        self.state = SessionState.NEGOTIATING
        self.version = StreamVersion.V1  # until negotiated: every client reads V1
        self.acks = False
        self.filters: list[str] = []
        self.dropped = 0
        self.close_reason = ""
        self.stats = _Stats()
        # Control frames, each with the version in force when it was queued: a reply is
        # framed as the session spoke when it was due (V1 until the version is agreed), not
        # as it speaks by the time the writer sends it.
        self._control: collections.deque[_Control] = collections.deque()
        self._priority: collections.deque[_Queued] = collections.deque()
        self._normal: collections.deque[_Queued] = collections.deque()
        self._replay: dict[str, StreamItem] = {}
        self._inflight: dict[int, _InFlight] = {}
        self._seq = 0
        self._reported_drops = 0
        self._last_sent: float | None = None
        self._negotiate_by = 0.0
        self.timed_out = False  # closed for not negotiating within negotiate_seconds

    # ------------------------------------------------------------------ lifetime

    def start(self, now: float) -> None:
        """Queue the server's ``PROTOCOL_NEGOTIATION``, the first frame of the connection;
        the client has ``negotiate_seconds`` from ``now`` to answer it."""
        self._negotiate_by = now + self.policy.negotiate_seconds
        self._control.append(
            (
                MessageType.PROTOCOL_NEGOTIATION,
                {
                    "versions": [int(v) for v in self.versions],
                    "server": self.server,
                    "auth": "header" if self._authenticated else "required",
                    "heartbeat_seconds": self.heartbeat_seconds,
                    "queue_limit": self.queue_limit,
                    "max_message_bytes": self.max_message_bytes,
                },
                Flag(0),
                StreamVersion.V1,
            )
        )

    def close(self, reason: str) -> None:
        """End the session (hub stopping, socket gone); queued data is not sent any more."""
        if self.state is not SessionState.CLOSED:
            self.state = SessionState.CLOSED
            self.close_reason = reason

    @property
    def queued(self) -> int:
        """Data messages waiting (bounded by ``queue_limit``)."""
        return len(self._priority) + len(self._normal)

    @property
    def replaying(self) -> int:
        """Retained messages of a new subscription still to send (never dropped)."""
        return len(self._replay)

    @property
    def unacked(self) -> int:
        return len(self._inflight)

    # ------------------------------------------------------------------ fleet → client

    def wants(self, item: StreamItem) -> bool:
        """True when ``item`` is for this session: open, and broadcast or matching a filter."""
        if self.state is not SessionState.OPEN:
            return False
        return item.broadcast or any(topic_matches(f, item.topic) for f in self.filters)

    def offer(self, item: StreamItem, *, retained: bool = False) -> bool:
        """Queue ``item`` if :meth:`wants` it; the oldest is dropped past ``queue_limit``."""
        if not self.wants(item):
            return False
        if item.topic in self._replay:
            self._replay[item.topic] = item  # newer than the state waiting: sent in its place
            return True
        self._seq += 1
        queued = _Queued(self._seq, item, retained)
        (self._priority if item.priority else self._normal).append(queued)
        if self.queued > self.queue_limit:
            (self._normal or self._priority).popleft()
            self.dropped += 1
        return True

    def replay(self, items: Iterable[StreamItem]) -> int:
        """Keep the retained ``items`` this session :meth:`wants` for sending, none dropped.

        For the state a new subscription starts with: unlike :meth:`offer`, these wait outside
        the bounded queue (one entry per topic, so their number is bounded by the retained
        state they come from) and get their ``seq`` when they are sent. Returns how many.
        """
        kept = 0
        for item in items:
            if self.wants(item):
                self._replay[item.topic] = item
                kept += 1
        return kept

    # ------------------------------------------------------------------ client → server

    def receive(self, data: bytes, now: float) -> list[Subscribed | Credentials]:
        """Handle one binary message from the client; returns what the I/O layer must act on.

        A :class:`Credentials` result has already been checked (it is returned for logging);
        :class:`Subscribed` asks for the retained state matching the new filters.
        """
        if self.state is SessionState.CLOSED:
            return []
        self.stats.received += 1
        try:
            msg = decode_message(data, max_message_bytes=self.max_message_bytes)
        except WireError as err:
            self._error(err.code, str(err))
            return []
        self.stats.counts[msg.type.name] += 1
        if msg.flags & Flag.ACK_REQUIRED and not self._acknowledge(msg):
            return []
        if msg.flags & Flag.BROADCAST:
            self._error(ErrorCode.PERMISSION_DENIED, "clients may not broadcast on the stream")
            return []
        if self.state is SessionState.NEGOTIATING:
            return self._negotiate(msg)
        if msg.version != self.version:
            self._error(
                ErrorCode.INVALID_PROTOCOL_VERSION,
                f"this session speaks V{int(self.version)}, the frame is V{int(msg.version)}",
            )
            return []
        return self._handle(msg, now)

    def _acknowledge(self, msg: StreamMessage) -> bool:
        """The one ack rule: ``HEARTBEAT {"ack": seq}`` for a verified ``ACK_REQUIRED`` frame.

        Whatever the frame's type and the session's state (negotiating or open), the ack is
        queued before anything else the frame is answered with, refusals included: it says
        the frame arrived intact, not that it was accepted (an ``ERROR`` follows it then).
        Before the version is agreed it goes out in V1 framing, like everything else then.
        False when the frame is not to be handled: it has no int ``seq`` to acknowledge
        (refused with 0x201, in either state, so a client never waits for an ack that cannot
        come), or its ack was one reply too many and cut the client off (0x204): a closed
        session stays closed, a version check does not reopen it. (A frame that fails
        verification never gets here: its flags are not trusted.)
        """
        seq = msg.data.get("seq") if isinstance(msg.data, dict) else None
        if type(seq) is not int:
            self._error(ErrorCode.MISSING_REQUIRED_FIELDS, "ACK_REQUIRED needs an int 'seq'")
            return False
        self._say(MessageType.HEARTBEAT, {"ack": seq}, Flag.PRIORITY)
        return self.state is not SessionState.CLOSED

    def _negotiate(self, msg: StreamMessage) -> list[Subscribed | Credentials]:
        if msg.type not in (MessageType.VERSION_CHECK, MessageType.PROTOCOL_NEGOTIATION):
            self._error(
                ErrorCode.INVALID_MESSAGE_TYPE,
                f"{msg.type.name} before the version is agreed: send VERSION_CHECK first",
            )
            return []
        data = msg.data if isinstance(msg.data, dict) else {}
        offered = data.get("versions", [data.get("version")])
        try:
            version = negotiate_version(offered, self.versions)
        except UnsupportedVersion as err:
            self._error(err.code, str(err), fatal=True)
            return []
        result: list[Subscribed | Credentials] = []
        if not self._authenticated:
            api_key, token = data.get("api_key"), data.get("token")
            credentials = Credentials(
                api_key if isinstance(api_key, str) else None,
                token if isinstance(token, str) else None,
            )
            if not self._check(credentials):
                self._error(
                    ErrorCode.AUTHENTICATION_FAILED,
                    "send X-API-Key or 'Authorization: Bearer' on the upgrade request, or "
                    "'api_key' / 'token' in VERSION_CHECK",
                    fatal=True,
                )
                return []
            self._authenticated = True
            result.append(credentials)
        self.version = version
        self.acks = bool(data.get("ack")) and version >= StreamVersion.V3
        self.state = SessionState.OPEN
        self._say(MessageType.VERSION_CHECK, self._version_data(), Flag(0))
        return result

    def _version_data(self) -> dict[str, Any]:
        return {
            "version": int(self.version),
            "versions": [int(v) for v in self.versions],
            "ack": self.acks,
            "heartbeat_seconds": self.heartbeat_seconds,
            "queue_limit": self.queue_limit,
        }

    def _handle(self, msg: StreamMessage, now: float) -> list[Subscribed | Credentials]:
        kind = msg.type
        if kind is MessageType.PING:
            self._say(MessageType.PONG, msg.data, Flag.PRIORITY)
        elif kind is MessageType.HEARTBEAT:
            data = msg.data if isinstance(msg.data, dict) else {}
            ack = data.get("ack")
            if type(ack) is int:
                self._inflight.pop(ack, None)
            elif "ack" in data:  # a HEARTBEAT without "ack" is only a keepalive
                self._error(
                    ErrorCode.INVALID_DATA_FORMAT,
                    "HEARTBEAT 'ack' must be the int seq of a data frame, not "
                    f"{type(ack).__name__}",
                )
        elif kind in (MessageType.SUBSCRIBE, MessageType.UNSUBSCRIBE):
            return self._subscription(msg)
        elif kind in (MessageType.VERSION_CHECK, MessageType.PROTOCOL_NEGOTIATION):
            # The version (and the ack mode) is fixed for the connection: a second check is
            # refused, whatever it offers, and the session goes on as agreed.
            self._error(
                ErrorCode.INVALID_PROTOCOL_VERSION,
                f"the version is agreed (V{int(self.version)}) and fixed for the connection: "
                "reconnect to negotiate another",
            )
        elif kind in DATA_TYPES or kind is MessageType.SUBSCRIPTION_ACK:
            self._error(
                ErrorCode.PERMISSION_DENIED,
                f"{kind.name} is sent by the server only: clients subscribe, they do not publish",
            )
        # PONG and ERROR from the client need no answer.
        return []

    def _subscription(self, msg: StreamMessage) -> list[Subscribed | Credentials]:
        data = msg.data if isinstance(msg.data, dict) else {}
        topics = data.get("topics")
        if not isinstance(topics, list) or not topics:
            self._error(ErrorCode.MISSING_REQUIRED_FIELDS, "expected {'topics': [filters]}")
            return []
        bad = [t for t in topics if not valid_filter(t)]
        if bad:
            self._error(ErrorCode.INVALID_DATA_FORMAT, f"not MQTT topic filters: {bad[:5]!r}")
            return []
        if msg.type is MessageType.UNSUBSCRIBE:
            removed = [t for t in dict.fromkeys(topics) if t in self.filters]
            self.filters = [f for f in self.filters if f not in removed]
            self._replay = {t: i for t, i in self._replay.items() if self.wants(i)}
            self._ack_subscription(removed=removed)
            return []
        added = [t for t in dict.fromkeys(topics) if t not in self.filters]
        if len(self.filters) + len(added) > MAX_FILTERS:
            self._error(ErrorCode.RATE_LIMIT_EXCEEDED, f"at most {MAX_FILTERS} filters a session")
            return []
        self.filters.extend(added)
        self._ack_subscription(added=added)
        return [Subscribed(tuple(added))] if added else []

    def _ack_subscription(self, **change: list[str]) -> None:
        self._say(MessageType.SUBSCRIPTION_ACK, {"topics": list(self.filters), **change}, Flag(0))

    def refuse(self, code: ErrorCode, message: str) -> None:
        """Answer something the I/O layer refused itself (a text frame) with an ``ERROR``."""
        if self.state is not SessionState.CLOSED:
            self._error(code, message)

    def _say(self, kind: MessageType, data: Any, flags: Flag) -> None:
        """Queue a control frame; past ``queue_limit`` unsent, cut the client off (0x204).

        A client that sends but never reads would otherwise make us keep every answer (a
        ``PONG`` holds its ``PING``'s data): what it left unread is dropped, and the one
        frame left is the fatal ``ERROR``. Never called on a closed session (:meth:`receive`
        and :meth:`refuse` stop first), so that ``ERROR`` stays the last frame.
        """
        if len(self._control) < self.queue_limit:
            self._control.append((kind, data, flags, self.version))
            return
        self._control.clear()
        self._error(
            ErrorCode.RATE_LIMIT_EXCEEDED,
            f"more than {self.queue_limit} replies unread: the client sends but does not read",
            fatal=True,
        )

    def _error(self, code: ErrorCode, message: str, *, fatal: bool = False) -> None:
        self.stats.errors += 1
        self._say(MessageType.ERROR, {"code": code, "message": message}, Flag(0))
        if fatal and self.state is not SessionState.CLOSED:
            self.state = SessionState.CLOSED
            self.close_reason = f"{ErrorCode(code).name}: {message}"

    # ------------------------------------------------------------------ what to send

    def frames(self, now: float) -> list[bytes]:
        """Every frame due now, in order: control, drop notice, resends, priority, normal."""
        if self.state is SessionState.NEGOTIATING and now >= self._negotiate_by:
            self._negotiation_expired()
        out = [self._encode(k, d, f, now, v) for k, d, f, v in self._control]
        self._control.clear()
        if self.state is SessionState.OPEN:
            out.extend(self._data_frames(now))
            # Acks ran out: the ERROR that says so goes out too.
            out.extend(self._encode(k, d, f, now, v) for k, d, f, v in self._control)
            self._control.clear()
        if out:
            self._last_sent = now
            self.stats.sent += len(out)
        return out

    def _data_frames(self, now: float) -> list[bytes]:
        out: list[bytes] = []
        if self.dropped != self._reported_drops:
            self._reported_drops = self.dropped
            data = {"dropped": self.dropped, "queued": self.queued}
            out.append(self._encode(MessageType.HEARTBEAT, data, Flag.PRIORITY, now))
        for entry in list(self._inflight.values()):
            if now - entry.sent_at < self.ack_timeout_seconds:
                continue
            if entry.attempts > self.ack_retries:
                self._inflight.clear()
                self._error(
                    ErrorCode.RATE_LIMIT_EXCEEDED,
                    f"data frame {entry.seq} not acknowledged after {entry.attempts} sends",
                    fatal=True,
                )
                return out
            entry.attempts += 1
            entry.sent_at = now
            self.stats.resent += 1
            out.append(self._data_frame(entry.seq, entry.item, entry.retained, now))
        while self._priority or self._normal:
            if self.acks and len(self._inflight) >= self.max_unacked:
                break
            queued = (self._priority or self._normal).popleft()
            out.append(self._data_frame(queued.seq, queued.item, queued.retained, now))
            if self.acks:
                self._inflight[queued.seq] = _InFlight(
                    queued.seq, queued.item, queued.retained, now
                )
        out.extend(self._replay_frames(now))
        if not out and self._heartbeat_due(now):
            data = {"dropped": self.dropped, "queued": self.queued}
            out.append(self._encode(MessageType.HEARTBEAT, data, Flag(0), now))
        return out

    def _replay_frames(self, now: float) -> list[bytes]:
        """Up to ``queue_limit`` of the replay, once the live queue is empty (acks allowing)."""
        out: list[bytes] = []
        if self._priority or self._normal:
            return out  # acks hold the live queue back: the replay waits behind it
        while self._replay and len(out) < self.queue_limit:
            if self.acks and len(self._inflight) >= self.max_unacked:
                break
            topic = next(iter(self._replay))
            item = self._replay.pop(topic)
            self._seq += 1
            out.append(self._data_frame(self._seq, item, True, now))
            if self.acks:
                self._inflight[self._seq] = _InFlight(self._seq, item, True, now)
        return out

    def _heartbeat_due(self, now: float) -> bool:
        return self._last_sent is not None and now - self._last_sent >= self.heartbeat_seconds

    def _data_frame(self, seq: int, item: StreamItem, retained: bool, now: float) -> bytes:
        """``{"seq": seq, **item.data}`` (+ ``"retained": True``), the item packed only once."""
        flags = Flag(0)
        if item.priority:
            flags |= Flag.PRIORITY
        if item.broadcast:
            flags |= Flag.BROADCAST
        if self.acks:
            flags |= Flag.ACK_REQUIRED
        if "seq" in item.data or (retained and "retained" in item.data):
            # A key of ours in the item's data: the dict merge decides which value wins.
            data = {"seq": seq, **item.data}
            if retained:
                data["retained"] = True
            return self._encode(item.type, data, flags, now)
        parts = [pack_entries({"seq": seq}), item.entries()]
        if retained:
            parts.append(_RETAINED)
        return encode_entries(
            item.type,
            parts,
            version=self.version,
            flags=flags & ALLOWED_FLAGS[self.version],
            timestamp_us=self._timestamp(now),
        )

    def _timestamp(self, now: float, version: StreamVersion | None = None) -> int | None:
        version = self.version if version is None else version
        return int(now * 1_000_000) if version >= StreamVersion.V3 else None

    def _encode(
        self,
        kind: MessageType,
        data: Any,
        flags: Flag,
        now: float,
        version: StreamVersion | None = None,
    ) -> bytes:
        version = self.version if version is None else version
        ts = self._timestamp(now, version)
        if kind is MessageType.ERROR:
            msg = error_message(data["code"], data["message"], version=version, timestamp_us=ts)
        else:
            allowed = flags & ALLOWED_FLAGS[version]
            msg = StreamMessage(kind, data, version, Flag(allowed), ts)
        return encode_message(msg)

    def _negotiation_expired(self) -> None:
        self.timed_out = True
        seconds = f"{self.policy.negotiate_seconds:g}"
        if self._authenticated:
            self._error(
                ErrorCode.INVALID_PROTOCOL_VERSION,
                f"no VERSION_CHECK within {seconds} s of the connection",
                fatal=True,
            )
        else:
            self._error(
                ErrorCode.AUTHENTICATION_FAILED,
                f"not signed in within {seconds} s: send X-API-Key or 'Authorization: "
                "Bearer' on the upgrade request, or 'api_key' / 'token' in VERSION_CHECK",
                fatal=True,
            )

    def next_deadline(self) -> float | None:
        """When :meth:`frames` has something to send without new input (heartbeat, resend,
        the end of the time allowed to negotiate)."""
        if self.state is SessionState.NEGOTIATING:
            return self._negotiate_by
        if self.state is not SessionState.OPEN or self._last_sent is None:
            return None
        deadline = self._last_sent + self.heartbeat_seconds
        for entry in self._inflight.values():
            deadline = min(deadline, entry.sent_at + self.ack_timeout_seconds)
        return deadline
