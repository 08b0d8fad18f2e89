"""Chaos: kill -9 the broker, an edge, the hub under a running fleet; count what is lost.

Issue 13 (points 6, 7 and 13). A small, bounded fleet of WebSocket devices is spread over two
edges (``xiaozhi edge`` processes) with a hub (``xiaozhi hub``) beside them, all on a
Mosquitto of the project's own config (dev.conf: the persistence and queue settings of
production.conf) on loopback. While an integrator publishes ``alert`` commands to every
device at a steady rate and every device speaks a numbered voice command each second, the
phases, in order:

* ``broker SIGTERM``: the broker is stopped cleanly and started again (it saves its sessions);
* ``broker kill -9``: the broker crashes and is started again from its last autosave (1 s);
* ``edge kill -9``: edge A dies; its devices reconnect to edge B (as behind a load balancer)
  and A comes back with the same edge id;
* ``hub kill -9``: the hub dies and is started again.

Each command is judged at the end, by the phase it was sent in. A command **for a connected
device** (ready when sent, and not reconnected since) must reach it: ``lost`` counts those that
did not. Any other command (its device was reconnecting) must reach it or be answered with a
failed ``command_result`` (the hub's, ``hub/undelivered.py``): ``silent`` counts those with
neither. ``duplicates`` counts second deliveries to a device (the edge drops a redelivered
``message_id`` within a session, so they come only from a device's new session). Voice
commands are counted at a subscriber with a persistent session, as a hub that must not miss
them would be. ``recovery`` is the time from the fault until every device got a command sent
after it (the hub's phase: until its ``/health`` answers 200 again). ``false errors`` counts
commands delivered and yet answered with an error by the hub: while the broker restarts the
hub may miss a device's answer (its own subscription is being made again) and answer for it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import websockets
from websockets.asyncio.client import ClientConnection

from xiaozhi.payloads import CommandPayload
from xiaozhi.topics import TopicTree
from xiaozhi_bench import procs
from xiaozhi_bench.runner import Figure, Report
from xiaozhi_cli.broker import ManagedMosquitto
from xiaozhi_runtime.mqtt import MqttOwner, OutMessage

__all__ = ["PHASES", "Chaos", "PhaseTally", "run_chaos", "run_phases"]

TOPICS = TopicTree()
PHASES = ("broker SIGTERM", "broker kill -9", "edge kill -9", "hub kill -9")
_HELLO = json.dumps(
    {
        "type": "hello",
        "version": 1,
        "transport": "websocket",
        "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1,
                         "frame_duration": 60},
    }
)  # fmt: skip
_RECONNECT_SECONDS = 0.2  # a device's pause before it tries the next edge
_DRAIN_SECONDS = 20.0  # after the last phase: time for late deliveries and the hub's answers
_HUB_ANSWER_SECONDS = 2.0  # the hub's wait for an absent device (XIAOZHI_COMMAND_ANSWER_...)


@dataclass(frozen=True, slots=True)
class Sent:
    """One command: where it went, when, and whether its device was ready then."""

    message_id: str
    device_id: str
    phase: int
    at: float
    generation: int  # the device's session when sent; -1: not ready


@dataclass(slots=True)
class PhaseTally:
    """What one phase's commands and voice commands became."""

    name: str
    commands: int = 0
    to_connected: int = 0
    delivered: int = 0
    lost: int = 0  # to a connected device, never delivered
    answered_error: int = 0  # a failed command_result (the hub's, for an absent device)
    false_errors: int = 0  # delivered, and yet answered with an error (module docstring)
    silent: int = 0  # to a reconnecting device: neither delivered nor answered
    duplicates: int = 0
    voice_sent: int = 0
    voice_lost: int = 0
    voice_duplicates: int = 0
    recovery_seconds: float = float("nan")
    reconnects: int = 0


@dataclass(slots=True)
class Chaos:
    """The whole run: one tally per phase, and the fleet's size and rates."""

    phases: list[PhaseTally]
    devices: int
    command_rate: float
    phase_seconds: float


class FleetDevice:
    """A WebSocket device that reconnects (to the next edge) whenever its socket closes.

    ``generation`` counts its connections; it is ready once the edge announced it
    (``device_connected``): from then on a command published for it reaches it.
    """

    def __init__(self, device_id: str, ports: Callable[[], list[int]], first: int) -> None:
        self.device_id = device_id
        self._ports = ports
        self._next = first
        self.generation = 0
        self.ready = False
        self.received: collections.Counter[str] = collections.Counter()
        self.first_at: dict[str, float] = {}
        self.ws: ClientConnection | None = None

    async def run(self) -> None:
        while True:
            ports = self._ports()
            port = ports[self._next % len(ports)]
            try:
                async with websockets.connect(
                    f"ws://127.0.0.1:{port}/xiaozhi/v1/",
                    additional_headers={"Device-Id": self.device_id, "Client-Id": "chaos",
                                        "Protocol-Version": "1"},
                    open_timeout=5,
                    max_size=None,
                ) as ws:  # fmt: skip
                    self.ws = ws
                    self.generation += 1
                    await ws.send(_HELLO)
                    async for message in ws:
                        if isinstance(message, str):
                            self._on_text(message)
            except (OSError, TimeoutError, websockets.WebSocketException):
                pass
            self.ws = None
            self.ready = False
            self._next += 1  # a balancer sends a reconnecting device elsewhere
            await asyncio.sleep(_RECONNECT_SECONDS)

    def _on_text(self, text: str) -> None:
        message = json.loads(text)
        if message.get("type") == "alert":
            message_id = str(message.get("message"))
            self.received[message_id] += 1
            self.first_at.setdefault(message_id, time.monotonic())

    def announced(self) -> None:
        """The edge said it holds this device (subscribed to its commands)."""
        if self.ws is not None:
            self.ready = True

    async def speak(self, text: str) -> bool:
        ws = self.ws
        if ws is None or not self.ready:
            return False
        try:
            await ws.send(json.dumps({"type": "listen", "state": "detect", "text": text}))
        except websockets.WebSocketException:
            return False
        return True


class _Monitor:
    """Everything the fleet's MQTT side says, through a persistent session."""

    def __init__(self, devices: dict[str, FleetDevice]) -> None:
        self.devices = devices
        self.errors: set[str] = set()
        self.voice: collections.Counter[str] = collections.Counter()

    def __call__(self, topic: str, payload: bytes) -> None:
        try:
            event = json.loads(payload)
        except ValueError:
            return
        kind = event.get("event_type")
        if kind == "device_connected":
            device = self.devices.get(str(event.get("device_id")))
            if device is not None:
                device.announced()
        elif kind == "command_result" and event.get("status") == "error":
            self.errors.add(str(event.get("message_id")))
        elif kind == "voice_command" and topic == TOPICS.voice_command_events():
            self.voice[event["command"]] += 1


async def _edge(
    stack: contextlib.AsyncExitStack, workdir: Path, url: str, edge_id: str
) -> procs.Child:
    folder = workdir / edge_id
    folder.mkdir(exist_ok=True)
    return await stack.enter_async_context(
        procs.edge(folder, url, edge_id=edge_id, max_messages_per_second=1000)
    )


async def _hub(stack: contextlib.AsyncExitStack, workdir: Path, url: str) -> procs.Child:
    return await stack.enter_async_context(
        procs.hub(workdir, url, hub_id="chaos-hub", stt_engine="none", tts_engine="none",
                  command_answer_timeout_seconds=_HUB_ANSWER_SECONDS)
    )  # fmt: skip


async def _until(check: Callable[[], bool], within: float, what: str) -> None:
    """Poll ``check`` (the fleet's state changes on other tasks) until true, bounded."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise procs.BenchProcessError(f"not within {within:.0f} s: {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _running(task_list: list[asyncio.Task[None]]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for task in task_list:
            task.cancel()
        await asyncio.gather(*task_list, return_exceptions=True)


async def run_phases(
    workdir: Path,
    *,
    devices: int = 8,
    command_rate: float = 100.0,
    phase_seconds: float = 3.0,
    phases: tuple[str, ...] = PHASES,
) -> Chaos:
    """Run the fleet through ``phases`` (names from :data:`PHASES`) and judge every command."""
    broker = ManagedMosquitto(workdir / "mosquitto")
    await asyncio.to_thread(broker.start)
    stack = contextlib.AsyncExitStack()
    tasks: list[asyncio.Task[None]] = []
    try:
        async with stack, _running(tasks):
            return await _run(stack, tasks, broker, workdir, devices, command_rate,
                              phase_seconds, phases)  # fmt: skip
    finally:
        await asyncio.to_thread(broker.stop)


async def _run(
    stack: contextlib.AsyncExitStack,
    tasks: list[asyncio.Task[None]],
    broker: ManagedMosquitto,
    workdir: Path,
    count: int,
    command_rate: float,
    phase_seconds: float,
    phases: tuple[str, ...],
) -> Chaos:
    url = broker.url
    edge_ids = ("chaos-edge-a", "chaos-edge-b")
    edges = {edge_id: await _edge(stack, workdir, url, edge_id) for edge_id in edge_ids}
    hub = await _hub(stack, workdir, url)  # it answers for devices that are away

    def ports() -> list[int]:
        return [child.port for child in edges.values() if child.process.poll() is None]

    fleet = {
        f"c0ffee{index:06x}": FleetDevice(f"c0ffee{index:06x}", ports, index)
        for index in range(count)
    }
    monitor = _Monitor(fleet)
    watcher = MqttOwner(url, client_id="chaos-monitor", on_message=monitor, clean_session=False)
    sender = MqttOwner(url, client_id="chaos-integrator")
    for owner in (watcher, sender):
        stack.push_async_callback(owner.stop, flush_seconds=1)
        await owner.start(wait_connected=15)
    await watcher.subscribe([f"{TOPICS.base}/events/+"], qos=1)
    tasks += [asyncio.create_task(d.run(), name=d.device_id) for d in fleet.values()]
    await _until(lambda: all(d.ready for d in fleet.values()), 30, "every device announced")

    sent: list[Sent] = []
    voice_sent: list[tuple[int, str]] = []
    phase = 0
    ids = itertools.count()

    async def commands() -> None:
        order = list(fleet.values())
        period = 1 / command_rate
        next_at = time.monotonic()
        for number in ids:
            device = order[number % len(order)]
            message_id = f"m{number}"
            payload = CommandPayload(
                command="alert", message_id=message_id,
                parameters={"status": "chaos", "message": message_id},
            )  # fmt: skip
            generation = device.generation if device.ready else -1
            sent.append(Sent(message_id, device.device_id, phase, time.monotonic(), generation))
            sender.publish_nowait(
                OutMessage(TOPICS.command(device.device_id), payload.to_wire(), qos=1)
            )
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def voices() -> None:
        for second in itertools.count():
            for device in fleet.values():
                text = f"chaos {device.device_id} {second}"
                if await device.speak(text):
                    voice_sent.append((phase, text))
            await asyncio.sleep(1.0)

    tasks += [asyncio.create_task(commands()), asyncio.create_task(voices())]
    tallies: list[PhaseTally] = []
    faults: list[float] = []
    hub_recovery: dict[int, float] = {}
    generations: dict[int, dict[str, int]] = {}
    for index, name in enumerate(phases):
        await asyncio.sleep(phase_seconds / 2)  # traffic before the fault
        phase = index
        tallies.append(PhaseTally(name))
        generations[index] = {d.device_id: d.generation for d in fleet.values()}
        faults.append(time.monotonic())
        hub = await _fault(name, broker, edges, hub, stack, workdir)
        if name == "hub kill -9":
            hub_recovery[index] = time.monotonic() - faults[-1]
        await asyncio.sleep(phase_seconds / 2)  # traffic after the fault
        await _until(lambda: all(d.ready for d in fleet.values()), 30, "every device back")
        # The next fault must not cut this one's answers short: killing the hub while it
        # still waits (XIAOZHI_COMMAND_ANSWER_TIMEOUT_SECONDS) to answer for a device that
        # went away with its edge would count that command silent against this phase.
        await _drain([s for s in sent if s.phase == index], fleet, monitor)
    phase = len(phases)  # commands sent from here on are not judged
    generations[len(phases)] = {d.device_id: d.generation for d in fleet.values()}
    await _drain([s for s in sent if s.phase < len(phases)], fleet, monitor)
    for task in tasks:
        task.cancel()
    _judge(sent, voice_sent, fleet, monitor, tallies, faults, generations, hub_recovery)
    return Chaos(tallies, count, command_rate, phase_seconds)


async def _fault(
    name: str,
    broker: ManagedMosquitto,
    edges: dict[str, procs.Child],
    hub: procs.Child,
    stack: contextlib.AsyncExitStack,
    workdir: Path,
) -> procs.Child:
    """Do the phase's harm and start again what it killed; returns the (new) hub."""
    if name == "broker SIGTERM":
        await asyncio.to_thread(broker.restart)
    elif name == "broker kill -9":
        await asyncio.to_thread(broker.kill)
        await asyncio.to_thread(broker.start)
    elif name == "edge kill -9":
        edges["chaos-edge-a"].kill()
        edges["chaos-edge-a"] = await _edge(stack, workdir, broker.url, "chaos-edge-a")
    elif name == "hub kill -9":
        hub.kill()  # /health answers once it is back: _hub waits for that
        return await _hub(stack, workdir, broker.url)
    return hub


def _settled(sent: list[Sent], fleet: dict[str, FleetDevice], monitor: _Monitor) -> bool:
    for command in sent:
        if command.message_id in fleet[command.device_id].received:
            continue
        if command.message_id not in monitor.errors:
            return False
    return True


async def _drain(sent: list[Sent], fleet: dict[str, FleetDevice], monitor: _Monitor) -> None:
    """Wait, bounded, until every judged command is delivered or answered."""
    with contextlib.suppress(procs.BenchProcessError):
        await _until(lambda: _settled(sent, fleet, monitor), _DRAIN_SECONDS, "settled")


def _judge(
    sent: list[Sent],
    voice_sent: list[tuple[int, str]],
    fleet: dict[str, FleetDevice],
    monitor: _Monitor,
    tallies: list[PhaseTally],
    faults: list[float],
    generations: dict[int, dict[str, int]],
    hub_recovery: dict[int, float],
) -> None:
    first_after: dict[int, dict[str, float]] = collections.defaultdict(dict)
    final = {d.device_id: d.generation for d in fleet.values()}
    for command in sent:
        if command.phase >= len(tallies):
            continue
        tally = tallies[command.phase]
        device = fleet[command.device_id]
        times = device.received.get(command.message_id, 0)
        tally.commands += 1
        tally.duplicates += max(0, times - 1)
        tally.delivered += times > 0
        errored = command.message_id in monitor.errors
        tally.answered_error += errored
        tally.false_errors += errored and times > 0
        ended = generations.get(command.phase + 1, final)[command.device_id]
        connected = command.generation >= 0 and command.generation == ended
        if connected:
            tally.to_connected += 1
            tally.lost += times == 0
        elif times == 0 and not errored:
            tally.silent += 1
        if times and command.at >= faults[command.phase]:
            got = device.first_at[command.message_id]
            seen = first_after[command.phase]
            seen[command.device_id] = min(seen.get(command.device_id, got), got)
    for index, tally in enumerate(tallies):
        before = generations[index]
        after = generations.get(index + 1, final)
        tally.reconnects = sum(after[d] - before[d] for d in before)
        if index in hub_recovery:
            tally.recovery_seconds = hub_recovery[index]
        elif len(first_after[index]) == len(fleet):
            tally.recovery_seconds = max(first_after[index].values()) - faults[index]
    for phase, text in voice_sent:
        if phase < len(tallies):
            tally = tallies[phase]
            tally.voice_sent += 1
            heard = monitor.voice.get(text, 0)
            tally.voice_lost += heard == 0
            tally.voice_duplicates += max(0, heard - 1)


def run_chaos(seconds: float, *, quick: bool = False) -> Report:
    """Every phase in turn; ``seconds`` of traffic per phase (half before the fault)."""
    report = Report(case="chaos")
    report.notes.append(f"load average at start: {procs.load_average()}")
    devices, rate = (4, 40.0) if quick else (8, 100.0)
    with tempfile.TemporaryDirectory(prefix="xiaozhi-chaos-") as tmp:
        chaos = asyncio.run(
            run_phases(Path(tmp), devices=devices, command_rate=rate, phase_seconds=seconds)
        )
    for tally in chaos.phases:
        report.figures += [
            Figure(f"{tally.name}: lost commands, connected devices", tally.lost, "commands",
                   target="0", notes=f"of {tally.to_connected}"),
            Figure(f"{tally.name}: silent commands, reconnecting devices", tally.silent,
                   "commands", target="0"),
            Figure(f"{tally.name}: duplicate deliveries", tally.duplicates, "commands"),
            Figure(f"{tally.name}: false errors (delivered, hub said not)", tally.false_errors,
                   "commands"),
            Figure(f"{tally.name}: lost voice commands", tally.voice_lost, "events",
                   notes=f"of {tally.voice_sent}"),
            Figure(f"{tally.name}: recovery", tally.recovery_seconds, "s"),
        ]  # fmt: skip
        report.notes.append(
            f"{tally.name}: {tally.commands} commands ({tally.to_connected} to connected "
            f"devices), {tally.delivered} delivered, {tally.answered_error} answered with an "
            f"error, {tally.reconnects} device reconnects; {tally.voice_sent} voice commands, "
            f"{tally.voice_duplicates} heard twice"
        )
    report.notes.append(
        f"{chaos.devices} WebSocket devices on 2 edges, {chaos.command_rate:g} commands/s, "
        f"{chaos.phase_seconds:g} s of traffic per phase; Mosquitto with dev.conf "
        "(autosave 1 s, as production.conf)"
    )
    report.notes.append(f"load average at end: {procs.load_average()}")
    return report
