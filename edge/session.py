"""One device connection, sans-I/O: messages in, :mod:`~xiaozhi_edge.outputs` out.

A :class:`DeviceSession` is fed by the asyncio layer (``edge/server.py``) and never touches a
socket, the broker or a clock (style.md §1, §3). Every ``on_*`` method takes ``now``
(monotonic seconds) and ``wall`` (an ISO 8601 timestamp for payloads), and returns the list
of outputs to execute in order. Rules the I/O layer must keep:

* Call :meth:`~DeviceSession.on_text` / :meth:`~DeviceSession.on_binary` for every WebSocket
  message, :meth:`~DeviceSession.on_command` for every MQTT message on the filters the
  session subscribed to, :meth:`~DeviceSession.on_timer` when
  :meth:`~DeviceSession.next_deadline` has passed (once a second is fine), and
  :meth:`~DeviceSession.on_close` exactly once when the socket is gone, whoever closed it.
* When a device id that already has a session connects again, call
  :meth:`~DeviceSession.supersede` on the older one (the device id is known once the new
  session is READY), so the old socket's end does not mark the device disconnected.
* After a :class:`~xiaozhi_edge.outputs.Close` the session is CLOSING or ERROR and every
  device frame returns ``[]`` until ``on_close``.
* ``on_*`` never raises: each runs its body inside the one guard (``_guarded``). A
  :class:`~xiaozhi.errors.WireError` from a device frame becomes an ``error`` reply naming
  what was wrong; anything else is a bug: it is counted as ``INTERNAL_ERROR``, handed to
  ``on_fault`` (the I/O layer logs it with its traceback) and kept in
  :attr:`~DeviceSession.last_fault`, and answered with a generic error without details
  (websockets' parse/fail pattern). A bug is ours, not the device's: it does not end the
  connection.

The state machine (all of it lives here, h11 style)::

    AWAIT_HELLO --hello / device_register--> READY --goodbye, idle, replaced--> CLOSING
         |                                     |                                   |
         +--hello timeout, refused identity,---+--> ERROR (error reply, then       |
         |  too big, flood, garbage streak          close 1008/1009)               |
         |                                            |                            |
         +--------------------- on_close -------------+----------------------------+--> CLOSED

What the session does around the machine lives beside it, one module per role:

* ``admission.py``: size, rate, flood and garbage rules, before a frame is parsed;
* ``reassembly.py``: seed ``audio_data`` chunks put back together, bounded;
* ``delivery.py``: MQTT commands -> outputs, the duplicate-id window, MCP call outcomes;
* ``counters.py``: the process's counters every session adds to;
* ``identity.py``: who is on the connection (the handshake's identity);
* ``telemetry.py``, ``utterances.py``, ``mcp_client.py``: the fast telemetry path, the
  audio turn, the MCP client;
* ``streaming.py``: an utterance streamed to the speech worker that claims it.

Two device families share one socket (design.md §4): real firmware (``hello``, binary audio,
MCP) and seed 003 clients (``device_register`` and the JSON envelope). Both are accepted
from either; the family decides how commands are delivered.
"""

from __future__ import annotations

import enum
import functools
import uuid
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final, Protocol, TypeVar

from xiaozhi import jsonutil
from xiaozhi.binary import (
    SUPPORTED_VERSIONS,
    BinaryFrame,
    FrameType,
    decode_frame,
)
from xiaozhi.errors import (
    AuthenticationFailed,
    ErrorCode,
    InvalidMessage,
    InvalidTopic,
    RateLimited,
    UnsupportedVersion,
    WireError,
)
from xiaozhi.gateway_audio import decode_gateway_audio
from xiaozhi.messages import (
    Abort,
    AudioDataMessage,
    AudioParams,
    DeviceHello,
    DeviceMessage,
    DeviceRegisterMessage,
    ErrorData,
    ErrorMessage,
    Goodbye,
    Listen,
    ListenMode,
    ListenState,
    Mcp,
    PingMessage,
    PongMessage,
    ResponseData,
    ResponseMessage,
    SensorMessage,
    ServerHello,
    Tts,
    TtsState,
    VoiceCommandMessage,
    device_message_from_obj,
    parse_device_message,
)
from xiaozhi.payloads import (
    ConnectionEvent,
    DeviceKind,
    DeviceStatus,
    DeviceTransport,
    EventPayload,
    EventType,
    SensorPayload,
    StatusPayload,
    UtteranceClaim,
    UtterancePayload,
    UtteranceStart,
    VoiceCommandEvent,
)
from xiaozhi.topics import (
    TopicKind,
    TopicTree,
    normalize_device_id,
    publish_options,
    validate_id,
)
from xiaozhi.wav import UPLINK_FORMAT, decode_wav
from xiaozhi_edge.admission import MALFORMED_STREAK, Admission
from xiaozhi_edge.counters import EdgeCounters
from xiaozhi_edge.delivery import CommandDelivery, call_outcome
from xiaozhi_edge.identity import ConnectionIdentity, IdentityRefused, MissingIdentity
from xiaozhi_edge.limits import EdgeLimits
from xiaozhi_edge.mcp_client import (
    McpCallResult,
    McpClient,
    McpIgnored,
    McpInitialized,
    McpRequestFailed,
    McpToolsListed,
    McpVision,
    mcp_message,
)
from xiaozhi_edge.outputs import (
    Close,
    CloseCode,
    Output,
    Publish,
    SendText,
    StopAudio,
    Subscribe,
    Unsubscribe,
)
from xiaozhi_edge.reassembly import ChunkReassembler
from xiaozhi_edge.streaming import UtteranceStreamer
from xiaozhi_edge.telemetry import (
    TELEMETRY_FIELDS,
    plain_ping,
    plain_sensor,
    pong_text,
    sensor_payload,
)
from xiaozhi_edge.utterances import (
    SAMPLE_RATE,
    SUPPORTED_FRAME_DURATIONS_MS,
    Utterance,
    UtteranceBuffer,
    UtteranceReason,
)

__all__ = [
    "DEFAULT_FRAME_DURATION_MS",
    "DEFAULT_WAKE_WORDS",
    "DeviceSession",
    "SessionState",
    "SpeechSynthesizer",
    "UnexpectedMessage",
]

DEFAULT_FRAME_DURATION_MS: Final = 60
"""The firmware's ``OPUS_FRAME_DURATION_MS`` (reference §1.3); used when a hello has none."""

DEFAULT_WAKE_WORDS: Final = ("你好小智", "ni hao xiao zhi", "nihaoxiaozhi", "hi esp", "hi lexin")
"""Wake words of the stock firmware models; a ``listen detect`` with one of these is a wake
word, any other text a typed command (reference §1.5, §6.5)."""

_INTERNAL_ERROR: Final = "INTERNAL_ERROR"
_T = TypeVar("_T")
_WAKE_WORD_STRIP: Final = " \t.,!?;:。，！？"
_SENSOR_OPTIONS: Final = publish_options(TopicKind.SENSOR)
_STATUS_OPTIONS: Final = publish_options(TopicKind.STATUS)
_MAX_SENSOR_TOPICS: Final = 32  # sensor topics remembered per session (a bound, not a limit)
_STATUS_HEAD: Final = frozenset({"status", "device_id", "timestamp"})
_NO_EXTRAS: Final[Mapping[str, Any]] = MappingProxyType({})  # until a device_register


class SessionState(enum.StrEnum):
    """Where a device connection is; every transition is in :class:`DeviceSession`."""

    AWAIT_HELLO = "await_hello"  # socket open, no device hello yet
    READY = "ready"  # hello answered; binary version fixed for life
    CLOSING = "closing"  # close sent in order (goodbye, idle, replaced); socket ending
    ERROR = "error"  # closed 1008/1009 for the device's violation; input refused
    CLOSED = "closed"  # on_close ran: disconnected status published


_TAKES_INPUT: Final = frozenset({SessionState.AWAIT_HELLO, SessionState.READY})
"""States that read the device's frames; any other returns ``[]`` for them."""

_CLOSE_SENT: Final = frozenset({SessionState.CLOSING, SessionState.ERROR})
"""States whose close the session sent: the socket's end is no ``connection lost``."""


class UnexpectedMessage(InvalidMessage):
    """A known message in a state where it makes no sense (``listen`` before ``hello``)."""

    code = ErrorCode.INVALID_MESSAGE_TYPE

    def __init__(self, message: str) -> None:
        super().__init__(message, field="type")


# The one table from error class to close (style.md "How this project applies them").
# Every other WireError is answered and counted; a streak of them closes 1008 (garbage).
_CLOSE_FOR_ERROR: Final[dict[type[WireError], tuple[CloseCode, str]]] = {
    MissingIdentity: (CloseCode.POLICY_VIOLATION, "device id required"),
    IdentityRefused: (CloseCode.POLICY_VIOLATION, "device id mismatch"),
    AuthenticationFailed: (CloseCode.POLICY_VIOLATION, "authentication failed"),
}


def _close_for(err: WireError) -> tuple[CloseCode, str] | None:
    for cls in type(err).__mro__:
        rule = _CLOSE_FOR_ERROR.get(cls)
        if rule is not None:
            return rule
    return None


def _new_id() -> str:
    return uuid.uuid4().hex


def _normalize_phrase(text: str) -> str:
    return " ".join(text.casefold().split()).strip(_WAKE_WORD_STRIP)


@functools.lru_cache(maxsize=8)
def _wake_word_set(words: tuple[str, ...]) -> frozenset[str]:
    """The normalized wake words, one set for every session given the same words: built
    for each session it cost 1 KB per idle connection (docs/benchmarks.md)."""
    return frozenset(_normalize_phrase(w) for w in words)


class SpeechSynthesizer(Protocol):
    """What a session needs of a TTS: Opus packets (16 kHz) for a sentence."""

    def synthesize(self, text: str, frame_duration_ms: int) -> tuple[bytes, ...]: ...


class DeviceSession:
    """The logic of one device connection (module docstring for the I/O contract).

    Args:
        identity: From the handshake; None for a seed client that sent no ``Device-Id``
            (its ``device_register`` names it).
        edge_id: This edge process, in the id grammar (status, events).
        topics: The topic tree.
        limits: Per-connection limits.
        counters: Shared by all sessions of the process; mutated in place.
        language: ``language`` of voice commands typed on firmware devices, and of the
            utterances forwarded to speech.
        forward_utterances: Publish each finished utterance's audio as one
            :class:`~xiaozhi.payloads.UtterancePayload` on ``xiaozhi/utterances/{device_id}``
            for the speech workers (design.md section 10).
        stream_utterances: With ``forward_utterances``, offer each utterance to the speech
            workers as it begins and stream it to the one that claims it
            (:mod:`~xiaozhi_edge.streaming`); unclaimed, it is still sent whole.
        wake_words: ``listen detect`` texts that are wake words, not commands.
        synthesizer: The TTS (:class:`~xiaozhi_edge.utterances.ToneSynthesizer` stands in).
        now: Monotonic seconds at connect; the hello timeout runs from here.
        wall: ISO 8601 time at connect.
        session_id_factory: Makes the ``session_id`` (uuid4 hex by default).
        message_id_factory: Makes ``message_id``\\ s of published voice commands.
        mcp_vision: ``capabilities.vision`` offered in MCP ``initialize``.
        on_utterance: Receives each finished :class:`Utterance` (its PCM decoded only if
            asked for). Speech runs on the hub, from the forwarded Opus; this is where an
            in-process consumer would plug in.
        on_fault: Called with every internal fault (a bug) as it is caught, inside the
            ``except`` block, so the I/O layer logs it with its traceback; the session stays
            alive and answers the device without details. Also an attribute, set once the
            I/O layer's connection exists.
        transport: what the device's status and connection events say it came by
            (``mqtt-udp`` for a session behind the edge's MQTT + UDP listener).

    Memory: an edge holds 10,000 idle sessions, so the class has ``__slots__`` and what only
    some devices use (the utterance buffer, the MCP client, the command delivery with its
    duplicate-id window, the chunk reassembler, admission's flood and garbage windows) is
    made on first use.
    """

    __slots__ = (
        "_admission",
        "_announced",
        "_audio",
        "_delivery",
        "_groups",
        "_mcp",
        "_mcp_vision",
        "_message_id_factory",
        "_on_utterance",
        "_opened_at",
        "_reassembly",
        "_register_extras",
        "_sensor_topics",
        "_session_id_factory",
        "_status_tail",
        "_streamer",
        "_subscriptions",
        "_superseded",
        "_telemetry",
        "_tools_listed_at",
        "binary_version",
        "board",
        "connected_at",
        "counters",
        "edge_id",
        "features_mcp",
        "firmware_version",
        "forward_utterances",
        "frame_duration_ms",
        "identity",
        "kind",
        "language",
        "last_activity",
        "last_fault",
        "limits",
        "on_fault",
        "session_id",
        "state",
        "stream_utterances",
        "synthesizer",
        "topics",
        "transport",
        "via_gateway",
        "wake_words",
    )

    def __init__(
        self,
        identity: ConnectionIdentity | None,
        *,
        edge_id: str,
        topics: TopicTree,
        limits: EdgeLimits,
        counters: EdgeCounters,
        language: str = "en",
        forward_utterances: bool = False,
        stream_utterances: bool = False,
        wake_words: Iterable[str] = DEFAULT_WAKE_WORDS,
        synthesizer: SpeechSynthesizer,
        now: float,
        wall: str,
        session_id_factory: Callable[[], str] = _new_id,
        message_id_factory: Callable[[], str] = _new_id,
        mcp_vision: McpVision | None = None,
        on_utterance: Callable[[Utterance], None] | None = None,
        on_fault: Callable[[Exception], None] | None = None,
        via_gateway: bool = False,
        transport: DeviceTransport = DeviceTransport.WEBSOCKET,
    ) -> None:
        self.identity = identity
        # A xiaozhi-mqtt-gateway's WebSocket (``?from=mqtt_gateway``): audio frames carry its
        # 16-byte header both ways, whatever binary version the hello names.
        self.via_gateway = via_gateway
        self.transport = transport  # what the status and connection events say
        self.edge_id = validate_id(edge_id, what="edge id")
        self.topics = topics
        self.limits = limits
        self.counters = counters
        self.language = language
        self.forward_utterances = forward_utterances
        self.stream_utterances = forward_utterances and stream_utterances
        self._streamer: UtteranceStreamer | None = None  # made by the first streamed utterance
        self.wake_words = _wake_word_set(tuple(wake_words))
        self.synthesizer = synthesizer
        self.connected_at = wall
        self._session_id_factory = session_id_factory
        self._message_id_factory = message_id_factory
        self._on_utterance = on_utterance
        self.on_fault = on_fault  # settable: the I/O layer's connection comes after us

        self.state = SessionState.AWAIT_HELLO
        self.kind: DeviceKind | None = None
        self.session_id: str | None = None
        self.binary_version = 1
        self.frame_duration_ms = DEFAULT_FRAME_DURATION_MS
        self.features_mcp = False
        self.board: str | None = None
        self.firmware_version: str | None = None
        self.last_fault: BaseException | None = None

        self._opened_at = now
        self.last_activity = now
        self._announced = False
        self._superseded = False
        self._subscriptions: tuple[str, ...] = ()
        self._groups: tuple[str, ...] = ()
        self._register_extras = _NO_EXTRAS  # replaced, never mutated
        self._telemetry: dict[str, Any] = {}
        self._sensor_topics: dict[str, str] | None = None  # made on the first sensor
        self._status_tail: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        self._delivery: CommandDelivery | None = None  # made by the first command

        self._admission = Admission(limits, now)

        self._audio: UtteranceBuffer | None = None  # made by the first listen start
        self._reassembly: ChunkReassembler | None = None  # made by the first chunk
        self._mcp_vision = mcp_vision
        self._mcp: McpClient | None = None  # made on first use (hello with features.mcp)
        self._tools_listed_at: str | None = None  # when its last ``tools/list`` completed

    # -- public state ------------------------------------------------------------------

    @property
    def device_id(self) -> str | None:
        """The normalized device id, once known."""
        return self.identity.device_id if self.identity is not None else None

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """The MQTT filters this session currently holds."""
        return self._subscriptions

    @property
    def mcp(self) -> McpClient:
        """The MCP client (tools discovered so far, pending calls); made on first use."""
        mcp = self._mcp
        if mcp is None:
            limits = self.limits
            mcp = self._mcp = McpClient(
                vision=self._mcp_vision,
                request_timeout_seconds=limits.mcp_call_timeout_seconds,
                max_pending_calls=limits.max_pending_mcp_calls,
                max_tools=limits.max_mcp_tools,
                max_pages=limits.max_mcp_pages,
            )
        return mcp

    @property
    def existing_mcp(self) -> McpClient | None:
        """The MCP client if one was made (unlike :attr:`mcp`, never makes one)."""
        return self._mcp

    @property
    def ready(self) -> bool:
        """True in READY: the device is greeted and its commands are delivered."""
        return self.state is SessionState.READY

    @property
    def listening(self) -> bool:
        """True while the device is in a listen turn (audio frames are buffered)."""
        return self._audio is not None and self._audio.listening

    def _utterance_buffer(self) -> UtteranceBuffer:
        """The utterance buffer, made by the device's first ``listen start``."""
        audio = self._audio
        if audio is None:
            limits = self.limits
            audio = self._audio = UtteranceBuffer(
                max_utterance_seconds=limits.max_utterance_seconds,
                silence_rms_threshold=limits.silence_rms_threshold,
                silence_ms=limits.silence_ms,
            )
        return audio

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` next has work (monotonic seconds); None when closing."""
        if self.state is SessionState.AWAIT_HELLO:
            return self._opened_at + self.limits.hello_timeout_seconds
        if self.state is SessionState.READY:
            idle = self.last_activity + self.limits.idle_timeout_seconds
            mcp = self._mcp.next_deadline() if self._mcp is not None else None
            streamed = self._streamer.next_deadline() if self._streamer is not None else None
            return min(d for d in (idle, mcp, streamed) if d is not None)
        return None

    # -- inputs ------------------------------------------------------------------------

    # Each entry point is the state gate and :meth:`_guarded` around its handler: the one
    # place where a WireError becomes a reply and anything else a counted, logged fault.

    def on_text(self, text: str, now: float, wall: str) -> list[Output]:
        """One WebSocket text frame from the device."""
        if self.state not in _TAKES_INPUT:
            return []
        return self._guarded(DeviceSession._text, text, now, wall, reply=True)

    def on_binary(self, data: bytes, now: float, wall: str) -> list[Output]:
        """One WebSocket binary frame from the device, in its fixed binary version."""
        if self.state not in _TAKES_INPUT:
            return []
        return self._guarded(DeviceSession._binary, data, now, wall, reply=True)

    def on_command(self, payload: bytes, now: float, wall: str) -> list[Output]:
        """One MQTT message from the device's command, group or broadcast topic.

        Bad commands are not the device's fault: they are answered on
        ``xiaozhi/events/{device_id}`` (an ``error`` or a failed ``command_result``), never
        on the socket.
        """
        return self._guarded(DeviceSession._command, payload, now, wall, reply=False)

    def on_claim(self, payload: bytes, now: float, wall: str) -> list[Output]:
        """A speech worker's message on ``xiaozhi/utterances/{device_id}/claim``
        (:mod:`~xiaozhi_edge.streaming`)."""
        return self._guarded(DeviceSession._claim, payload, now, wall, reply=False)

    def on_timer(self, now: float, wall: str) -> list[Output]:
        """Run the timers due at ``now``: hello timeout, idle timeout, MCP call timeouts."""
        return self._guarded(DeviceSession._timer, None, now, wall, reply=False)

    def on_groups(self, group_ids: Iterable[str], now: float, wall: str) -> list[Output]:
        """The device's groups changed (e.g. from the hub's retained ``bridge/groups``).

        Group command topics are subscribed beside the device's own and the broadcast. A
        command that arrives twice (group topic and the hub's fan-out onto the device topic)
        is delivered once: commands are de-duplicated by ``message_id``.

        Returns:
            Subscribe/Unsubscribe for the difference (nothing before the hello: the groups
            are used when the session subscribes).
        """
        return self._guarded(DeviceSession._groups_changed, group_ids, now, wall, reply=False)

    def supersede(self, now: float, wall: str) -> list[Output]:
        """The same device connected again (on this edge): close this older connection.

        Its ``on_close`` will then neither publish ``disconnected`` nor a
        ``device_disconnected`` event, which would overwrite the retained ``connected`` of
        the new connection (a firmware reconnect often beats the old socket's close). It
        still unsubscribes and fails its pending MCP calls.

        Returns:
            ``[Close(1000, "replaced by a new connection")]``, or ``[]`` if already closing.
        """
        del now, wall
        self._superseded = True
        out: list[Output] = []
        if self.state in _TAKES_INPUT:
            self._close(CloseCode.NORMAL, "replaced by a new connection", out)
        return out

    def on_close(self, now: float, wall: str) -> list[Output]:
        """The socket is gone. Publishes ``disconnected`` and unsubscribes; call once."""
        if self.state is SessionState.CLOSED:
            return []
        return self._guarded(DeviceSession._socket_gone, None, now, wall, reply=False)

    def _guarded(
        self,
        handler: Callable[[DeviceSession, _T, float, str, list[Output]], None],
        arg: _T,
        now: float,
        wall: str,
        *,
        reply: bool,
    ) -> list[Output]:
        """Run one entry point's handler; the session's only ``try``/``except``.

        Args:
            handler: The entry point's body, a plain function of the class (looked up on
                the class, so no bound method is made per message).
            reply: True for the device's own frames: a :class:`~xiaozhi.errors.WireError`
                is its fault and answered (:meth:`_reject`). False for everything else
                (commands, timers, groups, the socket's end), where any exception is ours.

        Returns:
            The outputs, including what the handler appended before it raised.
        """
        out: list[Output] = []
        try:
            handler(self, arg, now, wall, out)
        except WireError as err:
            if reply:
                self._reject(err, now, wall, out)
            else:
                self._fault(err, wall, out, reply=False)
        except Exception as exc:
            self._fault(exc, wall, out, reply=reply)
        return out

    # -- entry point bodies ------------------------------------------------------------

    def _text(self, text: str, now: float, wall: str, out: list[Output]) -> None:
        self.counters.text_messages += 1
        size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        if self._admit(size, now, wall, out):
            obj = jsonutil.loads_object(text, max_bytes=self.limits.max_frame_bytes)
            if self.state is not SessionState.READY or not self._telemetry_fast(obj, wall, out):
                self._dispatch(device_message_from_obj(obj), now, wall, out)

    def _binary(self, data: bytes, now: float, wall: str, out: list[Output]) -> None:
        self.counters.binary_frames += 1
        if self._admit(len(data), now, wall, out):
            self._handle_binary(data, now, wall, out)

    def _command(self, payload: bytes, now: float, wall: str, out: list[Output]) -> None:
        if self._announced and self.state is not SessionState.CLOSED:
            delivery = self._delivery
            if delivery is None:
                delivery = self._delivery = CommandDelivery()
            delivery.on_command(self, payload, now, wall, out)

    def _claim(self, payload: bytes, now: float, wall: str, out: list[Output]) -> None:
        del wall
        streamer = self._streamer
        if streamer is None or self.state is SessionState.CLOSED:
            return
        claim = UtteranceClaim.from_wire(payload)
        if claim.device_id != self.device_id:
            return
        packets = self._audio.current_packets if self._audio is not None else []
        out.extend(streamer.on_claim(claim, packets, now))

    def _timer(self, _: None, now: float, wall: str, out: list[Output]) -> None:
        if self.state is SessionState.AWAIT_HELLO:
            if now >= self._opened_at + self.limits.hello_timeout_seconds:
                self._fail(CloseCode.POLICY_VIOLATION, "hello timeout", out)
        elif self.state is SessionState.READY:
            if now >= self.last_activity + self.limits.idle_timeout_seconds:
                self._close(CloseCode.GOING_AWAY, "idle timeout", out)
                return
            if self._mcp is not None:
                for event in self._mcp.expire(now):
                    self._on_mcp_failure(event, wall, out, timed_out=True)
            if self._streamer is not None:
                out.extend(self._streamer.expire(now))

    def _groups_changed(
        self, group_ids: Iterable[str], now: float, wall: str, out: list[Output]
    ) -> None:
        del now, wall
        groups = []
        for group in group_ids:
            try:
                groups.append(validate_id(group, what="group id"))
            except InvalidTopic:
                self.counters.count_error(ErrorCode.INVALID_DATA_FORMAT.name)
        self._groups = tuple(dict.fromkeys(groups))
        if self.state is SessionState.READY and self.device_id is not None:
            wanted = self._filters(self.device_id)
            added = tuple(f for f in wanted if f not in self._subscriptions)
            removed = tuple(f for f in self._subscriptions if f not in wanted)
            if removed:
                out.append(Unsubscribe(removed))
            if added:
                out.append(Subscribe(added))
            self._subscriptions = wanted

    def _socket_gone(self, _: None, now: float, wall: str, out: list[Output]) -> None:
        del now
        previous, self.state = self.state, SessionState.CLOSED
        if previous not in _CLOSE_SENT:
            self.counters.count_close("connection lost")
        if self._audio is not None:
            self._audio.release()
        if self._streamer is not None:
            out.extend(self._streamer.cancel())
        self._reassembly = None
        if not self._announced or self.device_id is None:
            return
        reason = "connection replaced" if self._superseded else "device disconnected"
        if self._mcp is not None:
            for event in self._mcp.cancel_all(reason):
                self._on_mcp_failure(event, wall, out, timed_out=False)
        if self._subscriptions:
            out.append(Unsubscribe(self._subscriptions))
            self._subscriptions = ()
        if self._superseded:
            return
        out.append(self.status_publish(DeviceStatus.DISCONNECTED, wall))
        disconnected = ConnectionEvent(
            event_type="device_disconnected",
            device_id=self.device_id,
            transport=self.transport,
            edge_id=self.edge_id,
            timestamp=wall,
            session_id=self.session_id,
            simulated=self._simulated,
        )
        out.append(
            Publish.of(
                TopicKind.DEVICE_DISCONNECTED,
                self.topics.device_disconnected(),
                disconnected.to_wire(),
            )
        )

    # -- admission, errors, closing ----------------------------------------------------

    def _admit(self, size: int, now: float, wall: str, out: list[Output]) -> bool:
        """Count the frame and ask admission (edge/admission.py); False when it is dropped."""
        counters = self.counters
        counters.frames_received += 1
        counters.bytes_received += size
        self.last_activity = now
        refusal = self._admission.admit(size, now)
        if refusal is None:
            return True
        if isinstance(refusal.error, RateLimited):
            counters.rate_limited += 1
        self._reply_error(refusal.error, wall, out)
        if refusal.close is not None:
            self._fail(refusal.close[0], refusal.close[1], out)
        return False

    def _reply_error(self, err: WireError, wall: str, out: list[Output]) -> None:
        self.counters.count_error(err.code.name)
        reply = ErrorMessage.from_error(err, device_id=self.device_id, timestamp=wall)
        out.append(SendText(reply.to_text()))

    def _reject(self, err: WireError, now: float, wall: str, out: list[Output]) -> None:
        """Answer a peer's bad input; close for identity errors and garbage streaks."""
        self._reply_error(err, wall, out)
        rule = _close_for(err)
        if rule is not None:
            self._fail(rule[0], rule[1], out)
        elif self._admission.garbage(now):
            self._fail(MALFORMED_STREAK[0], MALFORMED_STREAK[1], out)

    def _fault(self, exc: Exception, wall: str, out: list[Output], *, reply: bool) -> None:
        """A bug: count it, hand it to the log, answer without details, stay alive."""
        self.counters.count_error(_INTERNAL_ERROR)
        self.last_fault = exc
        if self.on_fault is not None:
            self.on_fault(exc)
        if reply and self.state in _TAKES_INPUT:
            data = ErrorData(
                error_code=_INTERNAL_ERROR,
                error_message="internal error; the message was dropped",
                device_id=self.device_id,
                timestamp=wall,
            )
            message = ErrorMessage(data=data, device_id=self.device_id, timestamp=wall)
            out.append(SendText(message.to_text()))

    def _close(self, code: CloseCode, reason: str, out: list[Output]) -> None:
        """End the connection in order (goodbye, idle, replaced): READY -> CLOSING."""
        out.append(Close(int(code), reason))
        self.state = SessionState.CLOSING
        self.counters.count_close(reason)

    def _fail(self, code: CloseCode, reason: str, out: list[Output]) -> None:
        """End the connection for the device's violation (1008, 1009): -> ERROR.

        The error reply is already in ``out``; after the close, input is refused.
        """
        out.append(Close(int(code), reason))
        self.state = SessionState.ERROR
        self.counters.count_close(reason)

    # -- dispatch ----------------------------------------------------------------------

    def _handle_binary(self, data: bytes, now: float, wall: str, out: list[Output]) -> None:
        if self.state is SessionState.AWAIT_HELLO:
            raise UnexpectedMessage(
                "binary frame before hello: the binary protocol version is not fixed yet"
            )
        frame = self.decode_binary(data)
        if frame.type is FrameType.JSON:
            # v2/v3 may carry JSON in a binary frame (seed 000): same as a text frame.
            message = parse_device_message(frame.payload, max_bytes=self.limits.max_frame_bytes)
            self._dispatch(message, now, wall, out)
            return
        audio = self._audio
        if audio is None or not audio.listening:
            # e.g. the wake-word audio burst the firmware may send before listen start.
            self.counters.dropped_audio_frames += 1
            return
        dropped_before = audio.dropped_frames_total
        try:
            finished = audio.feed(frame.payload)
        finally:
            self.counters.dropped_audio_frames += audio.dropped_frames_total - dropped_before
        if finished is not None:
            self._finish_utterance(finished, wall, out)
        if self.stream_utterances:
            self._stream(audio.current_packets, wall, out)

    def _stream(self, packets: list[bytes], wall: str, out: list[Output]) -> None:
        """The utterance in progress: offered at its first frame, then its batches."""
        if not packets:
            return
        streamer = self._streamer
        if streamer is None:
            assert self.device_id is not None
            streamer = self._streamer = UtteranceStreamer(
                self.topics, self.device_id, self.frame_duration_ms
            )
        if streamer.message_id is None:
            fields = self._utterance_fields(None, None, wall)
            out.append(
                streamer.begin(
                    UtteranceStart(
                        sample_rate=SAMPLE_RATE,
                        frame_duration_ms=self.frame_duration_ms,
                        **fields,
                    )
                )
            )
            return
        out.extend(streamer.frames(packets))

    def decode_binary(self, data: bytes) -> BinaryFrame:
        """One binary frame of this connection: the gateway's header or the binary version's.

        Raises:
            WireError: the frame does not decode.
        """
        limit = self.limits.max_frame_bytes
        if self.via_gateway:
            audio = decode_gateway_audio(data, max_payload_bytes=limit)
            return BinaryFrame(FrameType.OPUS, audio.opus, audio.timestamp_ms)
        return decode_frame(data, self.binary_version, max_payload_bytes=limit)

    def _dispatch(self, message: DeviceMessage, now: float, wall: str, out: list[Output]) -> None:
        if self.state is SessionState.AWAIT_HELLO:
            match message:
                case DeviceHello():
                    self._on_hello(message, now, wall, out)
                case DeviceRegisterMessage():
                    self._on_register(message, now, wall, out)
                case _:
                    raise UnexpectedMessage(
                        f"{message.type!r} before hello: the first message must be "
                        "'hello' or 'device_register'"
                    )
            return
        match message:
            case Listen():
                self._on_listen(message, wall, out)
            case Abort():
                self._on_abort(message, wall, out)
            case Mcp():
                self._on_mcp(message, now, wall, out)
            case Goodbye():
                self._close(CloseCode.NORMAL, "goodbye", out)
            case PingMessage():
                self._on_ping(message, wall, out)
            case VoiceCommandMessage():
                self._on_voice_command_message(message, wall, out)
            case AudioDataMessage():
                self._on_audio_data(message, wall, out)
            case SensorMessage():
                self._on_sensor(message, wall, out)
            case ErrorMessage():
                self._on_device_error(message, wall, out)
            case DeviceHello() if self.kind is DeviceKind.FIRMWARE:
                out.append(SendText(self._server_hello()))  # idempotent: same answer again
            case DeviceRegisterMessage() if self.kind is DeviceKind.SEED:
                self._check_register_id(message)
                out.append(SendText(self._registered_response(message.message_id, wall)))
            case _:
                raise UnexpectedMessage(
                    f"{message.type!r} is not accepted from a {self.kind} device in state "
                    f"{self.state}"
                )

    # -- hello and registration --------------------------------------------------------

    def _on_hello(self, hello: DeviceHello, now: float, wall: str, out: list[Output]) -> None:
        if self.identity is None:
            raise MissingIdentity(
                "hello on a connection without a Device-Id header (or device-id query "
                "parameter): the device cannot be named"
            )
        header = self.identity.protocol_version
        announced = hello.version if hello.version not in (None, 0) else None
        if header is not None:
            # The header wins (design.md §4); a disagreeing hello is worth a counter.
            version = header
            if announced is not None and announced != header:
                self.counters.version_conflicts += 1
        elif announced is not None:
            if announced not in SUPPORTED_VERSIONS:
                raise UnsupportedVersion(version=announced, supported=SUPPORTED_VERSIONS)
            version = announced
        else:
            version = 1
        frame_duration = DEFAULT_FRAME_DURATION_MS
        if hello.audio_params is not None:
            asked = hello.audio_params.frame_duration
            if asked in SUPPORTED_FRAME_DURATIONS_MS:
                frame_duration = asked
            else:
                err = InvalidMessage(
                    f"audio_params.frame_duration {asked} ms is not supported (20, 40 or 60); "
                    f"using {DEFAULT_FRAME_DURATION_MS} ms",
                    field="audio_params.frame_duration",
                )
                self._reply_error(err, wall, out)
        self.binary_version = version
        self.frame_duration_ms = frame_duration
        self.features_mcp = bool(hello.features is not None and hello.features.mcp)
        self.kind = DeviceKind.FIRMWARE
        self._become_ready(now)
        self._announce(self._server_hello(), wall, out)
        if self.features_mcp:
            request = self.mcp.initialize(now)
            out.append(SendText(mcp_message(request, self.session_id).to_text()))

    def _server_hello(self) -> str:
        assert self.session_id is not None
        params = AudioParams(
            format="opus",
            sample_rate=SAMPLE_RATE,
            channels=1,
            frame_duration=self.frame_duration_ms,
        )
        return ServerHello(session_id=self.session_id, audio_params=params).to_text()

    def _check_register_id(self, message: DeviceRegisterMessage) -> str:
        try:
            device_id = normalize_device_id(message.data.device_id)
        except InvalidTopic as err:
            raise InvalidMessage(f"data.device_id: {err}", field="data.device_id") from err
        if self.identity is not None and device_id != self.identity.device_id:
            raise IdentityRefused(
                f"device_register names device {device_id!r} but this connection is "
                f"{self.identity.device_id!r}"
            )
        return device_id

    def _on_register(
        self, message: DeviceRegisterMessage, now: float, wall: str, out: list[Output]
    ) -> None:
        device_id = self._check_register_id(message)
        if self.identity is None:
            self.identity = ConnectionIdentity(device_id, message.data.device_id)
        data = message.data
        self.binary_version = self.identity.protocol_version or 1
        self.kind = DeviceKind.SEED
        self.firmware_version = data.firmware_version
        extras: dict[str, Any] = {
            "device_type": data.device_type,
            "capabilities": list(data.capabilities),
        }
        if data.hardware_info is not None:
            extras["hardware_info"] = data.hardware_info.to_json_dict()
        self._register_extras = extras
        self._become_ready(now)
        # Seed 003 says the server "confirms registration" without a shape: we answer with
        # its server→device `response` envelope, which every seed client already handles.
        self._announce(self._registered_response(message.message_id, wall), wall, out)

    def _registered_response(self, message_id: str | None, wall: str) -> str:
        data = ResponseData(
            text="registered",
            device_id=self.device_id,
            status="registered",
            session_id=self.session_id,
        )
        return ResponseMessage(
            data=data, timestamp=wall, device_id=self.device_id, message_id=message_id
        ).to_text()

    def _become_ready(self, now: float) -> None:
        self.session_id = self._session_id_factory()
        self.state = SessionState.READY
        self.last_activity = now

    def _filters(self, device_id: str) -> tuple[str, ...]:
        own = tuple(self.topics.all_commands_for(device_id))
        claims = (self.topics.utterance_claim(device_id),) if self.stream_utterances else ()
        return own + claims + tuple(self.topics.group_command(g) for g in self._groups)

    def _announce(self, answer: str, wall: str, out: list[Output]) -> None:
        """Subscribe to the device's commands, then send ``answer`` (the server hello or the
        registration response), then tell the tree the device is connected.

        The subscription comes first because the I/O layer holds later outputs until the
        broker acknowledges it: a device (or whoever watches it) may send a command the
        moment it is greeted, and a command published before the SUBACK reaches nobody.
        """
        assert self.device_id is not None
        self._subscriptions = self._filters(self.device_id)
        out.append(Subscribe(self._subscriptions))
        out.append(SendText(answer))
        out.append(self.status_publish(DeviceStatus.CONNECTED, wall))
        event = ConnectionEvent(
            event_type="device_connected",
            device_id=self.device_id,
            transport=self.transport,
            edge_id=self.edge_id,
            timestamp=wall,
            session_id=self.session_id,
            device_kind=str(self.kind),
            protocol_version=self.binary_version,
            simulated=self._simulated,
        )
        out.append(
            Publish.of(TopicKind.DEVICE_CONNECTED, self.topics.device_connected(), event.to_wire())
        )
        self._announced = True

    @property
    def _simulated(self) -> bool | None:
        """``simulated`` of the status and connection events: True, or absent (a real one)."""
        return True if self.identity is not None and self.identity.simulated else None

    def status_publish(self, status: DeviceStatus, wall: str) -> Publish:
        """The device's retained status (also for edge/delivery.py's ``get_status``)."""
        assert self.device_id is not None
        if status is DeviceStatus.CONNECTED:
            payload = self._connected_status(wall)
        else:
            payload = self._status_payload(status, wall).to_wire()
        qos, retain = _STATUS_OPTIONS
        return Publish(self.topics.status(self.device_id), payload, int(qos), retain)

    def _connected_status(self, wall: str) -> bytes:
        """The ``connected`` status as :meth:`_status_payload` writes it, without a model.

        A device pings every few seconds and each ping republishes its status: only the
        timestamp and the telemetry change, so the rest (the fields after the telemetry in
        :class:`StatusPayload`'s order, then the extras) is built once by the model and kept
        until one of its inputs changes.
        """
        key = (
            self.session_id,
            self.binary_version,
            self.kind,
            self.board,
            self.firmware_version,
            self._register_extras,  # replaced, never mutated: no copy needed in the key
        )
        cached = self._status_tail
        if cached is None or cached[0] != key:
            full = self._status_payload(DeviceStatus.CONNECTED, wall)
            tail = {k: v for k, v in full.to_json_dict().items() if k not in _STATUS_HEAD}
            cached = self._status_tail = (key, tail)
        fields: dict[str, Any] = {
            "status": str(DeviceStatus.CONNECTED),
            "device_id": self.device_id,
            "timestamp": wall,
        }
        telemetry = self._telemetry
        for name in TELEMETRY_FIELDS:
            if name in telemetry:
                fields[name] = telemetry[name]
        fields.update(cached[1])
        return jsonutil.dumps(fields)

    def _status_payload(self, status: DeviceStatus, wall: str) -> StatusPayload:
        """The status model, without the telemetry (:meth:`_connected_status` adds it)."""
        assert self.device_id is not None
        extras: dict[str, Any] = {"session_id": self.session_id}
        if status is DeviceStatus.CONNECTED:
            extras.update(self._register_extras)
            extras["protocol_version"] = self.binary_version
            extras["device_kind"] = str(self.kind)
            if self.board is not None:
                extras["board"] = self.board
        return StatusPayload(
            status=status,
            device_id=self.device_id,
            timestamp=wall,
            transport=self.transport,
            edge_id=self.edge_id,
            firmware_version=self.firmware_version if status is DeviceStatus.CONNECTED else None,
            simulated=self._simulated,
            **extras,
        )

    def publish_event(self, event_type: str, wall: str, out: list[Output], **fields: Any) -> None:
        """One event on ``xiaozhi/events/{device_id}`` (the session's and delivery.py's)."""
        assert self.device_id is not None
        payload = EventPayload(
            event_type=event_type,
            device_id=self.device_id,
            timestamp=wall,
            session_id=self.session_id,
            **{k: v for k, v in fields.items() if v is not None},
        )
        topic = self.topics.device_events(self.device_id)
        out.append(Publish.of(TopicKind.DEVICE_EVENTS, topic, payload.to_wire()))

    # -- READY: device messages --------------------------------------------------------

    def _on_listen(self, message: Listen, wall: str, out: list[Output]) -> None:
        if message.state is ListenState.START:
            finished = self._utterance_buffer().start(message.mode or ListenMode.AUTO)
            if finished is not None:
                self._finish_utterance(finished, wall, out)
        elif message.state is ListenState.STOP:
            finished = self._audio.stop() if self._audio is not None else None
            if finished is not None:
                self._finish_utterance(finished, wall, out)
        else:
            text = (message.text or "").strip()
            if not text:
                return
            if _normalize_phrase(text) in self.wake_words:
                self.publish_event(str(EventType.WAKE_WORD), wall, out, wake_word=text)
            else:
                # A typed command (reference §6.5): routed like recognised speech.
                self._voice_command(
                    text,
                    confidence=1.0,
                    language=self.language,
                    message_id=self._message_id_factory(),
                    wall=wall,
                    out=out,
                )

    def _voice_command(
        self,
        command: str,
        *,
        confidence: float,
        language: str,
        message_id: str,
        wall: str,
        out: list[Output],
        **extra: Any,
    ) -> None:
        assert self.device_id is not None
        event = VoiceCommandEvent(
            device_id=self.device_id,
            command=command,
            confidence=confidence,
            language=language,
            session_id=self.session_id,
            transport=self.transport,
            edge_id=self.edge_id,
            message_id=message_id,
            timestamp=wall,
            **{k: v for k, v in extra.items() if v is not None},
        )
        payload = event.to_wire()
        topics = self.topics
        out.append(
            Publish.of(TopicKind.VOICE_COMMAND_EVENTS, topics.voice_command_events(), payload)
        )
        out.append(
            Publish.of(TopicKind.DEVICE_EVENTS, topics.device_events(self.device_id), payload)
        )
        self.counters.voice_commands += 1

    def _finish_utterance(self, utterance: Utterance, wall: str, out: list[Output]) -> None:
        self.counters.utterances += 1
        self.publish_event(
            str(EventType.UTTERANCE),
            wall,
            out,
            source="opus",
            duration_ms=utterance.duration_ms,
            frames=utterance.frames,
            dropped_frames=utterance.dropped_frames,
            decode_errors=utterance.decode_errors,
            reason=str(utterance.reason),
            mode=str(utterance.mode),
            sample_rate=SAMPLE_RATE,
        )
        if self.forward_utterances and utterance.packets:
            streamer = self._streamer
            fields = self._utterance_fields(utterance.reason, utterance.mode, wall)
            if streamer is not None and streamer.message_id is not None:
                fields["message_id"] = streamer.message_id
            whole = UtterancePayload.from_opus(
                utterance.packets,
                sample_rate=SAMPLE_RATE,
                frame_duration_ms=self.frame_duration_ms,
                **fields,
            )
            if streamer is not None:
                out.extend(streamer.end(whole, self.last_activity))
            else:
                self._forward_utterance(whole, out)
        if self._on_utterance is not None:
            self._on_utterance(utterance)

    def _utterance_fields(
        self, reason: UtteranceReason | None, mode: ListenMode | None, wall: str
    ) -> dict[str, Any]:
        """An utterance's fields; without ``reason`` (its start: the end is not known yet),
        the mode is the buffer's."""
        if mode is None:
            mode = self._audio.mode if self._audio is not None else None
        return {
            "device_id": self.device_id,
            "message_id": self._message_id_factory(),
            "session_id": self.session_id,
            "mode": str(mode) if mode is not None else None,
            **({"reason": str(reason)} if reason is not None else {}),
            "language": self.language,
            "transport": self.transport,
            "edge_id": self.edge_id,
            "timestamp": wall,
        }

    def _forward_utterance(self, utterance: UtterancePayload, out: list[Output]) -> None:
        """One whole utterance for the speech workers, QoS 1 (design.md section 10)."""
        assert self.device_id is not None
        topic = self.topics.utterance(self.device_id)
        out.append(Publish.of(TopicKind.UTTERANCE, topic, utterance.to_wire()))

    def _on_abort(self, message: Abort, wall: str, out: list[Output]) -> None:
        # Stop at once, then exactly one `tts stop` (reference §5.1, §6.4; outputs docstring).
        out.append(StopAudio())
        out.append(SendText(Tts(session_id=self.session_id, state=TtsState.STOP).to_text()))
        self.publish_event(str(EventType.ABORT), wall, out, reason=message.reason)

    def _on_mcp(self, message: Mcp, now: float, wall: str, out: list[Output]) -> None:
        event = self.mcp.on_response(message.payload, now)
        match event:
            case McpInitialized():
                if event.server_name is not None:
                    self.board = event.server_name
                if event.server_version is not None:
                    self.firmware_version = event.server_version
                self.send_mcp(event.followup, out)
                out.append(self.status_publish(DeviceStatus.CONNECTED, wall))
            case McpToolsListed():
                self.send_mcp(event.followup, out)
                if event.complete:
                    self._tools_listed_at = wall
                    self.announce_tools(out)
            case McpCallResult() | McpRequestFailed():
                self._on_mcp_failure(event, wall, out, timed_out=False)
            case McpIgnored():
                pass

    def announce_tools(self, out: list[Output]) -> bool:
        """The ``mcp_tools`` event of the device's complete tools list, stamped when it
        completed; False (nothing added) while there is none.

        Published when the listing completes, and again for every hub replica that comes
        online later (edge/monitor.py): the event is not retained, and a hub keeps each
        device's last list only from what it hears.
        """
        mcp, listed_at = self._mcp, self._tools_listed_at
        if mcp is None or listed_at is None or not mcp.tools_complete:
            return False
        self.publish_event(str(EventType.MCP_TOOLS), listed_at, out, tools=sorted(mcp.tools))
        return True

    def send_mcp(self, request: dict[str, Any] | None, out: list[Output]) -> None:
        """Send an MCP request to the device, if there is one (also a delivered command's)."""
        if request is not None:
            out.append(SendText(mcp_message(request, self.session_id).to_text()))

    def _on_mcp_failure(
        self,
        event: McpCallResult | McpRequestFailed,
        wall: str,
        out: list[Output],
        *,
        timed_out: bool,
    ) -> None:
        """Publish what an MCP outcome means: a command result, or an ``error`` event."""
        if timed_out:
            self.counters.mcp_timeouts += 1
        if isinstance(event, McpRequestFailed):
            timeout = self.limits.mcp_call_timeout_seconds
            error = f"no answer within {timeout:g} s" if timed_out else event.error
            self.publish_event(
                str(EventType.ERROR),
                wall,
                out,
                source="mcp",
                method=str(event.method),
                error_message=error,
            )
            return
        call_outcome(self, event, wall, out, timed_out=timed_out)

    def _telemetry_fast(self, obj: dict[str, Any], wall: str, out: list[Output]) -> bool:
        """``sensor`` and ``ping`` in their plain shape, with no model (edge/telemetry.py).

        False when the message is anything else, or not plain: the caller then validates it
        with the models, whose answer (the same outputs, or the error) is the contract.
        """
        msg_type = obj.get("type")
        if msg_type == "sensor":
            sensor = plain_sensor(obj)
            if sensor is None:
                return False
            sensor_type, value, unit, timestamp = sensor
            device_id = self.device_id
            assert device_id is not None
            payload = sensor_payload(sensor_type, value, device_id, unit, timestamp or wall)
            qos, retain = _SENSOR_OPTIONS
            topic = self._sensor_topic(device_id, sensor_type)
            out.append(Publish(topic, payload, int(qos), retain))
            return True
        if msg_type == "ping":
            ping = plain_ping(obj)
            if ping is None:
                return False
            telemetry, message_id = ping
            self._telemetry.update(telemetry)
            out.append(self.status_publish(DeviceStatus.CONNECTED, wall))
            out.append(SendText(pong_text(wall, self.device_id, message_id)))
            return True
        return False

    def _sensor_topic(self, device_id: str, sensor_type: str) -> str:
        """``xiaozhi/sensors/{device_id}/{sensor_type}``, built once per sensor type."""
        topics = self._sensor_topics
        if topics is None:
            topics = self._sensor_topics = {}
        topic = topics.get(sensor_type)
        if topic is None:
            if len(topics) >= _MAX_SENSOR_TOPICS:
                topics.clear()  # a device inventing sensor types costs a rebuild, not memory
            topic = topics[sensor_type] = self.topics.sensor(device_id, sensor_type)
        return topic

    def _on_ping(self, message: PingMessage, wall: str, out: list[Output]) -> None:
        data = message.data
        for name in TELEMETRY_FIELDS:
            value = getattr(data, name)
            if value is not None:
                self._telemetry[name] = value
        out.append(self.status_publish(DeviceStatus.CONNECTED, wall))
        pong = PongMessage(timestamp=wall, device_id=self.device_id, message_id=message.message_id)
        out.append(SendText(pong.to_text()))

    def _on_voice_command_message(
        self, message: VoiceCommandMessage, wall: str, out: list[Output]
    ) -> None:
        data = message.data
        command = data.command.strip()
        if not command:
            raise InvalidMessage(
                "voice_command: field 'data.command' is empty", field="data.command"
            )
        self._voice_command(
            command,
            confidence=data.confidence if data.confidence is not None else 1.0,
            language=data.language or self.language,
            message_id=message.message_id or self._message_id_factory(),
            wall=wall,
            out=out,
            processing_time_ms=data.processing_time_ms,
            audio_duration_ms=data.audio_duration_ms,
        )

    def _on_sensor(self, message: SensorMessage, wall: str, out: list[Output]) -> None:
        assert self.device_id is not None
        data = message.data
        payload = SensorPayload(
            sensor_type=data.sensor_type,
            value=data.value,
            device_id=self.device_id,
            unit=data.unit,
            timestamp=message.timestamp or wall,
        )
        topic = self._sensor_topic(self.device_id, data.sensor_type)
        out.append(Publish.of(TopicKind.SENSOR, topic, payload.to_wire()))

    def _on_device_error(self, message: ErrorMessage, wall: str, out: list[Output]) -> None:
        data = message.data
        self.publish_event(
            str(EventType.ERROR),
            wall,
            out,
            source="device",
            error_code=data.error_code,
            error_message=data.error_message,
            details=data.details,
        )

    # -- seed audio_data -----------------------------------------------------------------

    def _on_audio_data(self, message: AudioDataMessage, wall: str, out: list[Output]) -> None:
        data = message.data
        if data.audio_format.lower() != "wav":
            raise InvalidMessage(
                f"audio_data: audio_format {data.audio_format!r} is not supported; send 'wav'",
                field="data.audio_format",
            )
        if data.compression.lower() != "none":
            raise InvalidMessage(
                f"audio_data: compression {data.compression!r} is not supported; send 'none'",
                field="data.compression",
            )
        chunk = message.audio_bytes()
        chunks = 1
        if data.stream_id is not None:
            reassembly = self._reassembly
            if reassembly is None:
                reassembly = self._reassembly = ChunkReassembler(self.limits)
            assembled = reassembly.add(data.stream_id, data.total_chunks, data.chunk_number, chunk)
            if assembled is None:
                return
            chunk, chunks = assembled
        fmt, pcm = decode_wav(chunk, max_bytes=self.limits.max_reassembly_bytes)
        duration_ms = len(pcm) * 1000 // fmt.byte_rate
        self.counters.utterances += 1
        self.publish_event(
            str(EventType.UTTERANCE),
            wall,
            out,
            source="audio_data",
            stream_id=data.stream_id,
            duration_ms=duration_ms,
            frames=chunks,
            dropped_frames=0,
            reason=str(UtteranceReason.STOP),
            sample_rate=fmt.sample_rate,
            channels=fmt.channels,
            bit_depth=fmt.bits_per_sample,
        )
        if self.forward_utterances and fmt == UPLINK_FORMAT:
            fields = self._utterance_fields(UtteranceReason.STOP, ListenMode.MANUAL, wall)
            self._forward_utterance(
                UtterancePayload.from_pcm(pcm, sample_rate=fmt.sample_rate, **fields), out
            )
        if self._on_utterance is not None and fmt == UPLINK_FORMAT:
            self._on_utterance(
                Utterance(
                    duration_ms=duration_ms,
                    frames=chunks,
                    dropped_frames=0,
                    reason=UtteranceReason.STOP,
                    raw_pcm=pcm,
                )
            )
