"""Target resolution: which entities an intent is about (what Home Assistant core does, not hassil).

hassil says *what* was asked (``HassTurnOn`` with ``area=kitchen, domain=light``); this module
says *to whom*, from the home model:

* a ``name`` slot → that entity ("turn on the living room light");
* a ``floor`` → every entity of the domain in the floor's areas ("the lights downstairs");
* an ``area`` (said, or the speaking device's own) → every entity of the domain there
  ("turn on the light" in the living room, "turn off the lights in the kitchen");
* a domain and no place → every entity of the domain ("turn off all the lights");
* device intents (volume, LED, status) → the speaking device's own function entity
  (:meth:`~xiaozhi_hub.home.Home.device_entity`); ``HassSetVolume`` with a said area → every
  xiaozhi device in it.

Anything the user named that we do not know ("turn on the garage light") gives a
:class:`Resolution` with an :attr:`~Resolution.error` and no targets: nothing is executed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xiaozhi_hub.home import Area, DeviceFunction, Entity, Floor, Home
from xiaozhi_hub.intents import IntentMatch, NoMatch

__all__ = [
    "DEVICE_INTENTS",
    "SUPPORTED_INTENTS",
    "Resolution",
    "ResolutionError",
    "Scope",
    "resolve",
]


class ResolutionError(enum.StrEnum):
    """Why nothing can be done; :mod:`xiaozhi_hub.actions` words the answer."""

    NO_INTENT = "no_intent"  # the text matched no sentence
    UNKNOWN_NAME = "unknown_name"  # "turn on the garage light"
    UNKNOWN_AREA = "unknown_area"  # "turn off the lights in the garage"
    UNKNOWN_FLOOR = "unknown_floor"
    OUT_OF_RANGE = "out_of_range"  # "set volume to 120"
    NO_AREA = "no_area"  # "turn on the light" from a device without an area
    NO_TARGETS = "no_targets"  # a known place without an entity of that domain
    NO_DEVICE = "no_device"  # a device intent without a speaking device
    UNSUPPORTED = "unsupported_intent"  # recognized, but not something the hub does


class Scope(enum.StrEnum):
    """How the targets were chosen."""

    NAME = "name"
    AREA = "area"
    FLOOR = "floor"
    ALL = "all"
    DEVICE = "device"  # the speaking device itself


DEVICE_INTENTS: Mapping[str, DeviceFunction] = {
    "XiaozhiSetDeviceVolume": DeviceFunction.SPEAKER,
    "XiaozhiLedSet": DeviceFunction.LED,
    "XiaozhiDeviceStatus": DeviceFunction.SPEAKER,
}
"""Our intents about the speaking device, and which of its functions they act on."""

_ENTITY_INTENTS: Mapping[str, str | None] = {
    # intent -> the domain it implies when hassil gives none
    "HassTurnOn": None,
    "HassTurnOff": None,
    "HassLightSet": "light",
    "HassClimateGetTemperature": "climate",
    "HassClimateSetTemperature": "climate",
    "HassSetVolume": "media_player",
}

SUPPORTED_INTENTS = frozenset({*DEVICE_INTENTS, *_ENTITY_INTENTS})
"""Intents the hub acts on; others (weather, timers...) are answered as unsupported."""

_ON_OFF_DOMAINS = frozenset({"light", "switch", "fan", "input_boolean", "media_player"})
"""What "turn on the kitchen" may switch when no domain was said (never locks or climate)."""

_RANGE_SLOTS = ("brightness", "volume", "volume_level", "temperature", "position", "percentage")


@dataclass(frozen=True, slots=True)
class Resolution:
    """The entities an intent acts on, or why there are none.

    ``unknown`` holds the words (or number) behind an error: ``"garage light"``.
    """

    targets: tuple[Entity, ...] = ()
    scope: Scope | None = None
    domain: str | None = None
    area: Area | None = None
    floor: Floor | None = None
    error: ResolutionError | None = None
    unknown: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "targets": [e.entity_id for e in self.targets],
            "scope": self.scope,
            "domain": self.domain,
            "area": self.area.id if self.area else None,
            "floor": self.floor.id if self.floor else None,
            "error": self.error,
            "unknown": self.unknown,
        }


def resolve(
    match: IntentMatch | NoMatch,
    home: Home,
    *,
    speaking_device: str | None = None,
    device_areas: Mapping[str, str | None] | None = None,
) -> Resolution:
    """Resolve an intent's targets in ``home``.

    Args:
        match: what :meth:`~xiaozhi_hub.intents.IntentEngine.recognize` returned.
        home: the home model.
        speaking_device: the id of the device that heard the command (None for typed tests).
        device_areas: every known device id → its area id (the registry's
            :meth:`~xiaozhi_hub.registry.Registry.device_areas`); defaults to the home's devices.
    """
    if isinstance(match, NoMatch):
        return Resolution(error=ResolutionError.NO_INTENT)
    if match.unmatched:
        return _unmatched(match)
    if match.intent not in SUPPORTED_INTENTS:
        return Resolution(error=ResolutionError.UNSUPPORTED)
    if match.intent in DEVICE_INTENTS:
        if speaking_device is None:
            return Resolution(error=ResolutionError.NO_DEVICE)
        entity = home.device_entity(speaking_device, DEVICE_INTENTS[match.intent])
        return Resolution(targets=(entity,), scope=Scope.DEVICE, domain=entity.domain)
    if device_areas is None:
        device_areas = {d.id: d.area for d in home.devices}
    return _entities(match, home, speaking_device, device_areas)


def _unmatched(match: IntentMatch) -> Resolution:
    said = {slot: words for slot, words in match.unmatched.items() if words}
    if "name" in said:
        return Resolution(error=ResolutionError.UNKNOWN_NAME, unknown=said["name"])
    if "area" in said:
        return Resolution(error=ResolutionError.UNKNOWN_AREA, unknown=said["area"])
    if "floor" in said:
        return Resolution(error=ResolutionError.UNKNOWN_FLOOR, unknown=said["floor"])
    for slot in _RANGE_SLOTS:
        if slot in said:
            return Resolution(error=ResolutionError.OUT_OF_RANGE, unknown=said[slot])
    if "area" in match.unmatched:
        return Resolution(error=ResolutionError.NO_AREA)
    return Resolution(error=ResolutionError.NO_INTENT)


def _entities(
    match: IntentMatch,
    home: Home,
    speaking_device: str | None,
    device_areas: Mapping[str, str | None],
) -> Resolution:
    slots = match.slots
    domain = slots.get("domain") or _ENTITY_INTENTS[match.intent]
    if "name" in slots:
        entity = home.entity(slots["name"])
        if entity is None:  # a slot list built from another home
            return Resolution(error=ResolutionError.UNKNOWN_NAME, unknown=str(slots["name"]))
        return Resolution(targets=(entity,), scope=Scope.NAME, domain=entity.domain)

    floor = home.floor(slots.get("floor"))
    area = home.area(slots.get("area"))
    if match.intent == "HassSetVolume":
        return _speakers(home, area, match, speaking_device, device_areas)

    if floor is not None:
        areas = [a.id for a in home.areas_on_floor(floor.id)]
        scope = Scope.FLOOR
    elif area is not None:
        areas, scope = [area.id], Scope.AREA
    else:
        areas, scope = None, Scope.ALL
    found = home.entities_in(domain=domain, areas=areas)
    if domain is None:
        found = [e for e in found if e.domain in _ON_OFF_DOMAINS]
    if not found:
        return Resolution(
            scope=scope, domain=domain, area=area, floor=floor, error=ResolutionError.NO_TARGETS
        )
    return Resolution(targets=tuple(found), scope=scope, domain=domain, area=area, floor=floor)


def _speakers(
    home: Home,
    area: Area | None,
    match: IntentMatch,
    speaking_device: str | None,
    device_areas: Mapping[str, str | None],
) -> Resolution:
    """HassSetVolume: the speaking device for its own area, else every speaker in the area."""
    if area is None or ("area" in match.from_context and speaking_device is not None):
        if speaking_device is None:
            return Resolution(error=ResolutionError.NO_DEVICE)
        entity = home.device_entity(speaking_device, DeviceFunction.SPEAKER)
        return Resolution(targets=(entity,), scope=Scope.DEVICE, domain=entity.domain)
    found = home.entities_in(domain="media_player", areas=[area.id])
    seen = {e.entity_id for e in found}
    for device_id, device_area in sorted(device_areas.items()):
        if device_area == area.id:
            entity = home.device_entity(device_id, DeviceFunction.SPEAKER)
            if entity.entity_id not in seen:
                found.append(entity)
                seen.add(entity.entity_id)
    if not found:
        return Resolution(
            scope=Scope.AREA, domain="media_player", area=area, error=ResolutionError.NO_TARGETS
        )
    return Resolution(targets=tuple(found), scope=Scope.AREA, domain="media_player", area=area)
