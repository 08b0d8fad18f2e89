"""Text → plan: recognise (hassil) → resolve (the home model) → plan (actions and an answer).

One :class:`VoicePipeline` per hub serves every caller that turns words into a plan: the
voice unit (spoken and typed commands), the REST voice test (``POST /api/v1/voice/test``)
and the bridge request ``intent/test``. Nothing here executes anything.

Recognition is CPU work (about 1 ms for a typical command, 20-50 ms for one that names
something the home lacks: docs/benchmarks.md) that must never block the event loop, and
hassil parses its templates lazily, so two threads recognising at once could race. Both are
answered by one dedicated single-worker :class:`~concurrent.futures.ThreadPoolExecutor`
owned by the pipeline: every uncached recognition, and the engine's loading and warm-up, run
on that one thread, one after the other, so no lock is needed (none is ever held across a
thread hop) and the loop only awaits a future. The engine's cache of recent results is the
loop's alone: a repeated phrase is answered on the loop without a thread hop, and only the
loop reads or fills the cache. Resolving and planning are pure and quick: they run on the
loop.

**Languages.** A command is understood and answered in its device's language: the device's
``language`` in the home file, else the home's (``XIAOZHI_LANGUAGE``, the pipeline's
``language``). One engine per language, each loaded on the pipeline's thread: the home's and
every device's language of the home file at :meth:`VoicePipeline.start`, any other when first
asked for (:meth:`VoicePipeline.plan_text`'s ``language``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import structlog

from xiaozhi.errors import OperationFailed
from xiaozhi_hub.actions import Plan, plan
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.languages import intent_language
from xiaozhi_hub.registry import Registry
from xiaozhi_hub.resolve import SUPPORTED_INTENTS, resolve
from xiaozhi_speech import (
    ModelFiles,
    OfflineRecognizer,
    background_from_intents,
    corpus_from_intents,
)

__all__ = ["IntentsNotLoaded", "VoicePipeline"]

log = structlog.get_logger("xiaozhi.hub")

_T = TypeVar("_T")

SPEECH_CORPUS_LIMIT = 150_000
"""Sentences an offline recogniser is built from at most (:meth:`VoicePipeline.sentences`)."""


class IntentsNotLoaded(OperationFailed):
    """A plan was asked for before :meth:`VoicePipeline.start` loaded the intents, or after
    :meth:`VoicePipeline.close`; check :attr:`VoicePipeline.ready` first."""


class VoicePipeline:
    """Recognise, resolve and plan text for one home, one recognition at a time.

    Args:
        registry: the home model and what is known of devices (areas, telemetry).
        language: the home's language (a device's own in the home file wins for its
            commands); normalised (``zh-cn`` → ``zh-CN``).
        engine: an already loaded (and warmed) engine of the home's language; tests share
            one (its language is then the home's). None: :meth:`start` loads and warms one
            on the pipeline's thread.
        states: current entity states (entity id → attributes), read at each plan so
            questions ("what is the temperature") see the latest values.
        observe_latency: called with each recognition's seconds (the intent latency
            histogram); None: not measured.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        language: str = "en",
        engine: IntentEngine | None = None,
        states: Mapping[str, Mapping[str, Any]] | None = None,
        observe_latency: Callable[[float], None] | None = None,
    ) -> None:
        self.registry = registry
        self.language = engine.language if engine is not None else intent_language(language)
        self.engine = engine
        self._engines: dict[str, IntentEngine] = {} if engine is None else {engine.language: engine}
        self.states: Mapping[str, Mapping[str, Any]] = states if states is not None else {}
        self._observe_latency = observe_latency
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xiaozhi-intents")
        self._closed = False

    @property
    def ready(self) -> bool:
        """True once the intents are loaded and until :meth:`close`."""
        return self.engine is not None and not self._closed

    async def start(self) -> None:
        """Load and warm the home's intent engine on the pipeline's thread (unless one was
        given), and one for each other language a device of the home file speaks."""
        if self.engine is None:
            self.engine = await self._engine_for(self.language)
        for device in self.registry.home.devices:
            if device.language is not None:
                await self._engine_for(device.language)

    @property
    def languages(self) -> list[str]:
        """The languages loaded, the home's first."""
        return sorted(self._engines, key=lambda code: (code != self.language, code))

    def language_of(self, device_id: str | None) -> str:
        """The language ``device_id``'s commands are understood and answered in: its own in
        the home file, else the home's."""
        device = self.registry.home.device(device_id) if device_id else None
        if device is not None and device.language is not None:
            return device.language
        return self.language

    async def _engine_for(self, language: str) -> IntentEngine:
        engine = self._engines.get(language)
        if engine is None:
            engine = await self._run(partial(self._load_engine, language))
            self._engines[language] = engine
        return engine

    def _load_engine(self, language: str) -> IntentEngine:
        engine = IntentEngine(self.registry.home, language)
        seconds = engine.warm_up()
        log.info("intents_loaded", language=engine.language, warm_up_ms=round(seconds * 1000))
        return engine

    def close(self) -> None:
        """Refuse new plans and let the thread end after a recognition in flight, if any."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def plan_text(
        self,
        text: str,
        device_id: str | None = None,
        area: str | None = None,
        *,
        language: str | None = None,
    ) -> Plan:
        """What ``text`` heard by ``device_id`` means and what to answer; nothing is executed.

        Args:
            text: the words (spoken and transcribed, or typed).
            device_id: the speaking device: its area is the default target area, its
                language (:meth:`language_of`) the one ``text`` is understood and answered
                in, and its telemetry answers "what is your status". None: no device.
            area: overrides the device's area (the REST test and a seed-style event's own
                area); None: the registry's area of ``device_id``.
            language: overrides the device's language (any of home-assistant-intents',
                normalised); its engine is loaded on first use.

        Raises:
            IntentsNotLoaded: before :meth:`start` finished, or after :meth:`close`.
            ValueError: ``language`` is not one home-assistant-intents has.
        """
        if self.engine is None or self._closed:
            raise IntentsNotLoaded("the intent engine is not loaded")
        wanted = intent_language(language) if language else self.language_of(device_id)
        engine = await self._engine_for(wanted)
        registry = self.registry
        device_area = area if area is not None else registry.area_of(device_id)
        started = time.perf_counter()
        match = engine.cached(text, device_area=device_area)  # on the loop: no thread hop
        if match is None:
            match = await self._run(
                partial(engine.recognize_uncached, text, device_area=device_area)
            )
            engine.remember(text, match, device_area=device_area)
        if self._observe_latency is not None:
            self._observe_latency(time.perf_counter() - started)
        resolution = resolve(
            match,
            registry.home,
            speaking_device=device_id,
            device_areas=registry.device_areas(),
            area=device_area,
        )
        record = registry.device(device_id) if device_id else None
        return plan(match, resolution, record, states=self.states, devices=registry.device)

    async def sentences(self, limit: int = SPEECH_CORPUS_LIMIT) -> list[str]:
        """The sentences of the intents the hub acts on (:data:`SUPPORTED_INTENTS`) for this
        home (up to ``limit``): what a recogniser may accept. Built on the pipeline's thread
        (seconds of hassil sampling, and hassil is not to be used from two threads at once).

        Only the acted-on intents: a recogniser that also knew timers and the weather heard
        fewer of the home's commands right (77 % against 88 % clean, docs/speech.md), and
        those sentences would be refused by the hub anyway. 150,000 rather than 50,000:
        sampled sentences must hold every four-word sequence a command can have, or a
        command heard exactly right is refused ("make it cooler").

        Raises:
            IntentsNotLoaded: before :meth:`start` finished, or after :meth:`close`.
        """
        engine = self._loaded_engine()
        return await self._run(
            partial(
                corpus_from_intents,
                engine.intents,
                engine.slot_lists,
                language=engine.language,
                limit=limit,
                intent_names=SUPPORTED_INTENTS,
            )
        )

    async def background(self) -> list[str]:
        """What a recogniser may hear but never accept (:func:`background_from_intents`):
        the acted-on intents with rooms and things this home lacks, and every other intent.

        Raises:
            IntentsNotLoaded: before :meth:`start` finished, or after :meth:`close`.
        """
        engine = self._loaded_engine()
        return await self._run(
            partial(
                background_from_intents,
                engine.intents,
                engine.slot_lists,
                intent_names=SUPPORTED_INTENTS,
                language=engine.language,
            )
        )

    async def load_recognizer(self, recognizer: OfflineRecognizer) -> ModelFiles:
        """Give ``recognizer`` this home's :meth:`sentences` and :meth:`background`, from its
        cache when the same intents and home were built before (a restart, a second hub),
        sampled and built otherwise.

        Raises:
            IntentsNotLoaded: before :meth:`start` finished, or after :meth:`close`.
        """
        engine = self._loaded_engine()
        key = f"{engine.fingerprint} {SPEECH_CORPUS_LIMIT} {sorted(SUPPORTED_INTENTS)}"

        async def inputs() -> tuple[list[str], list[str]]:
            return await self.sentences(), await self.background()

        return await recognizer.load_cached(key, inputs)

    def _loaded_engine(self) -> IntentEngine:
        engine = self.engine
        if engine is None or self._closed:
            raise IntentsNotLoaded("the intent engine is not loaded")
        return engine

    async def _run(self, work: Callable[[], _T]) -> _T:
        """``work()`` on the pipeline's one thread; the loop only awaits its future."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        except RuntimeError as err:
            if self._closed:  # the executor refuses new work once shut down
                raise IntentsNotLoaded("the voice pipeline is closed") from err
            raise
