"""How the hub words its answers: numbers, plurals, targets, places and lists of names.

Shared by the planner (:mod:`xiaozhi_hub.actions`) and its two helpers, questions
(:mod:`xiaozhi_hub.questions`) and relative changes (:mod:`xiaozhi_hub.adjustments`), so
one thing is always said the same way: "the lights in the kitchen", "all the lights",
"the living room light and the bedroom light".
"""

from __future__ import annotations

from collections.abc import Iterable

from xiaozhi_hub.resolve import Resolution, Scope

__all__ = [
    "and_list",
    "capitalized",
    "floor_phrase",
    "group_phrase",
    "num",
    "place",
    "plural",
    "singular",
    "target_phrase",
    "verb_be",
]

_PLURALS = {
    "light": "lights",
    "switch": "switches",
    "fan": "fans",
    "climate": "thermostats",
    "lock": "locks",
    "cover": "covers",
    "media_player": "speakers",
}


_SINGULARS = {"climate": "thermostat", "media_player": "speaker"}


def num(value: float) -> str:
    """``21`` for 21.0, ``19.5`` for 19.5."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def plural(domain: str | None) -> str:
    """What several entities of ``domain`` are called: "lights", "thermostats"."""
    if domain is None:
        return "devices"
    return _PLURALS.get(domain, domain.replace("_", " ") + "s")


def singular(domain: str | None) -> str:
    """What one entity of ``domain`` is called: "light", "thermostat"."""
    if domain is None:
        return "device"
    return _SINGULARS.get(domain, domain.replace("_", " "))


def verb_be(count: int) -> str:
    return "is" if count == 1 else "are"


def capitalized(sentence: str) -> str:
    """The sentence with its first letter upper-cased (names keep their own case)."""
    return sentence[:1].upper() + sentence[1:]


def and_list(names: Iterable[str]) -> str:
    """ "the a", "the a and the b", "the a, the b and the c"."""
    items = [f"the {name}" for name in names]
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def floor_phrase(res: Resolution) -> str:
    name = res.floor.name if res.floor else ""
    return name if name.casefold() in ("upstairs", "downstairs") else f"on the {name}"


def target_phrase(res: Resolution) -> str:
    """ "the living room light", "the lights in the kitchen", "all the lights"..."""
    if res.scope in (Scope.NAME, Scope.DEVICE, Scope.CLASS) or len(res.targets) == 1:
        return f"the {res.targets[0].name}"
    if res.scope is Scope.AREA and res.area is not None:
        return f"the {plural(res.domain)} in the {res.area.name.casefold()}"
    if res.scope is Scope.FLOOR:
        return f"the {plural(res.domain)} {floor_phrase(res)}"
    return f"all the {plural(res.domain)}"


def group_phrase(res: Resolution) -> str:
    """The targets as a group, whatever their number: "the lights in the kitchen",
    "the lights upstairs", "the locks"."""
    noun = f"the {plural(res.domain)}"
    if res.scope is Scope.AREA and res.area is not None:
        return f"{noun} in the {res.area.name.casefold()}"
    if res.scope is Scope.FLOOR and res.floor is not None:
        return f"{noun} {floor_phrase(res)}"
    return noun


def place(res: Resolution) -> str:
    """Where a question is about: "the office", "the office thermostat", "the house"."""
    if res.scope is Scope.AREA and res.area is not None:
        return f"the {res.area.name.casefold()}"
    if res.scope in (Scope.NAME, Scope.CLASS):
        return f"the {res.targets[0].name}"
    if res.scope is Scope.FLOOR and res.floor is not None:
        return f"the {res.floor.name}"
    return "the house"
