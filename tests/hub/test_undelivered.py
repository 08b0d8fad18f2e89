"""Issue 13, point 7: a command for a device that is not there is answered, never lost in
silence. Whoever publishes on ``xiaozhi/commands/<id>`` (an integrator here) gets a
``command_result`` naming its ``message_id``: the device's own, or the hub's error."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from tests.hub.test_hub_mqtt import snapshot_shows, status
from tests.support import Recorder
from xiaozhi.payloads import CommandPayload
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.service import HubService
from xiaozhi_hub.settings import HubSettings

pytestmark = pytest.mark.integration  # a real Mosquitto

_WAIT = 1.0  # XIAOZHI_COMMAND_ANSWER_TIMEOUT_SECONDS here: how long the hub waits for the device


@pytest.fixture
async def quick_hub(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> AsyncIterator[HubService]:
    settings = hub_settings.model_copy(update={"command_answer_timeout_seconds": _WAIT})
    service = HubService(settings, home=engine.home, engine=engine)
    await service.start()
    yield service
    await service.stop()


async def _command(watcher: Recorder, hub: HubService, device_id: str) -> str:
    message_id = uuid.uuid4().hex
    payload = CommandPayload(command="alert", parameters={"message": "hi"}, message_id=message_id)
    await watcher.publish(hub.topics.command(device_id), payload.to_wire())
    return message_id


def _hub_waits(hub: HubService, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once the hub waits for a command's answer: nothing is published then, so the test
    sees it here (a device answers after delivery, never before the hub listens)."""
    waiting, expect = asyncio.Event(), hub.command_results.expect

    def expect_and_say(message_id: str) -> asyncio.Future[object]:
        future = expect(message_id)
        waiting.set()
        return future  # type: ignore[return-value]

    monkeypatch.setattr(hub.command_results, "expect", expect_and_say)
    return waiting


def _result(watcher: Recorder, hub: HubService, device_id: str, message_id: str) -> object:
    return next(
        (
            e
            for e in watcher.json(hub.topics.device_events(device_id))
            if e.get("event_type") == "command_result" and e.get("message_id") == message_id
        ),
        None,
    )


async def test_a_command_for_a_disconnected_device_is_answered_with_an_error(
    quick_hub: HubService, watcher: Recorder
) -> None:
    hub, t = quick_hub, quick_hub.topics
    device = uuid.uuid4().hex[:12]
    gone = {**status(device), "status": "disconnected"}
    await watcher.publish(t.status(device), gone, retain=True)
    await snapshot_shows(watcher, hub, lambda d: d.get(device, {}).get("status") == "disconnected")

    message_id = await _command(watcher, hub, device)
    result = await watcher.wait_for(lambda: _result(watcher, hub, device, message_id), 10)
    assert isinstance(result, dict)
    assert (result["status"], result["reason"], result["command"]) == (
        "error",
        "device_offline",
        "alert",
    )
    assert "not delivered" in result["error"]
    metrics = hub.metrics.exposition().decode()
    assert 'xiaozhi_hub_undelivered_commands_total{reason="offline"} 1.0' in metrics
    await watcher.publish(t.status(device), b"", retain=True)


async def test_a_device_that_answers_within_the_wait_gets_no_error_from_the_hub(
    quick_hub: HubService, watcher: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The edge of a device that was away a moment (a broker restart) may still deliver the
    command from its session: the device's answer stands, the hub adds nothing."""
    hub, t = quick_hub, quick_hub.topics
    waiting = _hub_waits(hub, monkeypatch)
    device = uuid.uuid4().hex[:12]  # never heard of
    answered = await _command(watcher, hub, device)
    await asyncio.wait_for(waiting.wait(), 10)
    ok = {"event_type": "command_result", "device_id": device, "command": "alert",
          "status": "ok", "message_id": answered, "result": "delivered"}  # fmt: skip
    await watcher.publish(t.device_events(device), ok)
    unanswered = await _command(watcher, hub, device)
    error = await watcher.wait_for(lambda: _result(watcher, hub, device, unanswered), 10)
    assert isinstance(error, dict)
    assert (error["status"], error["reason"]) == ("error", "device_unknown")
    # The hub answers in order: had it answered the first, that came before this one.
    results = [
        e["status"]
        for e in watcher.json(t.device_events(device))
        if e.get("message_id") == answered
    ]
    assert results == ["ok"]


async def test_a_command_for_a_connected_device_is_left_to_its_edge(
    quick_hub: HubService, watcher: Recorder
) -> None:
    hub, t = quick_hub, quick_hub.topics
    here, gone = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    await watcher.publish(t.status(here), status(here), retain=True)
    await watcher.publish(t.status(gone), {**status(gone), "status": "disconnected"}, retain=True)
    await snapshot_shows(watcher, hub, lambda d: here in d and gone in d)
    silent = await _command(watcher, hub, here)  # nobody answers for this one: its edge would
    marker = await _command(watcher, hub, gone)
    await watcher.wait_for(lambda: _result(watcher, hub, gone, marker), 10)
    assert _result(watcher, hub, here, silent) is None
    for device in (here, gone):
        await watcher.publish(t.status(device), b"", retain=True)


async def test_a_hub_that_stops_answers_for_absent_devices_at_once(
    hub_settings: HubSettings,
    engine: IntentEngine,
    watcher: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What this replica took from the shared group nobody else will answer: a stop cuts
    the wait short and answers, instead of holding the stop for the whole wait (or, killed
    then, leaving the command unanswered)."""
    settings = hub_settings.model_copy(update={"command_answer_timeout_seconds": 60})
    hub = HubService(settings, home=engine.home, engine=engine)
    await hub.start()
    waiting = _hub_waits(hub, monkeypatch)
    t, device = hub.topics, uuid.uuid4().hex[:12]
    await watcher.publish(t.status(device), {**status(device), "status": "disconnected"})
    await snapshot_shows(watcher, hub, lambda d: d.get(device, {}).get("status") == "disconnected")
    message_id = await _command(watcher, hub, device)
    await asyncio.wait_for(waiting.wait(), 10)  # the hub waits for the device's answer
    await asyncio.wait_for(hub.stop(), 10)  # far less than the 60 s wait
    error = await watcher.wait_for(lambda: _result(watcher, hub, device, message_id), 10)
    assert isinstance(error, dict)
    assert (error["status"], error["reason"]) == ("error", "device_offline")
