"""`xiaozhi bench speech`: spoken commands through the real system (issue 12, point 9).

What is said: sentences built from the home model (the demo home: every light on, off and
dimmed, each room's brightness to N %, the front door locked, unlocked and asked about, the
office's temperature asked, set and made warmer, the speaker's volume; numbers said as words),
and an out-of-domain set (jokes, weather, timers, shopping lists, music, an unknown device, a
negated command). Each is synthesized by voices the recogniser was not tuned on (espeak-ng
``en-us+f3`` and flite ``rms``; the tests use espeak-ng ``en-us`` and flite ``slt``), with
300 ms of silence before and after, clean and with white noise at 25 and 15 dB SNR (over the
sentence's mean power), and encoded as a device does (Opus, 16 kHz, 60 ms frames, VoIP).

Phases, one after the other so that none disturbs another's timing:

1. **The recogniser alone** (this process): :class:`~xiaozhi_speech.OfflineRecognizer` with one
   worker, loaded from the corpus the hub builds for the same home, transcribes every
   utterance (the Opus packets decoded as the hub decodes them) one at a time, then N at
   once. Its CPU is read from ``/proc`` (its worker processes and this one). Reference: bare
   pocketsphinx (``pocketsphinx.Decoder`` with the same model files, in this process) on the
   same audio.
2. **The edge's VAD and decode** (this process): :class:`~xiaozhi_edge.utterances.UtteranceBuffer`
   ``feed`` over the same frames, in auto mode (decode + energy VAD) and manual mode (decode
   + buffer). Reference: a bare ``opuslib.Decoder.decode`` of the same frames.
3. **The system**: a managed Mosquitto, ``xiaozhi edge`` and ``xiaozhi hub`` (the demo home,
   its offline recogniser and espeak-ng answers, as deployed), the home's three speakers as
   firmware-like simulated WebSocket devices (:class:`~xiaozhi_sim.WsDevice`, manual mode:
   ``listen start``, the Opus frames paced in real time, ``listen stop``) talking at once,
   each waiting for its answer before its next sentence; a ``mosquitto_sub`` on the events and
   commands stamps every message on arrival. A command is **right** when the hub's
   ``response`` has the intent the same sentence typed got, and its ``action`` events name the
   entities the sentence was built for (with the number said, if one was), or, for a
   question, its answer names what was asked about. Out-of-domain speech is **executed** when
   the response says ``executed``. End of speech = the moment the device's ``listen stop``
   was written; the action = the hub's first ``action`` event for it. Reference: the same
   sentences typed (``listen detect``) through the same devices, edge and hub, after the
   spoken ones.

Everything is loopback, on ports the servers chose (port 0). About four and a half minutes with
the defaults (the devices talk for three); ``--quick`` runs one voice and four sentences.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import math
import os
import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import uvloop

from xiaozhi_bench import procs
from xiaozhi_bench.loadgen import percentile
from xiaozhi_bench.runner import Figure, Report

if TYPE_CHECKING:
    from xiaozhi_speech import OfflineRecognizer

__all__ = ["OUT_OF_DOMAIN", "Sentence", "home_sentences", "run_speech"]

RATE = 16_000
FRAME_SAMPLES = RATE * 60 // 1000
PAD_MS = 300  # silence before and after each sentence
VOICES = (("espeak-ng en-us+f3", "espeak", "en-us+f3"), ("flite rms", "flite", "rms"))
CONDITIONS: tuple[tuple[str, float | None], ...] = (
    ("clean", None),
    ("25 dB SNR", 25.0),
    ("15 dB SNR", 15.0),
)
OUT_OF_DOMAIN = (
    "tell me a joke",
    "what's the weather like tomorrow",
    "set a timer for ten minutes",
    "add milk to the shopping list",
    "play some music",
    "turn on the garage light",
    "don't turn on the kitchen light",
)
CONCURRENT = 8  # transcriptions handed to the one-worker recogniser at once
QUICK_CONCURRENT = 4
EDGE_FRAMES = 3000  # frames timed through the edge's buffer (and bare opuslib)
ANSWER_SECONDS = 30.0  # a missing answer is counted after this
SEED = 20_261_207

TARGET_RIGHT_CLEAN = 95.0
TARGET_RIGHT_15 = 85.0
TARGET_P50_MS = 100.0
TARGET_P95_MS = 300.0


# -- what is said ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sentence:
    """A sentence and what the hub must do with it.

    Attributes:
        text: the words said (numbers as words).
        targets: entity ids the command acts on; empty for questions and out-of-domain.
        about: the name of what it is about: a question's answer must contain it, and so
            must a command's answer when the state made it a no-op ("The bedroom light is
            already off." for "dim the bedroom light").
        value: a number said that every action's parameters must carry.
        speaker: the device that says it (it names its room or itself); None: any.
    """

    text: str
    targets: tuple[str, ...] = ()
    about: str = ""
    value: int | None = None
    speaker: str | None = None

    @property
    def in_domain(self) -> bool:
        return bool(self.targets or self.about)

    @property
    def question(self) -> bool:
        return self.in_domain and not self.targets


def _words(value: int) -> str:
    from xiaozhi_speech.corpus import number_words

    return number_words(value)


def home_sentences(home: Any, rng: random.Random) -> list[Sentence]:
    """The demo home's plain commands, built from ``home`` (a :class:`xiaozhi_hub.home.Home`)
    so that they follow it: names, rooms and speakers are the home's."""
    entities = list(home.entities)
    speakers = [d for d in home.devices if d.area]
    lights = [e for e in entities if e.domain == "light"]
    out: list[Sentence] = []
    for light in lights:
        name, target = light.name, (light.entity_id,)
        out += [
            Sentence(f"turn on the {name}", target, about=name),
            Sentence(f"turn off the {name}", target, about=name),
        ]
        if light.binding.type != "xiaozhi":  # a device's LED takes a level, not a step
            out.append(Sentence(f"dim the {name}", target, about=name))
    for area in home.areas:
        in_area = tuple(e.entity_id for e in lights if e.area == area.id)
        if in_area:
            percent = rng.choice((20, 30, 40, 60, 70, 80))
            text = f"set the brightness in the {area.name.lower()} to {_words(percent)} percent"
            out.append(Sentence(text, in_area, about=area.name, value=percent))
    for lock in (e for e in entities if e.domain == "lock"):
        out += [
            Sentence(f"lock the {lock.name}", (lock.entity_id,), about=lock.name),
            Sentence(f"unlock the {lock.name}", (lock.entity_id,), about=lock.name),
            Sentence(f"is the {lock.name} locked", about=lock.name),
        ]
    for climate in (e for e in entities if e.domain == "climate"):
        area = home.area(climate.area) if climate.area else None
        degrees = rng.choice((19, 20, 22, 23))
        text = f"set the {climate.name} to {_words(degrees)} degrees"
        out.append(Sentence(text, (climate.entity_id,), about=climate.name, value=degrees))
        here = next((d.id for d in speakers if d.area == climate.area), None)
        if area is not None and here is not None:
            out += [
                Sentence(f"what is the temperature in the {area.name.lower()}", about=area.name),
                Sentence("make it warmer", (climate.entity_id,), climate.name, speaker=here),
            ]
    if speakers:
        volume = rng.choice((30, 40, 60, 70))
        speaker = speakers[0].id
        player = f"media_player.xiaozhi_{speaker}"
        text = f"set the volume to {_words(volume)}"
        out.append(Sentence(text, (player,), "volume", value=volume, speaker=speaker))
    return out


@dataclass(slots=True)
class Utterance:
    """One sentence said by one voice in one condition, as the device sends it."""

    sentence: Sentence
    voice: str
    condition: str
    pcm: bytes  # what the microphone streams (16 kHz), silence and noise included
    packets: list[bytes]  # its Opus frames, as the device encodes them
    decoded: bytes = b""  # the frames decoded as the hub decodes them

    @property
    def seconds(self) -> float:
        return len(self.decoded) / 2 / RATE


async def _synthesize(engine: str, name: str, text: str) -> bytes:
    from xiaozhi_speech import EspeakVoice, FliteVoice, TextToSpeech, resample

    voice: TextToSpeech = (
        EspeakVoice(voices={"en": name}) if engine == "espeak" else FliteVoice(name)
    )
    speech = await voice.synthesize(text)
    return resample(speech.pcm, speech.sample_rate, RATE)


def _noisy(
    speech: bytes, snr_db: float | None, noise: Sequence[float], rng: random.Random
) -> bytes:
    """``speech`` padded with silence, plus white noise ``snr_db`` under its mean power."""
    pad = bytes(PAD_MS * RATE // 1000 * 2)
    pcm = pad + speech + pad
    if snr_db is None:
        return pcm
    voiced = array.array("h", speech)
    power = sum(s * s for s in voiced) / max(1, len(voiced))
    scale = math.sqrt(power / 10 ** (snr_db / 10))
    samples = array.array("h", pcm)
    offset, size = rng.randrange(len(noise)), len(noise)
    mixed = array.array(
        "h",
        (
            max(-32768, min(32767, s + round(scale * noise[(offset + i) % size])))
            for i, s in enumerate(samples)
        ),
    )
    return mixed.tobytes()


async def _record(
    sentences: Sequence[Sentence], voices: Sequence[tuple[str, str, str]]
) -> list[Utterance]:
    """Every sentence by every voice in every condition, encoded and decoded as on the wire."""
    from xiaozhi_runtime import opus
    from xiaozhi_sim.mic_and_speaker import MicrophoneEncoder

    rng = random.Random(SEED)
    noise = [rng.gauss(0.0, 1.0) for _ in range(8 * RATE)]
    out = []
    for label, engine, name in voices:
        for sentence in sentences:
            speech = await _synthesize(engine, name, sentence.text)
            for condition, snr in CONDITIONS:
                pcm = _noisy(speech, snr, noise, rng)
                packets = list(MicrophoneEncoder().packets(pcm))
                decoded = opus.decode(packets, sample_rate=RATE)
                out.append(Utterance(sentence, label, condition, pcm, packets, decoded))
    return out


# -- phase 1: the recogniser alone ----------------------------------------------------------


def _children(pid: int | str) -> set[int]:
    """The child processes of ``pid`` (``/proc/<pid>/task/*/children``)."""
    pids: set[int] = set()
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text(encoding="ascii")
                pids.update(int(child) for child in text.split())
    return pids


def _children_cpu(pid: int | str = "self") -> dict[int, float]:
    """CPU seconds of each process under ``pid`` (children, their children...), not its own."""
    out = {}
    todo = _children(pid)
    while todo:
        child = todo.pop()
        with contextlib.suppress(OSError, IndexError, ValueError):
            out[child] = procs.cpu_seconds(child)
            todo |= _children(child)
    return out


def _tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and every process under it (the hub's speech workers)."""
    return procs.cpu_seconds(pid) + sum(_children_cpu(pid).values())


def _cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


@dataclass(slots=True)
class Alone:
    """The recogniser alone, and bare pocketsphinx, on the same audio."""

    wall_ms: list[float] = field(default_factory=list)  # per utterance, one at a time
    texts: list[str] = field(default_factory=list)  # accepted text per utterance ("" if not)
    cpu_s: float = math.nan  # our recogniser's CPU over the one-at-a-time pass
    audio_s: float = 0.0
    batch: int = 0
    batch_audio_s: float = 0.0
    batch_wall_s: float = math.nan
    batch_ms: list[float] = field(default_factory=list)  # per utterance, N at once
    bare_ms: list[float] = field(default_factory=list)  # bare pocketsphinx wall per utterance
    bare_cpu_s: float = math.nan
    bare_texts: list[str] = field(default_factory=list)
    corpus_sentences: int = 0
    stream_ms: list[float] = field(default_factory=list)  # finish() -> transcript, streamed
    stream_texts: list[str] = field(default_factory=list)  # accepted text, streamed


def _bare_decode(model: Any, utterances: Sequence[Utterance], alone: Alone) -> None:
    """pocketsphinx alone (no pool, no rejection) with the recogniser's model files."""
    import pocketsphinx

    decoder = pocketsphinx.Decoder(
        lm=model.lm_path, dict=model.dict_path, loglevel="FATAL", samprate=RATE
    )
    decoder.start_utt()  # warm: the first decode allocates
    decoder.process_raw(utterances[0].decoded, False, True)
    decoder.end_utt()
    cpu = time.process_time()
    for utterance in utterances:
        started = time.perf_counter()
        decoder.start_utt()
        decoder.process_raw(utterance.decoded, False, True)
        decoder.end_utt()
        hyp = decoder.hyp()
        alone.bare_ms.append((time.perf_counter() - started) * 1000)
        alone.bare_texts.append(" ".join(hyp.hypstr.split()) if hyp is not None else "")
    alone.bare_cpu_s = time.process_time() - cpu


async def _recogniser_alone(
    utterances: Sequence[Utterance], recognizer: OfflineRecognizer, concurrent: int
) -> Alone:
    """The loaded ``recognizer`` alone, one utterance at a time and ``concurrent`` at once;
    closed at the end."""
    assert recognizer.model is not None
    alone = Alone(corpus_sentences=recognizer.model.sentences)
    try:
        await recognizer.transcribe(utterances[0].decoded, RATE)  # the worker's decoder loads
        before, own = _children_cpu(), time.process_time()
        for utterance in utterances:
            heard = await recognizer.transcribe(utterance.decoded, RATE)
            alone.wall_ms.append(heard.processing_time_ms)
            alone.texts.append(heard.text if heard.accepted else "")
        alone.cpu_s = _cpu_used(before, _children_cpu()) + time.process_time() - own
        alone.audio_s = sum(u.seconds for u in utterances)
        batch = list(utterances[-concurrent:])
        started = time.perf_counter()
        heard_all = await asyncio.gather(*(recognizer.transcribe(u.decoded, RATE) for u in batch))
        alone.batch_wall_s = time.perf_counter() - started
        alone.batch, alone.batch_audio_s = len(batch), sum(u.seconds for u in batch)
        alone.batch_ms = sorted(h.processing_time_ms for h in heard_all)
        await _streamed(utterances, recognizer, alone)
        assert recognizer.model is not None
        _bare_decode(recognizer.model, utterances, alone)
    finally:
        await recognizer.aclose()
    return alone


STREAM_CHUNK = RATE * 2 * 240 // 1000
"""Bytes of audio per stream batch: 240 ms (four 60 ms frames), as an edge would batch them."""


async def _streamed(
    utterances: Sequence[Utterance], recognizer: OfflineRecognizer, alone: Alone
) -> None:
    """Each utterance decoded while spoken (:meth:`OfflineRecognizer.open_stream`): fed in
    240 ms batches, each taken by the decoder before the next (the process keeps up with a
    speaker), then the time from the end of the audio to the transcript."""
    for utterance in utterances:
        stream = await recognizer.open_stream()
        assert stream is not None
        pcm = utterance.decoded
        for start in range(0, len(pcm), STREAM_CHUNK):
            stream.feed(pcm[start : start + STREAM_CHUNK])
            await stream.drained()
        heard = await stream.finish()
        alone.stream_ms.append(heard.processing_time_ms)
        alone.stream_texts.append(heard.text if heard.accepted else "")


# -- phase 2: the edge's VAD and Opus decode per frame ----------------------------------------


def _edge_frame_us(frames: Sequence[bytes]) -> dict[str, float]:
    """µs per frame: the edge's buffer in auto mode (decode + VAD) and manual mode (decode +
    buffer), and bare opuslib; each the best of three passes, the passes interleaved."""
    import opuslib

    from xiaozhi.messages import ListenMode
    from xiaozhi_edge.utterances import MAX_OPUS_FRAME_SAMPLES, UtteranceBuffer

    def edge(mode: ListenMode) -> float:
        buffer = UtteranceBuffer(max_utterance_seconds=3600)
        buffer.start(mode)
        started = time.perf_counter()
        for frame in frames:
            buffer.feed(frame)
        return time.perf_counter() - started

    def bare() -> float:
        decoder = opuslib.Decoder(RATE, 1)
        started = time.perf_counter()
        for frame in frames:
            decoder.decode(frame, MAX_OPUS_FRAME_SAMPLES)
        return time.perf_counter() - started

    best: dict[str, float] = defaultdict(lambda: math.inf)
    for _ in range(3):
        for name, timed in (
            ("auto", lambda: edge(ListenMode.AUTO)),
            ("manual", lambda: edge(ListenMode.MANUAL)),
            ("bare", bare),
        ):
            best[name] = min(best[name], timed())
    return {name: seconds / len(frames) * 1e6 for name, seconds in best.items()}


# -- phase 3: the system ---------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """What the system did with one utterance (or one typed sentence)."""

    sentence: Sentence
    device: str
    sent_ns: int  # listen stop (spoken) or listen detect (typed) written
    voice: str = "typed"
    condition: str = "typed"
    response: dict[str, Any] | None = None
    response_ns: int | None = None
    action_ns: int | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    results: list[str] = field(default_factory=list)  # each action_result's status
    edge_ns: int | None = None  # the edge's utterance event
    command_ns: int | None = None  # the voice_command event
    processing_ms: float | None = None  # the voice_command event's processing_time_ms
    heard: str = ""

    @property
    def executed(self) -> bool:
        return bool(self.response and self.response.get("executed"))

    def ms(self, ns: int | None) -> float | None:
        return None if ns is None else (ns - self.sent_ns) / 1e6


class _EventLog:
    """Every event and command the subscriber saw, by device, with its arrival time."""

    def __init__(self, subscriber: procs.Subscriber) -> None:
        self.subscriber = subscriber
        self.by_device: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        self.changed = asyncio.Event()

    async def collect(self) -> None:
        while True:
            for arrived, raw in self.subscriber.take():
                with contextlib.suppress(orjson.JSONDecodeError):
                    payload = orjson.loads(raw)
                    if isinstance(payload, dict) and isinstance(payload.get("device_id"), str):
                        self.by_device[payload["device_id"]].append((arrived, payload))
                        self.changed.set()
            await asyncio.sleep(0.01)

    async def outcome(self, outcome: Outcome) -> Outcome:
        """Fill ``outcome`` in from the messages of its device after it was sent, once the
        hub's ``response`` arrived (or after :data:`ANSWER_SECONDS`)."""
        deadline = time.monotonic() + ANSWER_SECONDS
        while True:
            self.changed.clear()  # before looking: a message collected after it wakes us
            found = self._response(outcome)
            if found is not None or time.monotonic() > deadline:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 0.5)
        if found is None:
            return outcome
        outcome.response_ns, outcome.response = found
        mid = outcome.response.get("message_id")
        outcome.heard = str(outcome.response.get("stt") or "")
        for arrived, payload in self._since(outcome):
            kind = payload.get("event_type")
            if kind == "utterance" and outcome.edge_ns is None:
                outcome.edge_ns = arrived
            if payload.get("message_id") != mid:
                continue
            if kind == "voice_command":
                outcome.command_ns = arrived
                outcome.processing_ms = payload.get("processing_time_ms")
            elif kind == "action":
                outcome.action_ns = outcome.action_ns or arrived
                outcome.actions.append(payload.get("action") or {})
            elif kind == "action_result":
                outcome.results.append(str(payload.get("status")))
        return outcome

    def _since(self, outcome: Outcome) -> list[tuple[int, dict[str, Any]]]:
        return [(t, p) for t, p in self.by_device[outcome.device] if t > outcome.sent_ns]

    def _response(self, outcome: Outcome) -> tuple[int, dict[str, Any]] | None:
        return next(
            ((t, p) for t, p in self._since(outcome) if p.get("event_type") == "response"), None
        )


async def _answered(device: Any, since: float) -> None:
    """Until the device heard its answer end (``tts stop``), as a person waits; at most 5 s."""

    def done() -> bool:
        return any(
            r.payload.get("type") == "tts" and r.payload.get("state") == "stop"
            for r in device.received_since(since, "message")
        )

    await device.wait_until(done, 5.0)


async def _speak_each(
    device: Any, turns: list[Utterance], log: _EventLog, delay: float
) -> list[Outcome]:
    await asyncio.sleep(delay)
    out = []
    for utterance in turns:
        since = device.now()
        await device.speak_pcm(utterance.pcm)
        sent = time.time_ns()  # `listen stop` is written: the end of speech
        outcome = Outcome(
            utterance.sentence, device.device_id, sent, utterance.voice, utterance.condition
        )
        out.append(await log.outcome(outcome))
        await _answered(device, since)
    return out


async def _type_each(device: Any, sentences: list[Sentence], log: _EventLog) -> list[Outcome]:
    out = []
    for sentence in sentences:
        since = device.now()
        await device.say(sentence.text)
        outcome = Outcome(sentence, device.device_id, time.time_ns())
        out.append(await log.outcome(outcome))
        await _answered(device, since)
    return out


def _deal(items: Iterable[Any], speakers: Sequence[str], who: Any) -> dict[str, list[Any]]:
    """Items by speaker: a sentence's own speaker, else the one with the fewest so far."""
    turns: dict[str, list[Any]] = {speaker: [] for speaker in speakers}
    for item in items:
        speaker = who(item) or min(speakers, key=lambda s: len(turns[s]))
        turns[speaker].append(item)
    return turns


@dataclass(slots=True)
class SystemRun:
    spoken: list[Outcome]
    typed: list[Outcome]
    wall_s: float
    hub_cpu_s: float
    edge_cpu_s: float


async def _hub_ready(hub: procs.Child, within: float = 120.0) -> None:
    """The hub subscribes to utterances only once its recogniser is loaded."""
    deadline = time.monotonic() + within
    while "speech_loaded" not in hub.log_path.read_text(encoding="utf-8", errors="replace"):
        hub.check_alive()
        if time.monotonic() > deadline:
            raise procs.BenchProcessError(f"the hub's recogniser never loaded:\n{hub.tail()}")
        await asyncio.sleep(0.1)


async def _system(
    utterances: list[Utterance], sentences: list[Sentence], home_path: Path, workdir: Path
) -> SystemRun:
    from xiaozhi.messages import ListenMode
    from xiaozhi_hub.home import load_home
    from xiaozhi_sim import SimSettings, WsDevice, make_identity

    speakers = [d.id for d in load_home(home_path).devices if d.area]
    async with (
        procs.broker(workdir) as mosquitto,
        procs.edge(workdir, mosquitto.url) as edge,
        procs.hub(workdir, mosquitto.url, config=home_path) as hub,
    ):
        await _hub_ready(hub)
        filters = ["xiaozhi/events/#", "xiaozhi/commands/#", "bench/probe/#"]
        subscriber = procs.Subscriber(workdir, mosquitto.port, filters, "speech-sub")
        settings = SimSettings(
            mqtt_url=mosquitto.url,
            sim_ota_url="",
            sim_ws_url=f"ws://{procs.HOST}:{edge.port}/xiaozhi/v1/",
            sim_token="",
        )
        devices = {
            s: WsDevice(
                make_identity(name=f"bench-{s}", device_id=s),
                settings,
                mode=ListenMode.MANUAL,
                decode_audio=False,
            )
            for s in speakers
        }
        async with subscriber.running("bench/probe/speech"):
            log = _EventLog(subscriber)
            collector = asyncio.create_task(log.collect())
            try:
                for device in devices.values():
                    await device.wake()
                cpu = (_tree_cpu(hub.pid), edge.cpu_seconds())
                started = time.perf_counter()
                spoken_turns = _deal(utterances, speakers, lambda u: u.sentence.speaker)
                stagger = 0.9  # seconds between the devices' first sentences
                spoken = await asyncio.gather(
                    *(
                        _speak_each(devices[s], spoken_turns[s], log, i * stagger)
                        for i, s in enumerate(speakers)
                    )
                )
                wall = time.perf_counter() - started
                cpu = (_tree_cpu(hub.pid) - cpu[0], edge.cpu_seconds() - cpu[1])
                typed_turns = _deal(sentences, speakers, lambda s: s.speaker)
                typed = await asyncio.gather(
                    *(_type_each(devices[s], typed_turns[s], log) for s in speakers)
                )
            finally:
                collector.cancel()
                for device in devices.values():
                    await device.stop()
    return SystemRun(
        [o for run in spoken for o in run], [o for run in typed for o in run], wall, *cpu
    )


# -- judging ---------------------------------------------------------------------------------


def _right(outcome: Outcome, typed: Outcome | None) -> bool:
    """The right intent and the right actions (or answer), as the same sentence typed got."""
    sentence, response = outcome.sentence, outcome.response
    if not response or not response.get("executed"):
        return False
    if (
        typed is not None
        and outcome is not typed
        and (not typed.response or response.get("intent") != typed.response.get("intent"))
    ):
        return False
    names_it = sentence.about.lower() in str(response.get("text")).lower()
    if sentence.question or not outcome.actions:  # an answer, or a no-op the state called for
        return not outcome.actions and names_it
    if {a.get("entity_id") for a in outcome.actions} != set(sentence.targets):
        return False
    if outcome.results != ["ok"] * len(outcome.actions):  # each carried out
        return False
    if sentence.value is not None:
        return all(_carries(a.get("parameters") or {}, sentence.value) for a in outcome.actions)
    return True


def _carries(parameters: dict[str, Any], value: int) -> bool:
    """The number said is among an action's parameters, as itself or as a fraction of 100
    (``volume_level`` 0.6 for "sixty")."""
    return any(
        isinstance(v, int | float) and (v == value or abs(v * 100 - value) < 0.5)
        for v in parameters.values()
    )


def _share(hits: int, count: int) -> float:
    return 100.0 * hits / count if count else math.nan


@dataclass(slots=True)
class Judged:
    right: dict[str, float]  # condition -> % right (in-domain)
    ood_executed: dict[str, float]  # condition -> % out-of-domain executed
    typed_right: float
    typed_ood_executed: float
    notes: list[str]


def _judge(run: SystemRun, conditions: Sequence[str], voices: Sequence[str]) -> Judged:
    typed = {o.sentence: o for o in run.typed}
    typed_in = [o for o in run.typed if o.sentence.in_domain]
    typed_ood = [o for o in run.typed if not o.sentence.in_domain]
    right: dict[str, float] = {}
    ood: dict[str, float] = {}
    notes = []
    for condition in conditions:
        group = [o for o in run.spoken if o.condition == condition]
        in_domain = [o for o in group if o.sentence.in_domain]
        out = [o for o in group if not o.sentence.in_domain]
        right[condition] = _share(
            sum(_right(o, typed.get(o.sentence)) for o in in_domain), len(in_domain)
        )
        ood[condition] = _share(sum(o.executed for o in out), len(out))
        for voice in voices:
            mine = [o for o in in_domain if o.voice == voice]
            hits = sum(_right(o, typed.get(o.sentence)) for o in mine)
            wrong = sum(o.executed and not _right(o, typed.get(o.sentence)) for o in mine)
            theirs = [o for o in out if o.voice == voice]
            notes.append(
                f"{condition}, {voice}: right {hits}/{len(mine)}, executed wrongly {wrong}, "
                f"refused or unanswered {len(mine) - hits - wrong}; out-of-domain executed "
                f"{sum(o.executed for o in theirs)}/{len(theirs)}"
            )
    return Judged(
        right,
        ood,
        _share(sum(_right(o, None) for o in typed_in), len(typed_in)),
        _share(sum(o.executed for o in typed_ood), len(typed_ood)),
        notes,
    )


def _misses(run: SystemRun) -> list[str]:
    """What was heard for the in-domain sentences not done right, and out-of-domain executed;
    the typed ones first."""
    typed = {o.sentence: o for o in run.typed}
    out = []
    for o in [*run.typed, *run.spoken]:
        if o.sentence.in_domain and _right(o, typed.get(o.sentence)):
            continue
        if not o.sentence.in_domain and not o.executed:
            continue
        if o.response is None:
            verdict = "no answer"
        elif o.executed:
            verdict = f"executed {o.response.get('intent')}: {o.response.get('text')!r}"
        else:
            verdict = f"refused ({o.response.get('error')})"
        said = "typed" if o.voice == "typed" else f"{o.condition}, {o.voice}"
        out.append(f"[{said}] {o.sentence.text!r} heard {o.heard!r}: {verdict}")
    return out


# -- the report ------------------------------------------------------------------------------


def _ms_sorted(values: Iterable[float | None]) -> list[float]:
    return sorted(v for v in values if v is not None)


def _target(value: float, wanted: str, ok: bool) -> str:
    if math.isnan(value):
        return f"{wanted}: not measured"
    return f"{wanted}: {'hit' if ok else 'MISS'}"


def _accuracy_figures(judged: Judged) -> list[Figure]:
    figures = []
    for condition, share in judged.right.items():
        goal = {"clean": TARGET_RIGHT_CLEAN, "15 dB SNR": TARGET_RIGHT_15}.get(condition)
        figures.append(
            Figure(
                f"right, {condition}",
                share,
                "%",
                judged.typed_right,
                "typed, same sentences",
                target="" if goal is None else _target(share, f">= {goal:.0f} %", share >= goal),
            )
        )
    for condition, share in judged.ood_executed.items():
        figures.append(
            Figure(
                f"out-of-domain executed, {condition}",
                share,
                "%",
                judged.typed_ood_executed,
                "typed, same sentences",
                target=_target(share, "0 %", share == 0),
            )
        )
    return figures


def _latency_figures(run: SystemRun, alone: Alone) -> list[Figure]:
    spoken = _ms_sorted(o.ms(o.action_ns) for o in run.spoken if o.action_ns)
    typed = _ms_sorted(o.ms(o.action_ns) for o in run.typed if o.action_ns)
    processing = _ms_sorted(o.processing_ms for o in run.spoken)
    bare = sorted(alone.bare_ms)
    figures = []
    for q, goal in ((50, TARGET_P50_MS), (95, TARGET_P95_MS)):
        value = percentile(spoken, q)
        figures.append(
            Figure(
                f"end of speech -> action p{q}",
                value,
                "ms",
                percentile(typed, q),
                "typed command -> action",
                target=_target(value, f"<= {goal:.0f} ms", value <= goal),
            )
        )
    for q in (50, 95):
        figures.append(
            Figure(
                f"hub processing_time_ms p{q}",
                percentile(processing, q),
                "ms",
                percentile(bare, q),
                "bare pocketsphinx decode, same audio",
            )
        )
    return figures


def _cost_figures(alone: Alone, edge_us: dict[str, float]) -> list[Figure]:
    ours_cpu = alone.cpu_s / alone.audio_s if alone.audio_s else math.nan
    bare_cpu = alone.bare_cpu_s / alone.audio_s if alone.audio_s else math.nan
    batch_bare_s = sum(alone.bare_ms[-alone.batch :]) / 1000 if alone.batch else math.nan
    bare_rtf = batch_bare_s / alone.batch_audio_s if alone.batch_audio_s else math.nan
    rtf = alone.batch_wall_s / alone.batch_audio_s if alone.batch_audio_s else math.nan
    return [
        Figure("recogniser CPU per audio second", ours_cpu, "s/s", bare_cpu, "bare pocketsphinx"),
        Figure(
            f"real-time factor, {alone.batch} at once (1 worker)",
            rtf,
            "x",
            bare_rtf,
            "bare pocketsphinx, same audio one at a time",
        ),
        Figure(
            "talking devices one core transcribes in real time",
            1 / rtf if rtf else math.nan,
            "devices",
            1 / bare_rtf if bare_rtf else math.nan,
            "bare pocketsphinx, 1 / its real-time factor",
        ),
        Figure(
            "edge VAD + Opus decode per 60 ms frame",
            edge_us["auto"],
            "us",
            edge_us["bare"],
            "bare opuslib decode",
        ),
        Figure(
            "edge manual-mode decode per 60 ms frame",
            edge_us["manual"],
            "us",
            edge_us["bare"],
            "bare opuslib decode",
        ),
    ]


def _alone_notes(alone: Alone, utterances: Sequence[Utterance]) -> list[str]:
    from xiaozhi_speech import normalize_words

    said = [normalize_words(u.sentence.text) for u in utterances]
    notes = []
    for condition, _ in CONDITIONS:
        picked = [i for i, u in enumerate(utterances) if u.condition == condition]
        if not picked:
            continue
        ours = sum(alone.texts[i] == said[i] for i in picked if utterances[i].sentence.in_domain)
        bare = sum(alone.bare_texts[i] == said[i] for i in picked)
        ood = sum(bool(alone.texts[i]) for i in picked if not utterances[i].sentence.in_domain)
        count_in = sum(utterances[i].sentence.in_domain for i in picked)
        streamed = sum(
            alone.stream_texts[i] == said[i] for i in picked if utterances[i].sentence.in_domain
        )
        streamed_ood = sum(
            bool(alone.stream_texts[i]) for i in picked if not utterances[i].sentence.in_domain
        )
        same = sum(alone.stream_texts[i] == alone.texts[i] for i in picked)
        notes.append(
            f"recogniser alone, {condition}: exact words accepted {ours}/{count_in} in-domain, "
            f"out-of-domain accepted {ood}/{len(picked) - count_in}; bare pocketsphinx's "
            f"hypothesis exact {bare}/{len(picked)}; streamed: exact {streamed}/{count_in}, "
            f"out-of-domain accepted {streamed_ood}, same transcript as whole {same}/"
            f"{len(picked)}"
        )
    wall = sorted(alone.wall_ms)
    notes.append(
        f"recogniser alone: {len(utterances)} utterances, {alone.audio_s:.1f} s of audio, "
        f"{alone.corpus_sentences:,} corpus sentences; one at a time p50/p95 "
        f"{percentile(wall, 50):.0f}/{percentile(wall, 95):.0f} ms; {alone.batch} at once: "
        f"{alone.batch_audio_s:.1f} s of audio in {alone.batch_wall_s:.2f} s, each answered in "
        f"p50/max {percentile(alone.batch_ms, 50):.0f}/{percentile(alone.batch_ms, 100):.0f} ms"
    )
    tail = sorted(alone.stream_ms)
    notes.append(
        f"recogniser alone, streamed (240 ms batches, decoded as they come): end of audio -> "
        f"transcript p50/p95 {percentile(tail, 50):.0f}/{percentile(tail, 95):.0f} ms "
        f"(whole, one at a time: {percentile(wall, 50):.0f}/{percentile(wall, 95):.0f} ms)"
    )
    return notes


def _overlap_note(spoken: Sequence[Outcome]) -> str:
    """How many utterances ended while the hub was still transcribing another device's (its
    voice_command or answer not out yet), and the latency of the others."""

    def busy(o: Outcome) -> bool:
        return any(
            p is not o and p.sent_ns <= o.sent_ns < (p.command_ns or p.response_ns or p.sent_ns)
            for p in spoken
        )

    crowded = [busy(o) for o in spoken]
    lone = _ms_sorted(o.ms(o.action_ns) for o, c in zip(spoken, crowded, strict=True) if not c)
    return (
        f"{sum(crowded)} of {len(spoken)} utterances ended while the hub was still transcribing "
        f"another device's; end of speech -> action over the others (ended alone): p50/p95 "
        f"{percentile(lone, 50):.0f}/{percentile(lone, 95):.0f} ms ({len(lone)} actions)"
    )


def _stage_notes(run: SystemRun) -> list[str]:
    def p50(values: Iterable[float | None]) -> float:
        return percentile(_ms_sorted(values), 50)

    spoken = run.spoken
    answered = [o for o in spoken if o.response is not None]
    return [
        f"system: {len(spoken)} utterances by {len({o.device for o in spoken})} devices talking "
        f"at once (manual mode, real time), {len(answered)} answered, in {run.wall_s:.0f} s; "
        f"then {len(run.typed)} typed sentences",
        "p50 from end of speech: edge utterance event "
        f"{p50(o.ms(o.edge_ns) for o in spoken):.0f} ms, voice_command event "
        f"{p50(o.ms(o.command_ns) for o in spoken):.0f} ms, action "
        f"{p50(o.ms(o.action_ns) for o in spoken):.0f} ms, response "
        f"{p50(o.ms(o.response_ns) for o in spoken):.0f} ms",
        _overlap_note(spoken),
        f"CPU while the devices talked: hub with its speech worker {run.hub_cpu_s:.1f} s, "
        f"edge {run.edge_cpu_s:.1f} s, over {run.wall_s:.0f} s",
        "latency figures: spoken utterances the hub acted on (any action); typed: the same "
        "sentences typed (listen detect) through the same devices after them",
    ]


def run_speech(seconds: float, *, quick: bool = False) -> Report:
    """The three phases (module docstring); ``seconds`` is unused (counts, not time)."""
    del seconds
    from xiaozhi_runtime.logs import configure_logging

    configure_logging(level="warning")
    report = Report(case="speech")
    report.notes.append(f"load average at start: {procs.load_average()}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xiaozhi-bench-") as tmp:
        measured = uvloop.run(_run(quick, Path(tmp)))
    sentences, utterances, alone = measured.sentences, measured.utterances, measured.alone
    edge_us, run = measured.edge_us, measured.run
    voices = [v[0] for v in (VOICES[:1] if quick else VOICES)]
    judged = _judge(run, [c for c, _ in CONDITIONS], voices)
    report.figures += _accuracy_figures(judged)
    report.figures += _latency_figures(run, alone)
    report.figures += _cost_figures(alone, edge_us)
    in_domain = sum(s.in_domain for s in sentences)
    report.notes += [
        f"{in_domain} in-domain sentences from the demo home, {len(sentences) - in_domain} "
        f"out-of-domain; voices {', '.join(voices)}; conditions "
        f"{', '.join(c for c, _ in CONDITIONS)}; Opus 16 kHz, 60 ms frames",
        *judged.notes,
        *_alone_notes(alone, utterances),
        *_stage_notes(run),
        f"edge per frame over {min(EDGE_FRAMES, sum(len(u.packets) for u in utterances)):,} "
        f"frames, best of 3: auto {edge_us['auto']:.0f} us, manual {edge_us['manual']:.0f} us, "
        f"bare opuslib {edge_us['bare']:.0f} us",
        *(f"miss: {line}" for line in _misses(run)),
        f"wall time {time.perf_counter() - started:.0f} s: "
        + ", ".join(f"{name} {took:.0f} s" for name, took in measured.phases.items()),
        f"load average at end: {procs.load_average()}",
    ]
    return report


@dataclass(slots=True)
class Measured:
    """Everything one run measured, and how long each phase took (seconds)."""

    sentences: list[Sentence]
    utterances: list[Utterance]
    alone: Alone
    edge_us: dict[str, float]
    run: SystemRun
    phases: dict[str, float]


async def _run(quick: bool, workdir: Path) -> Measured:
    from xiaozhi_hub.home import DEMO_HOME_PATH, load_home
    from xiaozhi_hub.pipeline import VoicePipeline
    from xiaozhi_hub.registry import Registry
    from xiaozhi_speech import OfflineRecognizer

    phases: dict[str, float] = {}
    started = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal started
        phases[name] = time.perf_counter() - started
        started = time.perf_counter()

    home = load_home(DEMO_HOME_PATH)
    sentences = home_sentences(home, random.Random(SEED))
    sentences += [Sentence(text) for text in OUT_OF_DOMAIN]
    if quick:
        sentences = [sentences[0], sentences[1], sentences[-2], sentences[-1]]
    utterances = await _record(sentences, VOICES[:1] if quick else VOICES)
    random.Random(SEED).shuffle(utterances)  # conditions and voices mixed over the run
    lap("synthesis, noise and Opus")
    # Built as the hub builds it, into the cache the system's hub then reads (its default
    # under its state dir, or the one XIAOZHI_SPEECH_CACHE_DIR names): one build per run.
    cache = Path(os.environ.get("XIAOZHI_SPEECH_CACHE_DIR") or workdir / "hub-state/speech-cache")
    recognizer = OfflineRecognizer(workers=1, cache_dir=cache)
    pipeline = VoicePipeline(Registry(home), language="en")  # the hub's sentences, as built
    await pipeline.start()
    try:
        await pipeline.load_recognizer(recognizer)
    finally:
        pipeline.close()
    concurrent = QUICK_CONCURRENT if quick else CONCURRENT
    alone = await _recogniser_alone(utterances, recognizer, concurrent)
    lap("recogniser alone (corpus, model, ours, bare)")
    frames = [p for u in utterances for p in u.packets][:EDGE_FRAMES]
    edge_us = _edge_frame_us(frames)
    lap("edge per frame")
    procs.raise_nofile()
    run = await _system(utterances, sentences, DEMO_HOME_PATH, workdir)
    lap("system (start, spoken, typed, stop)")
    return Measured(sentences, utterances, alone, edge_us, run, phases)
