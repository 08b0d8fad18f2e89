"""Voice commands through a real Mosquitto: intent → action on the right topic → response.

Each demo phrase is published as a ``VoiceCommandEvent`` on ``xiaozhi/events/voice_command``,
as an edge does; the hub must act through the entity's binding (virtual state, a zigbee2mqtt
``…/set``, a device command, a Home Assistant REST call) and answer the speaking device with
a ``respond`` command on its own command topic.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.hub.fake_home_assistant import FakeHomeAssistant
from tests.support import Recorder
from xiaozhi.commands import CommandResult
from xiaozhi.payloads import DeviceStatus, EventPayload, StatusPayload, VoiceCommandEvent
from xiaozhi_hub.home import DEMO_HOME_PATH
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.service import HubService
from xiaozhi_hub.settings import HubSettings

pytestmark = pytest.mark.integration  # a real Mosquitto

_ids = itertools.count()


async def say(watcher: Recorder, hub: HubService, text: str, device_id: str, **extra: Any) -> str:
    """Publish what a device heard, as the edge does; returns the message id."""
    message_id = extra.pop("message_id", f"vc-{next(_ids)}")
    event = VoiceCommandEvent(
        device_id=device_id,
        command=text,
        confidence=0.93,
        language="en",
        message_id=message_id,
        transport="websocket",
        **extra,
    )
    await watcher.publish(hub.topics.voice_command_events(), event.to_wire())
    return message_id


async def respond_to(
    watcher: Recorder, hub: HubService, device_id: str, message_id: str
) -> dict[str, Any]:
    command = await watcher.expect(
        hub.topics.command(device_id),
        lambda m: m["command"] == "respond" and m.get("message_id") == message_id,
    )
    assert command["device_id"] == device_id
    return command["parameters"]


async def answer_as_device(
    watcher: Recorder,
    hub: HubService,
    device_id: str,
    command: dict[str, Any],
    *,
    error: str | None = None,
) -> None:
    """Publish the ``command_result`` a device (through its edge) sends for ``command``."""
    result = CommandResult(
        device_id=device_id,
        command=command["command"],
        status="error" if error else "ok",
        message_id=command["message_id"],
        result=None if error else "done",
        error=error,
    )
    await watcher.publish(hub.topics.device_events(device_id), result.to_wire())


def events(watcher: Recorder, hub: HubService, device_id: str, message_id: str) -> list[dict]:
    return [
        e
        for e in watcher.json(hub.topics.device_events(device_id))
        if e.get("message_id") == message_id
    ]


async def test_a_virtual_light_changes_state_and_the_device_is_answered(
    hub: HubService, watcher: Recorder
) -> None:
    message_id = await say(watcher, hub, "turn on the living room light", "demo_living_room")
    answer = await respond_to(watcher, hub, "demo_living_room", message_id)
    assert answer == {
        "text": "Turning on the living room light.",
        "stt": "turn on the living room light",
        "actions": [
            {
                "type": "homeassistant",
                "action": "turn_on",
                "entity_id": "light.living_room",
                "parameters": {},
            }
        ],
    }
    assert hub.states["light.living_room"]["state"] == "on"
    response = await watcher.expect(
        hub.topics.device_events("demo_living_room"),
        lambda e: e["event_type"] == "response" and e["message_id"] == message_id,
    )
    assert response["intent"] == "HassTurnOn"
    assert response["executed"] is True
    kinds = [e["event_type"] for e in events(watcher, hub, "demo_living_room", message_id)]
    assert kinds == ["action", "action_result", "response"]
    [result] = [
        e
        for e in events(watcher, hub, "demo_living_room", message_id)
        if e["event_type"] == "action_result"
    ]
    assert result["status"] == "ok"
    assert result["executor"] == "virtual"
    assert result["result"] == {"state": {"state": "on"}}
    # The events are built as dicts: byte for byte what the event model writes.
    raw = [
        m.payload
        for m in watcher.messages
        if m.topic == hub.topics.device_events("demo_living_room")
        and message_id.encode() in m.payload
    ]
    assert len(raw) == 3
    assert [EventPayload.from_wire(payload).to_wire() for payload in raw] == raw


DEVICE_PHRASES = [
    # text, speaking device, topic ("cmd:<device>" or a literal), expected payload subset
    (
        "turn off the kitchen lights",
        "demo_living_room",
        "zigbee2mqtt/kitchen_light/set",
        {"state": "OFF"},
    ),
    (
        "set the kitchen brightness to 50%",
        "demo_living_room",
        "zigbee2mqtt/kitchen_light/set",
        {"state": "ON", "brightness": 127},
    ),
    (
        "set volume to 80",
        "demo_kitchen",
        "cmd:demo_kitchen",
        {"command": "set_volume", "parameters": {"volume": 80}, "device_id": "demo_kitchen"},
    ),
    (
        "turn on the office light",
        "demo_kitchen",
        "cmd:demo_office",
        {"command": "led", "parameters": {"on": True}, "device_id": "demo_office"},
    ),
]


@pytest.mark.parametrize("case", DEVICE_PHRASES, ids=[c[0] for c in DEVICE_PHRASES])
async def test_bound_entities_act_on_their_topic(
    hub: HubService, watcher: Recorder, case: tuple[str, str, str, dict[str, Any]]
) -> None:
    text, device, where, expected = case
    topic = hub.topics.command(where[4:]) if where.startswith("cmd:") else where
    start = watcher.mark()
    message_id = await say(watcher, hub, text, device)
    acted = await watcher.expect(
        topic,
        lambda m: all(m.get(k) == v for k, v in expected.items()),
        after=start,
    )
    if where.startswith("cmd:"):
        assert acted["message_id"] == f"{message_id}-1"  # names the voice command
        await answer_as_device(watcher, hub, where[4:], acted)
    answer = await respond_to(watcher, hub, device, message_id)
    assert answer["stt"] == text
    assert len(answer["actions"]) == 1


async def test_questions_and_the_other_demo_phrases(hub: HubService, watcher: Recorder) -> None:
    cases = [
        ("set the bedroom brightness to 50%", "Setting the bedroom light to 50% brightness."),
        ("what is the temperature in the office", "The office is 21 degrees."),
        ("lock the front door", "Locking the front door."),
        ("turn on the light", "Turning on the living room light."),
    ]
    ids = [(await say(watcher, hub, text, "demo_living_room"), reply) for text, reply in cases]
    for message_id, reply in ids:
        answer = await respond_to(watcher, hub, "demo_living_room", message_id)
        assert answer["text"] == reply
    assert hub.states["light.bedroom"] == {"state": "on", "brightness": 128}
    assert hub.states["lock.front_door"]["state"] == "locked"


async def test_an_unknown_name_is_answered_and_nothing_runs(
    hub: HubService, watcher: Recorder
) -> None:
    before = dict(hub.states)
    message_id = await say(watcher, hub, "turn on the garage light", "demo_kitchen")
    answer = await respond_to(watcher, hub, "demo_kitchen", message_id)
    assert answer == {
        "text": "I don't know a device called garage light.",
        "stt": "turn on the garage light",
        "actions": [],
    }
    response = await watcher.expect(
        hub.topics.device_events("demo_kitchen"),
        lambda e: e["event_type"] == "response" and e["message_id"] == message_id,
    )
    assert (response["executed"], response["error"]) == (False, "unknown_name")
    kinds = [e["event_type"] for e in events(watcher, hub, "demo_kitchen", message_id)]
    assert kinds == ["response"]  # no action events
    assert hub.states == before


async def test_bad_voice_events_are_refused_and_counted(hub: HubService, watcher: Recorder) -> None:
    topic = hub.topics.voice_command_events()
    await watcher.publish(topic, b"not json")
    await watcher.publish(topic, {"event_type": "voice_command", "device_id": "Bad/Id"})
    message_id = await say(watcher, hub, "lock the front door", "demo_office")
    await respond_to(watcher, hub, "demo_office", message_id)
    text = hub.metrics.exposition().decode()
    assert 'xiaozhi_hub_voice_commands_total{outcome="invalid"} 2.0' in text
    assert 'xiaozhi_hub_voice_commands_total{outcome="executed"} 1.0' in text


async def test_a_redelivered_voice_command_is_handled_once(
    hub: HubService, watcher: Recorder
) -> None:
    first = await say(watcher, hub, "lock the front door", "demo_office", message_id="same-id")
    await say(watcher, hub, "lock the front door", "demo_office", message_id="same-id")
    marker = await say(watcher, hub, "turn on the light", "demo_office")
    await respond_to(watcher, hub, "demo_office", marker)
    responds = [
        m
        for m in watcher.json(hub.topics.command("demo_office"))
        if m["command"] == "respond" and m["message_id"] == first
    ]
    assert len(responds) == 1


@pytest.fixture
async def fake_ha() -> AsyncIterator[FakeHomeAssistant]:
    async with FakeHomeAssistant(token="ha-long-lived").running() as fake:
        yield fake


@pytest.fixture
def coffee_home(tmp_path: Path, fake_ha: FakeHomeAssistant) -> Path:
    """The demo home plus a switch bound to the fake Home Assistant."""
    data = yaml.safe_load(DEMO_HOME_PATH.read_text(encoding="utf-8"))
    data["entities"].append(
        {
            "entity_id": "switch.coffee_maker",
            "name": "coffee maker",
            "area": "kitchen",
            "binding": {
                "type": "homeassistant",
                "base_url": fake_ha.url,
                "token_env": "TEST_HA_TOKEN",
            },
        }
    )
    path = tmp_path / "home.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


async def test_home_assistant_binding_calls_the_rest_api_with_the_token(
    hub_settings: HubSettings, watcher: Recorder, coffee_home: Path, fake_ha: FakeHomeAssistant
) -> None:
    """Also the real start path: XIAOZHI_CONFIG read, intents loaded and warmed in a thread."""
    settings = hub_settings.model_copy(update={"config": coffee_home})
    environ = {"TEST_HA_TOKEN": "ha-long-lived"}
    service = HubService(settings, environ=environ)
    await service.start()
    try:
        message_id = await say(watcher, service, "turn on the coffee maker", "demo_kitchen")
        answer = await respond_to(watcher, service, "demo_kitchen", message_id)
        [call] = await fake_ha.wait_for_calls(1)
        assert (call.domain, call.service, call.authorized) == ("switch", "turn_on", True)
        assert call.body == {"entity_id": "switch.coffee_maker"}
        assert answer["text"] == "Turning on the coffee maker."

        environ["TEST_HA_TOKEN"] = "wrong"  # Home Assistant refuses it: reported
        message_id = await say(watcher, service, "turn off the coffee maker", "demo_kitchen")
        answer = await respond_to(watcher, service, "demo_kitchen", message_id)
        assert answer["text"] == "Sorry, that didn't work for the coffee maker."
        result = await watcher.expect(
            service.topics.device_events("demo_kitchen"),
            lambda e: e["event_type"] == "action_result" and e["message_id"] == message_id,
        )
        assert result["status"] == "error"
        assert result["error"] == "Home Assistant answered HTTP 401"
    finally:
        await service.stop()


# -- answers follow what the device did --------------------------------------------------


async def _office_light_command(
    watcher: Recorder, hub: HubService, text: str = "turn on the office light"
) -> tuple[str, dict[str, Any]]:
    start = watcher.mark()
    message_id = await say(watcher, hub, text, "demo_kitchen")
    command = await watcher.expect(
        hub.topics.command("demo_office"), lambda m: m["command"] == "led", after=start
    )
    return message_id, command


async def test_the_answer_waits_for_the_device_to_confirm(
    hub: HubService, watcher: Recorder
) -> None:
    message_id, command = await _office_light_command(watcher, hub)
    # nothing is said before the device answers
    assert not [
        m
        for m in watcher.json(hub.topics.command("demo_kitchen"))
        if m.get("message_id") == message_id
    ]
    await answer_as_device(watcher, hub, "demo_office", command)
    answer = await respond_to(watcher, hub, "demo_kitchen", message_id)
    assert answer["text"] == "Turning on the office light."
    result = await watcher.expect(
        hub.topics.device_events("demo_kitchen"),
        lambda e: e["event_type"] == "action_result" and e["message_id"] == message_id,
    )
    assert result["result"]["device_result"] == "done"


async def test_a_device_that_refuses_is_reported_as_such(
    hub: HubService, watcher: Recorder
) -> None:
    message_id, command = await _office_light_command(watcher, hub)
    await answer_as_device(watcher, hub, "demo_office", command, error="device has no MCP tool")
    answer = await respond_to(watcher, hub, "demo_kitchen", message_id)
    assert answer["text"] == "Sorry, the office light couldn't do that."
    result = await watcher.expect(
        hub.topics.device_events("demo_kitchen"),
        lambda e: e["event_type"] == "action_result" and e["message_id"] == message_id,
    )
    assert (result["status"], result["failure"]) == ("error", "refused")
    assert "device has no MCP tool" in result["error"]


async def test_a_device_that_never_answers_is_said_not_to(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> None:
    settings = hub_settings.model_copy(update={"command_answer_timeout_seconds": 0.3})
    service = HubService(settings, home=engine.home, engine=engine)
    await service.start()
    try:
        message_id, _ = await _office_light_command(watcher, service)
        answer = await respond_to(watcher, service, "demo_kitchen", message_id)
        assert answer["text"] == "Sorry, the office light did not answer."
    finally:
        await service.stop()


async def test_a_command_waiting_for_a_silent_device_holds_no_place(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> None:
    """With one place for voice commands, a command that waits for a device's answer does
    not stop the next one: the wait runs outside ``max_concurrent_voice_commands`` (64
    places and a 5 s wait made 13 commands/s when devices were silent)."""
    settings = hub_settings.model_copy(
        update={"max_concurrent_voice_commands": 1, "command_answer_timeout_seconds": 30}
    )
    service = HubService(settings, home=engine.home, engine=engine)
    await service.start()
    try:
        waiting, command = await _office_light_command(watcher, service)
        other = await say(watcher, service, "turn on the kitchen light", "demo_bedroom")
        answer = await respond_to(watcher, service, "demo_bedroom", other)
        assert answer["text"] == "Turning on the kitchen light."
        assert not [m for m in watcher.json(service.topics.command("demo_kitchen"))
                    if m.get("message_id") == waiting], "the first still waits"  # fmt: skip
        await answer_as_device(watcher, service, "demo_office", command)
        first = await respond_to(watcher, service, "demo_kitchen", waiting)
        assert first["text"] == "Turning on the office light."
    finally:
        await service.stop()


async def test_a_device_known_offline_gets_no_command(hub: HubService, watcher: Recorder) -> None:
    status = StatusPayload(device_id="demo_office", status=DeviceStatus.DISCONNECTED)
    await watcher.publish(hub.topics.status("demo_office"), status.to_wire())
    record = hub.registry.device("demo_office")
    assert record is not None
    await watcher.wait_for(lambda: record.status is DeviceStatus.DISCONNECTED or None)
    start = watcher.mark()
    message_id = await say(watcher, hub, "turn on the office light", "demo_kitchen")
    answer = await respond_to(watcher, hub, "demo_kitchen", message_id)
    assert answer["text"] == "Sorry, the office light is offline."
    assert not [
        m
        for m in watcher.json(hub.topics.command("demo_office"), after=start)
        if m["command"] == "led"
    ]


async def test_bad_and_foreign_results_do_not_answer_a_command(
    hub: HubService, watcher: Recorder
) -> None:
    message_id, command = await _office_light_command(watcher, hub)
    topic = hub.topics.device_events("demo_office")
    await watcher.publish(topic, b'{"event_type":"command_result", not json')
    await answer_as_device(
        watcher, hub, "demo_office", {**command, "message_id": "other"}, error="x"
    )
    await watcher.publish(
        topic,
        {
            "event_type": "command_result",
            "device_id": "demo_kitchen",  # not the topic's device: ignored
            "command": "led",
            "status": "error",
            "error": "forged",
            "message_id": command["message_id"],
        },
    )
    await answer_as_device(watcher, hub, "demo_office", command)
    answer = await respond_to(watcher, hub, "demo_kitchen", message_id)
    assert answer["text"] == "Turning on the office light."
    text = hub.metrics.exposition().decode()
    assert 'xiaozhi_hub_invalid_messages_total{kind="command_result"} 2.0' in text


async def test_a_confirmed_volume_is_what_louder_starts_from(
    hub: HubService, watcher: Recorder
) -> None:
    status = StatusPayload(device_id="demo_kitchen", status=DeviceStatus.CONNECTED)
    await watcher.publish(hub.topics.status("demo_kitchen"), status.to_wire())
    record = hub.registry.device("demo_kitchen")
    assert record is not None
    await watcher.wait_for(lambda: record.status is DeviceStatus.CONNECTED or None)
    for text, volume in [("set the volume to 80", 80), ("turn up the volume", 90)]:
        start = watcher.mark()
        message_id = await say(watcher, hub, text, "demo_kitchen")
        command = await watcher.expect(
            hub.topics.command("demo_kitchen"),
            lambda m: m["command"] == "set_volume",
            after=start,
        )
        assert command["parameters"] == {"volume": volume}
        await answer_as_device(watcher, hub, "demo_kitchen", command)
        await respond_to(watcher, hub, "demo_kitchen", message_id)


async def test_commands_to_one_device_at_once_wait_for_one_subscription(
    hub: HubService, watcher: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device's events are subscribed to once, and every caller waits for the broker's
    SUBACK of that one (the owner remembers a filter before the broker confirms it: a second
    caller used to return at once)."""
    owner = hub.owner
    subscribed = owner.subscribe
    calls: list[list[str]] = []

    async def counted(filters: list[str], qos: int = 1) -> None:
        calls.append(list(filters))
        await subscribed(filters, qos)

    monkeypatch.setattr(owner, "subscribe", counted)
    watches = [hub.command_results.watch("demo_office") for _ in range(5)]
    await asyncio.gather(*watches)
    assert calls == [[hub.topics.device_events("demo_office")]]
    assert hub.topics.device_events("demo_office") in owner.subscriptions
