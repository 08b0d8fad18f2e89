"""Voice command → actions and response (xiaozhi_hub.resolve + xiaozhi_hub.actions, through
the hub's one pipeline, xiaozhi_hub.pipeline).

Each demo phrase of design.md §6 and issue 4, said by a device (or typed), gives exactly these
actions and this sentence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from xiaozhi.payloads import Action, DeviceStatus, StatusPayload
from xiaozhi_hub.actions import Plan, plan
from xiaozhi_hub.home import Home, VirtualBinding, XiaozhiBinding, parse_home
from xiaozhi_hub.intents import IntentEngine, IntentMatch, NoMatch
from xiaozhi_hub.pipeline import VoicePipeline
from xiaozhi_hub.registry import DeviceRecord, Registry
from xiaozhi_hub.resolve import Resolution, ResolutionError, Scope, resolve


async def plan_text(
    text: str,
    *,
    engine: IntentEngine,
    registry: Registry,
    device_id: str | None = None,
    area: str | None = None,
    states: Mapping[str, Mapping[str, Any]] | None = None,
) -> Plan:
    """``text`` through the hub's one pipeline, as the voice unit and the voice tests run it."""
    pipeline = VoicePipeline(registry, engine=engine, states=states)
    try:
        return await pipeline.plan_text(text, device_id=device_id, area=area)
    finally:
        pipeline.close()


def ha(action: str, entity_id: str, **parameters: Any) -> dict[str, Any]:
    return {
        "type": "homeassistant",
        "action": action,
        "entity_id": entity_id,
        "parameters": parameters,
    }


DEMO = [
    # text, speaking device, actions, response
    (
        "turn on the living room light",
        None,
        [ha("turn_on", "light.living_room")],
        "Turning on the living room light.",
    ),
    (
        "turn off the kitchen lights",
        None,
        [ha("turn_off", "light.kitchen")],
        "Turning off the kitchen light.",
    ),
    (
        "set the bedroom brightness to 50%",
        None,
        [ha("turn_on", "light.bedroom", brightness_pct=50)],
        "Setting the bedroom light to 50% brightness.",
    ),
    ("what is the temperature in the office", None, [], "The office is 21 degrees."),
    (
        "set volume to 80",
        "demo_kitchen",
        [ha("volume_set", "media_player.xiaozhi_demo_kitchen", volume_level=0.8)],
        "Setting the volume to 80%.",
    ),
    (
        "turn on the light",
        "demo_living_room",
        [ha("turn_on", "light.living_room")],
        "Turning on the living room light.",
    ),
    (
        "turn off all the lights",
        None,
        [
            ha("turn_off", "light.living_room"),
            ha("turn_off", "light.kitchen"),
            ha("turn_off", "light.bedroom"),
            ha("turn_off", "light.office"),
        ],
        "Turning off all the lights.",
    ),
    ("lock the front door", None, [ha("lock", "lock.front_door")], "Locking the front door."),
    ("turn on the garage light", None, [], "I don't know a device called garage light."),
]


@pytest.mark.parametrize("case", DEMO, ids=[case[0] for case in DEMO])
async def test_demo_phrases(
    engine: IntentEngine, registry: Registry, case: tuple[str, str | None, list[Any], str]
) -> None:
    text, device, actions, response = case
    result = await plan_text(text, engine=engine, registry=registry, device_id=device)
    assert [a.to_json_dict() for a in result.actions] == actions
    assert result.response_text == response
    assert result.executed is (text != "turn on the garage light")
    assert set(result.bindings) == {a["entity_id"] for a in actions} or not actions


async def test_living_room_light_is_exactly_the_design_action(
    engine: IntentEngine, registry: Registry
) -> None:
    result = await plan_text("turn on the living room light", engine=engine, registry=registry)
    [action] = result.actions
    assert action.to_wire() == (
        b'{"type":"homeassistant","action":"turn_on",'
        b'"entity_id":"light.living_room","parameters":{}}'
    )


async def test_unknown_name_executes_nothing(engine: IntentEngine, registry: Registry) -> None:
    result = await plan_text("turn on the garage light", engine=engine, registry=registry)
    assert result.actions == ()
    assert result.bindings == {}
    assert result.executed is False
    assert result.error == "unknown_name"
    assert result.to_json_dict() == {
        "text": "turn on the garage light",
        "intent": "HassTurnOn",
        "slots": {},
        "actions": [],
        "response": "I don't know a device called garage light.",
        "executed": False,
        "error": "unknown_name",
    }


MORE = [
    # text, speaking device, actions, response, error
    (
        "unlock the front door",
        None,
        [ha("unlock", "lock.front_door")],
        "Unlocking the front door.",
        None,
    ),
    (
        "turn off the lights downstairs",
        None,
        [
            ha("turn_off", "light.living_room"),
            ha("turn_off", "light.kitchen"),
            ha("turn_off", "light.office"),
        ],
        "Turning off the lights on the ground floor.",
        None,
    ),
    (
        "turn on the lights upstairs",
        None,
        [ha("turn_on", "light.bedroom")],
        "Turning on the bedroom light.",
        None,
    ),
    (
        "turn on the lights in the kitchen",
        "demo_living_room",
        [ha("turn_on", "light.kitchen")],
        "Turning on the kitchen light.",
        None,
    ),
    (
        "set the kitchen light to red",
        None,
        [ha("turn_on", "light.kitchen", color_name="red")],
        "Setting the kitchen light to red.",
        None,
    ),
    (
        "set the office thermostat to 22",
        None,
        [ha("set_temperature", "climate.office", temperature=22)],
        "Setting the office thermostat to 22 degrees.",
        None,
    ),
    (
        "set the temperature to 19.5 degrees",
        "demo_office",
        [ha("set_temperature", "climate.office", temperature=19.5)],
        "Setting the office thermostat to 19.5 degrees.",
        None,
    ),
    (
        "what is the temperature",
        "demo_office",
        [],
        "The office is 21 degrees.",
        None,
    ),
    (
        "set the kitchen volume to 30",
        None,
        [ha("volume_set", "media_player.xiaozhi_demo_kitchen", volume_level=0.3)],
        "Setting the volume of the Kitchen speaker to 30%.",
        None,
    ),
    (
        "turn on the led",
        "demo_office",
        [ha("turn_on", "light.office")],
        "Turning on the LED.",
        None,
    ),
    (
        "turn off the led",
        "demo_kitchen",
        [ha("turn_off", "light.xiaozhi_demo_kitchen_led")],
        "Turning off the LED.",
        None,
    ),
    (
        "set volume to 40",
        "aabbccddeeff",
        [ha("volume_set", "media_player.xiaozhi_aabbccddeeff", volume_level=0.4)],
        "Setting the volume to 40%.",
        None,
    ),
    ("turn off the light", None, [], "Sorry, I don't know which room you mean.", "no_area"),
    (
        "turn off the light",
        "aabbccddeeff",
        [],
        "Sorry, I don't know which room you mean.",
        "no_area",
    ),
    (
        "turn off the lights in the garage",
        None,
        [],
        "I don't know an area called garage.",
        "unknown_area",
    ),
    ("set volume to 120", "demo_kitchen", [], "Sorry, 120 is out of range.", "out_of_range"),
    ("set volume to 80", None, [], "Sorry, I don't know which device is speaking.", "no_device"),
    ("what is the weather", None, [], "Sorry, I can't do that yet.", "unsupported_intent"),
    ("sing me a song", None, [], "Sorry, I couldn't understand that.", "no_intent"),
]


@pytest.mark.parametrize("case", MORE, ids=[f"{c[0]}-{c[1]}" for c in MORE])
async def test_more_phrases(
    engine: IntentEngine,
    registry: Registry,
    case: tuple[str, str | None, list[Any], str, str | None],
) -> None:
    text, device, actions, response, error = case
    result = await plan_text(text, engine=engine, registry=registry, device_id=device)
    assert [a.to_json_dict() for a in result.actions] == actions
    assert result.response_text == response
    assert result.error == error
    assert result.executed is (error is None)


async def test_status_answers_from_telemetry(engine: IntentEngine, registry: Registry) -> None:
    registry.apply_status(
        StatusPayload(
            status=DeviceStatus.CONNECTED,
            device_id="demo_kitchen",
            uptime=90061,
            wifi_signal=-45,
            memory_usage=65,
        ),
        now=1.0,
    )
    result = await plan_text(
        "what is your status", engine=engine, registry=registry, device_id="demo_kitchen"
    )
    assert [a.to_json_dict() for a in result.actions] == [
        ha("update_entity", "media_player.xiaozhi_demo_kitchen")
    ]
    assert result.response_text == (
        "I'm connected: Wi-Fi signal -45 dBm, up 1 day 1 hour, memory 65% used."
    )


@pytest.mark.parametrize(
    ("record", "response"),
    [
        (None, "I'm online, but the hub has no status from me yet."),
        (DeviceRecord("d", "d", status=DeviceStatus.CONNECTED), "I'm connected."),
        (
            DeviceRecord("d", "d", status=DeviceStatus.CONNECTED, telemetry={"uptime": 59}),
            "I'm connected: up less than a minute.",
        ),
        (
            DeviceRecord("d", "d", status=DeviceStatus.CONNECTED, telemetry={"uptime": 120}),
            "I'm connected: up 2 minutes.",
        ),
    ],
)
def test_status_wording(
    engine: IntentEngine, home: Home, record: DeviceRecord | None, response: str
) -> None:
    match = engine.recognize("what is your status")
    result = plan(match, resolve(match, home, speaking_device="d"), record)
    assert result.response_text == response


async def test_question_uses_current_states(engine: IntentEngine, registry: Registry) -> None:
    states = {"climate.office": {"current_temperature": 23.5}}
    result = await plan_text(
        "what is the temperature in the office", engine=engine, registry=registry, states=states
    )
    assert result.response_text == "The office is 23.5 degrees."
    unknown = await plan_text(
        "what is the temperature in the office",
        engine=engine,
        registry=registry,
        states={"climate.office": {"state": "off"}},
    )
    assert unknown.response_text == "Sorry, I don't know the temperature of the office."
    assert unknown.executed is True


async def test_area_override_for_typed_tests(engine: IntentEngine, registry: Registry) -> None:
    result = await plan_text("turn on the light", engine=engine, registry=registry, area="bedroom")
    assert [a.entity_id for a in result.actions] == ["light.bedroom"]


# -- resolution on its own ---------------------------------------------------------------------


def match_of(intent: str, **slots: Any) -> IntentMatch:
    return IntentMatch(intent=intent, text="typed", slots=slots)


SMALL = parse_home(
    {
        "floors": [{"id": "ground", "name": "ground floor"}, {"id": "roof", "name": "roof"}],
        "areas": [
            {"id": "hall", "name": "Hall", "floor": "ground"},
            {"id": "den", "name": "Den", "floor": "ground"},
        ],
        "entities": [
            {"entity_id": "light.hall", "name": "hall light", "area": "hall"},
            {"entity_id": "switch.hall_fan", "name": "hall fan", "area": "hall"},
            {"entity_id": "lock.hall", "name": "hall door", "area": "hall"},
            {"entity_id": "climate.hall", "name": "hall thermostat", "area": "hall"},
            {"entity_id": "cover.hall", "name": "hall blind", "area": "hall"},
            {"entity_id": "media_player.den_tv", "name": "den tv", "area": "den"},
        ],
        "devices": [{"id": "den_speaker", "name": "Den speaker", "area": "den"}],
    }
)


def test_turn_on_an_area_without_domain_switches_on_off_things_only() -> None:
    res = resolve(match_of("HassTurnOn", area="hall"), SMALL)
    assert [e.entity_id for e in res.targets] == ["light.hall", "switch.hall_fan"]
    result = plan(match_of("HassTurnOn", area="hall"), res)
    assert result.response_text == "Turning on the devices in the hall."


def test_covers_open_and_close() -> None:
    res = resolve(match_of("HassTurnOff", name="cover.hall"), SMALL)
    result = plan(match_of("HassTurnOff", name="cover.hall"), res)
    assert [a.action for a in result.actions] == ["close_cover"]
    assert result.response_text == "Closing the hall blind."


def test_no_targets_in_a_known_place() -> None:
    res = resolve(match_of("HassTurnOn", area="den", domain="light"), SMALL)
    assert (res.error, res.scope) == (ResolutionError.NO_TARGETS, Scope.AREA)
    assert (
        plan(match_of("HassTurnOn"), res).response_text == "Sorry, there are no lights in the den."
    )
    res = resolve(match_of("HassTurnOn", floor="roof", domain="light"), SMALL)
    assert (
        plan(match_of("HassTurnOn"), res).response_text == "Sorry, there are no lights on the roof."
    )
    res = resolve(match_of("HassTurnOn", domain="fan"), SMALL)
    assert plan(match_of("HassTurnOn"), res).response_text == "Sorry, there are no fans."


def test_set_volume_in_an_area_reaches_media_players_and_devices() -> None:
    res = resolve(match_of("HassSetVolume", area="den", volume_level=30), SMALL)
    assert [e.entity_id for e in res.targets] == [
        "media_player.den_tv",
        "media_player.xiaozhi_den_speaker",
    ]
    result = plan(match_of("HassSetVolume", area="den", volume_level=30), res)
    assert result.response_text == "Setting the volume of the speakers in the den to 30%."
    res = resolve(
        match_of("HassSetVolume", area="hall", volume_level=30),
        SMALL,
        device_areas={"den_speaker": "den"},
    )
    assert res.error is ResolutionError.NO_TARGETS


def test_set_volume_with_the_area_from_context_is_the_speaking_device() -> None:
    match = IntentMatch(
        intent="HassSetVolume",
        text="typed",
        slots={"area": "den", "volume_level": 50},
        from_context=frozenset({"area"}),
    )
    res = resolve(match, SMALL, speaking_device="den_speaker")
    assert (res.scope, [e.entity_id for e in res.targets]) == (
        Scope.DEVICE,
        ["media_player.xiaozhi_den_speaker"],
    )
    no_area = resolve(match_of("HassSetVolume", volume_level=50), SMALL)
    assert no_area.error is ResolutionError.NO_DEVICE


def test_name_from_another_home_is_unknown() -> None:
    res = resolve(match_of("HassTurnOn", name="light.elsewhere"), SMALL)
    assert (res.error, res.unknown) == (ResolutionError.UNKNOWN_NAME, "light.elsewhere")


@pytest.mark.parametrize(
    ("unmatched", "error", "text"),
    [
        ({"floor": "attic"}, ResolutionError.UNKNOWN_FLOOR, "I don't know a floor called attic."),
        ({"name": ""}, ResolutionError.NO_INTENT, "Sorry, I couldn't understand that."),
    ],
)
def test_unmatched(unmatched: dict[str, str], error: ResolutionError, text: str) -> None:
    match = IntentMatch(intent="HassTurnOn", text="typed", unmatched=unmatched)
    res = resolve(match, SMALL)
    assert res.error is error
    assert plan(match, res).response_text == text


def test_light_set_wording() -> None:
    kelvin = match_of("HassLightSet", name="light.hall", temperature=2700)
    result = plan(kelvin, resolve(kelvin, SMALL))
    assert result.actions[0].parameters == {"color_temp_kelvin": 2700}
    assert result.response_text == "Setting the hall light to 2700 kelvin."
    bare = match_of("HassLightSet", name="light.hall")
    assert plan(bare, resolve(bare, SMALL)).response_text == "Turning on the hall light."


def test_questions_by_name_and_floor() -> None:
    home = parse_home(
        {
            "floors": [{"id": "ground", "name": "ground floor"}],
            "areas": [{"id": "hall", "name": "Hall", "floor": "ground"}],
            "entities": [
                {
                    "entity_id": "climate.hall",
                    "name": "hall thermostat",
                    "area": "hall",
                    "binding": {"type": "virtual", "state": {"current_temperature": 20}},
                },
                {"entity_id": "climate.spare", "name": "spare thermostat"},
            ],
        }
    )
    cases = {
        "name": (match_of("HassClimateGetTemperature", name="climate.hall"), "The hall thermostat"),
        "floor": (match_of("HassClimateGetTemperature", floor="ground"), "The ground floor"),
        "all": (match_of("HassClimateGetTemperature"), "The house"),
    }
    for match, place in cases.values():
        assert plan(match, resolve(match, home)).response_text == f"{place} is 20 degrees."


def test_all_the_domain_and_floor_wording() -> None:
    home = parse_home(
        {
            "floors": [{"id": "up", "name": "upstairs"}],
            "areas": [
                {"id": "a", "name": "A", "floor": "up"},
                {"id": "b", "name": "B", "floor": "up"},
            ],
            "entities": [
                {"entity_id": "light.a", "name": "a light", "area": "a"},
                {"entity_id": "light.b", "name": "b light", "area": "b"},
            ],
        }
    )
    match = match_of("HassTurnOff", domain="light", floor="up")
    assert plan(match, resolve(match, home)).response_text == "Turning off the lights upstairs."


async def test_plan_carries_bindings(engine: IntentEngine, registry: Registry) -> None:
    result = await plan_text(
        "turn on the led", engine=engine, registry=registry, device_id="demo_kitchen"
    )
    assert result.bindings == {
        "light.xiaozhi_demo_kitchen_led": XiaozhiBinding(device_id="demo_kitchen")
    }
    living = await plan_text("turn on the living room light", engine=engine, registry=registry)
    assert living.bindings == {"light.living_room": VirtualBinding(state={"state": "off"})}


def test_resolution_json() -> None:
    res = resolve(match_of("HassTurnOn", area="hall", domain="light"), SMALL)
    assert res.to_json_dict() == {
        "targets": ["light.hall"],
        "scope": "area",
        "domain": "light",
        "area": "hall",
        "floor": None,
        "error": None,
        "unknown": None,
        "candidates": [],
    }
    assert resolve(NoMatch(text="x"), SMALL).error is ResolutionError.NO_INTENT


def test_plan_is_frozen_data() -> None:
    result = Plan(
        actions=(Action(action="turn_on", entity_id="light.a"),),
        response_text="ok",
        intent="HassTurnOn",
        slots={},
        executed=True,
    )
    with pytest.raises(AttributeError):
        result.executed = False  # type: ignore[misc]
    assert result.to_json_dict()["actions"][0]["entity_id"] == "light.a"
    assert Resolution().ok


# -- what households say (the speech issue, point 7) -------------------------------------------
#
# The demo home as it is in the middle of an evening: the bedroom light is on at 50% (the
# virtual store), the kitchen speaker reported volume 30, the office speaker was at 60 and is
# muted now, its LED (the office light) is on at full brightness; the living room speaker
# never reported a volume; the kitchen light is a zigbee2mqtt bulb whose state is not read
# back. Every phrase is said by a device, so its room is the context.


def household_states(home: Home) -> dict[str, dict[str, Any]]:
    """The virtual store as the hub builds it, after "set the bedroom light to 50%"."""
    states = {
        e.entity_id: dict(e.binding.state)
        for e in home.entities
        if isinstance(e.binding, VirtualBinding)
    }
    states["light.bedroom"] = {"state": "on", "brightness": 128}
    return states


def household_registry(home: Home) -> Registry:
    registry = Registry(home)
    connected = DeviceStatus.CONNECTED
    registry.apply_status(StatusPayload(status=connected, device_id="demo_kitchen", volume=30), 1.0)
    for volume in (60, 0):
        registry.apply_status(
            StatusPayload(
                status=connected, device_id="demo_office", volume=volume, light="on", brightness=255
            ),
            2.0,
        )
    return registry


def vol(device: str, level: float) -> dict[str, Any]:
    return ha("volume_set", f"media_player.xiaozhi_{device}", volume_level=level)


KITCHEN, LIVING, OFFICE = "demo_kitchen", "demo_living_room", "demo_office"

HOUSEHOLD = [
    # text, speaking device, actions, answer
    # relative volume: from the device's reported volume (50 when it never said), steps of 10
    ("turn up the volume", KITCHEN, [vol(KITCHEN, 0.4)], "Turning the volume up to 40%."),
    ("turn the volume up", KITCHEN, [vol(KITCHEN, 0.4)], "Turning the volume up to 40%."),
    ("volume down", KITCHEN, [vol(KITCHEN, 0.2)], "Turning the volume down to 20%."),
    ("lower the volume", KITCHEN, [vol(KITCHEN, 0.2)], "Turning the volume down to 20%."),
    ("louder", KITCHEN, [vol(KITCHEN, 0.4)], "Turning the volume up to 40%."),
    ("make it louder", LIVING, [vol(LIVING, 0.6)], "Turning the volume up to 60%."),
    ("speak louder please", LIVING, [vol(LIVING, 0.6)], "Turning the volume up to 60%."),
    ("quieter", LIVING, [vol(LIVING, 0.4)], "Turning the volume down to 40%."),
    ("make it quieter", KITCHEN, [vol(KITCHEN, 0.2)], "Turning the volume down to 20%."),
    ("turn it up", KITCHEN, [vol(KITCHEN, 0.4)], "Turning the volume up to 40%."),
    (
        "turn down the volume by 20%",
        KITCHEN,
        [vol(KITCHEN, 0.1)],
        "Turning the volume down to 10%.",
    ),
    (
        "increase the volume by 30 percent",
        KITCHEN,
        [vol(KITCHEN, 0.6)],
        "Turning the volume up to 60%.",
    ),
    ("louder", OFFICE, [vol(OFFICE, 0.1)], "Turning the volume up to 10%."),
    (
        "turn up the volume in the living room",
        KITCHEN,
        [vol(LIVING, 0.6)],
        "Turning the volume of the Living room speaker up to 60%.",
    ),
    # mute = volume 0; unmute = back to the last non-zero volume the device reported
    ("mute", KITCHEN, [vol(KITCHEN, 0.0)], "Muting the speaker."),
    ("mute yourself", LIVING, [vol(LIVING, 0.0)], "Muting the speaker."),
    ("turn off the sound", KITCHEN, [vol(KITCHEN, 0.0)], "Muting the speaker."),
    ("mute", OFFICE, [], "The speaker is already muted."),
    ("mute the kitchen", LIVING, [vol(KITCHEN, 0.0)], "Muting the Kitchen speaker."),
    ("unmute", OFFICE, [vol(OFFICE, 0.6)], "Turning the sound back on at 60%."),
    ("turn the sound back on", OFFICE, [vol(OFFICE, 0.6)], "Turning the sound back on at 60%."),
    ("unmute the speaker", KITCHEN, [], "The sound is already on, at 30%."),
    ("unmute", LIVING, [vol(LIVING, 0.5)], "Turning the sound back on at 50%."),
    # state questions: read the current states, say when a state is unknown
    ("is the living room light on", KITCHEN, [], "No, the living room light is off."),
    ("is the bedroom lamp on", KITCHEN, [], "Yes, the bedroom light is on."),
    ("is the light on", OFFICE, [], "Yes, the office light is on."),
    ("are the lights on", LIVING, [], "No, the living room light is off."),
    (
        "is the kitchen light on",
        KITCHEN,
        [],
        "Sorry, I don't know whether the kitchen light is on.",
    ),
    ("is the front door locked", KITCHEN, [], "Yes, the front door is locked."),
    ("is the door locked", KITCHEN, [], "Yes, the front door is locked."),
    ("is the door unlocked", LIVING, [], "No, the front door is locked."),
    ("are the doors locked", KITCHEN, [], "Yes, the front door is locked."),
    ("what is the temperature in the office", KITCHEN, [], "The office is 21 degrees."),
    ("how warm is it in the office", KITCHEN, [], "The office is 21 degrees."),
    ("what's the temperature", OFFICE, [], "The office is 21 degrees."),
    ("what's the temperature", KITCHEN, [], "The office thermostat is 21 degrees."),
    (
        "which lights are on",
        KITCHEN,
        [],
        "The bedroom light and the office light are on. I don't know about the kitchen light.",
    ),
    ("are any lights on", KITCHEN, [], "Yes, the bedroom light and the office light are on."),
    ("are there any lights on upstairs", KITCHEN, [], "Yes, the bedroom light is on."),
    (
        "are all the lights off",
        KITCHEN,
        [],
        "No, the bedroom light and the office light are not off.",
    ),
    (
        "how many lights are on",
        KITCHEN,
        [],
        "2 lights are on. I don't know about the kitchen light.",
    ),
    (
        "what is the state of the bedroom light",
        KITCHEN,
        [],
        "The bedroom light is on at 50% brightness.",
    ),
    # relative brightness: from the light's brightness, steps of 20 points
    (
        "dim the bedroom light",
        KITCHEN,
        [ha("turn_on", "light.bedroom", brightness_pct=30)],
        "Dimming the bedroom light to 30%.",
    ),
    (
        "brighten the bedroom lamp by 30 percent",
        KITCHEN,
        [ha("turn_on", "light.bedroom", brightness_pct=80)],
        "Brightening the bedroom light to 80%.",
    ),
    (
        "make the bedroom light brighter",
        KITCHEN,
        [ha("turn_on", "light.bedroom", brightness_pct=70)],
        "Brightening the bedroom light to 70%.",
    ),
    (
        "turn down the lights in the bedroom",
        KITCHEN,
        [ha("turn_on", "light.bedroom", brightness_pct=30)],
        "Dimming the bedroom light to 30%.",
    ),
    (
        "make it brighter in the bedroom",
        KITCHEN,
        [ha("turn_on", "light.bedroom", brightness_pct=70)],
        "Brightening the bedroom light to 70%.",
    ),
    (
        "brighten the lights upstairs",
        KITCHEN,
        [ha("turn_on", "light.bedroom", brightness_pct=70)],
        "Brightening the bedroom light to 70%.",
    ),
    (
        "brighten the lights",
        LIVING,
        [ha("turn_on", "light.living_room", brightness_pct=20)],
        "Brightening the living room light to 20%.",
    ),
    ("dim the lights", LIVING, [], "The living room light is already off."),
    (
        "dim the office light",
        KITCHEN,
        [ha("turn_on", "light.office", brightness_pct=80)],
        "Dimming the office light to 80%.",
    ),
    ("make it brighter", OFFICE, [], "The office light is already at full brightness."),
    # ... a light whose brightness is not read back is stepped by the light itself
    (
        "dim the lights",
        KITCHEN,
        [ha("turn_on", "light.kitchen", brightness_step_pct=-20)],
        "Dimming the kitchen light by 20%.",
    ),
    # relative temperature: from the thermostat's target, steps of 1 degree
    (
        "make it warmer",
        OFFICE,
        [ha("set_temperature", "climate.office", temperature=22.0)],
        "Raising the office thermostat to 22 degrees.",
    ),
    (
        "make it cooler",
        KITCHEN,
        [ha("set_temperature", "climate.office", temperature=20.0)],
        "Lowering the office thermostat to 20 degrees.",
    ),
    (
        "warmer",
        OFFICE,
        [ha("set_temperature", "climate.office", temperature=22.0)],
        "Raising the office thermostat to 22 degrees.",
    ),
    (
        "turn up the heating",
        KITCHEN,
        [ha("set_temperature", "climate.office", temperature=22.0)],
        "Raising the office thermostat to 22 degrees.",
    ),
    (
        "turn the heating down by 2 degrees",
        KITCHEN,
        [ha("set_temperature", "climate.office", temperature=19.0)],
        "Lowering the office thermostat to 19 degrees.",
    ),
    (
        "raise the temperature in the office",
        LIVING,
        [ha("set_temperature", "climate.office", temperature=22.0)],
        "Raising the office thermostat to 22 degrees.",
    ),
    (
        "lower the temperature",
        OFFICE,
        [ha("set_temperature", "climate.office", temperature=20.0)],
        "Lowering the office thermostat to 20 degrees.",
    ),
    # device-class names: the one entity of that class (in the room, else in the home)
    ("lock the door", KITCHEN, [ha("lock", "lock.front_door")], "Locking the front door."),
    ("unlock the lock", LIVING, [ha("unlock", "lock.front_door")], "Unlocking the front door."),
    (
        "lock the door in the living room",
        KITCHEN,
        [ha("lock", "lock.front_door")],
        "Locking the front door.",
    ),
    (
        "set the thermostat to 22",
        KITCHEN,
        [ha("set_temperature", "climate.office", temperature=22)],
        "Setting the office thermostat to 22 degrees.",
    ),
    (
        "set the temperature to 23 degrees",
        KITCHEN,
        [ha("set_temperature", "climate.office", temperature=23)],
        "Setting the office thermostat to 23 degrees.",
    ),
    (
        "turn off the heating",
        KITCHEN,
        [ha("turn_off", "climate.office")],
        "Turning off the office thermostat.",
    ),
    (
        "what is the temperature of the thermostat",
        KITCHEN,
        [],
        "The office thermostat is 21 degrees.",
    ),
    # absolute brightness with the area (or the verb) elsewhere in the sentence
    (
        "set brightness to 40% in the bedroom",
        KITCHEN,
        [ha("turn_on", "light.bedroom", brightness_pct=40)],
        "Setting the bedroom light to 40% brightness.",
    ),
    (
        "in the bedroom set the brightness to 20%",
        KITCHEN,
        [ha("turn_on", "light.bedroom", brightness_pct=20)],
        "Setting the bedroom light to 20% brightness.",
    ),
    (
        "set the brightness in the kitchen to 70 percent",
        LIVING,
        [ha("turn_on", "light.kitchen", brightness_pct=70)],
        "Setting the kitchen light to 70% brightness.",
    ),
    (
        "in the kitchen set the lights to 60%",
        LIVING,
        [ha("turn_on", "light.kitchen", brightness_pct=60)],
        "Setting the kitchen light to 60% brightness.",
    ),
    (
        "set the lights to 30% in the bedroom",
        KITCHEN,
        [ha("turn_on", "light.bedroom", brightness_pct=30)],
        "Setting the bedroom light to 30% brightness.",
    ),
    (
        "dim the bedroom light to 10 percent",
        KITCHEN,
        [ha("turn_on", "light.bedroom", brightness_pct=10)],
        "Setting the bedroom light to 10% brightness.",
    ),
    (
        "dim the lights to 25%",
        LIVING,
        [ha("turn_on", "light.living_room", brightness_pct=25)],
        "Setting the living room light to 25% brightness.",
    ),
]


@pytest.mark.parametrize("case", HOUSEHOLD, ids=[f"{c[0]}-{c[1]}" for c in HOUSEHOLD])
async def test_household_phrases(
    engine: IntentEngine, home: Home, case: tuple[str, str, list[Any], str]
) -> None:
    text, device, actions, answer = case
    result = await plan_text(
        text,
        engine=engine,
        registry=household_registry(home),
        device_id=device,
        states=household_states(home),
    )
    assert [a.to_json_dict() for a in result.actions] == actions
    assert result.response_text == answer
    assert result.executed is True
    assert result.error is None


OUT_OF_DOMAIN = [
    # text, speaking device, error, answer: nothing is ever executed
    ("tell me a joke", KITCHEN, "unsupported_intent", "Sorry, I can't do that yet."),
    ("what's the weather tomorrow", KITCHEN, "unsupported_intent", "Sorry, I can't do that yet."),
    ("what is the weather", LIVING, "unsupported_intent", "Sorry, I can't do that yet."),
    ("what is the capital of france", KITCHEN, "unsupported_intent", "Sorry, I can't do that yet."),
    ("sing me a song", KITCHEN, "no_intent", "Sorry, I couldn't understand that."),
    ("order a pizza", KITCHEN, "no_intent", "Sorry, I couldn't understand that."),
    ("is the garage door open", KITCHEN, "no_intent", "Sorry, I couldn't understand that."),
    (
        "turn on the garage light",
        KITCHEN,
        "unknown_name",
        "I don't know a device called garage light.",
    ),
    (
        "turn on the lights in the attic",
        KITCHEN,
        "unknown_area",
        "I don't know an area called attic.",
    ),
    ("dim the lights in the attic", KITCHEN, "unknown_area", "I don't know an area called attic."),
    ("is the attic light on", KITCHEN, "unknown_area", "I don't know an area called attic."),
    ("make it warmer in the attic", KITCHEN, "unknown_area", "I don't know an area called attic."),
    ("set the bedroom light to 300%", KITCHEN, "out_of_range", "Sorry, 300 is out of range."),
    (
        "set brightness to 150% in the bedroom",
        KITCHEN,
        "out_of_range",
        "Sorry, 150 is out of range.",
    ),
    ("turn up the volume by 200%", KITCHEN, "out_of_range", "Sorry, 200 is out of range."),
    ("set volume to 120", KITCHEN, "out_of_range", "Sorry, 120 is out of range."),
    (
        "set the temperature to 99 degrees",
        OFFICE,
        "out_of_range",
        "Sorry, the office thermostat can be set from 7 to 35 degrees.",
    ),
    (
        "make it warmer in the kitchen",
        OFFICE,
        "no_targets",
        "Sorry, there are no thermostats in the kitchen.",
    ),
    (
        "lock the door in the kitchen",
        KITCHEN,
        "no_targets",
        "Sorry, there are no locks in the kitchen.",
    ),
    # negations: refused whatever follows
    ("don't turn on the kitchen light", KITCHEN, "negated", "OK, I won't do anything."),
    ("do not unlock the door", KITCHEN, "negated", "OK, I won't do anything."),
    ("never unlock the front door", KITCHEN, "negated", "OK, I won't do anything."),
    ("please don't turn off the lights", LIVING, "negated", "OK, I won't do anything."),
    ("Don’t mute", KITCHEN, "negated", "OK, I won't do anything."),
    ("dont lock the door", KITCHEN, "negated", "OK, I won't do anything."),
    ("don't make it warmer", OFFICE, "negated", "OK, I won't do anything."),
    ("turn on the kitchen light, no, don't", KITCHEN, "negated", "OK, I won't do anything."),
    ("I do not want the volume up", KITCHEN, "negated", "OK, I won't do anything."),
]


@pytest.mark.parametrize("case", OUT_OF_DOMAIN, ids=[f"{c[0]}-{c[1]}" for c in OUT_OF_DOMAIN])
async def test_out_of_domain_executes_nothing(
    engine: IntentEngine, home: Home, case: tuple[str, str, str, str]
) -> None:
    text, device, error, answer = case
    result = await plan_text(
        text,
        engine=engine,
        registry=household_registry(home),
        device_id=device,
        states=household_states(home),
    )
    assert result.actions == ()
    assert result.bindings == {}
    assert result.executed is False
    assert (result.error, result.response_text) == (error, answer)


# -- device-class names in a home with two of a kind -------------------------------------------

TWO_OF_A_KIND = parse_home(
    {
        "areas": [
            {"id": "hall", "name": "Hall"},
            {"id": "yard", "name": "Yard"},
            {"id": "study", "name": "Study"},
            {"id": "nursery", "name": "Nursery"},
        ],
        "entities": [
            {
                "entity_id": "lock.front",
                "name": "front door",
                "area": "hall",
                "binding": {"type": "virtual", "state": {"state": "locked"}},
            },
            {
                "entity_id": "lock.back",
                "name": "back door",
                "area": "yard",
                "binding": {"type": "virtual", "state": {"state": "unlocked"}},
            },
            {"entity_id": "climate.study", "name": "study thermostat", "area": "study"},
            {
                "entity_id": "climate.nursery",
                "name": "nursery thermostat",
                "area": "nursery",
                "binding": {"type": "virtual", "state": {"temperature": 20}},
            },
            {"entity_id": "light.nursery", "name": "nursery lamp", "area": "nursery"},
        ],
        "devices": [
            {"id": "hall_speaker", "name": "Hall speaker", "area": "hall"},
            {"id": "nursery_speaker", "name": "Nursery speaker", "area": "nursery"},
            {"id": "nowhere_speaker", "name": "Speaker"},
        ],
    }
)


@pytest.fixture(scope="module")
def two_engine() -> IntentEngine:
    return IntentEngine(TWO_OF_A_KIND)


TWO_CASES = [
    # text, speaking device, actions, answer, error
    (
        "lock the door",
        "nowhere_speaker",
        [],
        "There are 2 locks: the back door and the front door. Please say which one.",
        "ambiguous",
    ),
    ("lock the door", "hall_speaker", [ha("lock", "lock.front")], "Locking the front door.", None),
    ("is the door locked", "hall_speaker", [], "Yes, the front door is locked.", None),
    (
        "unlock the door in the yard",
        "hall_speaker",
        [ha("unlock", "lock.back")],
        "Unlocking the back door.",
        None,
    ),
    (
        "set the thermostat to 21",
        "hall_speaker",
        [],
        "There are 2 thermostats: the nursery thermostat and the study thermostat."
        " Please say which one.",
        "ambiguous",
    ),
    (
        "make it warmer",
        "hall_speaker",
        [],
        "There are 2 thermostats: the nursery thermostat and the study thermostat."
        " Please say which one.",
        "ambiguous",
    ),
    (
        "make it warmer",
        "nursery_speaker",
        [ha("set_temperature", "climate.nursery", temperature=21.0)],
        "Raising the nursery thermostat to 21 degrees.",
        None,
    ),
    (
        "turn down the heating",
        "nursery_speaker",
        [ha("set_temperature", "climate.nursery", temperature=19.0)],
        "Lowering the nursery thermostat to 19 degrees.",
        None,
    ),
    (  # a thermostat whose target was never reported: not guessed
        "turn up the study thermostat",
        "hall_speaker",
        [],
        "Sorry, I don't know what the study thermostat is set to.",
        None,
    ),
    ("are the doors locked", "hall_speaker", [], "No, the back door is not locked.", None),
    ("which doors are locked", "hall_speaker", [], "The front door is locked.", None),
    (
        "are all the doors unlocked",
        "hall_speaker",
        [],
        "No, the front door is not unlocked.",
        None,
    ),
    ("dim the lights", "nursery_speaker", [], "The nursery lamp is already off.", None),
]


@pytest.mark.parametrize("case", TWO_CASES, ids=[f"{c[0]}-{c[1]}" for c in TWO_CASES])
async def test_device_class_names_need_one_candidate(
    two_engine: IntentEngine, case: tuple[str, str, list[Any], str, str | None]
) -> None:
    text, device, actions, answer, error = case
    result = await plan_text(
        text, engine=two_engine, registry=Registry(TWO_OF_A_KIND), device_id=device
    )
    assert [a.to_json_dict() for a in result.actions] == actions
    assert result.response_text == answer
    assert (result.error, result.executed) == (error, error is None)


def test_ambiguity_lists_the_candidates() -> None:
    match = match_of("HassTurnOn", name="class:lock")
    res = resolve(match, TWO_OF_A_KIND)
    assert res.error is ResolutionError.AMBIGUOUS
    assert [e.entity_id for e in res.candidates] == ["lock.front", "lock.back"]
    assert res.to_json_dict()["candidates"] == ["lock.front", "lock.back"]
    in_the_hall = resolve(match, TWO_OF_A_KIND, area="hall")
    assert (in_the_hall.scope, [e.entity_id for e in in_the_hall.targets]) == (
        Scope.AREA,
        ["lock.front"],
    )
    nowhere = resolve(match_of("HassTurnOn", name="class:fan"), TWO_OF_A_KIND)
    assert (nowhere.error, nowhere.scope) == (ResolutionError.NO_TARGETS, Scope.CLASS)
    assert plan(match, nowhere).response_text == "Sorry, there are no fans."


# -- answers and relative changes on their own ---------------------------------------------

EVENING = parse_home(
    {
        "floors": [{"id": "ground", "name": "ground floor"}],
        "areas": [
            {"id": "hall", "name": "Hall", "floor": "ground"},
            {"id": "den", "name": "Den", "floor": "ground"},
        ],
        "entities": [
            {
                "entity_id": "light.hall_a",
                "name": "hall lamp",
                "area": "hall",
                "binding": {"type": "virtual", "state": {"state": "on", "brightness": 255}},
            },
            {
                "entity_id": "light.hall_b",
                "name": "hall spot",
                "area": "hall",
                "binding": {"type": "virtual", "state": {"state": "on"}},
            },
            {
                "entity_id": "light.den",
                "name": "den light",
                "area": "den",
                "binding": {"type": "homeassistant", "base_url": "http://ha", "token_env": "T"},
            },
            {
                "entity_id": "climate.hall_a",
                "name": "hall thermostat",
                "area": "hall",
                "binding": {
                    "type": "virtual",
                    "state": {"state": "heat", "temperature": 30, "max_temp": 30},
                },
            },
            {
                "entity_id": "climate.hall_b",
                "name": "hall radiator",
                "area": "hall",
                "binding": {"type": "virtual", "state": {"temperature": 20}},
            },
            {"entity_id": "climate.den", "name": "den thermostat", "area": "den"},
            {
                "entity_id": "media_player.den_tv",
                "name": "den tv",
                "area": "den",
                "binding": {"type": "virtual", "state": {"state": "on", "volume_level": 1.0}},
            },
        ],
        "devices": [{"id": "den_speaker", "name": "Den speaker", "area": "den"}],
    }
)


def evening(
    intent: str, *, response: str | None = None, device: str | None = None, **slots: Any
) -> Plan:
    match = IntentMatch(intent=intent, text="typed", slots=slots, response=response)
    registry = Registry(EVENING)
    registry.apply_status(
        StatusPayload(status=DeviceStatus.CONNECTED, device_id="den_speaker", volume=100), 1.0
    )
    res = resolve(match, EVENING, speaking_device=device, device_areas=registry.device_areas())
    return plan(match, res, devices=registry.device)


def said(result: Plan) -> tuple[list[tuple[str, str, dict[str, Any]]], str]:
    return [
        (a.action, a.entity_id, dict(a.parameters)) for a in result.actions
    ], result.response_text


def test_questions_about_several_entities() -> None:
    lights = {"domain": "light", "state": "on"}
    assert said(evening("HassGetState", response="any", area="den", **lights)) == (
        [],
        "Sorry, I don't know whether the den light is on.",
    )
    assert said(evening("HassGetState", response="any", **lights))[1] == (
        "Yes, the hall lamp and the hall spot are on."
    )
    off = {"domain": "light", "state": "off"}
    assert said(evening("HassGetState", response="any", **off))[1] == (
        "None of the lights I know of are off; I don't know about the den light."
    )
    assert said(evening("HassGetState", response="any", area="hall", **off))[1] == (
        "No, none of the lights in the hall are off."
    )
    assert said(evening("HassGetState", response="all", **lights))[1] == (
        "All the lights I know of are on; I don't know about the den light."
    )
    assert said(evening("HassGetState", response="all", area="hall", **lights))[1] == (
        "Yes, all the lights in the hall are on."
    )
    assert said(evening("HassGetState", response="which", area="hall", **off))[1] == (
        "No lights in the hall are off."
    )
    assert said(evening("HassGetState", response="which", **off))[1] == (
        "None of the lights I know of are off; I don't know about the den light."
    )
    assert said(evening("HassGetState", response="how_many", area="hall", **off))[1] == (
        "No lights are off."
    )
    assert said(evening("HassGetState", response="how_many", floor="ground", **lights))[1] == (
        "2 lights are on. I don't know about the den light."
    )


@pytest.mark.parametrize(
    ("name", "answer"),
    [
        ("light.hall_a", "The hall lamp is on."),
        ("climate.hall_a", "The hall thermostat is set to 30 degrees."),
        ("climate.den", "Sorry, I don't know the state of the den thermostat."),
        ("media_player.den_tv", "The den tv is at 100% volume."),
        ("light.den", "Sorry, I don't know the state of the den light."),
    ],
)
def test_describing_one_entity(name: str, answer: str) -> None:
    assert said(evening("HassGetState", response="one", name=name)) == ([], answer)


def test_relative_volume_at_the_limits_and_for_a_room() -> None:
    assert said(evening("HassSetVolumeRelative", device="den_speaker", volume_step="up")) == (
        [],
        "The volume is already at 100%.",
    )
    assert said(evening("HassSetVolumeRelative", area="den", volume_step="up")) == (
        [],
        "The volume of the speakers in the den is already as loud as it goes.",
    )
    assert said(evening("HassSetVolumeRelative", area="den", volume_step=-30)) == (
        [
            ("volume_set", "media_player.den_tv", {"volume_level": 0.7}),
            ("volume_set", "media_player.xiaozhi_den_speaker", {"volume_level": 0.7}),
        ],
        "Turning the volume of the speakers in the den down.",
    )
    assert said(evening("HassMediaPlayerMute", area="den"))[1] == "Muting the speakers in the den."
    assert said(evening("HassMediaPlayerUnmute", area="den")) == (
        [],
        "The sound of the speakers in the den is already on.",
    )


def test_unmute_a_room_restores_each_speaker() -> None:
    match = IntentMatch(intent="HassMediaPlayerUnmute", text="typed", slots={"area": "den"})
    registry = Registry(EVENING)
    for volume in (35, 0):
        registry.apply_status(
            StatusPayload(status=DeviceStatus.CONNECTED, device_id="den_speaker", volume=volume),
            1.0,
        )
    states = {"media_player.den_tv": {"volume_level": 0.0}}
    res = resolve(match, EVENING, device_areas=registry.device_areas())
    assert said(plan(match, res, states=states, devices=registry.device)) == (
        [
            ("volume_set", "media_player.den_tv", {"volume_level": 0.5}),
            ("volume_set", "media_player.xiaozhi_den_speaker", {"volume_level": 0.35}),
        ],
        "Turning the sound of the speakers in the den back on.",
    )


def test_relative_brightness_at_the_limits_and_for_a_room() -> None:
    up = {"domain": "light", "direction": "up"}
    assert said(evening("XiaozhiLightRelative", area="hall", **up)) == (
        [],
        "The lights in the hall are already at full brightness.",
    )
    assert said(evening("XiaozhiLightRelative", area="hall", domain="light", direction="down")) == (
        [
            ("turn_on", "light.hall_a", {"brightness_pct": 80}),
            ("turn_on", "light.hall_b", {"brightness_pct": 80}),
        ],
        "Dimming the lights in the hall.",
    )
    assert said(evening("XiaozhiLightRelative", name="light.den", **up)) == (
        [("turn_on", "light.den", {"brightness_step_pct": 20})],
        "Brightening the den light by 20%.",
    )
    states = {"light.hall_a": {"state": "on", "brightness": 26}}  # 10%
    match = match_of("XiaozhiLightRelative", name="light.hall_a", direction="down")
    assert said(plan(match, resolve(match, EVENING), states=states)) == (
        [("turn_off", "light.hall_a", {})],
        "Turning off the hall lamp.",
    )


def test_relative_temperature_at_the_limits_and_for_a_room() -> None:
    warmer = {"direction": "up"}
    assert said(evening("XiaozhiClimateRelative", name="climate.hall_a", **warmer)) == (
        [],
        "The hall thermostat is already at 30 degrees.",
    )
    assert said(evening("XiaozhiClimateRelative", area="hall", direction="down", step=1.5)) == (
        [
            ("set_temperature", "climate.hall_a", {"temperature": 28.5}),
            ("set_temperature", "climate.hall_b", {"temperature": 18.5}),
        ],
        "Lowering the thermostats in the hall by 1.5 degrees.",
    )
    assert said(evening("XiaozhiClimateRelative", floor="ground", **warmer)) == (
        [("set_temperature", "climate.hall_b", {"temperature": 21.0})],
        "Raising the thermostats on the ground floor by 1 degree."
        " I don't know what the den thermostat is set to.",
    )
    assert said(evening("XiaozhiClimateRelative", name="climate.den", **warmer)) == (
        [],
        "Sorry, I don't know what the den thermostat is set to.",
    )
    states = {"climate.hall_b": {"temperature": 35}}
    match = match_of("XiaozhiClimateRelative", area="hall", **warmer)
    assert said(plan(match, resolve(match, EVENING), states=states)) == (
        [],
        "The thermostats in the hall are already as warm as they go.",
    )


def test_a_device_that_is_not_connected_reports_nothing_true() -> None:
    home = parse_home(
        {
            "entities": [
                {
                    "entity_id": "light.desk",
                    "name": "desk light",
                    "binding": {"type": "xiaozhi", "device_id": "desk", "command": "led"},
                }
            ],
            "devices": [{"id": "desk", "name": "Desk speaker"}],
        }
    )
    registry = Registry(home)
    status = StatusPayload(status=DeviceStatus.CONNECTED, device_id="desk", light="off")
    registry.apply_status(status, 1.0)
    match = IntentMatch(
        intent="HassGetState",
        text="typed",
        slots={"name": "light.desk", "state": "on"},
        response="one_yesno",
    )
    res = resolve(match, home)
    assert plan(match, res, devices=registry.device).response_text == "No, the desk light is off."
    registry.apply_status(status.model_copy(update={"status": DeviceStatus.DISCONNECTED}), 2.0)
    assert plan(match, res, devices=registry.device).response_text == (
        "Sorry, I don't know whether the desk light is on."
    )
    assert plan(match, res).response_text == "Sorry, I don't know whether the desk light is on."
