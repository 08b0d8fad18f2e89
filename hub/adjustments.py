"""Relative changes: "louder", "mute", "dim the bedroom light", "make it warmer".

Home Assistant's services take absolute values, and the devices do too (a xiaozhi
``set_volume`` takes 0-100), so each relative request is computed from the target's current
state (:class:`~xiaozhi_hub.current_state.CurrentState`) into an absolute action, and the
answer says the value reached ("Turning the volume up to 60%."), which is then true:

==========================  ================================  ================================
intent                      computed from                     action on each target
==========================  ================================  ================================
HassSetVolumeRelative       the volume, ± :data:`VOLUME_STEP`  ``volume_set``, clamped to 0-100
                            points (or the step said)
HassMediaPlayerMute         -                                 ``volume_set`` 0
HassMediaPlayerUnmute       the last non-zero volume          ``volume_set`` back to it
XiaozhiLightRelative        the brightness, ±                 ``turn_on`` with ``brightness_pct``
                            :data:`BRIGHTNESS_STEP` points    (``turn_off`` at 0)
XiaozhiClimateRelative      the target temperature, ±         ``set_temperature``, within the
                            :data:`TEMPERATURE_STEP` degrees  thermostat's min/max
==========================  ================================  ================================

When the current value is unknown: a volume is taken as :data:`ASSUMED_VOLUME` (the answer
names the level set, so it stays true); a brightness is changed relatively by the light
itself (``brightness_step_pct``, Home Assistant's own parameter; zigbee2mqtt's
``brightness_step``), and the answer names the step, not a level; a thermostat's target is
never guessed: nothing is done and the answer says so. A target already at its limit gets
no action ("The volume is already at 100%.").
"""

from __future__ import annotations

from typing import Any

from xiaozhi.payloads import Action
from xiaozhi_hub.current_state import CurrentState
from xiaozhi_hub.home import Entity
from xiaozhi_hub.intents import IntentMatch
from xiaozhi_hub.resolve import Resolution, Scope
from xiaozhi_hub.wording import and_list, capitalized, num, target_phrase, verb_be

__all__ = [
    "ASSUMED_VOLUME",
    "BRIGHTNESS_STEP",
    "TEMPERATURE_STEP",
    "VOLUME_STEP",
    "climate_relative",
    "light_relative",
    "mute",
    "unmute",
    "volume_relative",
]

VOLUME_STEP = 10
"""Percentage points of "louder" / "volume down"."""

ASSUMED_VOLUME = 50
"""The volume a speaker is taken to have when it never reported one."""

BRIGHTNESS_STEP = 20
"""Percentage points of "dim" / "brighten"."""

TEMPERATURE_STEP = 1.0
"""Degrees of "warmer" / "turn down the heating"."""

_Result = tuple[list[Action], str]


def _action(name: str, entity: Entity, **parameters: Any) -> Action:
    return Action(action=name, entity_id=entity.entity_id, parameters=parameters)


def _level(percent: int) -> float:
    return round(percent / 100, 2)


def _volume_of(res: Resolution) -> str:
    """ "the volume" for the speaking device, "the volume of the den tv" otherwise."""
    if res.scope is Scope.DEVICE:
        return "the volume"
    return f"the volume of {target_phrase(res)}"


def volume_relative(match: IntentMatch, res: Resolution, now: CurrentState) -> _Result:
    """ "louder", "turn the volume down", "turn up the volume by 20%"."""
    said = match.slots.get("volume_step")
    if isinstance(said, int | float) and not isinstance(said, bool):
        step = round(said)
    else:
        step = VOLUME_STEP if said != "down" else -VOLUME_STEP
    way = "up" if step > 0 else "down"
    actions, levels = [], []
    for entity in res.targets:
        current = now.volume_pct(entity)
        current = ASSUMED_VOLUME if current is None else current
        new = min(100, max(0, current + step))
        levels.append(new)
        if new != current:
            actions.append(_action("volume_set", entity, volume_level=_level(new)))
    volume = _volume_of(res)
    if len(res.targets) > 1:
        if not actions:
            limit = "as loud" if step > 0 else "as low"
            return actions, f"{capitalized(volume)} is already {limit} as it goes."
        return actions, f"Turning {volume} {way}."
    if not actions:
        return actions, f"{capitalized(volume)} is already at {levels[0]}%."
    return actions, f"Turning {volume} {way} to {levels[0]}%."


def mute(_: IntentMatch, res: Resolution, now: CurrentState) -> _Result:
    """Volume 0 on every target not already silent."""
    actions = [
        _action("volume_set", e, volume_level=0.0) for e in res.targets if now.volume_pct(e) != 0
    ]
    what = "the speaker" if res.scope is Scope.DEVICE else target_phrase(res)
    if not actions:
        return actions, f"{capitalized(what)} is already muted."
    return actions, f"Muting {what}."


def unmute(_: IntentMatch, res: Resolution, now: CurrentState) -> _Result:
    """Back to the last non-zero volume (:data:`ASSUMED_VOLUME` when never known)."""
    actions, levels = [], []
    for entity in res.targets:
        current = now.volume_pct(entity)
        if current:  # audible already
            levels.append(current)
            continue
        level = now.last_audible_volume_pct(entity) or ASSUMED_VOLUME
        levels.append(level)
        actions.append(_action("volume_set", entity, volume_level=_level(level)))
    what = "the sound" if res.scope is Scope.DEVICE else f"the sound of {target_phrase(res)}"
    if len(res.targets) > 1:
        if not actions:
            return actions, f"{capitalized(what)} is already on."
        return actions, f"Turning {what} back on."
    if not actions:
        return actions, f"{capitalized(what)} is already on, at {levels[0]}%."
    return actions, f"Turning {what} back on at {levels[0]}%."


def light_relative(match: IntentMatch, res: Resolution, now: CurrentState) -> _Result:
    """ "dim the bedroom light", "brighten the lights in the kitchen by 30%"."""
    up = match.slots.get("direction") == "up"
    said = match.slots.get("step")
    size = round(said) if isinstance(said, int | float) else BRIGHTNESS_STEP
    step = size if up else -size
    actions: list[Action] = []
    reached: list[int | None] = []  # per target: the level set, None when set relatively
    for entity in res.targets:
        current = now.brightness_pct(entity)
        if current is None:
            actions.append(_action("turn_on", entity, brightness_step_pct=step))
            reached.append(None)
            continue
        new = min(100, max(0, current + step))
        if new == current:
            continue
        reached.append(new)
        if new == 0:
            actions.append(_action("turn_off", entity))
        else:
            actions.append(_action("turn_on", entity, brightness_pct=new))
    verb = "Brightening" if up else "Dimming"
    what = target_phrase(res)
    if not actions:
        limit = "at full brightness" if up else "off"
        return actions, f"{capitalized(what)} {verb_be(len(res.targets))} already {limit}."
    if len(res.targets) > 1:
        return actions, f"{verb} {what}."
    [level] = reached
    if level is None:
        return actions, f"{verb} {what} by {size}%."
    if level == 0:
        return actions, f"Turning off {what}."
    return actions, f"{verb} {what} to {level}%."


def climate_relative(match: IntentMatch, res: Resolution, now: CurrentState) -> _Result:
    """ "make it warmer", "turn down the heating by 2 degrees"."""
    up = match.slots.get("direction") == "up"
    said = match.slots.get("step")
    size = float(said) if isinstance(said, int | float) else TEMPERATURE_STEP
    actions: list[Action] = []
    reached: list[float] = []
    unknown: list[Entity] = []
    for entity in res.targets:
        current = now.target_temperature(entity)
        if current is None:
            unknown.append(entity)
            continue
        low, high = now.temperature_range(entity)
        new = min(high, max(low, current + (size if up else -size)))
        reached.append(new)
        if new != current:
            actions.append(_action("set_temperature", entity, temperature=new))
    what = target_phrase(res)
    names = and_list(e.name for e in unknown)
    if not reached:
        return actions, f"Sorry, I don't know what {names} {verb_be(len(unknown))} set to."
    doubt = f" I don't know what {names} {verb_be(len(unknown))} set to." if unknown else ""
    verb = "Raising" if up else "Lowering"
    if len(res.targets) == 1:
        if not actions:
            return actions, f"{capitalized(what)} is already at {num(reached[0])} degrees."
        return actions, f"{verb} {what} to {num(reached[0])} degrees."
    if not actions:
        limit = "as warm" if up else "as cool"
        return actions, f"{capitalized(what)} are already {limit} as they go.{doubt}"
    degrees = f"{num(size)} degree{'s' if size != 1 else ''}"
    return actions, f"{verb} {what} by {degrees}.{doubt}"
