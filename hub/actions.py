"""Intent + resolved targets → Home Assistant-style actions and the sentence to answer with.

``plan`` is pure: it decides *what* to do (a list of :class:`xiaozhi.payloads.Action`) and what
to say; :mod:`xiaozhi_hub.executors` turns each action into an effect by the target's binding,
and the hub's runner performs the effects. The mapping follows Home Assistant's intent
handlers, so an action is 1:1 a Home Assistant service call:

==============================  ====================================================
intent                          action (service) on each target
==============================  ====================================================
HassTurnOn / HassTurnOff        ``turn_on``/``turn_off``; a lock ``lock``/``unlock``,
                                a cover ``open_cover``/``close_cover`` (HA's semantics)
HassLightSet                    ``turn_on`` with ``brightness_pct`` / ``color_name``
HassClimateSetTemperature       ``set_temperature`` with ``temperature``
HassClimateGetTemperature,      none: answered from the current state
HassGetState                    (:mod:`xiaozhi_hub.questions`)
HassSetVolume,                  ``volume_set`` with ``volume_level`` 0.0-1.0 on the device's
XiaozhiSetDeviceVolume          speaker entity (a ``set_volume`` command to the device)
HassSetVolumeRelative,          ``volume_set``, ``turn_on``/``turn_off`` or ``set_temperature``
HassMediaPlayerMute/Unmute,     with the value computed from the current state
XiaozhiLightRelative,           (:mod:`xiaozhi_hub.adjustments`)
XiaozhiClimateRelative
XiaozhiLedSet                   ``turn_on``/``turn_off`` on the device's LED entity
XiaozhiDeviceStatus             ``update_entity`` on the device (a ``get_status`` command)
==============================  ====================================================

"turn on the living room light" becomes exactly
``{"type":"homeassistant","action":"turn_on","entity_id":"light.living_room","parameters":{}}``.

The answer is in the language the text was understood in (the match's ``language``): ours in
English, home-assistant-intents' response templates in any other (:mod:`xiaozhi_hub.responses`);
the actions are the same in every language.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from xiaozhi.payloads import Action
from xiaozhi_hub import adjustments, questions
from xiaozhi_hub.current_state import CurrentState
from xiaozhi_hub.home import Binding, Entity
from xiaozhi_hub.intents import IntentMatch, NoMatch
from xiaozhi_hub.languages import is_english
from xiaozhi_hub.registry import DeviceRecord
from xiaozhi_hub.resolve import Refusal, Resolution, ResolutionError, Scope
from xiaozhi_hub.responses import answers_for
from xiaozhi_hub.wording import and_list, floor_phrase, num, plural, target_phrase

__all__ = ["Plan", "plan"]

_ON_ACTION = {"lock": "lock", "cover": "open_cover"}
_OFF_ACTION = {"lock": "unlock", "cover": "close_cover"}
_VERBS = {
    "turn_on": "Turning on",
    "turn_off": "Turning off",
    "lock": "Locking",
    "unlock": "Unlocking",
    "open_cover": "Opening",
    "close_cover": "Closing",
}


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do for one voice command, and what to answer.

    Attributes:
        actions: what to execute, in order (none for questions and for failures).
        response_text: the sentence for the speaking device (tts) and the events.
        intent: the recognized intent name (None when nothing matched).
        slots: the recognized slot values.
        executed: True when the hub acts on (or answers) the command; False when nothing is
            done and ``response_text`` says why (unknown name, no match...).
        error: the :class:`~xiaozhi_hub.resolve.ResolutionError` value when not executed.
        bindings: entity id → binding for every action's target, so the runner needs no lookup.
        text: the words the device heard.
        language: the language the text was understood and ``response_text`` is said in.
    """

    actions: tuple[Action, ...]
    response_text: str
    intent: str | None
    slots: Mapping[str, Any]
    executed: bool
    error: str | None = None
    bindings: Mapping[str, Binding] = field(default_factory=dict)
    text: str = ""
    language: str = "en"

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "intent": self.intent,
            "slots": dict(self.slots),
            "actions": [a.to_json_dict() for a in self.actions],
            "response": self.response_text,
            "executed": self.executed,
            "error": self.error,
        }


def plan(
    match: IntentMatch | NoMatch,
    resolution: Resolution,
    speaking_device: DeviceRecord | None = None,
    *,
    states: Mapping[str, Mapping[str, Any]] | None = None,
    devices: Callable[[str], DeviceRecord | None] | None = None,
) -> Plan:
    """Turn a recognized and resolved intent into actions and a response.

    Args:
        match: from :meth:`~xiaozhi_hub.intents.IntentEngine.recognize`.
        resolution: from :func:`~xiaozhi_hub.resolve.resolve` for the same match.
        speaking_device: the registry's record of the device that heard it (its telemetry
            answers "what is your status").
        states: current entity states (entity id → attributes, e.g. the virtual store's
            ``{"current_temperature": 21}``), for questions and relative changes; a virtual
            entity's initial state is used when absent.
        devices: device id → the registry's record (``Registry.device``): a xiaozhi
            device's telemetry is the state of its LED and speaker. None: unknown.
    """
    intent = match.intent if isinstance(match, IntentMatch) else None
    slots = dict(match.slots) if isinstance(match, IntentMatch) else {}
    language = match.language
    other = None if is_english(language) else answers_for(language)
    if not resolution.ok:
        text = _error_text(resolution)
        return Plan(
            actions=(),
            response_text=other.error(match, resolution, text) if other else text,
            intent=intent,
            slots=slots,
            executed=False,
            error=str(resolution.error),
            text=match.text,
            language=language,
        )
    assert isinstance(match, IntentMatch)  # a NoMatch always resolves to an error
    now = CurrentState(states or {}, devices or _no_device, speaking_device)
    try:
        actions, text = _ACTIONS[match.intent](match, resolution, now)
    except Refusal as refused:
        return Plan(
            actions=(),
            response_text=other.refusal(refused, refused.text) if other else refused.text,
            intent=intent,
            slots=slots,
            executed=False,
            error=str(refused.error),
            text=match.text,
            language=language,
        )
    if other is not None:
        text = other.answer(match, resolution, now, actions, text)
    return Plan(
        actions=tuple(actions),
        response_text=text,
        intent=intent,
        slots=slots,
        executed=True,
        bindings={e.entity_id: e.binding for e in resolution.targets},
        text=match.text,
        language=language,
    )


# -- per intent --------------------------------------------------------------------------

_Result = tuple[list[Action], str]


def _no_device(_: str) -> DeviceRecord | None:
    return None


def _action(name: str, entity: Entity, **parameters: Any) -> Action:
    return Action(action=name, entity_id=entity.entity_id, parameters=parameters)


def _turn(match: IntentMatch, res: Resolution, _: CurrentState) -> _Result:
    on = match.intent == "HassTurnOn"
    table = _ON_ACTION if on else _OFF_ACTION
    default = "turn_on" if on else "turn_off"
    actions = [_action(table.get(e.domain, default), e) for e in res.targets]
    verb = _VERBS[table.get(res.domain or "", default)]
    return actions, f"{verb} {target_phrase(res)}."


def _light_set(match: IntentMatch, res: Resolution, _: CurrentState) -> _Result:
    parameters: dict[str, Any] = {}
    if "brightness" in match.slots:
        parameters["brightness_pct"] = match.slots["brightness"]
    if "color" in match.slots:
        parameters["color_name"] = match.slots["color"]
    if "temperature" in match.slots:
        parameters["color_temp_kelvin"] = match.slots["temperature"]
    actions = [_action("turn_on", e, **parameters) for e in res.targets]
    if "brightness_pct" in parameters:
        setting = f"{parameters['brightness_pct']}% brightness"
    elif "color_name" in parameters:
        setting = str(parameters["color_name"])
    elif "color_temp_kelvin" in parameters:
        setting = f"{parameters['color_temp_kelvin']} kelvin"
    else:
        return actions, f"Turning on {target_phrase(res)}."
    return actions, f"Setting {target_phrase(res)} to {setting}."


def _set_temperature(match: IntentMatch, res: Resolution, now: CurrentState) -> _Result:
    temperature = match.slots["temperature"]
    for entity in res.targets:
        low, high = now.temperature_range(entity)
        if not low <= temperature <= high:
            raise Refusal(
                ResolutionError.OUT_OF_RANGE,
                f"Sorry, the {entity.name} can be set from {num(low)} to {num(high)} degrees.",
                name=entity.name,
                low=low,
                high=high,
            )
    actions = [_action("set_temperature", e, temperature=temperature) for e in res.targets]
    return actions, f"Setting {target_phrase(res)} to {num(temperature)} degrees."


def _get_temperature(_: IntentMatch, res: Resolution, now: CurrentState) -> _Result:
    return [], questions.get_temperature(res, now)


def _get_state(match: IntentMatch, res: Resolution, now: CurrentState) -> _Result:
    return [], questions.get_state(match, res, now)


def _set_volume(match: IntentMatch, res: Resolution, _: CurrentState) -> _Result:
    percent = match.slots.get("volume", match.slots.get("volume_level"))
    level = round(percent / 100, 2)
    actions = [_action("volume_set", e, volume_level=level) for e in res.targets]
    if res.scope is Scope.DEVICE:
        return actions, f"Setting the volume to {percent}%."
    return actions, f"Setting the volume of {target_phrase(res)} to {percent}%."


def _led(match: IntentMatch, res: Resolution, _: CurrentState) -> _Result:
    on = match.slots.get("state") == "on"
    actions = [_action("turn_on" if on else "turn_off", e) for e in res.targets]
    return actions, f"Turning {'on' if on else 'off'} the LED."


def _status(_: IntentMatch, res: Resolution, now: CurrentState) -> _Result:
    actions = [_action("update_entity", e) for e in res.targets]
    return actions, _status_text(now.speaking_device)


_ACTIONS: Mapping[str, Callable[[IntentMatch, Resolution, CurrentState], _Result]] = {
    "HassTurnOn": _turn,
    "HassTurnOff": _turn,
    "HassLightSet": _light_set,
    "HassClimateSetTemperature": _set_temperature,
    "HassClimateGetTemperature": _get_temperature,
    "HassGetState": _get_state,
    "HassSetVolume": _set_volume,
    "XiaozhiSetDeviceVolume": _set_volume,
    "HassSetVolumeRelative": adjustments.volume_relative,
    "HassMediaPlayerMute": adjustments.mute,
    "HassMediaPlayerUnmute": adjustments.unmute,
    "XiaozhiLightRelative": adjustments.light_relative,
    "XiaozhiClimateRelative": adjustments.climate_relative,
    "XiaozhiLedSet": _led,
    "XiaozhiDeviceStatus": _status,
}


# -- wording --------------------------------------------------------------------------


_SAID_ERRORS = {
    ResolutionError.UNKNOWN_NAME: "I don't know a device called {}.",
    ResolutionError.UNKNOWN_AREA: "I don't know an area called {}.",
    ResolutionError.UNKNOWN_FLOOR: "I don't know a floor called {}.",
    ResolutionError.OUT_OF_RANGE: "Sorry, {} is out of range.",
}
"""Errors about words the user said: the answer repeats them."""

_FIXED_ERRORS = {
    ResolutionError.NO_AREA: "Sorry, I don't know which room you mean.",
    ResolutionError.NEGATED: "OK, I won't do anything.",
    ResolutionError.NO_DEVICE: "Sorry, I don't know which device is speaking.",
    ResolutionError.UNSUPPORTED: "Sorry, I can't do that yet.",
}


def _error_text(res: Resolution) -> str:
    error = res.error
    if error in _SAID_ERRORS:
        return _SAID_ERRORS[error].format(res.unknown)
    if error is ResolutionError.NO_TARGETS:
        where = ""
        if res.area is not None:
            where = f" in the {res.area.name.casefold()}"
        elif res.floor is not None:
            where = f" {floor_phrase(res)}"
        return f"Sorry, there are no {plural(res.domain)}{where}."
    if error is ResolutionError.AMBIGUOUS:  # a refusal that names the choices, not a dialogue
        where = f" in the {res.area.name.casefold()}" if res.area is not None else ""
        names = and_list(sorted((e.name for e in res.candidates), key=str.casefold))
        count = len(res.candidates)
        return f"There are {count} {plural(res.domain)}{where}: {names}. Please say which one."
    return _FIXED_ERRORS.get(error, "Sorry, I couldn't understand that.")  # type: ignore[arg-type]


def _duration(seconds: int) -> str:
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [
        f"{n} {unit}{'s' if n != 1 else ''}"
        for n, unit in ((days, "day"), (hours, "hour"), (minutes, "minute"))
        if n
    ]
    return " ".join(parts[:2]) or "less than a minute"


def _status_text(device: DeviceRecord | None) -> str:
    if device is None or device.status is None:
        return "I'm online, but the hub has no status from me yet."
    parts = []
    telemetry = device.telemetry
    if isinstance(telemetry.get("wifi_signal"), int | float):
        parts.append(f"Wi-Fi signal {num(telemetry['wifi_signal'])} dBm")
    if isinstance(telemetry.get("uptime"), int | float):
        parts.append(f"up {_duration(telemetry['uptime'])}")
    if isinstance(telemetry.get("memory_usage"), int | float):
        parts.append(f"memory {num(telemetry['memory_usage'])}% used")
    head = f"I'm {device.status.value}"
    return f"{head}: {', '.join(parts)}." if parts else f"{head}."
