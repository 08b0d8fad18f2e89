"""`xiaozhi bench voice`: voice command in -> action on MQTT -> answer at the device.

Two paths into one hub process (`xiaozhi hub`, the demo home, no spoken answers):

* **edge**: 200 devices on one edge process (`xiaozhi edge`) type commands as the firmware
  does (``listen`` / ``detect`` with the text, reference §6.5); the edge publishes each as a
  voice command event. Round trip = the device's ``stt`` arrival minus its send, matched by
  device and phrase, in order. 100 commands/s for `seconds`, then 1,000/s for `seconds` / 5.
* **direct**: one lean MQTT client publishes the same events straight on the hub's input
  topic (``xiaozhi/events/voice_command``, QoS 1, as an edge does) for 200 device ids, each
  naming an area in turn; round trip = the hub's ``respond`` on the device's command topic,
  matched by message id. 1,000/s, then 3,000/s, `seconds` / 5 each. This measures the hub
  alone.

The hub recognises the intent, executes the action (the kitchen light is an MQTT binding: its
command appears on ``zigbee2mqtt/kitchen_light/set``; the others are virtual and announced as
``action`` events) and sends ``respond``. Phrases (:func:`phrases`, 540 distinct sent) are
drawn at random from what people say to the demo home; the hub caches recognitions by (text,
area), so each run says how many commands its cache answered (the cache replayed here).

Open loop, paced in 1 ms ticks. Commands unanswered 20 s after a run ended are counted.

References, measured in this process in the same run: the hub's intent recognition alone on
the same phrases and areas (demo home, warm, past the cache), with the template filter and
with hassil alone (every template: the hub before it), and an MQTT round trip alone (QoS 1
publish -> Mosquitto -> an echo client that republishes QoS 1 -> back: the two broker
traversals of the voice path with nothing in between), through
:class:`~xiaozhi_runtime.mqtt.MqttOwner` as the edge and hub use it (TCP_NODELAY on).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvloop

from xiaozhi.payloads import VoiceCommandEvent
from xiaozhi.topics import TopicTree
from xiaozhi_bench import procs
from xiaozhi_bench.loadgen import WsDevice, connect_devices, percentile
from xiaozhi_bench.runner import Figure, Report
from xiaozhi_runtime.mqtt import MqttOwner, OutMessage

__all__ = ["phrases", "run_voice"]

_LIGHTS = ("living room light", "kitchen light", "kitchen lights", "bedroom light", "bedroom lamp")
_AREAS = ("living room", "lounge", "kitchen", "bedroom")
_PERCENTS = range(5, 101, 5)
_TEMPERATURES = [*range(16, 27), *(t + 0.5 for t in range(16, 26))]
_UNKNOWN = ("garage light", "porch light", "attic fan", "coffee maker")


def phrases(*, to_the_device: bool = True) -> list[str]:
    """What people say to the demo home, typed: hundreds of distinct commands in several
    wordings (on/off, brightness, temperature, volume, locks, questions, device status),
    plus a few the hub must refuse (unknown names, negations). The office light is left
    out: its xiaozhi binding waits for the office's device, which the bench does not run.

    ``to_the_device``: with the commands the speaking device carries out itself (volume,
    status); the hub waits for the device's answer, so they need a device that answers (the
    bench's do not: they are only in the recognition reference)."""
    said: list[str] = []
    for light in _LIGHTS:
        for state in ("on", "off"):
            said += [
                f"turn {state} the {light}",
                f"switch {state} the {light}",
                f"turn the {light} {state}",
                f"is the {light} {state}",
                f"don't turn {state} the {light}",
            ]
        said += [f"dim the {light}", f"brighten the {light}"]
        for percent in _PERCENTS:
            said += [
                f"set the {light} brightness to {percent}%",
                f"set the {light} to {percent} percent",
                f"set the brightness of the {light} to {percent}",
            ]
    for area in _AREAS:
        for state in ("on", "off"):
            said += [f"turn {state} the lights in the {area}", f"turn {state} the {area} lights"]
        said += [f"what is the temperature in the {area}", f"are the lights on in the {area}"]
        said += [f"set the lights in the {area} to {percent}%" for percent in _PERCENTS]
    for degrees in _TEMPERATURES:
        said += [
            f"set the office thermostat to {degrees}",
            f"set the temperature to {degrees} degrees",
            f"set the thermostat to {degrees} degrees",
        ]
    said += [
        "lock the front door",
        "unlock the front door",
        "is the front door locked",
        "what is the temperature",
        "what's the temperature in the office",
        "turn on the light",
        "turn off the lights",
    ]
    if to_the_device:
        for percent in _PERCENTS:
            said += [f"set volume to {percent}", f"set the volume to {percent} percent"]
        said += ["turn the volume up", "turn the volume down", "louder", "mute"]
        said += ["what is your status"]
    for unknown in _UNKNOWN:
        said += [f"turn on the {unknown}", f"turn off the {unknown}"]
    return list(dict.fromkeys(said))


DEVICES = 200
QUICK_DEVICES = 5
RATES = (100, 1_000)
QUICK_RATES = (10, 50)
DIRECT_RATES = (1_000, 3_000)
"""Typed commands per second published straight on the hub's input topic."""
QUICK_DIRECT_RATES = (50, 200)
DIRECT_AREAS = (None, "living_room", "kitchen", "bedroom")
"""The area each direct command names (a device's area as the edge would send it); not the
office, whose light is the office device's LED (the bench runs no such device)."""
DRAIN_SECONDS = 20.0
REFERENCE_SAMPLES = 300
TARGET_P99_MS = 20
TARGET_RATE = 2_000
SEED = 14


@dataclass
class RateRun:
    rate: float
    sent: int
    latencies_ms: list[float]  # sorted, answered ones
    answered_rate: float  # answers per second while the run lasted plus its drain
    path: str  # "edge" (devices through one edge) or "direct" (straight on the hub's topic)
    cache_hits: int = 0  # commands the hub's recognition cache answered (module docstring)
    hub_cpu_ms: float = 0.0  # the hub process's CPU time over the run and its drain

    @property
    def unanswered(self) -> int:
        return self.sent - len(self.latencies_ms)

    def p(self, q: float) -> float:
        """Percentile over every command sent; one never answered counts as infinite."""
        if not self.sent:
            return math.nan
        rank = max(1, math.ceil(q / 100 * self.sent))
        return self.latencies_ms[rank - 1] if rank <= len(self.latencies_ms) else math.nan


class _HubCache:
    """The hub's recognition cache, replayed: an LRU of (text, area) of its size.

    The bench knows every command it sent and in which order, so it knows which ones the hub
    answered from its cache (the hub does not export its hit count).
    """

    def __init__(self) -> None:
        from xiaozhi_hub.intents import RECOGNITION_CACHE_SIZE

        self.size = RECOGNITION_CACHE_SIZE
        self.keys: collections.OrderedDict[tuple[str, str | None], None] = collections.OrderedDict()

    def hit(self, text: str, area: str | None) -> bool:
        key = (text.strip(), area)
        if key in self.keys:
            self.keys.move_to_end(key)
            return True
        self.keys[key] = None
        if len(self.keys) > self.size:
            self.keys.popitem(last=False)
        return False


class _Answers:
    """Matches each device's `stt` to its oldest outstanding command of the same phrase."""

    def __init__(self) -> None:
        self.pending: dict[tuple[str, bytes], collections.deque[int]] = collections.defaultdict(
            collections.deque
        )
        self.latencies_ns: list[int] = []
        self.stray = 0
        self.outstanding = 0
        self.all_answered = asyncio.Event()

    def sent(self, device_id: str, key: bytes) -> None:
        self.pending[(device_id, key)].append(time.perf_counter_ns())
        self.outstanding += 1
        self.all_answered.clear()

    def answered(self, device_id: str, key: bytes) -> None:
        now = time.perf_counter_ns()
        queue = self.pending.get((device_id, key))
        if queue:
            self.latencies_ns.append(now - queue.popleft())
            self.outstanding -= 1
            if not self.outstanding:
                self.all_answered.set()
        else:
            self.stray += 1

    def on_text(self, device: WsDevice, payload: bytes) -> None:
        if b'"stt"' in payload:
            self.answered(device.device_id, orjson.loads(payload).get("text", "").encode())

    async def drain(self) -> None:
        if self.outstanding:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_answered.wait(), DRAIN_SECONDS)


def _detect(phrase: bytes, session_id: bytes) -> bytes:
    return b'{"session_id":"%s","type":"listen","state":"detect","text":"%s"}' % (
        session_id,
        phrase,
    )


async def _paced(rate: float, seconds: float, send: Callable[[int], None]) -> None:
    """Open loop: ``send(n)`` for command n at ``rate`` per second, in 1 ms ticks."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    while (elapsed := loop.time() - start) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            send(sent)
            sent += 1
        await asyncio.sleep(0.001)


async def _run_rate(
    devices: list[WsDevice],
    sessions: list[bytes],
    rate: float,
    seconds: float,
    draw: random.Random,
    cache: _HubCache,
    hub_pid: int,
) -> RateRun:
    answers = _Answers()
    for device in devices:
        device.on_text = answers.on_text
    # The bench's devices do not carry out commands: the hub would wait for their answer
    # (5 s) with one of its 64 voice command slots held.
    pool = phrases(to_the_device=False)
    hits = 0

    def send(sent: int) -> None:
        nonlocal hits
        index = sent % len(devices)
        phrase = draw.choice(pool)
        hits += cache.hit(phrase, None)  # the bench's devices have no area
        device = devices[index]
        answers.sent(device.device_id, phrase.encode())
        device.send_text(_detect(phrase.encode(), sessions[index]))

    return await _measured(rate, seconds, send, answers, lambda: hits, hub_pid, "edge")


async def _measured(
    rate: float,
    seconds: float,
    send: Callable[[int], None],
    answers: _Answers,
    hits: Callable[[], int],
    hub_pid: int,
    path: str,
) -> RateRun:
    cpu = procs.cpu_seconds(hub_pid)
    started = time.perf_counter()
    await _paced(rate, seconds, send)
    await answers.drain()
    took = time.perf_counter() - started
    sent = len(answers.latencies_ns) + answers.outstanding
    latencies = sorted(ns / 1e6 for ns in answers.latencies_ns)
    return RateRun(
        rate,
        sent,
        latencies,
        len(latencies) / took,
        path,
        cache_hits=hits(),
        hub_cpu_ms=(procs.cpu_seconds(hub_pid) - cpu) * 1000,
    )


async def _direct_rate(
    url: str, rate: float, seconds: float, draw: random.Random, cache: _HubCache, hub_pid: int
) -> RateRun:
    """Typed commands published straight on ``xiaozhi/events/voice_command`` (where an edge
    publishes them, QoS 1) by one lean client; the answer is the hub's ``respond`` on
    ``xiaozhi/commands/{device}``, matched by message id."""
    topics = TopicTree()
    answers = _Answers()
    tag = uuid.uuid4().hex[:6]

    def on_respond(topic: str, payload: bytes) -> None:
        body = orjson.loads(payload)
        answers.answered(body.get("device_id", ""), str(body.get("message_id", "")).encode())

    client = MqttOwner(url, client_id=f"bench-voice-{tag}", on_message=on_respond)
    pool = phrases(to_the_device=False)  # no device answers for these ids (_run_rate)
    hits = 0
    devices = [f"bench-{tag}-{n:03d}" for n in range(DEVICES)]
    events = topics.voice_command_events()

    def send(sent: int) -> None:
        nonlocal hits
        phrase = draw.choice(pool)
        area = DIRECT_AREAS[sent % len(DIRECT_AREAS)]
        hits += cache.hit(phrase, area)
        device_id = devices[sent % len(devices)]
        message_id = f"{tag}-{sent}"
        answers.sent(device_id, message_id.encode())
        event = VoiceCommandEvent(
            device_id=device_id,
            command=phrase,
            confidence=1.0,
            language="en",
            area=area,
            message_id=message_id,
        )
        client.publish_nowait(OutMessage(events, event.to_wire(), qos=1))

    try:
        await client.start(wait_connected=10)
        await client.subscribe([topics.command(device) for device in devices], qos=1)
        return await _measured(rate, seconds, send, answers, lambda: hits, hub_pid, "direct")
    finally:
        await client.stop(flush_seconds=1)


def _recognition_reference(samples: int) -> tuple[list[float], list[float], str]:
    """Milliseconds per recognition of the bench's phrases (demo home, warm), bypassing the
    engine's cache: with the template filter, and hassil alone (every template); and how
    many of the phrases found an intent."""
    from xiaozhi_hub.home import load_home
    from xiaozhi_hub.intents import IntentEngine, IntentMatch

    home = load_home()
    started = time.perf_counter()
    engine = IntentEngine(home, "en")
    loaded_ms = (time.perf_counter() - started) * 1000
    alone = IntentEngine(home, "en", filter_templates=False)
    engine.warm_up()
    alone.warm_up()
    pool = phrases()
    sample = random.Random(SEED).sample(pool, min(samples, len(pool)))
    timings: tuple[list[float], list[float]] = ([], [])
    for index, phrase in enumerate(sample):
        area = DIRECT_AREAS[index % len(DIRECT_AREAS)]
        for which, one in enumerate((engine, alone)):
            started_ns = time.perf_counter_ns()
            one._recognize(phrase, area)
            timings[which].append((time.perf_counter_ns() - started_ns) / 1e6)
    matched = sum(isinstance(engine._recognize(p, "kitchen"), IntentMatch) for p in pool)
    sent = len(phrases(to_the_device=False))
    note = (
        f"{len(pool)} distinct phrases ({sent} without the device's own commands: the ones "
        f"sent), {matched} recognised as an intent in the kitchen (the rest: unknown "
        f"names, negations; the hub answers why); engine load with "
        f"the template filter {loaded_ms:.0f} ms"
    )
    return sorted(timings[0]), sorted(timings[1]), note


async def _mqtt_reference(url: str, samples: int) -> list[float]:
    """Milliseconds per QoS 1 round trip through Mosquitto via an echo client."""
    tag = uuid.uuid4().hex[:8]
    ping, pong = f"bench/{tag}/ping", f"bench/{tag}/pong"
    echo: MqttOwner | None = None

    def reflect(topic: str, payload: bytes) -> None:
        assert echo is not None
        echo.publish_nowait(OutMessage(pong, payload, qos=1))

    arrived: asyncio.Queue[bytes] = asyncio.Queue()
    echo = MqttOwner(url, client_id=f"bench-echo-{tag}", on_message=reflect)
    prober = MqttOwner(
        url, client_id=f"bench-probe-{tag}", on_message=lambda _, p: arrived.put_nowait(p)
    )
    timings = []
    try:
        await echo.start(wait_connected=10)
        await prober.start(wait_connected=10)
        await echo.subscribe([ping], qos=1)
        await prober.subscribe([pong], qos=1)
        for index in range(samples + 10):  # the first ten warm up
            started = time.perf_counter_ns()
            prober.publish_nowait(OutMessage(ping, str(index).encode(), qos=1))
            await asyncio.wait_for(arrived.get(), 5)
            if index >= 10:
                timings.append((time.perf_counter_ns() - started) / 1e6)
    finally:
        await prober.stop(flush_seconds=1)
        await echo.stop(flush_seconds=1)
    return sorted(timings)


async def _run(
    seconds: float, quick: bool, workdir: Path
) -> tuple[list[RateRun], list[float], dict[str, Any]]:
    procs.raise_nofile()
    count = QUICK_DEVICES if quick else DEVICES
    rates = QUICK_RATES if quick else RATES
    direct_rates = QUICK_DIRECT_RATES if quick else DIRECT_RATES
    samples = 20 if quick else REFERENCE_SAMPLES
    draw = random.Random(SEED)
    cache = _HubCache()
    async with procs.broker(workdir) as mosquitto:
        mqtt_ms = await _mqtt_reference(mosquitto.url, samples)
        started = time.perf_counter()
        # Typed commands: no recogniser building in the background while measured; no
        # spoken answers (each new answer sentence is an espeak-ng run and an Opus encode on
        # the hub: docs/benchmarks.md).
        async with procs.hub(workdir, mosquitto.url, stt_engine="none", tts_engine="none") as hub:
            hub_start = {
                "ready_s": time.perf_counter() - started,
                "rss_kib": procs.rss_kib(hub.pid),
            }
            async with procs.edge(workdir, mosquitto.url) as edge:
                devices = await connect_devices(procs.HOST, edge.port, count)
                sessions = [
                    str(orjson.loads(d.server_hello or b"{}").get("session_id", "")).encode()
                    for d in devices
                ]
                runs = []
                try:
                    for index, rate in enumerate(rates):
                        duration = seconds if index == 0 else seconds / 5
                        runs.append(
                            await _run_rate(devices, sessions, rate, duration, draw, cache, hub.pid)
                        )
                finally:
                    for device in devices:
                        device.abort()
                for rate in direct_rates:
                    runs.append(
                        await _direct_rate(mosquitto.url, rate, seconds / 5, draw, cache, hub.pid)
                    )
                status, body = await procs.http_json(hub.port, "/health")
                hub_health = {
                    "status": status,
                    **(body or {}),
                    **hub_start,
                    "rss_end_kib": procs.rss_kib(hub.pid),
                }
                edge.kill()  # measured; their graceful stops are not part of this case
                hub.kill()
    return runs, mqtt_ms, hub_health


def run_voice(seconds: float, *, quick: bool = False) -> Report:
    """Through the edge: 100/s for `seconds`, then 1,000/s for `seconds` / 5; straight on
    the hub's topic: 1,000/s and 3,000/s for `seconds` / 5 each (module docstring)."""
    from xiaozhi_runtime.logs import configure_logging

    configure_logging(level="warning")  # the reference's MQTT owners log their connects
    report = Report(case="voice")
    report.notes.append(f"load average at start: {procs.load_average()}")
    recognize_ms, hassil_ms, pool_note = _recognition_reference(20 if quick else REFERENCE_SAMPLES)
    with tempfile.TemporaryDirectory(prefix="xiaozhi-bench-") as tmp:
        runs, mqtt_ms, hub_health = uvloop.run(_run(seconds, quick, Path(tmp)))
    direct_p99 = runs[-2] if len(runs) >= 2 else None
    for q in (50, 99):
        floor = percentile(recognize_ms, q) + percentile(mqtt_ms, q)
        for run in runs:
            report.figures.append(
                Figure(
                    f"p{q} round trip at {run.rate:,.0f}/s ({run.path})",
                    run.p(q),
                    "ms",
                    reference=floor,
                    reference_name="recognize + MQTT round trip, alone",
                    target=f"<= {TARGET_P99_MS} ms at 1,000/s"
                    if q == 99 and run is direct_p99
                    else "",
                )
            )
    for run in runs:
        report.figures.append(
            Figure(
                f"answered/s at {run.rate:,.0f}/s offered ({run.path})",
                run.answered_rate,
                "cmd/s",
                reference=1000 / statistics.fmean(recognize_ms),
                reference_name="uncached recognitions/s, one core",
                target=f">= {TARGET_RATE:,}/s" if run is runs[-1] else "",
            )
        )
    report.notes += [
        f"references: recognize (template filter) p50/p99/mean {percentile(recognize_ms, 50):.2f}/"
        f"{percentile(recognize_ms, 99):.2f}/{statistics.fmean(recognize_ms):.2f} ms; "
        f"hassil alone p50/p99/mean {percentile(hassil_ms, 50):.2f}/"
        f"{percentile(hassil_ms, 99):.2f}/{statistics.fmean(hassil_ms):.2f} ms (same phrases "
        f"and areas, past the cache); MQTT round trip p50/p99 {percentile(mqtt_ms, 50):.2f}/"
        f"{percentile(mqtt_ms, 99):.2f} ms",
        pool_note,
        f"edge: {QUICK_DEVICES if quick else DEVICES} devices on one edge (no area); direct: "
        "one lean MQTT client publishing VoiceCommandEvent on xiaozhi/events/voice_command "
        f"(QoS 1) for {DEVICES} device ids, areas in turn {DIRECT_AREAS}; one hub for all",
        "phrases drawn at random (seeded) from the pool; cache hits: the hub's LRU of "
        "(text, area) replayed over the commands in the order sent",
        "a percentile that falls on an unanswered command is n/a",
    ]
    for run in runs:
        answered = len(run.latencies_ms)
        report.notes.append(
            f"{run.path} {run.rate:,.0f}/s: sent {run.sent:,}, answered {answered:,}, "
            f"unanswered after {DRAIN_SECONDS:.0f} s: {run.unanswered:,}; cache hits "
            f"{run.cache_hits / max(1, run.sent):.0%}; hub CPU "
            f"{run.hub_cpu_ms / max(1, answered):.2f} ms per answered command; answered "
            "latency p50/p99/max "
            f"{percentile(run.latencies_ms, 50):.1f}/"
            f"{percentile(run.latencies_ms, 99):.1f}/{percentile(run.latencies_ms, 100):.1f} ms"
        )
    with contextlib.suppress(KeyError, TypeError):
        report.notes.append(
            f"hub ready (/health 200) {hub_health['ready_s']:.2f} s after its start, RSS "
            f"{hub_health['rss_kib'] / 1024:.0f} MiB then, {hub_health['rss_end_kib'] / 1024:.0f} "
            f"MiB at the end; health at the end: {hub_health['status']}"
        )
    report.notes.append(f"load average at end: {procs.load_average()}")
    return report
