"""Target resolution: which entities an intent is about (what Home Assistant core does, not hassil).

hassil says *what* was asked (``HassTurnOn`` with ``area=kitchen, domain=light``); this module
says *to whom*, from the home model:

* a ``name`` slot → that entity ("turn on the living room light");
* a ``floor`` → every entity of the domain in the floor's areas ("the lights downstairs");
* an ``area`` (said, or the speaking device's own) → every entity of the domain there
  ("turn on the light" in the living room, "turn off the lights in the kitchen");
* a domain and no place → every entity of the domain ("turn off all the lights");
* device intents (volume, LED, status) → the speaking device's own function entity
  (:meth:`~xiaozhi_hub.home.Home.device_entity`); the volume intents (``HassSetVolume``,
  ``HassSetVolumeRelative``, ``HassMediaPlayerMute``/``Unmute``) with a said area → every
  speaker in it, else the speaking device;
* a device-class word ("the thermostat", "the door":
  :data:`~xiaozhi_hub.intents.DEVICE_CLASS_WORDS`) → the one entity of that domain in the
  said area, else in the speaking device's area, else in the home; when several could be
  meant, nothing (:attr:`ResolutionError.AMBIGUOUS`, with the :attr:`~Resolution.candidates`
  for the answer);
* thermostat intents with the area only from the speaking device ("make it warmer", "set the
  temperature to 21") act on one thermostat, as Home Assistant's ``single_target`` does:
  the room's, else the home's only one.

Anything the user named that we do not know ("turn on the garage light") gives a
:class:`Resolution` with an :attr:`~Resolution.error` and no targets: nothing is executed.
So does a negated command ("don't turn on the light": :attr:`ResolutionError.NEGATED`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xiaozhi_hub.home import Area, DeviceFunction, Entity, Floor, Home
from xiaozhi_hub.intents import DEVICE_CLASS_PREFIX, IntentMatch, NoMatch

__all__ = [
    "DEVICE_INTENTS",
    "SUPPORTED_INTENTS",
    "Refusal",
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
    AMBIGUOUS = "ambiguous"  # "lock the door" in a home with two locks
    NEGATED = "negated"  # "don't turn on the kitchen light": never acted on


class Refusal(Exception):
    """Raised while planning when the current state shows the request cannot be done
    ("set the temperature to 99 degrees" on a thermostat going to 35): nothing is executed.

    Args:
        error: why, for the plan's ``error``.
        text: the answer (in English).
        facts: what the answer says, for saying it in another language
            (:mod:`xiaozhi_hub.responses`): ``name``, ``low``, ``high``...
    """

    def __init__(self, error: ResolutionError, text: str, **facts: Any) -> None:
        super().__init__(text)
        self.error, self.text = error, text
        self.facts: Mapping[str, Any] = facts


class Scope(enum.StrEnum):
    """How the targets were chosen."""

    NAME = "name"
    AREA = "area"
    FLOOR = "floor"
    ALL = "all"
    DEVICE = "device"  # the speaking device itself
    CLASS = "class"  # the one entity of a device class ("the thermostat")


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
    "HassSetVolumeRelative": "media_player",
    "HassMediaPlayerMute": "media_player",
    "HassMediaPlayerUnmute": "media_player",
    "HassGetState": None,
    "XiaozhiLightRelative": "light",
    "XiaozhiClimateRelative": "climate",
}

_SPEAKER_INTENTS = frozenset(
    {"HassSetVolume", "HassSetVolumeRelative", "HassMediaPlayerMute", "HassMediaPlayerUnmute"}
)
"""The speaking device's own speaker unless an area (or a name) is said."""

_SINGLE_TARGET_INTENTS = frozenset(
    {"HassClimateSetTemperature", "HassClimateGetTemperature", "XiaozhiClimateRelative"}
)
"""One thermostat when the area only comes from the speaking device (Home Assistant's
``single_target``): the room's, else the home's only one."""

_DEVICE_WORDS = (
    "light", "lamp", "switch", "fan", "door", "lock", "window", "blind", "curtain", "shade",
    "gate", "garage", "thermostat", "heating", "heater", "speaker", "tv", "television",
    "sensor", "plug", "socket", "outlet", "vacuum", "valve",
)  # fmt: skip
"""Words that make unknown words in a question a device's name ("is the garage door open")."""

SUPPORTED_INTENTS = frozenset({*DEVICE_INTENTS, *_ENTITY_INTENTS})
"""Intents the hub acts on; others (weather, timers...) are answered as unsupported."""

_ON_OFF_DOMAINS = frozenset({"light", "switch", "fan", "input_boolean", "media_player"})
"""What "turn on the kitchen" may switch when no domain was said (never locks or climate)."""

_RANGE_SLOTS = (
    "brightness",
    "volume",
    "volume_level",
    "volume_step",
    "step",
    "temperature",
    "position",
    "percentage",
)


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
    candidates: tuple[Entity, ...] = ()  # AMBIGUOUS: every entity that could be meant

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
            "candidates": [e.entity_id for e in self.candidates],
        }


def resolve(
    match: IntentMatch | NoMatch,
    home: Home,
    *,
    speaking_device: str | None = None,
    device_areas: Mapping[str, str | None] | None = None,
    area: str | None = None,
) -> Resolution:
    """Resolve an intent's targets in ``home``.

    Args:
        match: what :meth:`~xiaozhi_hub.intents.IntentEngine.recognize` returned.
        home: the home model.
        speaking_device: the id of the device that heard the command (None for typed tests).
        device_areas: every known device id → its area id (the registry's
            :meth:`~xiaozhi_hub.registry.Registry.device_areas`); defaults to the home's devices.
        area: the area the command was heard in (the recognition's context); None: the
            speaking device's area in ``device_areas``.
    """
    if isinstance(match, NoMatch):
        if match.reason == "negated":
            return Resolution(error=ResolutionError.NEGATED)
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
    if area is None and speaking_device is not None:
        area = device_areas.get(speaking_device)
    return _entities(match, home, speaking_device, device_areas, home.area(area))


def _unmatched(match: IntentMatch) -> Resolution:
    said = {slot: words for slot, words in match.unmatched.items() if words}
    if "name" in said:
        if _not_a_device_question(match, said["name"]):
            return Resolution(error=ResolutionError.UNSUPPORTED)
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


def _not_a_device_question(match: IntentMatch, words: str) -> bool:
    """ "tell me a joke", "what's the weather tomorrow": Home Assistant's "tell me {name}"
    and "what is {name}" read anything as a name; without a device word it was not one."""
    if match.intent != "HassGetState" or match.response != "one":
        return False
    said = words.split()
    return not any(word.rstrip("s") in _DEVICE_WORDS for word in said)


def _entities(
    match: IntentMatch,
    home: Home,
    speaking_device: str | None,
    device_areas: Mapping[str, str | None],
    here: Area | None,
) -> Resolution:
    slots = match.slots
    domain = slots.get("domain") or _ENTITY_INTENTS[match.intent]
    floor = home.floor(slots.get("floor"))
    area = home.area(slots.get("area"))
    said_area = None if "area" in match.from_context else area
    if "name" in slots:
        name = str(slots["name"])
        if name.startswith(DEVICE_CLASS_PREFIX):
            return _one_of_class(home, name.removeprefix(DEVICE_CLASS_PREFIX), said_area, here)
        entity = home.entity(name)
        if entity is None:  # a slot list built from another home
            return Resolution(error=ResolutionError.UNKNOWN_NAME, unknown=name)
        return Resolution(targets=(entity,), scope=Scope.NAME, domain=entity.domain)

    if match.intent in _SPEAKER_INTENTS:
        return _speakers(home, area, match, speaking_device, device_areas)
    if match.intent in _SINGLE_TARGET_INTENTS and area is not None and said_area is None:
        return _one_of_class(home, "climate", None, area)

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


def _one_of_class(home: Home, domain: str, said_area: Area | None, here: Area | None) -> Resolution:
    """The one entity of ``domain`` meant: in the said area, else in the speaking device's
    area, else in the home; AMBIGUOUS when several are equally meant."""
    if said_area is not None:
        found = home.entities_in(domain=domain, areas=[said_area.id])
        return _the_one(found, domain, said_area)
    if here is not None:
        found = home.entities_in(domain=domain, areas=[here.id])
        if found:
            return _the_one(found, domain, here)
    return _the_one(home.entities_in(domain=domain), domain, None)


def _the_one(found: list[Entity], domain: str, area: Area | None) -> Resolution:
    if not found:
        return Resolution(
            scope=Scope.CLASS, domain=domain, area=area, error=ResolutionError.NO_TARGETS
        )
    if len(found) > 1:
        return Resolution(
            scope=Scope.CLASS,
            domain=domain,
            area=area,
            error=ResolutionError.AMBIGUOUS,
            candidates=tuple(found),
        )
    scope = Scope.AREA if area is not None else Scope.CLASS
    return Resolution(targets=(found[0],), scope=scope, domain=domain, area=area)


def _speakers(
    home: Home,
    area: Area | None,
    match: IntentMatch,
    speaking_device: str | None,
    device_areas: Mapping[str, str | None],
) -> Resolution:
    """The volume intents: the speaking device for its own area, else every speaker in the
    said area."""
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
