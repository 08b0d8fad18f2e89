"""A device on the xiaozhi WebSocket: the real firmware's behaviour, or seed 003's client.

The protocol is :mod:`xiaozhi_sim.firmware_protocol` (sans I/O); this module only moves bytes:

* boot: the setup POST (:mod:`xiaozhi_sim.ota`) decides URL, token and binary version;
  ``binary_version`` given to the constructor overrides it (QA picks the version to test).
  A device the hub has not approved gets an activation code instead: it shows it (a log line
  and an ``activation`` inbox entry), polls the activate URL every
  ``XIAOZHI_SIM_ACTIVATION_POLL_SECONDS`` like firmware, and runs setup again once approved;
  until then a wake fails with the code in its message;
* firmware flavour: **no connection until a wake** (``say``, ``speak``, :meth:`WsDevice.wake`),
  as ``WebsocketProtocol::OpenAudioChannel`` (reference 1.1); the channel closes after 120 s of
  silence or on a hello timeout, and the next wake opens a new one;
* seed flavour: connected from boot, ``device_register`` + ``ping`` heartbeats, reconnect with
  capped exponential back-off and jitter (seed 003: 5 s, 10 attempts);
* ``speak`` streams a WAV as real Opus packets paced at 60 ms; TTS audio received while
  Speaking is decoded and, with ``record_path``, written as a WAV at every ``tts stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from pathlib import Path
from typing import Any, Final

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from xiaozhi import jsonutil
from xiaozhi._validation import WireModel
from xiaozhi.backoff import Backoff
from xiaozhi.binary import V2_HEADER, V3_HEADER, BinaryVersion, FrameType, encode_opus
from xiaozhi.errors import WireError
from xiaozhi.messages import CommandMessage, DeviceHello, Features, ListenMode, Transport
from xiaozhi.payloads import DeviceKind, DeviceTransport
from xiaozhi.timestamps import wire_timestamp
from xiaozhi_sim.device import (
    REBOOT_SECONDS,
    ChannelError,
    Fault,
    FaultNotApplicable,
    FaultResult,
    SimulatedDevice,
)
from xiaozhi_sim.executor import CommandExecutor
from xiaozhi_sim.firmware_protocol import (
    HELLO_TIMEOUT_SECONDS,
    SILENCE_TIMEOUT_SECONDS,
    UPLINK_AUDIO_PARAMS,
    AudioDropped,
    AudioReceived,
    ChannelTimeout,
    CommandReceived,
    FirmwareSession,
    HelloAccepted,
    MessageReceived,
    ProtocolError,
    RebootRequested,
    SeedSession,
    handshake_headers,
)
from xiaozhi_sim.identity import DeviceIdentity
from xiaozhi_sim.mic_and_speaker import (
    FRAME_MS,
    MicrophoneEncoder,
    TtsRecorder,
)
from xiaozhi_sim.ota import SetupResult, fetch_setup, poll_activation
from xiaozhi_sim.settings import SimSettings
from xiaozhi_sim.state import DeviceState
from xiaozhi_sim.stats import SimStats

__all__ = ["WsDevice"]

MAX_DOWNLINK_BYTES: Final = 1024 * 1024
"""Largest message the device accepts (websockets' default, 1 MiB)."""
OPEN_TIMEOUT_SECONDS: Final = 10.0
_OVERSIZE_BYTES: Final = 2 * 1024 * 1024
_SILENT_OPUS: Final = b"\xf8\xff\xfe"  # a valid 20 ms Opus silence packet (TOC + DTX)
_ANSWER_TYPES: Final = frozenset({"stt", "tts", "llm", "response"})


def _describe(err: BaseException) -> str:
    if isinstance(err, InvalidStatus):
        return f"handshake refused: HTTP {err.response.status_code}"
    return str(err) or type(err).__name__


class WsDevice(SimulatedDevice):
    """One WebSocket device.

    Args:
        identity: who it is.
        settings: setup URL, fallback URL/token/version, reconnect settings.
        stats: process-wide counters.
        http: a shared HTTP client for the setup POST (one is made when None).
        binary_version: force this version (1, 2, 3) whatever setup says.
        mode: listening mode (default: the setting).
        flavour: firmware or seed client.
        record_path: write received TTS audio here as WAV.
        decode_audio: decode TTS audio (Opus); fleets turn it off to save CPU.
        hello_timeout / silence_timeout: firmware's 10 s and 120 s (tests shorten them).
        heartbeat_interval: seed flavour's ``ping`` period (the setting by default).
    """

    transport = DeviceTransport.WEBSOCKET

    def __init__(
        self,
        identity: DeviceIdentity,
        settings: SimSettings,
        *,
        stats: SimStats | None = None,
        http: httpx.AsyncClient | None = None,
        binary_version: int | None = None,
        mode: ListenMode | None = None,
        flavour: DeviceKind = DeviceKind.FIRMWARE,
        record_path: Path | str | None = None,
        decode_audio: bool = True,
        hello_timeout: float = HELLO_TIMEOUT_SECONDS,
        silence_timeout: float = SILENCE_TIMEOUT_SECONDS,
        heartbeat_interval: float | None = None,
    ) -> None:
        super().__init__(identity, settings, stats=stats)
        self.forced_version = binary_version
        self.mode = mode or settings.sim_listen_mode
        self.flavour = flavour
        self.record_path = Path(record_path) if record_path else None
        self.decode_audio = decode_audio or record_path is not None
        self.heartbeat_interval = heartbeat_interval or settings.sim_heartbeat_interval_seconds
        self.setup = SetupResult(
            settings.sim_ws_url, settings.sim_token, binary_version or settings.sim_binary_version
        )
        self._timeouts = (hello_timeout, silence_timeout)
        self.session: FirmwareSession | SeedSession = self._new_session(*self._timeouts)
        self.backoff = Backoff(
            base_seconds=settings.sim_reconnect_delay_seconds,
            max_seconds=settings.sim_reconnect_max_delay_seconds,
            attempts=settings.sim_reconnect_attempts,
            rng=random.Random(f"{settings.sim_seed}|{identity.device_id}|ws"),
        )
        self.recorder: TtsRecorder | None = None
        self.audio_packets = 0
        self.executor = CommandExecutor(self.model, self.mcp)  # seed flavour's commands
        self._http = http
        self._own_http: httpx.AsyncClient | None = None
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._counted = False
        self._closing_locally = False
        self._stopping = False
        self._booted = False
        self._send_lock = asyncio.Lock()
        self._open_lock = asyncio.Lock()
        self._activation: asyncio.Task[None] | None = None

    def _new_session(
        self,
        hello_timeout: float = HELLO_TIMEOUT_SECONDS,
        silence_timeout: float = SILENCE_TIMEOUT_SECONDS,
    ) -> FirmwareSession | SeedSession:
        if self.flavour is DeviceKind.SEED:
            return SeedSession(self.identity, self.model)
        return FirmwareSession(
            self.identity,
            self.model,
            self.mcp,
            version=self.forced_version or self.setup.version,
            mode=self.mode,
            hello_timeout=hello_timeout,
            silence_timeout=silence_timeout,
        )

    @property
    def version(self) -> int:
        """The binary protocol version of the (next) connection."""
        return self.session.version if isinstance(self.session, FirmwareSession) else 1

    @property
    def connected(self) -> bool:
        return self._ws is not None and self.session.channel_open

    # -- boot ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Boot: the setup POST, then Idle (firmware) or connect (seed)."""
        if self._booted:
            return
        self._stopping = False
        await self._boot()
        if self.flavour is DeviceKind.SEED:
            self.spawn(self._seed_supervise(), "seed-supervisor")

    async def _boot(self) -> None:
        fallback = SetupResult(
            self.settings.sim_ws_url, self.settings.sim_token, self.settings.sim_binary_version
        )
        http = self._http
        if http is None:
            if self._own_http is None:
                self._own_http = httpx.AsyncClient()
            http = self._own_http
        self.setup = await fetch_setup(http, self.settings.sim_ota_url, self.identity, fallback)
        self.session = self._new_session(*self._timeouts)
        self.log.info(
            "device_setup",
            source=self.setup.source,
            url=self.setup.ws_url,
            version=self.version,
            note=self.setup.error,
        )
        self.model.machine.go(DeviceState.IDLE, "booted")
        self._booted = True
        if self.setup.must_activate:
            self._show_activation()
            if self._activation is None or self._activation.done():
                self._activation = self.spawn(self._activate(http), "activation")

    @property
    def activated(self) -> bool:
        """False while the hub has not approved this device (it holds a code, no token)."""
        return not self.setup.must_activate

    def _show_activation(self) -> None:
        """What firmware's ``ShowActivationCode`` does: the message on screen, each digit spoken."""
        activation = self.setup.activation or {}
        code = self.setup.activation_code
        self.log.warning("device_activation_code", code=code, message=activation.get("message"))
        self._record(
            "activation",
            {"type": "activation", "code": code, "message": activation.get("message")},
        )

    async def _activate(self, http: httpx.AsyncClient) -> None:
        """Poll ``<ota_url>activate`` until 200, then run setup again (``CheckNewVersion``)."""
        url = self.settings.sim_ota_url
        interval = self.settings.sim_activation_poll_seconds
        while not self._stopping and self.setup.must_activate:
            status = await poll_activation(http, url, self.identity)
            if status == 200:
                fallback = SetupResult(
                    self.settings.sim_ws_url,
                    self.settings.sim_token,
                    self.settings.sim_binary_version,
                )
                self.setup = await fetch_setup(http, url, self.identity, fallback)
                self.session = self._new_session(*self._timeouts)
                if self.setup.must_activate:  # approved, then forgotten: a new code
                    self._show_activation()
                else:
                    self.log.info("device_activated", url=self.setup.ws_url)
                    self._record("activation", {"type": "activated"})
                    return
            # firmware: 3 s after a 202, 10 s after anything else
            await asyncio.sleep(interval if status in (200, 202) else interval * 10 / 3)

    # -- the channel ----------------------------------------------------------------------------

    async def wake(self) -> None:
        """Open the channel (wake word / button) and wait for the server hello.

        Raises:
            ChannelError: connect or handshake refused, or no hello within the hello timeout.
        """
        if not self._booted:
            await self.start()
        async with self._open_lock:
            if self.connected:
                return
            if self.flavour is DeviceKind.SEED:
                raise ChannelError(f"{self.device_id} is not connected (seed client reconnecting)")
            if not self.activated:
                raise ChannelError(
                    f"{self.device_id} is waiting for activation: approve code "
                    f"{self.setup.activation_code} on the hub"
                )
            await self._connect(self.setup.ws_url, self.session.headers(self.setup.token))
            session = self.session
            assert isinstance(session, FirmwareSession)
            ok = await self.wait_until(
                lambda: session.channel_open or self._ws is None, session.hello_timeout + 1.0
            )
            if not ok or not session.channel_open:
                raise ChannelError(
                    f"{self.setup.ws_url}: no server hello within {session.hello_timeout:g} s"
                )

    async def _connect(self, url: str, headers: dict[str, str]) -> None:
        session = self.session
        session.begin_connect(self.now())
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                user_agent_header=self.identity.user_agent,
                open_timeout=OPEN_TIMEOUT_SECONDS,
                max_size=MAX_DOWNLINK_BYTES,
                close_timeout=2,
                compression=None,  # the firmware's client does not deflate
                proxy=None,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as err:
            session.channel_closed(self.now())
            self.stats.error("connect")
            self.log.warning("ws_connect_failed", url=url, error=_describe(err))
            self._record("error", {"type": "connect_failed", "error": _describe(err)})
            raise ChannelError(f"{url}: {_describe(err)}") from err
        self._ws = ws
        self.stats.connects += 1
        if isinstance(session, SeedSession):
            session.connected(self.now(), timestamp=wire_timestamp(time.time()))
            self._count_connected()
        else:
            session.connected(self.now())
        await self._flush()
        self._reader = self.spawn(self._read_loop(ws), "ws-reader")

    def _count_connected(self) -> None:
        if not self._counted:
            self._counted = True
            self.stats.connected += 1
            self.log.info("ws_channel_open", session_id=self.session.session_id)
        self._notify()

    async def _read_loop(self, ws: ClientConnection) -> None:
        session = self.session
        try:
            while True:
                deadline = session.next_deadline() if isinstance(session, FirmwareSession) else None
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await ws.recv()
                except TimeoutError:
                    assert isinstance(session, FirmwareSession)
                    session.tick(self.now())
                else:
                    self.stats.messages_in += 1
                    if isinstance(message, str):
                        session.receive_text(message, self.now())
                    else:
                        session.receive_binary(message, self.now())
                await self._after_session()
                if session.close_requested:
                    break
        except ConnectionClosed as closed:
            if self._closing_locally:
                return
            self.log.info("ws_closed_by_server", code=closed.rcvd.code if closed.rcvd else None)
            self._record(
                "error",
                {
                    "type": "closed",
                    "code": closed.rcvd.code if closed.rcvd else None,
                    "reason": closed.rcvd.reason if closed.rcvd else "",
                },
            )
        finally:
            reason = session.close_requested
            await self._drop(ws)
            if reason == "reboot":
                self.spawn(self.reboot(), "reboot")

    async def _drop(self, ws: ClientConnection) -> None:
        """The channel is gone for the device at once; the socket closes after."""
        if self._ws is ws:
            self._ws = None
        self.session.channel_closed(self.now())
        if self._counted:
            self._counted = False
            self.stats.connected -= 1
            self.stats.disconnects += 1
            self.log.info("ws_channel_closed")
        self._notify()
        with contextlib.suppress(Exception):
            await ws.close()

    async def _after_session(self) -> None:
        """Act on the session's events, then send what it wrote."""
        for event in self.session.events_received():
            match event:
                case HelloAccepted(sample_rate=rate):
                    if self.decode_audio and (
                        self.recorder is None or self.recorder.sample_rate < rate
                    ):
                        self.recorder = TtsRecorder(rate)
                    self._count_connected()
                case MessageReceived(message=message):
                    payload = message.to_json_dict() if isinstance(message, WireModel) else message
                    self._record("message", payload)
                    if payload.get("type") in _ANSWER_TYPES:
                        self._voice_answered()
                    if payload.get("type") == "tts" and payload.get("state") == "stop":
                        self._write_recording()
                case AudioReceived(opus=opus):
                    self.audio_packets += 1
                    if self.recorder is not None:
                        self.recorder.add(opus)
                case AudioDropped():
                    self.stats.audio_dropped += 1
                case ProtocolError(error=error, what=what):
                    self.stats.error("protocol")
                    self.log.warning("server_message_refused", what=what, error=str(error))
                    self._record(
                        "error",
                        {
                            "type": "protocol_error",
                            "what": what,
                            "error": str(error),
                            "code": error.code.name,
                        },
                    )
                case ChannelTimeout(reason=reason):
                    if reason == "hello":
                        self.stats.error("hello_timeout")
                    self.log.info("ws_channel_timeout", reason=reason)
                    self._record("error", {"type": "timeout", "reason": reason})
                case CommandReceived(envelope=envelope):
                    self._run_command(envelope)
                case RebootRequested():
                    self.log.info("device_reboot_requested")
        await self._flush()

    def _run_command(self, envelope: CommandMessage) -> None:
        """Seed flavour: run the edge's ``command`` envelope as the MQTT device runs a command.
        The edge reports the delivery itself; over WS the outcome is only logged."""
        self._record("command", envelope.to_json_dict())
        execution = self.executor.execute(
            envelope.data.to_wire(), timestamp=wire_timestamp(time.time())
        )
        if execution is None:
            return  # a repeat of a command already run
        if not execution.ok:
            self.stats.error("command")
        self.log.info("device_command", outcome=execution.event.to_json_dict())
        if execution.reboot:
            self.spawn(self.reboot(), "reboot")

    def _write_recording(self) -> None:
        if self.record_path is not None and self.recorder is not None:
            self.recorder.write(self.record_path)

    async def _flush(self) -> None:
        ws = self._ws
        if ws is None:
            return
        async with self._send_lock:
            for message in self.session.data_to_send():
                try:
                    await ws.send(message)
                except ConnectionClosed:
                    if not self._closing_locally:  # a reply racing our own close is no error
                        self.stats.error("send")
                    return
                self.stats.messages_out += 1

    async def close_channel(self) -> None:
        """Close the channel as firmware does (no goodbye over WS, reference 1.1)."""
        ws, reader = self._ws, self._reader
        self._closing_locally = True
        try:
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close()
            if reader is not None and reader is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
        finally:
            self._closing_locally = False

    async def stop(self) -> None:
        """Close the channel, stop every task, release the HTTP client."""
        self._stopping = True
        await self.close_channel()
        await self._cancel_tasks()
        self._write_recording()
        if self._own_http is not None:
            await self._own_http.aclose()
            self._own_http = None
        self.close_serial()
        self._booted = False

    async def reboot(self) -> None:
        """Close the channel, reboot the model, boot again (setup POST included)."""
        self.log.info("device_reboot")
        await self.close_channel()
        self.model.reboot(self.now())
        await asyncio.sleep(REBOOT_SECONDS)
        if not self._stopping:
            await self._boot()

    async def _seed_supervise(self) -> None:
        """Seed 003's client: stay connected; retry with back-off; give up after N tries."""
        delay = 0.0
        while not self._stopping:
            if delay:
                await asyncio.sleep(delay)
            try:
                await self._connect(self.setup.ws_url, self.session.headers(self.setup.token))
            except ChannelError:
                next_delay = self.backoff.next_delay()
                if next_delay is None:
                    self.stats.error("gave_up")
                    self.model.machine.go(DeviceState.FATAL_ERROR, "reconnect attempts exhausted")
                    return
                delay = next_delay
                continue
            self.backoff.reset()
            beat = self.spawn(self._seed_heartbeat(), "seed-heartbeat")
            if self._reader is not None:
                await asyncio.wait([self._reader])
            beat.cancel()
            delay = self.backoff.next_delay() or 0.0

    async def _seed_heartbeat(self) -> None:
        session = self.session
        assert isinstance(session, SeedSession)
        while self.connected:
            session.heartbeat(self.now(), timestamp=wire_timestamp(time.time()))
            await self._flush()
            await asyncio.sleep(self.heartbeat_interval)

    # -- speech -------------------------------------------------------------------------------

    async def say(self, text: str) -> None:
        """Firmware: ``listen detect`` with the text, opening the channel first if needed.
        Seed: a ``voice_command`` envelope."""
        session = self.session
        if isinstance(session, SeedSession):
            if not self.connected:
                raise ChannelError(f"{self.device_id} is not connected")
            session.say(text, self.now(), timestamp=wire_timestamp(time.time()))
        else:
            session.say(text, self.now())  # kept until the hello if the channel is closed
            if not session.channel_open:
                await self.wake()
        self._said_at = self.now()
        await self._flush()

    @property
    def audio_path_missing(self) -> str | None:
        if isinstance(self.session, FirmwareSession):
            return None
        return "seed clients do not stream Opus; use a firmware device"

    async def speak_pcm(self, pcm: bytes) -> int:
        """``listen start``, then one Opus packet per 60 ms of ``pcm``, at real-time pace;
        ``listen stop`` after it in manual mode. Returns the packets sent.

        Raises:
            ChannelError: the channel could not be opened.
            FaultNotApplicable: a seed-flavour device (it sends base64 WAV, not Opus).
        """
        self._require_audio_path()
        session = self.session
        assert isinstance(session, FirmwareSession)
        encoder = MicrophoneEncoder()
        if not session.channel_open:
            await self.wake()
        session.start_listening(self.now())
        await self._flush()
        start = self.now()
        sent = 0
        for index, packet in enumerate(encoder.packets(pcm)):
            delay = start + index * FRAME_MS / 1000 - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            if not session.audio_frame(packet, self.now()):
                break
            await self._flush()
            sent += 1
        if self.mode is ListenMode.MANUAL:
            session.stop_listening(self.now())
            await self._flush()
        self._said_at = self.now()
        return sent

    # -- faults -------------------------------------------------------------------------------

    async def inject(self, fault: Fault, **options: Any) -> FaultResult:
        """Every :class:`Fault` exists on WebSocket.

        Options: ``count`` (flood, default 1000), ``size`` (oversize bytes, default 2 MiB),
        ``kind`` (flood: ``binary`` audio frames or ``text`` messages), ``wait`` (handshake
        faults: seconds to wait for the server's verdict, default 5).
        """
        if fault in (Fault.BAD_TOKEN, Fault.WRONG_VERSION):
            result = await self._handshake_fault(fault, float(options.get("wait", 5.0)))
        else:
            if not self.connected:
                await self.wake()
            ws = self._ws
            assert ws is not None
            result = await self._frame_fault(ws, fault, options)
        self._record("fault", result.as_message())
        return result

    async def _frame_fault(
        self, ws: ClientConnection, fault: Fault, options: dict[str, Any]
    ) -> FaultResult:
        version = self.version
        try:
            if fault is Fault.MALFORMED:
                await ws.send('{"type":"listen","state":"detect","text":')
                return FaultResult(fault, detail="a text frame that is not JSON")
            if fault is Fault.TRUNCATED:
                if version == BinaryVersion.V1:
                    frame, what = b"", "an empty v1 frame"
                elif version == BinaryVersion.V2:
                    frame, what = V2_HEADER.pack(2, FrameType.OPUS, 0, 0, 100)[:10], "10 B of v2"
                else:
                    frame = V3_HEADER.pack(FrameType.OPUS, 0, 100) + bytes(10)
                    what = "a v3 header declaring 100 B followed by 10 B"
                await ws.send(frame)
                return FaultResult(fault, detail=what)
            if fault is Fault.OVERSIZE:
                size = int(options.get("size", _OVERSIZE_BYTES))
                await ws.send(bytes(size))
                return FaultResult(fault, detail=f"a {size} B binary frame")
            if fault is Fault.FLOOD:
                count = int(options.get("count", 1000))
                text = options.get("kind", "binary") == "text"
                sid = self.session.session_id or ""
                for index in range(count):
                    if text:
                        await ws.send(
                            jsonutil.dumps_text(
                                {
                                    "session_id": sid,
                                    "type": "listen",
                                    "state": "detect",
                                    "text": f"flood {index}",
                                }
                            )
                        )
                    else:
                        await ws.send(encode_opus(_SILENT_OPUS, version))
                self.stats.messages_out += count
                kind = "text messages" if text else "audio frames"
                return FaultResult(fault, sent=count, detail=f"{count} {kind} at once")
            if fault is Fault.ABRUPT_DISCONNECT:
                ws.transport.abort()
                return FaultResult(fault, detail="TCP connection aborted without a close frame")
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            return FaultResult(fault, refused=True, detail=f"connection closed (code {code})")
        raise FaultNotApplicable(f"unknown fault {fault}")

    async def _handshake_fault(self, fault: Fault, wait: float) -> FaultResult:
        """Open a second-rate channel: version 4, or a token nobody issued; report the verdict.

        The device's own channel is closed first (firmware has one channel).
        """
        await self.close_channel()
        version = 4 if fault is Fault.WRONG_VERSION else self.version
        token = "bad.0" if fault is Fault.BAD_TOKEN else self.setup.token
        headers = handshake_headers(self.identity, token=token, version=version)
        try:
            ws = await connect(
                self.setup.ws_url,
                additional_headers=headers,
                open_timeout=wait,
                close_timeout=1,
                compression=None,
                proxy=None,
            )
        except InvalidStatus as err:
            return FaultResult(fault, refused=True, detail=_describe(err))
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as err:
            return FaultResult(fault, refused=None, detail=f"could not connect: {_describe(err)}")
        hello = DeviceHello(
            version=version,
            transport=Transport.WEBSOCKET,
            features=Features(mcp=True),
            audio_params=UPLINK_AUDIO_PARAMS,
        )
        errors: list[str] = []
        try:
            await ws.send(hello.to_text())
            async with asyncio.timeout(wait):
                while True:
                    message = await ws.recv()
                    try:
                        obj = jsonutil.loads_object(message)
                    except WireError:
                        continue
                    if obj.get("type") == "hello":
                        return FaultResult(fault, refused=False, detail="server hello: accepted")
                    if obj.get("type") == "error":
                        given = obj.get("data")
                        data: dict[str, Any] = given if isinstance(given, dict) else {}
                        errors.append(str(data.get("error_message") or data.get("error_code")))
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            why = f"; error: {errors[0]}" if errors else ""
            return FaultResult(fault, refused=True, detail=f"closed with code {code}{why}")
        except TimeoutError:
            if errors:
                return FaultResult(fault, refused=True, detail=f"error reply: {errors[0]}")
            return FaultResult(fault, refused=None, detail=f"no verdict within {wait:g} s")
        finally:
            with contextlib.suppress(Exception):
                await ws.close()
