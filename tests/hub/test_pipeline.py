"""The one recognise → resolve → plan pipeline (xiaozhi_hub.pipeline): recognitions run on
its own single thread, never on the event loop, one at a time, and are measured."""

from __future__ import annotations

import asyncio
import threading

import pytest

from xiaozhi.payloads import DeviceStatus, StatusPayload
from xiaozhi_hub.home import Home
from xiaozhi_hub.intents import IntentEngine, IntentMatch, NoMatch
from xiaozhi_hub.pipeline import IntentsNotLoaded, VoicePipeline
from xiaozhi_hub.registry import Registry


class GatedEngine:
    """Wraps the real engine: each uncached recognition records its thread, then blocks
    until the test opens the gate, so the test sees what the event loop does meanwhile. Its
    cache starts empty (the shared engine's has seen other tests' phrases)."""

    def __init__(self, engine: IntentEngine) -> None:
        self.engine = engine
        self.home = engine.home
        self.language = engine.language
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)
        self.threads: list[int] = []
        self.running = 0
        self.most_at_once = 0
        self._count = threading.Lock()
        self._results: dict[tuple[str, str | None], IntentMatch | NoMatch] = {}
        self.cache_threads: set[int] = set()

    def cached(self, text: str, *, device_area: str | None = None) -> IntentMatch | NoMatch | None:
        self.cache_threads.add(threading.get_ident())
        return self._results.get((text, device_area))

    def remember(
        self, text: str, result: IntentMatch | NoMatch, *, device_area: str | None = None
    ) -> None:
        self.cache_threads.add(threading.get_ident())
        self._results[(text, device_area)] = result

    def recognize_uncached(
        self, text: str, *, device_area: str | None = None
    ) -> IntentMatch | NoMatch:
        with self._count:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.threads.append(threading.get_ident())
        self.entered.release()
        try:
            assert self.gate.wait(10), "the test never opened the gate"
            return self.engine.recognize_uncached(text, device_area=device_area)
        finally:
            with self._count:
                self.running -= 1


async def test_recognition_runs_off_the_loop_on_one_thread(
    registry: Registry, engine: IntentEngine
) -> None:
    gated = GatedEngine(engine)
    latencies: list[float] = []
    pipeline = VoicePipeline(registry, engine=gated, observe_latency=latencies.append)  # type: ignore[arg-type]
    first = asyncio.create_task(pipeline.plan_text("turn on the living room light"))
    second = asyncio.create_task(pipeline.plan_text("lock the front door"))
    # The loop is free while the first recognition blocks its thread: were recognition on
    # the loop, this await could not resume until the gate opened.
    await asyncio.to_thread(gated.entered.acquire)
    assert not first.done()
    assert not second.done()
    gated.gate.set()
    plans = await asyncio.gather(first, second)
    pipeline.close()
    assert [a.entity_id for p in plans for a in p.actions] == [
        "light.living_room",
        "lock.front_door",
    ]
    assert threading.get_ident() not in gated.threads
    assert len(set(gated.threads)) == 1  # one dedicated worker: hassil never runs twice at once
    assert gated.most_at_once == 1
    assert len(latencies) == 2


async def test_a_repeated_phrase_is_answered_on_the_loop(
    registry: Registry, engine: IntentEngine
) -> None:
    """The cache is the loop's: a phrase seen before never waits for the worker thread,
    however busy it is (here: blocked), and the cache is never touched from that thread."""
    gated = GatedEngine(engine)
    gated.gate.set()
    pipeline = VoicePipeline(registry, engine=gated)  # type: ignore[arg-type]
    first = await pipeline.plan_text("lock the front door")
    gated.gate.clear()  # the worker would now block: only the loop can answer
    again = await asyncio.wait_for(pipeline.plan_text("lock the front door"), 5)
    pipeline.close()
    assert again.actions == first.actions
    assert len(gated.threads) == 1
    assert gated.cache_threads == {threading.get_ident()}


async def test_start_loads_the_engine_on_the_pipeline_thread(home: Home) -> None:
    pipeline = VoicePipeline(Registry(home), language="en")
    assert not pipeline.ready
    with pytest.raises(IntentsNotLoaded):
        await pipeline.plan_text("turn on the living room light")
    await pipeline.start()
    assert pipeline.ready
    result = await pipeline.plan_text("turn on the light", area="kitchen")
    assert [a.entity_id for a in result.actions] == ["light.kitchen"]
    pipeline.close()
    assert not pipeline.ready
    with pytest.raises(IntentsNotLoaded):
        await pipeline.plan_text("turn on the light")


async def test_the_speaking_devices_area_and_the_states_are_used(
    registry: Registry, engine: IntentEngine
) -> None:
    states = {"climate.office": {"current_temperature": 19}}
    pipeline = VoicePipeline(registry, engine=engine, states=states)
    here = await pipeline.plan_text("turn on the light", device_id="demo_kitchen")
    assert [a.entity_id for a in here.actions] == ["light.kitchen"]
    asked = await pipeline.plan_text("what is the temperature", area="office")
    assert asked.response_text == "The office is 19 degrees."
    states["climate.office"]["current_temperature"] = 20  # read at each plan
    asked = await pipeline.plan_text("what is the temperature", area="office")
    assert asked.response_text == "The office is 20 degrees."
    pipeline.close()


async def test_relative_changes_read_the_latest_telemetry_and_states(
    registry: Registry, engine: IntentEngine
) -> None:
    """ "louder" steps from what the device last reported; "is the light on" and "dim the
    light" read the store as it is at each plan, not as it was at start."""
    states = {"light.living_room": {"state": "off"}}
    pipeline = VoicePipeline(registry, engine=engine, states=states)
    connected = DeviceStatus.CONNECTED
    registry.apply_status(StatusPayload(status=connected, device_id="demo_kitchen", volume=30), 1)
    louder = await pipeline.plan_text("louder", device_id="demo_kitchen")
    assert [a.parameters for a in louder.actions] == [{"volume_level": 0.4}]
    registry.apply_status(StatusPayload(status=connected, device_id="demo_kitchen", volume=80), 2)
    louder = await pipeline.plan_text("louder", device_id="demo_kitchen")
    assert louder.response_text == "Turning the volume up to 90%."
    registry.apply_status(StatusPayload(status=connected, device_id="demo_kitchen", volume=0), 3)
    unmute = await pipeline.plan_text("unmute", device_id="demo_kitchen")
    assert unmute.response_text == "Turning the sound back on at 80%."

    asked = await pipeline.plan_text("is the light on", device_id="demo_living_room")
    assert asked.response_text == "No, the living room light is off."
    states["light.living_room"] = {"state": "on", "brightness": 255}  # an action ran
    asked = await pipeline.plan_text("is the light on", device_id="demo_living_room")
    assert asked.response_text == "Yes, the living room light is on."
    dimmed = await pipeline.plan_text("dim the light", device_id="demo_living_room")
    assert dimmed.response_text == "Dimming the living room light to 80%."
    pipeline.close()


async def test_the_area_given_to_the_pipeline_places_device_class_names(
    registry: Registry, engine: IntentEngine
) -> None:
    """A typed test's area (REST, intent/test) is the room "the thermostat" is looked for in."""
    pipeline = VoicePipeline(registry, engine=engine)
    here = await pipeline.plan_text("what's the temperature", area="office")
    assert here.response_text == "The office is 21 degrees."
    elsewhere = await pipeline.plan_text("what's the temperature", area="kitchen")
    assert elsewhere.response_text == "The office thermostat is 21 degrees."
    refused = await pipeline.plan_text("don't lock the door", area="living_room")
    assert (refused.executed, refused.error, refused.actions) == (False, "negated", ())
    pipeline.close()
