"""What every simulated device has, whatever its transport.

:class:`SimulatedDevice` owns the pure parts (identity, :class:`~xiaozhi_sim.model.DeviceModel`,
MCP server, serial console) and leaves the wire to its subclasses,
:class:`~xiaozhi_sim.ws_device.WsDevice` and :class:`~xiaozhi_sim.mqtt_device.MqttDevice`.
Everything a device received is kept in a bounded :attr:`SimulatedDevice.inbox`, so scenarios
and tests can wait for it (:meth:`SimulatedDevice.wait_until`) instead of sleeping.

Fault injection (:class:`Fault`) is here as a vocabulary; each transport implements the
faults that exist on its wire and raises :class:`FaultNotApplicable` for the others.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import enum
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final

import structlog

from xiaozhi.errors import OperationFailed
from xiaozhi.payloads import DeviceTransport
from xiaozhi_sim.identity import DeviceIdentity
from xiaozhi_sim.mcp_server import McpServer, device_tools
from xiaozhi_sim.mic_and_speaker import load_microphone_wav, synthesize_microphone
from xiaozhi_sim.model import DeviceModel
from xiaozhi_sim.notify import Notifier
from xiaozhi_sim.serial import PtySerialPort, SerialConsole
from xiaozhi_sim.settings import SimSettings
from xiaozhi_sim.state import DeviceState
from xiaozhi_sim.stats import SimStats

__all__ = [
    "INBOX_SIZE",
    "REBOOT_SECONDS",
    "ChannelError",
    "Fault",
    "FaultNotApplicable",
    "FaultResult",
    "Received",
    "SimError",
    "SimulatedDevice",
]

INBOX_SIZE: Final = 2000
"""Received messages kept per device (the newest)."""

REBOOT_SECONDS: Final = 0.5
"""How long a simulated reboot keeps the device off the network."""


def _discard(_: object) -> None:
    """Drop a callback's result (a spawned task keeps itself alive in the device's set)."""


class SimError(OperationFailed):
    """Base of the simulator's own errors (the wire's are :mod:`xiaozhi.errors`)."""


class ChannelError(SimError):
    """The device could not open its channel (connect refused, handshake refused, timeout)."""


class FaultNotApplicable(SimError):
    """The fault does not exist on this transport (e.g. a truncated binary frame over MQTT)."""


class Fault(enum.StrEnum):
    """Faults a QA scenario can inject (issue 5, point 7)."""

    MALFORMED = "malformed"  # a text/JSON message that is not JSON
    TRUNCATED = "truncated"  # a binary frame shorter than its header or declared size (WS)
    OVERSIZE = "oversize"  # a message over any sane limit
    WRONG_VERSION = "wrong_version"  # a handshake announcing binary protocol version 4 (WS)
    BAD_TOKEN = "bad_token"  # a handshake with a token no server issued (WS)
    FLOOD = "flood"  # many messages as fast as the socket takes them
    ABRUPT_DISCONNECT = "abrupt_disconnect"  # TCP gone without a close frame or DISCONNECT
    BAD_KEY = "bad_key"  # a UDP audio datagram sealed with another key (MQTT + UDP)
    REPLAYED_SEQUENCE = "replayed_sequence"  # the last UDP audio datagram sent again (MQTT + UDP)
    WRONG_SSRC = "wrong_ssrc"  # a UDP audio datagram for an ssrc the server never gave (MQTT + UDP)


@dataclass(frozen=True, slots=True)
class FaultResult:
    """What happened when a fault was injected.

    Attributes:
        fault: which one.
        sent: messages (or connection attempts) sent.
        refused: for handshake faults, whether the server refused the connection.
        detail: one human sentence (HTTP status, close code, the error reply...).
    """

    fault: Fault
    sent: int = 1
    refused: bool | None = None
    detail: str = ""

    def as_message(self) -> dict[str, Any]:
        """The inbox entry scenarios match on (``what: fault``)."""
        return {
            "type": "fault_result",
            "fault": str(self.fault),
            "sent": self.sent,
            "refused": self.refused,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Received:
    """One thing the device received: ``kind`` is ``message`` (WS server JSON), ``command``
    (an MQTT command), ``fault`` (a :class:`FaultResult`) or ``error`` (a refused message)."""

    at: float
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
    topic: str | None = None


class SimulatedDevice(abc.ABC):
    """One simulated ESP32-S3. Create it inside the running event loop.

    Args:
        identity: who it is.
        settings: the simulator settings.
        stats: the process-wide counters (a private one when None).
    """

    transport: ClassVar[DeviceTransport]

    def __init__(
        self, identity: DeviceIdentity, settings: SimSettings, *, stats: SimStats | None = None
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.identity = identity
        self.settings = settings
        self.stats = stats if stats is not None else SimStats()
        self.stats.devices += 1
        self.model = DeviceModel(identity, boot_time=self.now(), seed=settings.sim_seed)
        self.mcp = McpServer(identity.board, identity.firmware_version)
        self.mcp.add_tools(device_tools(self.model, identity.system_info))
        self.inbox: collections.deque[Received] = collections.deque(maxlen=INBOX_SIZE)
        self.log = structlog.get_logger("xiaozhi_sim").bind(
            device_id=identity.device_id, transport=str(self.transport)
        )
        self.serial: PtySerialPort | None = None
        self.on_record: Callable[[Received], None] | None = None  # e.g. the CLI's printer
        self._notifier = Notifier()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._said_at: float | None = None
        self.model.machine.subscribe(lambda _old, _new: self._notify())

    # -- identity and state --------------------------------------------------------------

    @property
    def device_id(self) -> str:
        return self.identity.device_id

    @property
    def state(self) -> DeviceState:
        return self.model.state

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """The channel (WS) or the broker session (MQTT) is up."""

    def now(self) -> float:
        """The device's monotonic clock (the event loop's)."""
        return self.loop.time()

    # -- waiting without sleeping ---------------------------------------------------------

    def _notify(self) -> None:
        self._notifier.notify()

    def _record(self, kind: str, payload: dict[str, Any], topic: str | None = None) -> None:
        received = Received(self.now(), kind, payload, topic)
        self.inbox.append(received)
        if self.on_record is not None:
            self.on_record(received)
        self._notify()

    async def wait_until(self, predicate: Callable[[], bool], within: float) -> bool:
        """Wait up to ``within`` seconds until ``predicate()`` holds (re-checked on every
        change); False when it still does not."""
        return await self._notifier.wait_until(predicate, within)

    async def wait_connected(self, within: float = 10.0) -> bool:
        """Wait up to ``within`` seconds for :attr:`connected`."""
        return await self.wait_until(lambda: self.connected, within)

    def received_since(self, since: float, kind: str | None = None) -> list[Received]:
        """Inbox entries newer than ``since`` (device clock), optionally of one kind."""
        return [r for r in self.inbox if r.at >= since and (kind is None or r.kind == kind)]

    # -- lifetime -------------------------------------------------------------------------

    @abc.abstractmethod
    async def start(self) -> None:
        """Boot: setup (WS) or broker connect (MQTT). Returns without waiting for the link."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Shut down cleanly (retained ``disconnected`` for MQTT, close frame for WS)."""

    @abc.abstractmethod
    async def say(self, text: str) -> None:
        """A typed voice command (WS: ``listen detect``; seed/MQTT: ``voice_command``).

        Raises:
            ChannelError: a WS device could not open its channel.
        """

    async def speak(self, wav_path: Path | str) -> int:
        """Stream a WAV file as Opus at real-time pace; return the frames sent.

        Raises:
            AudioFormatError: not a 16 kHz WAV.
            FaultNotApplicable: the transport has no audio path (MQTT).
        """
        self._require_audio_path()
        return await self.speak_pcm(load_microphone_wav(wav_path))

    async def say_aloud(self, text: str, *, voice: str = "espeak") -> int:
        """Say ``text`` into the microphone with a synthetic voice, as a person would: real
        Opus at real-time pace; return the frames sent.

        Raises:
            AudioFormatError: the voice is unknown or failed.
            FaultNotApplicable: the transport has no audio path (MQTT, seed clients).
        """
        self._require_audio_path()
        return await self.speak_pcm(await synthesize_microphone(text, voice=voice))

    def _require_audio_path(self) -> None:
        """Refuse before any work when :meth:`speak_pcm` would (no file read, no synthesis)."""
        if self.audio_path_missing is not None:
            raise FaultNotApplicable(self.audio_path_missing)

    @property
    def audio_path_missing(self) -> str | None:
        """Why this device cannot stream audio, or None when it can."""
        return None

    @abc.abstractmethod
    async def speak_pcm(self, pcm: bytes) -> int:
        """Stream 16 kHz 16-bit mono PCM as Opus at real-time pace; return the frames sent.

        Raises:
            FaultNotApplicable: the transport has no audio path (MQTT).
        """

    @abc.abstractmethod
    async def inject(self, fault: Fault, **options: Any) -> FaultResult:
        """Inject a fault (see :class:`Fault`); the result is also put in the inbox.

        Raises:
            FaultNotApplicable: the fault does not exist on this transport.
        """

    @abc.abstractmethod
    async def reboot(self) -> None:
        """Reboot: off the network for :data:`REBOOT_SECONDS`, then boot again."""

    def state_changed_locally(self) -> None:
        """The serial console changed the device: wake waiters (MQTT also publishes)."""
        self._notify()

    # -- serial console -------------------------------------------------------------------

    def open_serial(self) -> str:
        """Serve seed 003's console on a new pseudo-terminal; return its path."""
        if self.serial is None:
            self.serial = PtySerialPort(
                SerialConsole(self.model),
                clock=self.now,
                on_change=self.state_changed_locally,
                on_reset=lambda: _discard(self.spawn(self.reboot(), "serial-reset")),
            )
            self.serial.open()
        assert self.serial.path is not None
        return self.serial.path

    def close_serial(self) -> None:
        if self.serial is not None:
            self.serial.close()
            self.serial = None

    # -- tasks ------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` tied to this device's lifetime; failures are logged and counted."""
        task = self.loop.create_task(coro, name=f"{self.device_id}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        err = task.exception()
        if err is not None:
            self.stats.error("task")
            self.log.error("device_task_failed", task=task.get_name(), error=repr(err))

    async def _cancel_tasks(self, keep: asyncio.Task[Any] | None = None) -> None:
        tasks = [t for t in self._tasks if t is not keep and t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _voice_answered(self) -> None:
        """The first answer to the last ``say``: record the voice round trip."""
        if self._said_at is not None:
            self.stats.voice_latency.append(self.now() - self._said_at)
            self._said_at = None
