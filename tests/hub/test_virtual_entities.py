"""The hub's own entities (virtual bindings) as Home Assistant and Node-RED users see them:
their state on ``xiaozhi/entities/{entity_id}``, commands on its ``/set``, and discovery."""

from __future__ import annotations

import pytest

from tests.hub.test_hub_voice import say
from tests.support import Recorder
from xiaozhi.topics import TopicTree
from xiaozhi_hub.discovery import ENTITIES_NODE, entity_configs
from xiaozhi_hub.home import Home
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.service import HubService
from xiaozhi_hub.settings import HubSettings
from xiaozhi_hub.virtual_entities import CommandError, action_for_command

T = TopicTree()


@pytest.mark.parametrize(
    ("payload", "action", "parameters"),
    [
        (b'{"state": "on"}', "turn_on", {}),
        (b'{"state": "on", "brightness": 255}', "turn_on", {"brightness_pct": 100}),
        (b'{"state": "ON", "brightness": 128}', "turn_on", {"brightness_pct": 50}),
        (b'{"state": "off", "brightness": 3}', "turn_off", {}),
        (b"OFF", "turn_off", {}),
        (b" lock ", "lock", {}),
        (b'{"state": "unlocked"}', "unlock", {}),
        (b"OPEN", "open_cover", {}),
        (b'{"state": "closed"}', "close_cover", {}),
        (b'{"temperature": 22.5}', "set_temperature", {"temperature": 22.5}),
    ],
)
def test_commands_in_our_words_and_home_assistants(
    payload: bytes, action: str, parameters: dict[str, object]
) -> None:
    made = action_for_command("light.x", payload)
    assert (made.action, made.entity_id, made.parameters) == (action, "light.x", parameters)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"", "unknown state ''"),
        (b"toggle", "unknown state 'toggle'"),
        (b'{"state": 1}', "unknown state 1"),
        (b'{"state": "on", "brightness": 300}', "brightness must be 0-255"),
        (b'{"state": "on", "brightness": "max"}', "brightness must be 0-255"),
        (b'{"temperature": "warm"}', "temperature must be a number"),
        (b'{"temperature": true}', "temperature must be a number"),
        (b"{not json", "invalid JSON"),
    ],
)
def test_commands_we_cannot_run_say_why(payload: bytes, error: str) -> None:
    with pytest.raises(CommandError, match=error):
        action_for_command("light.x", payload)


def test_only_the_hubs_own_entities_are_discovered(home: Home) -> None:
    by_id = {e.entity_id: e for e in home.entities}
    (topic, light), *_ = entity_configs(
        by_id["light.living_room"], {"state": "off"}, topics=T, area_name="Living Room"
    )
    assert topic == f"homeassistant/light/{ENTITIES_NODE}/light_living_room/config"
    assert light["schema"] == "template"
    assert light["state_topic"] == "xiaozhi/entities/light.living_room"
    assert light["command_topic"] == "xiaozhi/entities/light.living_room/set"
    assert light["device"]["suggested_area"] == "Living Room"
    assert light["unique_id"] == "xiaozhi_entity_light_living_room"
    (_, lock), *_ = entity_configs(by_id["lock.front_door"], {}, topics=T)
    assert (lock["state_locked"], lock["payload_lock"]) == ("locked", '{"state": "locked"}')
    (_, climate), *_ = entity_configs(by_id["climate.office"], {"state": "heat"}, topics=T)
    assert climate["modes"] == ["heat"]
    assert "state_topic" not in climate  # climate has one state topic per attribute


@pytest.mark.integration
async def test_voice_mqtt_and_home_assistant_agree_on_a_virtual_light(
    hub: HubService, watcher: Recorder
) -> None:
    t = hub.topics
    state = t.entity_state("light.living_room")
    # At start: the state is there (retained) and Home Assistant is told about the light, but
    # not about the zigbee2mqtt bulb or the office device's LED (their owners show them).
    await watcher.expect(state, lambda s: s == {"state": "off"})
    prefix = hub.settings.discovery_prefix
    config = f"{prefix}/light/{ENTITIES_NODE}/light_living_room/config"
    await watcher.expect(config, lambda c: c["command_topic"] == t.entity_set("light.living_room"))
    assert not [
        m.topic
        for m in watcher.messages
        if m.topic.startswith(f"{prefix}/")
        and ("light_kitchen" in m.topic or "light_office" in m.topic)
    ]

    start = watcher.mark()
    await say(watcher, hub, "turn on the living room light", "demo_kitchen")
    await watcher.expect(state, lambda s: s["state"] == "on", after=start)

    start = watcher.mark()
    await watcher.publish(t.entity_set("light.living_room"), {"state": "on", "brightness": 51})
    await watcher.expect(state, lambda s: s == {"state": "on", "brightness": 51}, after=start)
    await watcher.publish(t.entity_set("light.living_room"), b"OFF")
    await watcher.expect(state, lambda s: s["state"] == "off", after=start)
    await watcher.publish(t.entity_set("lock.front_door"), b"UNLOCK")
    await watcher.expect(
        t.entity_state("lock.front_door"), lambda s: s == {"state": "unlocked"}, after=start
    )

    # Not ours, or not a command: refused and counted, nothing changes.
    await watcher.publish(t.entity_set("light.kitchen"), b"ON")
    await watcher.publish(t.entity_set("light.living_room"), b"dance")
    await watcher.wait_for(
        lambda: (
            'xiaozhi_hub_invalid_messages_total{kind="entity_command"} 2.0'
            in hub.metrics.exposition().decode()
        )
    )
    assert not watcher.json("zigbee2mqtt/kitchen_light/set", after=start)


def test_a_sandboxed_demo_home_binds_nothing_real(home: Home) -> None:
    sandboxed = home.sandboxed()
    assert {e.binding.type for e in sandboxed.entities} == {"virtual"}
    by_id = {e.entity_id: e for e in sandboxed.entities}
    assert by_id["light.kitchen"].binding.state == {"state": "off"}  # type: ignore[union-attr]
    assert by_id["lock.front_door"].binding.state == {"state": "locked"}  # type: ignore[union-attr]
    assert [e.entity_id for e in sandboxed.entities] == [e.entity_id for e in home.entities]


@pytest.mark.integration
async def test_the_demo_on_a_real_installations_broker_touches_no_real_bulb(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> None:  # the session's engine: the same names and areas as the sandboxed home
    """`xiaozhi up` on XIAOZHI_MQTT_URL runs the demo home sandboxed: "turn off the kitchen
    lights" switches the hub's own copy, never zigbee2mqtt/kitchen_light/set."""
    settings = hub_settings.model_copy(update={"demo_bindings": False, "config": None})
    hub = HubService(settings, engine=engine)  # the home: loaded and sandboxed by the hub
    # Marked before the start: an unchanged state is not published again, and the hub's own
    # "off" at its start may reach the watcher before or after the start returns.
    start = watcher.mark()
    await hub.start()
    try:
        state = hub.topics.entity_state("light.kitchen")
        await say(watcher, hub, "turn off the kitchen lights", "demo_kitchen")
        await watcher.expect(state, lambda s: s == {"state": "off"}, after=start)
        await say(watcher, hub, "turn on the kitchen lights", "demo_kitchen")
        await watcher.expect(state, lambda s: s == {"state": "on"}, after=start)
        assert hub.home.entity("light.kitchen").binding.type == "virtual"  # type: ignore[union-attr]
        assert not watcher.json("zigbee2mqtt/kitchen_light/set", after=start)
    finally:
        await hub.stop()
