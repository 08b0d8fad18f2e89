"""`xiaozhi bench audio`: how many devices can talk at once to one edge process.

Each talking device does what the firmware does in auto mode (reference §1.5, §1.7):
``listen start``, then one real 60 ms Opus frame (16 kHz mono, a loud tone encoded once with
opuslib, its last two frames a pause) every 60 ms, and ``listen stop`` after 16 frames (~1 s);
then the next utterance at once. The pause is what speech has between words: the edge's VAD
follows the room's noise floor, and a tone without one becomes the floor within a few
seconds, after which nothing it hears is speech. Devices are spread evenly over the 60 ms
period, as independent speakers would be. The edge decodes every frame (its VAD reads the PCM)
and publishes an ``utterance`` event per utterance on ``xiaozhi/events/{device_id}``;
``mosquitto_sub`` stamps its arrival.

Decode lag = the event's arrival minus the moment the device sent ``listen stop``. The edge
takes a device's messages in order, so the stop is handled only after every frame before it
was decoded: a lag that grows is an edge falling behind real time. A step passes when every
utterance arrived with all its frames (``frames`` = sent, ``dropped_frames`` 0, the edge's
``dropped_audio_frames`` unchanged) and the p99 lag is under one frame (60 ms).

Steps of N talking devices (10, then 50 up to 800), `seconds` each; the case stops at the first
step that fails. References, measured here: the lag with 10 talking devices (the fixed cost of
the path: WebSocket, broker, subscriber), and bare opuslib decoding the same frames in this
process, which bounds the devices one core could decode for at all.

Then the same steps over the firmware's other transport, MQTT + UDP (reference §2), on a fresh
edge with the same settings, beside the WebSocket figures of the same run: each device connects
to the edge's firmware MQTT listener, says hello with ``transport: udp``, publishes ``listen``
at QoS 0 and sends each frame as an AES-128-CTR datagram. MQTT and UDP are two sockets with no
order between them: a ``listen start`` could arrive after the first frame (which the edge then
drops, not listening yet) and a ``listen stop`` before the last one (the firmware has the same
race). So here the listen messages get a frame period of their own: one period after the last
frame, the stop and then the next start (in order, on one TCP connection), and the first frame
one period later; 16 frames every 17 periods. The lag is still counted from the stop. A
datagram the edge dropped or never saw (a sequence gap) fails the step, like a dropped frame.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import struct
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import opuslib
import orjson
import uvloop

from xiaozhi.topics import TopicTree
from xiaozhi_bench import procs
from xiaozhi_bench.loadgen import (
    MqttUdpDevice,
    WsDevice,
    connect_devices,
    connect_mqtt_udp_devices,
    percentile,
    ws_frame,
)
from xiaozhi_bench.runner import Figure, Report, measure_rate

__all__ = ["STEPS", "opus_frames", "run_audio"]

STEPS = (10, 50, 100, 150, 200, 300, 400, 500, 600, 800)
QUICK_STEPS = (2, 5)
FRAME_MS = 60
_TOPICS = TopicTree()  # the edge under test runs with the default base topic
FRAMES_PER_UTTERANCE = 16
PAUSE_FRAMES = 2  # the last frames of an utterance: silence (module docstring)
LAG_LIMIT_MS = FRAME_MS
SAMPLE_RATE = 16_000
TARGET_DEVICES = 500
WEBSOCKET = "websocket"
MQTT_UDP = "mqtt-udp"
_BINARY = 0x2
_TICK = 0.005


def opus_frames(count: int) -> list[bytes]:
    """`count` real Opus packets, 60 ms each, 16 kHz mono: a loud 440 Hz tone, then
    :data:`PAUSE_FRAMES` of silence (encoded in one stream, as a microphone's would be)."""
    encoder = opuslib.Encoder(SAMPLE_RATE, 1, opuslib.APPLICATION_VOIP)
    samples = SAMPLE_RATE * FRAME_MS // 1000
    frames = []
    for index in range(count):
        start = index * samples
        if index >= count - PAUSE_FRAMES:
            frames.append(encoder.encode(bytes(2 * samples), samples))
            continue
        pcm = struct.pack(
            f"<{samples}h",
            *(int(8000 * math.sin(2 * math.pi * 440 * (start + i) / SAMPLE_RATE))
              for i in range(samples)),
        )  # fmt: skip
        frames.append(encoder.encode(pcm, samples))
    return frames


def decode_reference(frames: list[bytes], seconds: float) -> float:
    """Microseconds bare opuslib takes to decode one of `frames` (the edge's decoder)."""
    decoder = opuslib.Decoder(SAMPLE_RATE, 1)
    index = 0

    def decode_one() -> None:
        nonlocal index
        decoder.decode(frames[index % len(frames)], SAMPLE_RATE * 120 // 1000)
        index += 1

    return 1e6 / measure_rate(decode_one, seconds, batch=50)


@dataclass(frozen=True, slots=True)
class Transport:
    """How the talking devices reach the edge."""

    name: str  # as the figures say it
    frames: list[bytes]  # what one utterance sends, frame by frame, ready for `send_frame`
    # `listen` goes on a socket of its own (MQTT beside UDP): it gets a frame period of its
    # own, or a frame could overtake the start or the stop.
    listen_apart: bool


@dataclass
class _Talker:
    device: WsDevice | MqttUdpDevice
    device_id: str  # as the edge writes it (normalized)
    start_text: bytes
    send_frame: Callable[[bytes], None]  # one of the transport's `frames`
    frame: int = 0  # the next one to send
    listening: bool = False  # `listen start` sent, no stop yet
    frames_sent: list[int] = field(default_factory=list)  # per utterance
    stops_ns: list[int] = field(default_factory=list)  # per utterance


@dataclass(frozen=True, slots=True)
class Step:
    devices: int
    utterances: int
    events: int
    frames_sent: int
    incomplete: int  # utterances missing, short of frames, or with dropped frames
    dropped_audio_frames: int  # the edge's counter, during this step
    lags_ms: list[float]  # sorted
    edge_cpu_share: float  # edge CPU seconds / wall seconds during the step
    edge_cpu_us_per_frame: float
    sender_late_ms: float  # worst lateness of this generator against the 60 ms pace
    dropped_datagrams: int = 0  # MQTT + UDP: refused by the edge (stale, undecryptable...)
    lost_datagrams: int = 0  # MQTT + UDP: sequence gaps the edge saw (lost on the way)

    @property
    def passed(self) -> bool:
        return (
            not self.incomplete
            and not self.dropped_audio_frames
            and not self.dropped_datagrams
            and not self.lost_datagrams
            and percentile(self.lags_ms, 99) < LAG_LIMIT_MS
        )


def _listen(state: str, session_id: str) -> bytes:
    return orjson.dumps(
        {"session_id": session_id, "type": "listen", "state": state, "mode": "auto"}
    )


async def _talk(talkers: list[_Talker], transport: Transport, seconds: float) -> float:
    """Run every talker at real-time pace for `seconds`; end each open utterance after.
    Returns the worst lateness of a send against its due time, in ms."""
    frames, apart = transport.frames, transport.listen_apart
    loop = asyncio.get_running_loop()
    period = FRAME_MS / 1000
    start = loop.time() + 0.05
    due = [(start + period * i / len(talkers), i) for i in range(len(talkers))]
    heapq.heapify(due)
    end = start + seconds
    late = 0.0
    while True:
        now = loop.time()
        if now >= end:
            break
        while due and due[0][0] <= now:
            at, index = heapq.heappop(due)
            late = max(late, now - at)
            talker = talkers[index]
            if apart and (talker.frame == len(frames) or not talker.listening):
                # a period of its own: the last utterance's stop, the next one's start
                if talker.listening:
                    _stop(talker)
                _start(talker)
            else:
                if not talker.listening:
                    _start(talker)
                talker.send_frame(frames[talker.frame])
                talker.frame += 1
                talker.frames_sent[-1] += 1
                if talker.frame == len(frames) and not apart:
                    _stop(talker)
            heapq.heappush(due, (at + period, index))
        await asyncio.sleep(_TICK)
    for talker in talkers:  # end the utterances still open
        if talker.listening and talker.frame:
            _stop(talker)
        elif talker.listening:  # started, nothing said: the edge publishes nothing
            talker.device.send_text(_stop_text(talker))
            talker.frames_sent.pop()
            talker.listening = False
    return late * 1000


def _start(talker: _Talker) -> None:
    """``listen start``: an utterance begins."""
    talker.device.send_text(talker.start_text)
    talker.frames_sent.append(0)
    talker.listening = True


def _stop(talker: _Talker) -> None:
    """``listen stop``: the utterance ends (the edge publishes it), timed for the lag."""
    talker.device.send_text(_stop_text(talker))
    talker.stops_ns.append(time.time_ns())
    talker.frame = 0
    talker.listening = False


def _stop_text(talker: _Talker) -> bytes:
    return talker.start_text.replace(b'"start"', b'"stop"')


async def _step(
    edge: procs.Child,
    subscriber: procs.Subscriber,
    talkers: list[_Talker],
    transport: Transport,
    seconds: float,
) -> Step:
    for talker in talkers:
        talker.frames_sent.clear()
        talker.stops_ns.clear()
    before = await edge.stats()
    cpu, wall = edge.cpu_seconds(), time.monotonic()
    late_ms = await _talk(talkers, transport, seconds)
    cpu_share = (edge.cpu_seconds() - cpu) / (time.monotonic() - wall)
    expected = sum(len(t.stops_ns) for t in talkers)
    events: dict[str, list[tuple[int, dict[str, object]]]] = defaultdict(list)
    got, quiet_since, deadline = 0, time.monotonic(), time.monotonic() + 20
    while got < expected and time.monotonic() < deadline:
        new = subscriber.take()
        for arrived, payload in new:
            event = orjson.loads(payload)
            if event.get("event_type") == "utterance":
                events[str(event["device_id"])].append((arrived, event))
                got += 1
        if new:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 3:
            break
        await asyncio.sleep(0.05)
    cpu_total = edge.cpu_seconds() - cpu
    after = await edge.stats()
    lags, incomplete = [], 0
    for talker in talkers:
        heard = events.get(talker.device_id, [])
        for index, stop_ns in enumerate(talker.stops_ns):
            if index >= len(heard):
                incomplete += 1
                continue
            arrived, event = heard[index]
            lags.append((arrived - stop_ns) / 1e6)
            if event.get("frames") != talker.frames_sent[index] or event.get("dropped_frames"):
                incomplete += 1
    lags.sort()
    frames_sent = sum(sum(t.frames_sent) for t in talkers)
    dropped, lost = _datagram_losses(before, after)
    return Step(
        devices=len(talkers),
        utterances=expected,
        events=got,
        frames_sent=frames_sent,
        incomplete=incomplete,
        dropped_audio_frames=after["counters"]["dropped_audio_frames"]
        - before["counters"]["dropped_audio_frames"],
        lags_ms=lags,
        edge_cpu_share=cpu_share,
        edge_cpu_us_per_frame=cpu_total * 1e6 / max(frames_sent, 1),
        sender_late_ms=late_ms,
        dropped_datagrams=dropped,
        lost_datagrams=lost,
    )


def _datagram_losses(before: dict[str, Any], after: dict[str, Any]) -> tuple[int, int]:
    """Datagrams the edge's MQTT + UDP listener dropped and saw missing, between two /stats."""
    old, new = before.get("mqtt_udp") or {}, after.get("mqtt_udp") or {}
    dropped = sum((new.get("datagrams_dropped") or {}).values())
    dropped -= sum((old.get("datagrams_dropped") or {}).values())
    return dropped, int(new.get("sequence_gaps", 0)) - int(old.get("sequence_gaps", 0))


async def _connect(
    transport: str, edge: procs.Child, count: int
) -> tuple[list[WsDevice] | list[MqttUdpDevice], list[_Talker]]:
    """`count` devices on `transport`, each with its hello answered, as talkers."""
    devices: list[WsDevice] | list[MqttUdpDevice]
    if transport == WEBSOCKET:
        devices = await connect_devices(procs.HOST, edge.port, count)
    else:
        mqtt_port = (await edge.stats())["mqtt_udp"]["mqtt_port"]
        devices = await connect_mqtt_udp_devices(procs.HOST, int(mqtt_port), count)
    talkers = []
    for device in devices:
        hello = orjson.loads(device.server_hello or b"{}")
        talkers.append(
            _Talker(
                device,
                device.device_id.replace(":", ""),
                _listen("start", str(hello.get("session_id", ""))),
                device.write if isinstance(device, WsDevice) else device.send_audio,
            )
        )
    return devices, talkers


async def _run(
    seconds: float, steps: tuple[int, ...], workdir: Path
) -> dict[str, tuple[list[Step], dict[str, Any]]]:
    """Each transport's steps, on an edge of its own, and that edge's last /stats."""
    procs.raise_nofile()
    packets = opus_frames(FRAMES_PER_UTTERANCE)
    framed = [ws_frame(_BINARY, packet) for packet in packets]
    transports = {
        WEBSOCKET: Transport(WEBSOCKET, framed, listen_apart=False),
        MQTT_UDP: Transport(MQTT_UDP, packets, listen_apart=True),
    }
    measured: dict[str, tuple[list[Step], dict[str, Any]]] = {}
    async with procs.broker(workdir) as mosquitto:
        subscriber = procs.Subscriber(workdir, mosquitto.port, [_TOPICS.all_events()], "events")
        async with subscriber.running(_TOPICS.device_events("probe")):
            for name, transport in transports.items():
                # The firmware MQTT listener on for both, so both edges run the same settings.
                async with procs.edge(workdir, mosquitto.url, device_mqtt_port=0) as edge:
                    devices, talkers = await _connect(name, edge, max(steps))
                    results: list[Step] = []
                    try:
                        for count in steps:
                            step = await _step(
                                edge, subscriber, talkers[:count], transport, seconds
                            )
                            results.append(step)
                            if not step.passed:
                                break
                        measured[name] = (results, await edge.stats())
                    finally:
                        for device in devices:
                            device.abort()
                    edge.kill()  # measured; its graceful stop is not part of this case
    return measured


def _best(results: list[Step]) -> int:
    """The most talking devices of a step that passed (0: none did)."""
    passed = [s.devices for s in results if s.passed]
    return passed[-1] if passed else 0


def run_audio(seconds: float, *, quick: bool = False) -> Report:
    """Steps of `seconds` each, up to the first that fails, over each transport (module
    docstring)."""
    report = Report(case="audio")
    report.notes.append(f"load average at start: {procs.load_average()}")
    steps = QUICK_STEPS if quick else STEPS
    decode_us = decode_reference(opus_frames(FRAMES_PER_UTTERANCE), 0.05 if quick else 0.5)
    per_core = 1e6 / (decode_us * 1000 / FRAME_MS)
    with tempfile.TemporaryDirectory(prefix="xiaozhi-bench-") as tmp:
        measured = uvloop.run(_run(seconds, steps, Path(tmp)))
    ws, ws_stats = measured[WEBSOCKET]
    udp, udp_stats = measured[MQTT_UDP]
    ws_steps = {step.devices: step for step in ws}
    report.figures.append(
        Figure(
            "talking devices, no drop, p99 lag < 60 ms",
            _best(ws),
            "devices",
            reference=per_core,
            reference_name="one core, opuslib decode alone",
            target=f">= {TARGET_DEVICES} per process",
            notes="highest step passed over WebSocket; the steps are " + ", ".join(map(str, steps)),
        )
    )
    report.figures.append(
        Figure(
            "talking MQTT + UDP devices, no drop, p99 lag < 60 ms",
            _best(udp),
            "devices",
            reference=_best(ws),
            reference_name="over WebSocket, this run",
            notes="highest step passed over the firmware's MQTT + UDP transport",
        )
    )
    heaviest = ws[-1]
    report.figures.append(
        Figure(
            f"edge CPU per frame at {heaviest.devices} devices",
            heaviest.edge_cpu_us_per_frame,
            "us",
            reference=decode_us,
            reference_name="opuslib decode alone",
        )
    )
    heaviest = udp[-1]
    beside = ws_steps.get(heaviest.devices)
    report.figures.append(
        Figure(
            f"edge CPU per frame at {heaviest.devices} MQTT + UDP devices",
            heaviest.edge_cpu_us_per_frame,
            "us",
            reference=decode_us if beside is None else beside.edge_cpu_us_per_frame,
            reference_name="opuslib decode alone" if beside is None else "over WebSocket",
        )
    )
    baseline = ws[0]
    for step in ws[1:]:
        for q in (50, 99):
            report.figures.append(
                Figure(
                    f"p{q} lag, {step.devices} talking",
                    percentile(step.lags_ms, q),
                    "ms",
                    reference=percentile(baseline.lags_ms, q),
                    reference_name=f"{baseline.devices} talking",
                    target=f"< {LAG_LIMIT_MS} ms" if q == 99 else "",
                )
            )
    for step in udp:
        beside = ws_steps.get(step.devices)
        for q in (50, 99):
            report.figures.append(
                Figure(
                    f"p{q} lag, {step.devices} talking over MQTT + UDP",
                    percentile(step.lags_ms, q),
                    "ms",
                    reference=percentile((beside or udp[0]).lags_ms, q),
                    reference_name=(
                        f"{step.devices} talking over WebSocket"
                        if beside is not None
                        else f"{udp[0].devices} talking over MQTT + UDP"
                    ),
                    target=f"< {LAG_LIMIT_MS} ms" if q == 99 else "",
                )
            )
    for name, results in ((WEBSOCKET, ws), (MQTT_UDP, udp)):
        for step in results:
            report.notes.append(_step_note(name, step))
    for name, stats in ((WEBSOCKET, ws_stats), (MQTT_UDP, udp_stats)):
        counters = stats.get("counters")
        report.notes.append(
            f"{name} edge decode errors so far: {counters.get('errors', {})}"
            if isinstance(counters, dict)
            else f"{name} edge counters unavailable"
        )
    listener = udp_stats.get("mqtt_udp") or {}
    report.notes.append(
        f"{MQTT_UDP} edge: {listener.get('hellos')} hellos, "
        f"{listener.get('datagrams_received', 0):,} datagrams received, dropped "
        f"{listener.get('datagrams_dropped')}, sequence gaps {listener.get('sequence_gaps')}"
    )
    report.notes.append(f"load average at end: {procs.load_average()}")
    return report


def _step_note(transport: str, step: Step) -> str:
    datagrams = (
        f", {step.dropped_datagrams} datagrams dropped and {step.lost_datagrams} lost"
        if transport == MQTT_UDP
        else ""
    )
    return (
        f"{transport}, {step.devices} talking: {'pass' if step.passed else 'FAIL'}; "
        f"{step.frames_sent:,} frames, {step.utterances:,} utterances, "
        f"{step.events:,} events, {step.incomplete} incomplete, "
        f"{step.dropped_audio_frames} dropped by the edge{datagrams}; lag p50/p99/max "
        f"{percentile(step.lags_ms, 50):.1f}/{percentile(step.lags_ms, 99):.1f}/"
        f"{percentile(step.lags_ms, 100):.1f} ms; edge CPU {step.edge_cpu_share:.0%} "
        f"of a core; generator late by up to {step.sender_late_ms:.1f} ms"
    )
