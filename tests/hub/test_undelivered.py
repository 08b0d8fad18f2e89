"""Issue 13, point 7: a command for a device that is not there is answered, never lost in
silence. Whoever publishes on ``xiaozhi/commands/<id>`` (an integrator here) gets a
``command_result`` naming its ``message_id``: the device's own, or the hub's error."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.hub.conftest import WRITE_KEY
from tests.hub.test_hub_mqtt import snapshot_shows, status
from tests.support import Recorder
from xiaozhi.payloads import CommandPayload
from xiaozhi_hub.http import run_hub
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.service import HubService
from xiaozhi_hub.settings import HubSettings
from xiaozhi_sim.identity import make_identity
from xiaozhi_sim.mqtt_device import MqttDevice
from xiaozhi_sim.paho_loop import PahoAsyncio
from xiaozhi_sim.settings import SimSettings

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


async def test_a_reboot_answered_then_gone_is_not_reported_undelivered(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder, sim_settings: SimSettings
) -> None:
    """A reboot is answered, then the device disconnects at once: the hub, which subscribes
    to a device's events when it first follows one of its commands, used to miss that answer
    (it came before the SUBACK) and then publish "disconnected before it answered" as well.
    The REST API subscribes before it publishes the command, so the answer cannot be missed."""
    settings = hub_settings.model_copy(update={"command_answer_timeout_seconds": _WAIT})
    paho = PahoAsyncio()
    device = MqttDevice(
        make_identity(name=f"reboot-{uuid.uuid4().hex[:6]}"), sim_settings, paho=paho
    )
    did = device.device_id
    async with run_hub(settings, home=engine.home, engine=engine) as running:
        hub = running.service
        try:
            await device.start()
            await snapshot_shows(
                watcher, hub, lambda d: d.get(did, {}).get("status") == "connected"
            )
            async with httpx.AsyncClient(base_url=running.url) as http:
                answer = await http.post(
                    f"/api/v1/devices/{did}/command",
                    json={"command": "reboot"},
                    headers={"X-API-Key": WRITE_KEY},
                )
            message_id = answer.json()["data"]["message_id"]
            assert await device.wait_until(lambda: device.stats.connects == 2, 10)
            # A fence: the hub answers for a device it never heard of after the same wait,
            # in order, so an error for the reboot would have come first.
            absent = uuid.uuid4().hex[:12]
            marker = await _command(watcher, hub, absent)
            await watcher.wait_for(lambda: _result(watcher, hub, absent, marker), 10)
            results = [
                e["status"]
                for e in watcher.json(hub.topics.device_events(did))
                if e.get("message_id") == message_id
            ]
            assert results == ["ok"]
        finally:
            await device.stop()
            await paho.close()
