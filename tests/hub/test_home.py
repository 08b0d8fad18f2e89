"""The home model (xiaozhi_hub.home): the demo home, lookups, and validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from xiaozhi_hub.home import (
    DEMO_HOME_PATH,
    ConfigProblem,
    DeviceFunction,
    Home,
    HomeAssistantBinding,
    HomeConfigError,
    MqttBinding,
    VirtualBinding,
    XiaozhiBinding,
    entity_slug,
    load_home,
    parse_home,
    template_placeholders,
)

# -- the demo home ---------------------------------------------------------------------------


def test_demo_home_is_design_section_6(home: Home) -> None:
    assert [a.name for a in home.areas] == ["Living Room", "Kitchen", "Bedroom", "Office"]
    names = {e.entity_id: e.name for e in home.entities}
    assert names == {
        "light.living_room": "living room light",
        "light.kitchen": "kitchen light",
        "light.bedroom": "bedroom light",
        "light.office": "office light",
        "climate.office": "office thermostat",
        "lock.front_door": "front door",
    }
    assert home.entity("light.kitchen").aliases == ["kitchen lights"]
    assert home.entity("light.bedroom").aliases == ["bedroom lamp"]
    assert {d.id: d.area for d in home.devices} == {
        "demo_living_room": "living_room",
        "demo_kitchen": "kitchen",
        "demo_office": "office",
    }
    assert home.group_members() == {
        "downstairs": ["demo_living_room", "demo_kitchen"],
        "all_speakers": ["demo_living_room", "demo_kitchen", "demo_office"],
    }


def test_demo_bindings_show_each_kind(home: Home) -> None:
    kitchen = home.entity("light.kitchen").binding
    assert isinstance(kitchen, MqttBinding)
    assert kitchen.topic == "zigbee2mqtt/kitchen_light/set"
    assert isinstance(home.entity("light.living_room").binding, VirtualBinding)
    office = home.entity("light.office").binding
    assert isinstance(office, XiaozhiBinding)
    assert (office.device_id, office.command) == ("demo_office", "led")


def test_default_path_and_default_binding() -> None:
    assert load_home() == load_home(DEMO_HOME_PATH)
    home = parse_home({"entities": [{"entity_id": "switch.fan", "name": "fan"}]})
    entity = home.entity("switch.fan")
    assert entity.domain == "switch"
    assert entity.binding == VirtualBinding()
    assert entity.names == ["fan"]


def test_lookups(home: Home) -> None:
    assert home.area("kitchen").name == "Kitchen"
    assert home.area(None) is None
    assert home.area("garage") is None
    assert home.area_name("office") == "Office"
    assert home.area_name(None) is None
    assert home.floor("ground").aliases == ["downstairs"]
    assert home.floor(None) is None
    assert [a.id for a in home.areas_on_floor("upstairs")] == ["bedroom"]
    assert home.device("demo_kitchen").name == "Kitchen speaker"
    assert home.device("nope") is None
    assert home.group("downstairs").name == "Downstairs"
    assert home.group("nope") is None
    lights = home.entities_in(domain="light", areas=["office", "kitchen"])
    assert [e.entity_id for e in lights] == ["light.kitchen", "light.office"]
    assert len(home.entities_in()) == len(home.entities)


def test_device_entity_prefers_a_bound_yaml_entity(home: Home) -> None:
    assert home.device_entity("demo_office", DeviceFunction.LED).entity_id == "light.office"
    speaker = home.device_entity("demo_office", DeviceFunction.SPEAKER)
    assert speaker.entity_id == "media_player.xiaozhi_demo_office"
    assert speaker.area == "office"
    assert speaker.name == "Office speaker"
    assert speaker.binding == XiaozhiBinding(device_id="demo_office")


def test_device_entity_of_a_device_learnt_at_runtime(home: Home) -> None:
    led = home.device_entity("aa-bb", DeviceFunction.LED)
    assert led.entity_id == "light.xiaozhi_aa_bb_led"
    assert led.name == "aa-bb LED"
    assert led.area is None
    assert entity_slug("aa-bb") == "aa_bb"


def test_device_entity_by_domain_when_command_is_unset() -> None:
    home = parse_home(
        {
            "devices": [{"id": "d1", "name": "D1"}],
            "entities": [
                {
                    "entity_id": "media_player.d1",
                    "name": "d1 speaker",
                    "binding": {"type": "xiaozhi", "device_id": "d1"},
                }
            ],
        }
    )
    assert home.device_entity("d1", DeviceFunction.SPEAKER).entity_id == "media_player.d1"
    assert home.device_entity("d1", DeviceFunction.LED).entity_id == "light.xiaozhi_d1_led"


def test_binding_for(home: Home) -> None:
    assert home.binding_for("light.kitchen") == home.entity("light.kitchen").binding
    assert home.binding_for("media_player.xiaozhi_demo_kitchen") == XiaozhiBinding(
        device_id="demo_kitchen"
    )
    learnt = home.binding_for("light.xiaozhi_aabbccddeeff_led", device_ids=["aabbccddeeff"])
    assert learnt == XiaozhiBinding(device_id="aabbccddeeff")
    assert home.binding_for("light.garage") is None


def test_template_placeholders() -> None:
    assert template_placeholders({"state": "{state}", "b": ["{brightness}", 1]}) == {
        "state",
        "brightness",
    }
    assert template_placeholders("x {{literal}} {volume}") == {"volume"}
    with pytest.raises(ValueError, match="plain name"):
        template_placeholders("{a.b}")


# -- validation ------------------------------------------------------------------------------


def with_binding(binding: str) -> str:
    """A home file with one light whose binding is the YAML flow mapping ``binding``."""
    return f"entities:\n  - entity_id: light.a\n    name: a\n    binding: {{{binding}}}\n"


BAD_FILES = [
    pytest.param(
        "areas:\n  - {id: Living Room, name: Living Room}\n",
        "areas[0].id",
        "invalid area id 'Living Room'",
        id="area-id-grammar",
    ),
    pytest.param(
        "entities:\n  - {entity_id: light, name: x}\n",
        "entities[0].entity_id",
        "invalid entity id 'light'",
        id="entity-id-grammar",
    ),
    pytest.param(
        "entities:\n  - {entity_id: light.a}\n",
        "entities[0].name",
        "missing required field",
        id="missing-name",
    ),
    pytest.param(
        "entities:\n  - {entity_id: light.a, name: '  '}\n",
        "entities[0].name",
        "expected a name",
        id="blank-name",
    ),
    pytest.param(
        with_binding("type: mqtt, payloads: {turn_on: 'ON'}"),
        "entities[0].binding.topic",
        "missing required field",
        id="mqtt-without-topic",
    ),
    pytest.param(
        with_binding("type: mqtt, topic: 'z/+/set', payloads: {turn_on: 'ON'}"),
        "entities[0].binding.topic",
        "without '+', '#'",
        id="mqtt-wildcard-topic",
    ),
    pytest.param(
        with_binding("type: mqtt, topic: z/a/set, toppic: x, payloads: {turn_on: 'ON'}"),
        "entities[0].binding.toppic",
        "did you mean 'topic'",
        id="typo-suggests-field",
    ),
    pytest.param(
        with_binding("type: mqtt, topic: z/a/set, payloads: {}"),
        "entities[0].binding.payloads",
        "at least one action",
        id="mqtt-no-payloads",
    ),
    pytest.param(
        with_binding("type: mqtt, topic: z/a/set, payloads: {switch_on: ON}"),
        "entities[0].binding.payloads",
        "unknown action 'switch_on'",
        id="mqtt-unknown-action",
    ),
    pytest.param(
        with_binding("type: mqtt, topic: z/a/set, payloads: {turn_on: ON}"),
        "entities[0].binding.payloads",
        "quote ON/OFF",
        id="mqtt-payload-type",
    ),
    pytest.param(
        with_binding("type: mqtt, topic: z/a/set, payloads: {turn_on: {b: '{brightnes}'}}"),
        "entities[0].binding.payloads",
        "unknown placeholder {brightnes}",
        id="template-typo",
    ),
    pytest.param(
        with_binding("type: mqtt, topic: z/a/set, qos: 2, payloads: {turn_on: 'ON'}"),
        "entities[0].binding.qos",
        "got 2",
        id="mqtt-qos-2",
    ),
    pytest.param(
        with_binding("type: zigbee"),
        "entities[0].binding.type",
        "unknown binding type 'zigbee'",
        id="unknown-binding-type",
    ),
    pytest.param(
        with_binding("topic: x"),
        "entities[0].binding.type",
        "missing binding type",
        id="binding-without-type",
    ),
    pytest.param(
        with_binding("type: xiaozhi, device_id: AA:BB"),
        "entities[0].binding.device_id",
        "invalid device id 'AA:BB'",
        id="xiaozhi-device-id",
    ),
    pytest.param(
        with_binding("type: xiaozhi, device_id: d1, parameters: {x: '{nope}'}"),
        "entities[0].binding.parameters",
        "unknown placeholder {nope}",
        id="xiaozhi-template",
    ),
    pytest.param(
        with_binding("type: homeassistant, base_url: 'ftp://ha', token_env: HA_TOKEN"),
        "entities[0].binding.base_url",
        "expected http(s)://host[:port]",
        id="ha-base-url",
    ),
    pytest.param(
        with_binding("type: homeassistant, base_url: 'http://ha', token_env: 'my token'"),
        "entities[0].binding.token_env",
        "environment variable name",
        id="ha-token-env",
    ),
    pytest.param(
        with_binding("type: homeassistant, base_url: 'http://ha', token_env: T, token: secret"),
        "entities[0].binding.token",
        "must not be written in the home file",
        id="ha-token-in-yaml",
    ),
    pytest.param(
        "entities:\n  - {entity_id: light.a, name: a, area: garage}\n",
        "entities[0].area",
        "unknown area 'garage' (known areas: none defined)",
        id="entity-area-exists",
    ),
    pytest.param(
        "areas:\n  - {id: a, name: A, floor: roof}\n"
        "floors:\n  - {id: ground, name: ground floor}\n",
        "areas[0].floor",
        "unknown floor 'roof' (known floors: ground)",
        id="area-floor-exists",
    ),
    pytest.param(
        "devices:\n  - {id: d1, name: D1, groups: [kids]}\n",
        "devices[0].groups[0]",
        "unknown group 'kids'",
        id="device-group-exists",
    ),
    pytest.param(
        "devices:\n  - {id: d1, name: D1, area: attic}\n",
        "devices[0].area",
        "unknown area 'attic'",
        id="device-area-exists",
    ),
    pytest.param(
        "groups:\n  - {id: g, name: G, members: [ghost]}\n",
        "groups[0].members[0]",
        "unknown device 'ghost'",
        id="group-member-exists",
    ),
    pytest.param(
        "devices:\n  - {id: broadcast, name: B}\n",
        "devices[0].id",
        "reserved",
        id="reserved-device-id",
    ),
    pytest.param(
        "entities:\n  - {entity_id: light.a, name: a}\n  - {entity_id: light.a, name: b}\n",
        "entities[1].entity_id",
        "duplicate id 'light.a' (first at entities[0])",
        id="unique-entity-ids",
    ),
    pytest.param(
        "entities:\n  - {entity_id: light.a, name: lamp}\n"
        "  - {entity_id: light.b, name: b, aliases: [Lamp]}\n",
        "entities[1].aliases[0]",
        "name 'Lamp' is already used by entities[0]",
        id="unique-spoken-names",
    ),
    pytest.param("entities: {a: 1}\n", "entities", "expected a list", id="section-not-a-list"),
    pytest.param("entites: []\n", "entites", "did you mean 'entities'", id="unknown-section"),
]


@pytest.mark.parametrize(("text", "path", "message"), BAD_FILES)
def test_bad_file_names_file_path_and_field(
    tmp_path: Path, text: str, path: str, message: str
) -> None:
    file = tmp_path / "home.yaml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(HomeConfigError) as caught:
        load_home(file)
    problems = caught.value.problems
    assert [p.path for p in problems] == [path], problems
    assert message in problems[0].message
    assert caught.value.source == str(file)
    assert f"{file}: {path}: " in str(caught.value)
    assert problems[0].field == path.rsplit(".", 1)[-1].split("[", maxsplit=1)[0]


def test_every_problem_at_once(tmp_path: Path) -> None:
    file = tmp_path / "home.yaml"
    file.write_text(
        "areas:\n"
        "  - {id: kitchen, name: Kitchen}\n"
        "  - {id: Bad Id, name: Bad}\n"
        "entities:\n"
        "  - {entity_id: light.a, name: a, area: garage}\n"
        "  - entity_id: light.b\n"
        "    name: b\n"
        "    binding: {type: mqtt, payloads: {turn_on: 'ON'}}\n"
        "  - entity_id: light.c\n"
        "    name: c\n"
        "    binding: {type: homeassistant, base_url: nope, token: x}\n"
        "devices:\n"
        "  - {id: d1, name: D1, groups: [nope]}\n",
        encoding="utf-8",
    )
    with pytest.raises(HomeConfigError) as caught:
        load_home(file)
    paths = [p.path for p in caught.value.problems]
    assert paths == [
        "areas[1].id",
        "entities[1].binding.topic",
        "entities[2].binding.base_url",
        "entities[2].binding.token_env",
        "entities[2].binding.token",
        "entities[0].area",
        "devices[0].groups[0]",
    ]
    assert "(7 problems)" in str(caught.value)
    assert str(caught.value).count(str(file)) == 8  # the heading and every line name the file


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    file = tmp_path / "broken.yaml"
    file.write_text("areas:\n  - {id: a\n", encoding="utf-8")
    with pytest.raises(HomeConfigError) as caught:
        load_home(file)
    [problem] = caught.value.problems
    assert problem.path == ""
    assert problem.field is None
    assert "invalid YAML" in problem.message
    assert "line 3" in problem.message
    assert str(caught.value).startswith(f"invalid home file {file} (1 problem):")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HomeConfigError, match="cannot read the file"):
        load_home(tmp_path / "nope.yaml")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    file = tmp_path / "home.yaml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(HomeConfigError, match="expected a mapping"):
        load_home(file)


def test_empty_file_is_an_empty_home(tmp_path: Path) -> None:
    file = tmp_path / "home.yaml"
    file.write_text("# nothing yet\n", encoding="utf-8")
    assert load_home(file) == Home()
    assert parse_home({"areas": None}) == Home()


def test_homeassistant_binding_normalizes_base_url() -> None:
    home = parse_home(
        {
            "entities": [
                {
                    "entity_id": "switch.coffee",
                    "name": "coffee maker",
                    "binding": {
                        "type": "homeassistant",
                        "base_url": "http://ha.local:8123/",
                        "token_env": "HA_TOKEN",
                        "entity_id": "switch.kitchen_coffee",
                    },
                }
            ]
        }
    )
    binding = home.entity("switch.coffee").binding
    assert isinstance(binding, HomeAssistantBinding)
    assert binding.base_url == "http://ha.local:8123"
    assert "token" not in binding.model_dump()


def test_config_problem_field() -> None:
    assert ConfigProblem("entities[2].binding.topic", "x").field == "topic"
    assert ConfigProblem("groups[0].members[1]", "x").field == "members"
    assert ConfigProblem("", "x").field is None
