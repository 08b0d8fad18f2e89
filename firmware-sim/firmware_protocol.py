"""The device side of the xiaozhi WebSocket protocol, sans I/O.

:class:`FirmwareSession` is what ``FW:main/protocols/websocket_protocol.cc`` and
``application.cc`` do, as a pure object (the shape of websockets' ``Protocol``): the transport
feeds it frames (:meth:`~FirmwareSession.receive_text`, :meth:`~FirmwareSession.receive_binary`)
and the time (``now``, monotonic seconds), then sends :meth:`~FirmwareSession.data_to_send` and
handles :meth:`~FirmwareSession.events_received`. No socket, no clock, no asyncio.

Firmware rules it keeps (reference section 1 and 6.7):

* the channel opens lazily on wake; the first text frame is the hello (binary version,
  ``transport: websocket``, ``features.mcp``, 16 kHz / 60 ms Opus); the server hello must come
  within **10 s** (:data:`HELLO_TIMEOUT_SECONDS`) and must say ``transport: websocket``;
  audio parameters default to 24 kHz / 60 ms when the server leaves them out (1.4);
* every later message carries ``session_id``; nothing received for **120 s**
  (:data:`SILENCE_TIMEOUT_SECONDS`) closes the channel; closing sends no goodbye (1.1);
* ``tts start`` -> Speaking; ``tts stop`` -> Listening in auto/realtime, Idle in manual (1.5);
* binary frames decode in the connection's version; audio is played only while Speaking
  (else dropped), into a queue of at most 40 packets (2.4 s) that drains at frame pace;
  beyond that, packets are dropped (1.7);
* the v2 uplink ``timestamp`` echoes the timestamp of the last downlink packet played,
  0 when none was (1.7);
* ``mcp`` goes to the device's MCP server, ``system reboot`` reboots, ``alert`` is shown.

:class:`SeedSession` is the seed 003 client on the same socket: ``device_register`` on open,
``voice_command`` for speech, ``ping`` heartbeats with telemetry, ``sensor`` readings.
"""

from __future__ import annotations

import collections
import uuid
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from xiaozhi import jsonutil
from xiaozhi.binary import FrameType, decode_frame, encode_opus
from xiaozhi.errors import InvalidMessage, WireError
from xiaozhi.messages import (
    Abort,
    AbortReason,
    Alert,
    AudioParams,
    CommandMessage,
    DeviceHello,
    DeviceRegisterData,
    DeviceRegisterMessage,
    Features,
    Listen,
    ListenMode,
    ListenState,
    Llm,
    Mcp,
    PingData,
    PingMessage,
    ResponseMessage,
    SensorData,
    SensorMessage,
    ServerHello,
    ServerMessage,
    Stt,
    System,
    SystemCommand,
    Transport,
    Tts,
    TtsState,
    VoiceCommandData,
    VoiceCommandMessage,
    parse_server_message,
)
from xiaozhi_sim.identity import DeviceIdentity
from xiaozhi_sim.mcp_server import McpServer
from xiaozhi_sim.model import DeviceModel
from xiaozhi_sim.state import DeviceState

__all__ = [
    "DEFAULT_SERVER_FRAME_MS",
    "DEFAULT_SERVER_SAMPLE_RATE",
    "HELLO_TIMEOUT_SECONDS",
    "MAX_DECODE_PACKETS",
    "SILENCE_TIMEOUT_SECONDS",
    "UPLINK_AUDIO_PARAMS",
    "AudioDropped",
    "AudioReceived",
    "ChannelTimeout",
    "CommandReceived",
    "FirmwareSession",
    "HelloAccepted",
    "MessageReceived",
    "Outgoing",
    "ProtocolError",
    "RebootRequested",
    "SeedSession",
    "SessionEvent",
    "handshake_headers",
]

HELLO_TIMEOUT_SECONDS: Final = 10.0
SILENCE_TIMEOUT_SECONDS: Final = 120.0
DEFAULT_SERVER_SAMPLE_RATE: Final = 24000  # `server_sample_rate_` in protocol.h
DEFAULT_SERVER_FRAME_MS: Final = 60
MAX_DECODE_PACKETS: Final = 2400 // 60  # 2.4 s of 60 ms packets
UPLINK_AUDIO_PARAMS: Final = AudioParams(
    format="opus", sample_rate=16000, channels=1, frame_duration=60
)
"""The microphone stream: Opus, 16 kHz, mono, 60 ms (reference 1.3, ``OPUS_FRAME_DURATION_MS``)."""

Outgoing: TypeAlias = str | bytes
"""A WebSocket message to send: text (JSON) or binary (an audio frame)."""


# -- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HelloAccepted:
    """The server hello arrived: the channel is open (reference 1.4)."""

    session_id: str | None
    sample_rate: int
    frame_duration: int


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """Any valid server JSON message, after the session acted on it."""

    message: ServerMessage | dict[str, Any]


@dataclass(frozen=True, slots=True)
class AudioReceived:
    """A downlink Opus packet accepted for playback: decode it."""

    opus: bytes
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class AudioDropped:
    """A downlink packet the firmware would drop: ``not_speaking`` or ``queue_full``."""

    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The server sent something we refuse; ``error`` says what (a QA finding)."""

    error: WireError
    what: str


@dataclass(frozen=True, slots=True)
class ChannelTimeout:
    """``hello`` (no server hello in 10 s) or ``silence`` (nothing for 120 s)."""

    reason: str


@dataclass(frozen=True, slots=True)
class CommandReceived:
    """Seed client: the edge's ``command`` envelope (docs/edge.md, commands for seed-style
    devices); ``envelope.data`` is the command payload to run."""

    envelope: CommandMessage


@dataclass(frozen=True, slots=True)
class RebootRequested:
    """``system reboot`` or the ``self.reboot`` tool: close the channel, then reboot."""


SessionEvent: TypeAlias = (
    HelloAccepted
    | MessageReceived
    | AudioReceived
    | AudioDropped
    | ProtocolError
    | ChannelTimeout
    | CommandReceived
    | RebootRequested
)


def handshake_headers(identity: DeviceIdentity, *, token: str, version: int) -> dict[str, str]:
    """The four handshake headers (reference 1.2).

    ``Authorization`` gets ``Bearer `` prefixed when the token holds no space, and is left out
    when the token is empty, as the firmware does.
    """
    headers = {
        "Protocol-Version": str(version),
        "Device-Id": identity.header_device_id,
        "Client-Id": identity.client_id,
    }
    if token:
        headers["Authorization"] = token if " " in token else f"Bearer {token}"
    return headers


class _Session:
    """Outbox, events and the channel flags both session kinds share."""

    def __init__(self, identity: DeviceIdentity, model: DeviceModel) -> None:
        self.identity = identity
        self.model = model
        self.channel_open = False
        self.close_requested: str | None = None
        self.session_id: str | None = None
        self.last_incoming = 0.0
        self.messages_in = 0
        self.messages_out = 0
        self.version = 1  # binary protocol version of the connection
        self._outbox: list[Outgoing] = []
        self._events: list[SessionEvent] = []

    def headers(self, token: str) -> dict[str, str]:
        """Handshake headers for this connection's version (reference 1.2)."""
        return handshake_headers(self.identity, token=token, version=self.version)

    def data_to_send(self) -> list[Outgoing]:
        """What to write now, in order; the list is handed over (call once per flush)."""
        out, self._outbox = self._outbox, []
        self.messages_out += len(out)
        return out

    def events_received(self) -> list[SessionEvent]:
        """What happened since the last call."""
        out, self._events = self._events, []
        return out

    def _send(self, message: Outgoing) -> None:
        self._outbox.append(message)

    def _go(self, target: DeviceState, why: str) -> None:
        machine = self.model.machine
        if machine.can(target):
            machine.go(target, why)

    def begin_connect(self, now: float) -> None:
        """The transport starts opening the socket: Connecting."""
        del now
        self.close_requested = None
        self._go(DeviceState.CONNECTING, "wake")

    def channel_closed(self, now: float) -> None:
        """The socket is gone (either side, or a failed connect): back to Idle."""
        del now
        self.channel_open = False
        self.session_id = None
        self._outbox.clear()
        if self.model.state not in (DeviceState.STARTING, DeviceState.FATAL_ERROR):
            self._go(DeviceState.IDLE, "channel closed")

    def _refused(self, err: WireError, what: str) -> None:
        self._events.append(ProtocolError(err, what))


class FirmwareSession(_Session):
    """The real firmware's WebSocket session (module docstring).

    Args:
        identity: the device.
        model: its hardware state (changed by MCP, ``alert``, ``tts``...).
        mcp: its MCP server.
        version: the binary protocol version fixed for the connection (1, 2 or 3).
        mode: the listening mode sent with ``listen start``.
        hello_timeout: seconds to wait for the server hello (firmware: 10).
        silence_timeout: seconds without any incoming frame before closing (firmware: 120).
    """

    def __init__(
        self,
        identity: DeviceIdentity,
        model: DeviceModel,
        mcp: McpServer,
        *,
        version: int = 1,
        mode: ListenMode = ListenMode.AUTO,
        hello_timeout: float = HELLO_TIMEOUT_SECONDS,
        silence_timeout: float = SILENCE_TIMEOUT_SECONDS,
        transport: Transport = Transport.WEBSOCKET,
    ) -> None:
        super().__init__(identity, model)
        self.mcp = mcp
        # UDP: MQTT + UDP firmware (reference §2.3): hello version 3, raw Opus (version 1)
        self.transport = transport
        self.version = version
        self.mode = mode
        self.hello_timeout = hello_timeout
        self.silence_timeout = silence_timeout
        self.server_sample_rate = DEFAULT_SERVER_SAMPLE_RATE
        self.server_frame_ms = DEFAULT_SERVER_FRAME_MS
        self.awaiting_hello = False
        self.hello_sent_at = 0.0
        self.dropped_packets = 0
        self.played_packets = 0
        self._pending: list[Outgoing] = []
        self._playback: collections.deque[tuple[float, float, int]] = collections.deque()
        self._last_played_ts = 0

    # -- the channel -------------------------------------------------------------------

    def hello(self) -> DeviceHello:
        """The device hello (reference 1.3); ``aec`` only in realtime mode, which needs it."""
        features = Features(mcp=True, aec=True if self.mode is ListenMode.REALTIME else None)
        return DeviceHello(
            version=3 if self.transport is Transport.UDP else self.version,
            transport=self.transport,
            features=features,
            audio_params=UPLINK_AUDIO_PARAMS,
        )

    def connected(self, now: float) -> None:
        """The WebSocket is open: send the hello and start the 10 s hello timer."""
        self.awaiting_hello = True
        self.hello_sent_at = now
        self.last_incoming = now
        self._send(self.hello().to_text())

    def channel_closed(self, now: float) -> None:
        super().channel_closed(now)
        self.awaiting_hello = False
        self._pending.clear()
        self._playback.clear()

    def tick(self, now: float) -> None:
        """Check the timers; a timeout sets :attr:`close_requested` (close the socket)."""
        if self.awaiting_hello and now - self.hello_sent_at >= self.hello_timeout:
            self._events.append(ChannelTimeout("hello"))
            self.close_requested = "server timeout"
        elif self.channel_open and now - self.last_incoming >= self.silence_timeout:
            self._events.append(ChannelTimeout("silence"))
            self.close_requested = "silence timeout"

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must run next (same clock as ``now``); None: no timer."""
        if self.awaiting_hello:
            return self.hello_sent_at + self.hello_timeout
        if self.channel_open:
            return self.last_incoming + self.silence_timeout
        return None

    # -- what the user does ------------------------------------------------------------

    def _send_json(self, message: Listen | Abort | Mcp) -> None:
        """Send now if the channel is open, else keep it for when the hello arrives."""
        text = message.to_text()
        if self.channel_open:
            self._send(text)
        else:
            self._pending.append(text)

    def _sid(self) -> str:
        return self.session_id or ""

    def say(self, text: str, now: float) -> None:
        """A typed command: ``listen`` ``detect`` with ``text`` (reference 6.5).

        While Speaking the firmware first aborts with ``wake_word_detected`` (reference 1.5).
        """
        del now
        if self.model.state is DeviceState.SPEAKING:
            self.abort(AbortReason.WAKE_WORD_DETECTED)
        self._send_json(Listen(session_id=self._sid(), state=ListenState.DETECT, text=text))
        if self.channel_open:
            self._go(DeviceState.LISTENING, "typed command")

    def start_listening(self, now: float) -> None:
        """``listen start`` in the session's mode: the microphone streams from now on."""
        del now
        self._send_json(Listen(session_id=self._sid(), state=ListenState.START, mode=self.mode))
        if self.channel_open:
            self._go(DeviceState.LISTENING, "listen start")

    def stop_listening(self, now: float) -> None:
        """``listen stop`` (manual mode: the button is released)."""
        del now
        self._send_json(Listen(session_id=self._sid(), state=ListenState.STOP))

    def abort(self, reason: str | None = None) -> None:
        """``abort``: the server stops speaking and answers ``tts stop``."""
        self._send_json(Abort(session_id=self._sid(), reason=reason))

    def audio_frame(self, opus: bytes, now: float) -> bool:
        """Send one uplink Opus packet; False (nothing sent) when the channel is not open."""
        if not self.channel_open:
            return False
        self._advance_playback(now)
        self._send(encode_opus(opus, self.version, timestamp_ms=self._last_played_ts))
        return True

    def uplink_timestamp(self, now: float) -> int:
        """The v2 timestamp the next uplink frame carries (reference 1.7)."""
        self._advance_playback(now)
        return self._last_played_ts

    # -- what the server sends ---------------------------------------------------------

    def receive_text(self, text: str | bytes, now: float) -> None:
        """One text frame from the server."""
        self.last_incoming = now
        self.messages_in += 1
        try:
            obj = jsonutil.loads_object(text)
        except WireError as err:
            self._refused(err, "text frame")
            return
        self._receive_object(obj, now)

    def _receive_object(self, obj: dict[str, Any], now: float) -> None:
        if obj.get("type") == "hello":
            self._receive_hello(obj)
            return
        try:
            message = parse_server_message(jsonutil.dumps(obj))
        except WireError as err:
            self._refused(err, f"{obj.get('type')!r} message")
            return
        self._dispatch(message)
        self._events.append(MessageReceived(message))

    def _receive_hello(self, obj: dict[str, Any]) -> None:
        """``ParseServerHello``: needs the channel's ``transport``; the rest is optional."""
        if obj.get("transport") != self.transport:
            self._refused(
                InvalidMessage(
                    f"server hello transport {obj.get('transport')!r} is not "
                    f"{str(self.transport)!r}: ignored, as firmware does",
                    field="transport",
                ),
                "hello",
            )
            return
        try:
            ServerHello.from_obj(obj)
        except WireError as err:
            # Firmware accepts it anyway; report the deviation from design.md section 4.
            self._refused(err, "hello (accepted)")
        given = obj.get("audio_params")
        params: dict[str, Any] = given if isinstance(given, dict) else {}
        rate = params.get("sample_rate", DEFAULT_SERVER_SAMPLE_RATE)
        frame = params.get("frame_duration", DEFAULT_SERVER_FRAME_MS)
        self.server_sample_rate = rate if isinstance(rate, int) and rate > 0 else 24000
        self.server_frame_ms = frame if isinstance(frame, int) and frame > 0 else 60
        session_id = obj.get("session_id")
        self.session_id = session_id if isinstance(session_id, str) else None
        if not self.awaiting_hello:
            self._events.append(MessageReceived(obj))
            return
        self.awaiting_hello = False
        self.channel_open = True
        self._go(DeviceState.LISTENING, "server hello")
        self._events.append(
            HelloAccepted(self.session_id, self.server_sample_rate, self.server_frame_ms)
        )
        sid = self._sid()
        for pending in self._pending:
            # Messages written before the hello get the session id the server just gave.
            self._send(_with_session_id(pending, sid))
        self._pending.clear()

    def _dispatch(self, message: ServerMessage) -> None:
        model = self.model
        match message:
            case Tts(state=TtsState.START):
                if model.state in (DeviceState.IDLE, DeviceState.LISTENING):
                    self._go(DeviceState.SPEAKING, "tts start")
            case Tts(state=TtsState.STOP):
                if model.state is DeviceState.SPEAKING:
                    manual = self.mode is ListenMode.MANUAL
                    self._go(DeviceState.IDLE if manual else DeviceState.LISTENING, "tts stop")
            case Tts(state=TtsState.SENTENCE_START, text=text) if text is not None:
                model.last_response = text
            case Stt():
                pass
            case Llm(emotion=emotion):
                model.last_emotion = emotion
            case Mcp(payload=payload):
                reply = self.mcp.handle(payload)
                if reply is not None:
                    self._send(Mcp(session_id=self._sid(), payload=reply).to_text())
                if model.reboot_pending:
                    self._reboot()
            case System(command=SystemCommand.REBOOT):
                self._reboot()
            case Alert(status=status, message=text, emotion=emotion):
                model.last_alert = {"status": status, "message": text, "emotion": emotion}
            case ResponseMessage(data=data) if data.text is not None:
                model.last_response = data.text
            case _:
                pass  # goodbye over WS is not handled by firmware (reference 1.6); custom, error

    def _reboot(self) -> None:
        self._events.append(RebootRequested())
        self.close_requested = "reboot"

    def receive_binary(self, data: bytes, now: float) -> None:
        """One binary frame from the server, in the connection's version."""
        self.last_incoming = now
        self.messages_in += 1
        try:
            frame = decode_frame(data, self.version)
        except WireError as err:
            self._refused(err, f"v{self.version} binary frame")
            return
        if frame.type is FrameType.JSON:
            # Firmware sends JSON as text; a server may use type 1 (seed 000): read it as text.
            try:
                obj = jsonutil.loads_object(frame.payload)
            except WireError as err:
                self._refused(err, "JSON binary frame")
                return
            self._receive_object(obj, now)
            return
        if self.model.state is not DeviceState.SPEAKING:
            self.dropped_packets += 1
            self._events.append(AudioDropped("not_speaking"))
            return
        self._advance_playback(now)
        if len(self._playback) >= MAX_DECODE_PACKETS:
            self.dropped_packets += 1
            self._events.append(AudioDropped("queue_full"))
            return
        start = max(now, self._playback[-1][1]) if self._playback else now
        self._playback.append((start, start + self.server_frame_ms / 1000, frame.timestamp_ms))
        self.played_packets += 1
        self._events.append(AudioReceived(frame.payload, frame.timestamp_ms))

    def _advance_playback(self, now: float) -> None:
        """Drain the emulated decode queue up to ``now``; remember what was played last."""
        queue = self._playback
        while queue and queue[0][1] <= now:
            self._last_played_ts = queue.popleft()[2]
        if queue and queue[0][0] <= now:
            self._last_played_ts = queue[0][2]

    @property
    def queued_packets(self) -> int:
        """Downlink packets waiting in the emulated decode queue (at the last update)."""
        return len(self._playback)


def _with_session_id(text: Outgoing, session_id: str) -> Outgoing:
    if isinstance(text, bytes) or not session_id:
        return text
    obj = jsonutil.loads_object(text)
    obj["session_id"] = session_id
    return jsonutil.dumps_text(obj)


class SeedSession(_Session):
    """Seed 003's WebSocket client: JSON envelopes only, connected for as long as it can be.

    Args:
        identity: the device.
        model: its hardware state.
    """

    def connected(self, now: float, *, timestamp: str | None = None) -> None:
        """Socket open: register (seed 003 "Device Registration"); the channel is up."""
        self.last_incoming = now
        self.channel_open = True
        ident = self.identity
        register = DeviceRegisterMessage(
            data=DeviceRegisterData(
                device_id=ident.device_id,
                device_type="esp32s3",
                firmware_version=ident.firmware_version,
                capabilities=["audio_input", "audio_output", "wifi"],
                hardware_info=ident.hardware,
            ),
            timestamp=timestamp,
            device_id=ident.device_id,
            message_id=_message_id(),
        )
        self._send(register.to_text())
        self._go(DeviceState.IDLE, "registered")

    def say(self, text: str, now: float, *, timestamp: str | None = None) -> None:
        """``voice_command`` with the recognised text (seed 003 "Voice Command Processing")."""
        del now
        ident = self.identity
        message = VoiceCommandMessage(
            data=VoiceCommandData(
                command=text,
                device_id=ident.device_id,
                confidence=0.95,
                language=ident.language_code,
                processing_time_ms=120,
                audio_duration_ms=max(600, 60 * len(text.split()) * 5),
            ),
            timestamp=timestamp,
            device_id=ident.device_id,
            message_id=_message_id(),
        )
        self._send(message.to_text())
        if self.channel_open:
            self._go(DeviceState.LISTENING, "voice command")

    def heartbeat(self, now: float, *, timestamp: str | None = None) -> None:
        """``ping`` with telemetry, then one ``sensor`` message per sensor."""
        ident = self.identity
        status = self.model.status_payload(now, timestamp=timestamp, transport=None)
        ping = PingMessage(
            data=PingData(
                device_id=ident.device_id,
                uptime=status.uptime,
                memory_usage=status.memory_usage,
                cpu_usage=status.cpu_usage,
                wifi_signal=status.wifi_signal,
                free_heap=status.free_heap,
            ),
            timestamp=timestamp,
            device_id=ident.device_id,
        )
        self._send(ping.to_text())
        for reading in self.model.sensor_payloads(timestamp=timestamp):
            sensor = SensorMessage(
                data=SensorData(
                    sensor_type=reading.sensor_type,
                    value=reading.value,
                    unit=reading.unit,
                    device_id=ident.device_id,
                ),
                timestamp=timestamp,
                device_id=ident.device_id,
            )
            self._send(sensor.to_text())

    def receive_text(self, text: str | bytes, now: float) -> None:
        """A server envelope: ``response`` is spoken (stored), ``error`` reported.

        The edge also sends two envelopes seed 003 does not list (docs/edge.md): ``pong``,
        its answer to ``ping`` (kept as received), and ``command`` (:class:`CommandReceived`).
        """
        self.last_incoming = now
        self.messages_in += 1
        try:
            message = parse_server_message(text)
        except WireError as err:
            self._refused(err, "text frame")
            return
        if isinstance(message, CommandMessage):
            self._events.append(CommandReceived(message))
            return
        if isinstance(message, ResponseMessage):
            self.model.last_response = message.data.text
            self._go(DeviceState.SPEAKING, "response")
            self._go(DeviceState.IDLE, "response spoken")
        self._events.append(MessageReceived(message))

    def receive_binary(self, data: bytes, now: float) -> None:
        """Seed devices get audio as ``audio_url``/base64, never binary frames."""
        del data
        self.last_incoming = now
        self.messages_in += 1
        self._events.append(AudioDropped("not_expected"))


def _message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:12]}"
