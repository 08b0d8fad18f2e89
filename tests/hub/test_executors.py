"""Action + binding → effect (xiaozhi_hub.executors): literal topics and payloads."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from xiaozhi.commands import parse_parameters
from xiaozhi.payloads import Action, CommandPayload
from xiaozhi.topics import TopicTree
from xiaozhi_hub.executors import (
    ExecutorError,
    HomeAssistantEffect,
    MqttEffect,
    VirtualEffect,
    XiaozhiCommandEffect,
    effect_for,
    fan_out,
    render_template,
    respond_effect,
    template_variables,
)
from xiaozhi_hub.home import (
    Home,
    HomeAssistantBinding,
    MqttBinding,
    VirtualBinding,
    XiaozhiBinding,
)

TOPICS = TopicTree()


def act(action: str, entity_id: str = "light.kitchen", **parameters: Any) -> Action:
    return Action(action=action, entity_id=entity_id, parameters=parameters)


Z2M = MqttBinding(
    topic="zigbee2mqtt/kitchen_light/set",
    payloads={
        "turn_on": {"state": "ON", "brightness": "{brightness_254}"},
        "turn_off": {"state": "OFF"},
    },
)


# -- mqtt (zigbee2mqtt) ---------------------------------------------------------------------


def test_zigbee2mqtt_set_topic_and_json() -> None:
    assert effect_for(act("turn_on"), Z2M, topics=TOPICS) == MqttEffect(
        "zigbee2mqtt/kitchen_light/set", b'{"state":"ON"}', qos=1, retain=False
    )
    assert effect_for(act("turn_off"), Z2M, topics=TOPICS).payload == b'{"state":"OFF"}'
    dimmed = effect_for(act("turn_on", brightness_pct=50), Z2M, topics=TOPICS)
    assert dimmed.payload == b'{"state":"ON","brightness":127}'


def test_demo_kitchen_light_is_zigbee2mqtt(home: Home) -> None:
    effect = effect_for(
        act("turn_on", brightness_pct=100), home.entity("light.kitchen").binding, topics=TOPICS
    )
    assert effect == MqttEffect("zigbee2mqtt/kitchen_light/set", b'{"state":"ON","brightness":254}')


def test_a_relative_brightness_is_zigbee2mqtts_brightness_step(home: Home) -> None:
    """ "dim the kitchen light": its level is not read back, so the bulb steps itself."""
    binding = home.entity("light.kitchen").binding
    effect = effect_for(act("turn_on", brightness_step_pct=-20), binding, topics=TOPICS)
    assert effect.payload == b'{"state":"ON","brightness_step":-51}'
    variables = template_variables(act("turn_on", brightness_step_pct=20))
    assert (variables["brightness_step_pct"], variables["brightness_step_254"]) == (20, 51)


def test_a_relative_brightness_needs_a_level_on_a_device_led_or_a_virtual_light() -> None:
    step = act("turn_on", "light.office", brightness_step_pct=-20)
    with pytest.raises(ExecutorError, match="needs a brightness level, not a step"):
        effect_for(step, XiaozhiBinding(device_id="demo_office", command="led"), topics=TOPICS)
    with pytest.raises(ExecutorError, match="relative brightness needs a known level"):
        effect_for(step, VirtualBinding(), topics=TOPICS)


def test_text_template_and_options() -> None:
    binding = MqttBinding(
        topic="tasmota/cmnd/lamp/POWER",
        payloads={"turn_on": "{state}", "turn_off": "OFF", "lock": '{{"v": "{state}"}}'},
        qos=0,
        retain=True,
    )
    assert effect_for(act("turn_on"), binding, topics=TOPICS) == MqttEffect(
        "tasmota/cmnd/lamp/POWER", b"ON", qos=0, retain=True
    )
    assert effect_for(act("lock"), binding, topics=TOPICS).payload == b'{"v": "LOCK"}'


def test_mqtt_action_without_payload() -> None:
    with pytest.raises(
        ExecutorError, match=r"mqtt binding cannot run 'lock'.*has: turn_off, turn_on"
    ):
        effect_for(act("lock"), Z2M, topics=TOPICS)


def test_template_variable_without_value() -> None:
    binding = MqttBinding(topic="t/set", payloads={"turn_on": "level {brightness}"})
    with pytest.raises(ExecutorError, match=r"\{brightness\} has no value") as caught:
        effect_for(act("turn_on"), binding, topics=TOPICS)
    assert (caught.value.action, caught.value.binding) == ("turn_on", "mqtt")
    whole = MqttBinding(topic="t/set", payloads={"turn_on": "{brightness}"})
    with pytest.raises(ExecutorError, match=r"\{brightness\}"):
        effect_for(act("turn_on"), whole, topics=TOPICS)


def test_render_template_rules() -> None:
    variables = {"state": "ON", "brightness": 128, "volume": 30}
    assert render_template(
        {"s": "{state}", "b": "{brightness}", "t": "{temperature}", "l": ["{volume}", "{x}", 1]},
        variables,
    ) == {"s": "ON", "b": 128, "l": [30, 1]}
    assert render_template("v={volume}%", variables) == "v=30%"
    assert render_template(7, variables) == 7


def test_template_variables() -> None:
    assert template_variables(act("volume_set", "media_player.x", volume_level=0.35)) == {
        "action": "volume_set",
        "entity_id": "media_player.x",
        "volume_level": 0.35,
        "volume": 35,
    }
    assert template_variables(act("turn_on", brightness_pct=100))["brightness"] == 255


# -- xiaozhi devices ------------------------------------------------------------------------


def test_led_command_on_the_device_topic() -> None:
    binding = XiaozhiBinding(device_id="demo_office", command="led")
    effect = effect_for(
        act("turn_on", "light.office"), binding, message_id="m1", timestamp="T", topics=TOPICS
    )
    assert effect == XiaozhiCommandEffect(
        "demo_office",
        "xiaozhi/commands/demo_office",
        CommandPayload(
            command="led",
            parameters={"on": True},
            message_id="m1",
            timestamp="T",
            device_id="demo_office",
        ),
    )
    assert effect.wire() == (
        b'{"command":"led","parameters":{"on":true},"message_id":"m1",'
        b'"timestamp":"T","device_id":"demo_office"}'
    )
    assert (effect.qos, effect.retain) == (1, False)
    dimmed = effect_for(act("turn_on", "light.office", brightness_pct=50), binding, topics=TOPICS)
    assert dimmed.payload.parameters == {"on": True, "brightness": 128}
    off = effect_for(act("turn_off", "light.office"), binding, topics=TOPICS)
    assert off.payload.parameters == {"on": False}


def test_volume_is_set_volume_of_the_vocabulary() -> None:
    binding = XiaozhiBinding(device_id="demo_kitchen")
    effect = effect_for(
        act("volume_set", "media_player.xiaozhi_demo_kitchen", volume_level=0.8),
        binding,
        topics=TOPICS,
    )
    assert effect.topic == "xiaozhi/commands/demo_kitchen"
    assert effect.payload.command == "set_volume"
    assert effect.payload.parameters == {"volume": 80}
    parsed = parse_parameters(effect.payload)
    assert parsed is not None
    assert parsed[1].volume == 80


def test_update_entity_is_get_status() -> None:
    effect = effect_for(
        act("update_entity", "media_player.x"), XiaozhiBinding(device_id="d1"), topics=TOPICS
    )
    assert (effect.payload.command, effect.payload.parameters) == ("get_status", {})


def test_base_topic_setting() -> None:
    effect = effect_for(
        act("turn_on"), XiaozhiBinding(device_id="d1"), topics=TopicTree(base="site1/xiaozhi")
    )
    assert effect.topic == "site1/xiaozhi/commands/d1"


def test_custom_command_with_parameter_template() -> None:
    binding = XiaozhiBinding(
        device_id="d1",
        command="mcp_call",
        parameters={"name": "self.light.set", "arguments": {"on": "{state}"}},
    )
    effect = effect_for(act("turn_off"), binding, topics=TOPICS)
    assert effect.payload.command == "mcp_call"
    assert effect.payload.parameters == {
        "name": "self.light.set",
        "arguments": {"on": "OFF"},
    }
    free = XiaozhiBinding(device_id="d1", command="chime", parameters={"tone": "{action}"})
    assert effect_for(act("turn_on"), free, topics=TOPICS).payload.parameters == {"tone": "turn_on"}


@pytest.mark.parametrize(
    ("action", "binding", "message"),
    [
        (act("lock"), XiaozhiBinding(device_id="d1"), "no device command"),
        (act("lock"), XiaozhiBinding(device_id="d1", command="led"), "only turns on or off"),
        (act("turn_on"), XiaozhiBinding(device_id="d1", command="set_volume"), "needs a volume"),
        (
            act("volume_set", volume_level=2.0),
            XiaozhiBinding(device_id="d1"),
            "parameters.volume",
        ),
    ],
)
def test_xiaozhi_refusals(action: Action, binding: XiaozhiBinding, message: str) -> None:
    with pytest.raises(ExecutorError, match=message):
        effect_for(action, binding, topics=TOPICS)


def test_respond_effect() -> None:
    action = act("turn_on", "light.living_room")
    effect = respond_effect(
        "demo_kitchen",
        "Turning on the living room light.",
        stt="turn on the living room light",
        actions=[action],
        timestamp="T",
        topics=TOPICS,
    )
    assert effect.topic == "xiaozhi/commands/demo_kitchen"
    assert orjson.loads(effect.wire()) == {
        "command": "respond",
        "parameters": {
            "text": "Turning on the living room light.",
            "stt": "turn on the living room light",
            "actions": [action.to_json_dict()],
        },
        "timestamp": "T",
        "device_id": "demo_kitchen",
    }


def test_fan_out_sets_each_member() -> None:
    payload = CommandPayload(command="set_volume", parameters={"volume": 10}, message_id="m")
    effects = fan_out(payload, ["demo_kitchen", "demo_living_room"], topics=TOPICS)
    assert [(e.topic, e.payload.device_id) for e in effects] == [
        ("xiaozhi/commands/demo_kitchen", "demo_kitchen"),
        ("xiaozhi/commands/demo_living_room", "demo_living_room"),
    ]
    assert all(e.payload.message_id == "m" for e in effects)


# -- Home Assistant REST --------------------------------------------------------------------

HA = HomeAssistantBinding(base_url="http://ha.local:8123", token_env="HA_TOKEN")


def test_home_assistant_service_call() -> None:
    effect = effect_for(act("turn_on", "light.living_room", brightness_pct=50), HA, topics=TOPICS)
    assert effect == HomeAssistantEffect(
        method="POST",
        url="http://ha.local:8123/api/services/light/turn_on",
        json={"entity_id": "light.living_room", "brightness_pct": 50},
        token_env="HA_TOKEN",
    )
    assert effect.headers == {"Content-Type": "application/json"}
    assert "Authorization" not in effect.headers
    assert HomeAssistantEffect.authorization("abc") == {"Authorization": "Bearer abc"}


def test_home_assistant_entity_id_and_update_entity() -> None:
    binding = HomeAssistantBinding(
        base_url="https://ha", token_env="T", entity_id="lock.real_front_door"
    )
    effect = effect_for(act("lock", "lock.front_door"), binding, topics=TOPICS)
    assert effect.url == "https://ha/api/services/lock/lock"
    assert effect.json == {"entity_id": "lock.real_front_door"}
    refresh = effect_for(act("update_entity", "sensor.x"), HA, topics=TOPICS)
    assert refresh.url == "http://ha.local:8123/api/services/homeassistant/update_entity"


# -- virtual ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "state"),
    [
        (act("turn_on"), {"state": "on"}),
        (
            act("turn_on", brightness_pct=50, color_name="red"),
            {"state": "on", "brightness": 128, "color_name": "red"},
        ),
        (act("turn_off"), {"state": "off"}),
        (act("lock"), {"state": "locked"}),
        (act("unlock"), {"state": "unlocked"}),
        (act("close_cover"), {"state": "closed"}),
        (act("set_temperature", temperature=22), {"temperature": 22}),
        (act("volume_set", volume_level=0.5), {"volume_level": 0.5}),
        (act("update_entity"), {}),
    ],
)
def test_virtual_state(action: Action, state: dict[str, Any]) -> None:
    effect = effect_for(action, VirtualBinding(), topics=TOPICS)
    assert effect == VirtualEffect("light.kitchen", state)


def test_virtual_apply_and_refusal() -> None:
    effect = VirtualEffect("climate.office", {"temperature": 22})
    assert effect.apply({"state": "heat", "temperature": 21}) == {
        "state": "heat",
        "temperature": 22,
    }
    assert effect.apply(None) == {"temperature": 22}
    with pytest.raises(ExecutorError, match="virtual binding cannot run 'set_temperature'"):
        effect_for(act("set_temperature"), VirtualBinding(), topics=TOPICS)
