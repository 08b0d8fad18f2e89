"""Many simulated devices in one asyncio process: load for the edge, the hub and the broker.

Every device is an object on one event loop: WebSocket devices are ``websockets`` client
connections, MQTT devices are paho clients driven by one shared
:class:`~xiaozhi_sim.paho_loop.PahoAsyncio` (no thread per device). A few thousand devices fit
one process; connects are paced (``ramp_per_second``) so the broker's accept queue never
overflows.

:class:`Fleet` is also the API ``xiaozhi up`` uses for its demo devices::

    fleet = demo_fleet(settings)          # WS v1, WS v3 and MQTT, each talking every ~20 s
    await fleet.start()
    ...
    await fleet.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

import httpx

from xiaozhi.messages import ListenMode
from xiaozhi.payloads import DeviceKind
from xiaozhi_sim.device import ChannelError, SimulatedDevice
from xiaozhi_sim.identity import make_identity
from xiaozhi_sim.integrator import CommandProbe, Integrator
from xiaozhi_sim.mqtt_device import MqttDevice
from xiaozhi_sim.mqtt_udp_device import MqttUdpDevice
from xiaozhi_sim.paho_loop import PahoAsyncio
from xiaozhi_sim.settings import SimSettings
from xiaozhi_sim.stats import SimStats
from xiaozhi_sim.ws_device import WsDevice

__all__ = [
    "DEMO_PHRASES",
    "DeviceSpec",
    "Fleet",
    "TransportChoice",
    "build_device",
    "demo_fleet",
    "demo_specs",
    "fleet_specs",
]

DEMO_PHRASES: Final = (
    "turn on the living room light",
    "turn off the kitchen light",
    "set the volume to 40",
    "turn on the office light",
    "turn off the living room light",
)


class TransportChoice(enum.StrEnum):
    WS = "ws"
    MQTT = "mqtt"
    MQTT_UDP = "mqtt-udp"  # the real firmware's MQTT + UDP mode (setup gives the mqtt block)
    MIXED = "mixed"  # a quarter each: MQTT, WS v1, WS v2, WS v3


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """What kind of device to build.

    Attributes:
        transport: ``ws`` or ``mqtt``.
        binary_version: WS only: force 1, 2 or 3 (None: setup answer, else the setting).
        flavour: WS only: real firmware or seed 003's client.
        mode: WS only: listening mode.
        groups: MQTT only: group ids to subscribe to.
        name: a stable name (identity derived from it); None: derived from the index.
        device_id: override the MAC-derived id.
    """

    transport: str = "ws"
    binary_version: int | None = None
    flavour: DeviceKind = DeviceKind.FIRMWARE
    mode: ListenMode | None = None
    groups: tuple[str, ...] = ()
    name: str | None = None
    device_id: str | None = None


def fleet_specs(
    count: int,
    transport: TransportChoice | str,
    *,
    binary_version: int | None = None,
    groups: Sequence[str] = (),
    flavour: DeviceKind = DeviceKind.FIRMWARE,
) -> list[DeviceSpec]:
    """``count`` specs; ``mixed`` cycles MQTT, WS v1, WS v2, WS v3."""
    choice = TransportChoice(transport)
    specs: list[DeviceSpec] = []
    for index in range(count):
        if choice is TransportChoice.MQTT or (choice is TransportChoice.MIXED and index % 4 == 0):
            specs.append(DeviceSpec("mqtt", groups=tuple(groups)))
        elif choice is TransportChoice.MQTT_UDP:
            specs.append(DeviceSpec("mqtt-udp"))
        elif choice is TransportChoice.MIXED:
            specs.append(DeviceSpec("ws", binary_version=index % 4, flavour=flavour))
        else:
            specs.append(DeviceSpec("ws", binary_version=binary_version, flavour=flavour))
    return specs


def demo_specs() -> list[DeviceSpec]:
    """The three devices ``xiaozhi up`` shows: WS v1, WS v3, MQTT (group ``demo``)."""
    return [
        # The ids are the demo home's devices (hub/demo_home.yaml), so each has an area:
        # "set volume to 80" then means this speaker, "turn on the light" this room.
        DeviceSpec("ws", binary_version=1, name="demo-ws-v1", device_id="demo_living_room"),
        DeviceSpec("ws", binary_version=3, name="demo-ws-v3", device_id="demo_kitchen"),
        DeviceSpec("mqtt", name="demo-mqtt", device_id="demo_office", groups=("all_speakers",)),
    ]


def build_device(
    spec: DeviceSpec,
    settings: SimSettings,
    *,
    index: int,
    stats: SimStats,
    paho: PahoAsyncio | None,
    http: httpx.AsyncClient | None,
    decode_audio: bool = False,
    record_path: Path | None = None,
    heartbeat_interval: float | None = None,
) -> SimulatedDevice:
    """Build (not start) one device; call inside the running loop.

    Raises:
        ValueError: an MQTT spec without a paho driver, or an unknown transport.
    """
    identity = make_identity(
        seed=settings.sim_seed,
        index=index if spec.name is None else None,
        name=spec.name,
        device_id=spec.device_id,
        board=settings.sim_board,
        firmware_version=settings.sim_firmware_version,
        language=settings.sim_language,
    )
    if spec.transport == "mqtt":
        if paho is None:
            raise ValueError("MQTT devices need a PahoAsyncio driver")
        return MqttDevice(
            identity,
            settings,
            paho=paho,
            stats=stats,
            groups=spec.groups,
            heartbeat_interval=heartbeat_interval,
        )
    if spec.transport == "mqtt-udp":
        return MqttUdpDevice(
            identity,
            settings,
            paho=paho,
            stats=stats,
            http=http,
            mode=spec.mode,
            decode_audio=decode_audio,
            record_path=record_path,
        )
    if spec.transport == "ws":
        return WsDevice(
            identity,
            settings,
            stats=stats,
            http=http,
            binary_version=spec.binary_version,
            mode=spec.mode,
            flavour=spec.flavour,
            decode_audio=decode_audio,
            record_path=record_path,
            heartbeat_interval=heartbeat_interval,
        )
    raise ValueError(f"unknown transport {spec.transport!r}: expected 'ws', 'mqtt' or 'mqtt-udp'")


class Fleet:
    """N devices, their shared drivers, optional speech and a command-latency probe.

    Args:
        settings: the simulator settings.
        specs: one per device.
        stats: counters (a new one when None).
        say_every: each device says a phrase every this many seconds (None: silent).
        phrases: what they say, in turn.
        wake_on_start: firmware WS devices open their channel at start (else on first say).
        ramp_per_second: device starts per second (0: all at once).
        probe_rate: integrator commands per second to MQTT devices, timed to their result.
        decode_audio: WS devices decode received TTS (costs CPU per frame).
        heartbeat_interval: override the heartbeat setting.
    """

    def __init__(
        self,
        settings: SimSettings,
        specs: Sequence[DeviceSpec],
        *,
        stats: SimStats | None = None,
        say_every: float | None = None,
        phrases: Sequence[str] = DEMO_PHRASES,
        wake_on_start: bool = False,
        ramp_per_second: float = 500.0,
        probe_rate: float = 0.0,
        decode_audio: bool = False,
        heartbeat_interval: float | None = None,
    ) -> None:
        self.settings = settings
        self.specs = list(specs)
        self.stats = stats if stats is not None else SimStats()
        self.say_every = say_every
        self.phrases = list(phrases) or list(DEMO_PHRASES)
        self.wake_on_start = wake_on_start
        self.ramp_per_second = ramp_per_second
        self.probe_rate = probe_rate
        self.decode_audio = decode_audio
        self.heartbeat_interval = heartbeat_interval
        self.devices: list[SimulatedDevice] = []
        self.paho: PahoAsyncio | None = None
        self.http: httpx.AsyncClient | None = None
        self.integrator: Integrator | None = None
        self.probe: CommandProbe | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _expects_link(self, device: SimulatedDevice) -> bool:
        """Lazy firmware WS devices are not expected to be connected unless woken."""
        if isinstance(device, WsDevice) and device.flavour is DeviceKind.FIRMWARE:
            return self.wake_on_start
        return True

    @property
    def expected(self) -> int:
        """Devices that should be connected now."""
        return sum(1 for d in self.devices if self._expects_link(d))

    @property
    def connected(self) -> int:
        return sum(1 for d in self.devices if d.connected)

    async def start(self) -> None:
        """Build and start every device (paced), then speech and probe tasks."""
        loop = asyncio.get_running_loop()
        self.paho = PahoAsyncio()
        self.http = httpx.AsyncClient(limits=httpx.Limits(max_connections=64))
        for index, spec in enumerate(self.specs):
            self.devices.append(
                build_device(
                    spec,
                    self.settings,
                    index=index,
                    stats=self.stats,
                    paho=self.paho,
                    http=self.http,
                    decode_audio=self.decode_audio,
                    heartbeat_interval=self.heartbeat_interval,
                )
            )
        started = loop.time()
        starts: list[asyncio.Task[None]] = []
        for index, device in enumerate(self.devices):
            if self.ramp_per_second > 0:
                delay = started + index / self.ramp_per_second - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            starts.append(loop.create_task(self._start_one(device)))
        await asyncio.gather(*starts)
        if self.say_every:
            for index, device in enumerate(self.devices):
                self._tasks.append(loop.create_task(self._talk(device, index)))
        mqtt_ids = [d.device_id for d in self.devices if isinstance(d, MqttDevice)]
        if self.probe_rate > 0 and mqtt_ids:
            events = self.settings.topics.all_events()
            self.integrator = Integrator(self.settings, self.paho, subscriptions=[events])
            await self.integrator.start()
            self.probe = CommandProbe(
                self.integrator,
                mqtt_ids,
                self.probe_rate,
                self.stats.command_latency.append,
                seed=self.settings.sim_seed,
            )
            self._tasks.append(loop.create_task(self.probe.run()))

    async def _start_one(self, device: SimulatedDevice) -> None:
        try:
            await device.start()
            is_lazy = isinstance(device, WsDevice) and device.flavour is DeviceKind.FIRMWARE
            if self.wake_on_start and is_lazy:
                assert isinstance(device, WsDevice)
                await device.wake()
        except ChannelError as err:
            device.log.warning("fleet_device_start_failed", error=str(err))

    async def _talk(self, device: SimulatedDevice, index: int) -> None:
        assert self.say_every is not None
        # Spread the fleet over one period, so speech is a steady rate, not a burst.
        await asyncio.sleep(self.say_every * ((index + 1) / (len(self.devices) + 1)))
        turn = index
        while True:
            phrase = self.phrases[turn % len(self.phrases)]
            turn += 1
            try:
                await device.say(phrase)
            except ChannelError as err:
                self.stats.error("say")
                device.log.warning("fleet_say_failed", error=str(err))
            await asyncio.sleep(self.say_every)

    async def wait_connected(self, within: float = 30.0) -> bool:
        """Wait up to ``within`` seconds until every expected device is connected."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        for device in self.devices:
            if not self._expects_link(device):
                continue
            left = deadline - loop.time()
            if left <= 0 or not await device.wait_connected(left):
                return False
        return True

    def summary_line(self) -> str:
        """The live one-line summary."""
        loop = asyncio.get_running_loop()
        return self.stats.summary_line(loop.time())

    def report(self) -> list[str]:
        """The final report lines."""
        lines = self.stats.report()
        if self.probe is not None:
            lines.append(f"probe           sent {self.probe.sent}, answered {self.probe.answered}")
        return lines

    async def run(
        self,
        *,
        duration: float | None,
        show: Callable[[str], None],
        interval: float = 1.0,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Show the summary every ``interval`` s until ``duration`` passed or ``stop`` is set."""
        loop = asyncio.get_running_loop()
        end = None if duration is None else loop.time() + duration
        stop = stop or asyncio.Event()
        while not stop.is_set():
            left = interval if end is None else min(interval, end - loop.time())
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await stop.wait()
            show(self.summary_line())

    async def stop(self) -> None:
        """Stop speech, the probe and every device; release the drivers."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await asyncio.gather(*(d.stop() for d in self.devices), return_exceptions=True)
        if self.integrator is not None:
            await self.integrator.stop()
            self.integrator = None
        if self.paho is not None:
            await self.paho.close()
        if self.http is not None:
            await self.http.aclose()
            self.http = None


def demo_fleet(settings: SimSettings, *, say_every: float = 20.0) -> Fleet:
    """The ``xiaozhi up`` demo: WS v1, WS v3 and MQTT devices, each speaking every ~20 s."""
    return Fleet(settings, demo_specs(), say_every=say_every, ramp_per_second=0)
