"""Answers to questions about the home, read from its current state; nothing is executed.

Home Assistant's ``HassGetState`` names the kind of answer in its sentence's ``response``;
the same kinds here, in whole sentences:

===========  =========================================  ======================================
response     asked                                      answer
===========  =========================================  ======================================
one_yesno    "is the front door locked"                 "Yes, the front door is locked." /
                                                        "No, the front door is unlocked."
any          "are any lights on", "is the light on"     "Yes, the bedroom light is on." /
                                                        "No, none of the lights are on."
all          "are all the lights off"                   "No, the bedroom light is not off."
which        "which lights are on"                      "The bedroom light and the living room
                                                        light are on." / "No lights are on."
how_many     "how many lights are on"                   "2 lights are on."
one          "what is the state of the office light"    "The office light is on at 50%
                                                        brightness."
===========  =========================================  ======================================

An answer is never a guess: an entity whose state the hub does not know
(:class:`~xiaozhi_hub.current_state.CurrentState` says which) is named as unknown ("I don't
know about the kitchen light"), never counted as on or off. Names are listed sorted, as Home
Assistant does. ``HassClimateGetTemperature`` reads the thermostat's measured temperature.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from xiaozhi_hub.current_state import CurrentState
from xiaozhi_hub.home import Entity
from xiaozhi_hub.intents import IntentMatch
from xiaozhi_hub.resolve import Resolution
from xiaozhi_hub.wording import (
    and_list,
    capitalized,
    group_phrase,
    num,
    place,
    plural,
    singular,
    verb_be,
)

__all__ = ["get_state", "get_temperature"]


def get_temperature(res: Resolution, now: CurrentState) -> str:
    """ "The office is 21 degrees." from the first target that knows its temperature."""
    where = place(res)
    for entity in res.targets:
        value = now.current_temperature(entity)
        if value is not None:
            return f"{capitalized(where)} is {num(value)} degrees."
    return f"Sorry, I don't know the temperature of {where}."


class _Split:
    """The targets sorted by their answer to "is it <asked>?": yes, no, unknown."""

    def __init__(self, targets: Sequence[Entity], asked: str, now: CurrentState) -> None:
        self.yes: list[Entity] = []
        self.no: list[Entity] = []
        self.unknown: list[Entity] = []
        for entity in targets:
            state = now.state(entity)
            if state is None:
                self.unknown.append(entity)
            else:
                (self.yes if state == asked else self.no).append(entity)

    @staticmethod
    def names(entities: Sequence[Entity]) -> str:
        return and_list(sorted((e.name for e in entities), key=str.casefold))

    def unknown_note(self) -> str:
        """ " I don't know about the kitchen light." or ""."""
        return f" I don't know about {self.names(self.unknown)}." if self.unknown else ""


def get_state(match: IntentMatch, res: Resolution, now: CurrentState) -> str:
    """The answer to a ``HassGetState`` question (module docstring)."""
    asked = match.slots.get("state")
    kind = match.response or "one"
    if kind == "one" or not isinstance(asked, str):
        return _describe(res.targets[0], now)
    if len(res.targets) == 1 and kind in ("one_yesno", "any", "all"):
        return _yes_no(res.targets[0], asked, now)
    split = _Split(res.targets, asked, now)
    answer = _ANSWERS.get(kind, _any)
    return answer(split, asked, res)


def _yes_no(entity: Entity, asked: str, now: CurrentState) -> str:
    state = now.state(entity)
    if state is None:
        return f"Sorry, I don't know whether the {entity.name} is {asked}."
    if state == asked:
        return f"Yes, the {entity.name} is {asked}."
    return f"No, the {entity.name} is {state}."


def _none_i_know_of(split: _Split, asked: str, res: Resolution) -> str:
    """Nothing known is <asked>, but some are unknown."""
    return (
        f"None of the {plural(res.domain)} I know of {verb_be(2)} {asked};"
        f" I don't know about {split.names(split.unknown)}."
    )


def _any(split: _Split, asked: str, res: Resolution) -> str:
    if split.yes:
        return f"Yes, {split.names(split.yes)} {verb_be(len(split.yes))} {asked}."
    if split.unknown:
        return _none_i_know_of(split, asked, res)
    return f"No, none of {group_phrase(res)} are {asked}."


def _all(split: _Split, asked: str, res: Resolution) -> str:
    if split.no:
        return f"No, {split.names(split.no)} {verb_be(len(split.no))} not {asked}."
    if split.unknown:
        return (
            f"All the {plural(res.domain)} I know of are {asked};"
            f" I don't know about {split.names(split.unknown)}."
        )
    return f"Yes, all {group_phrase(res)} are {asked}."


def _which(split: _Split, asked: str, res: Resolution) -> str:
    if split.yes:
        names = capitalized(split.names(split.yes))
        return f"{names} {verb_be(len(split.yes))} {asked}.{split.unknown_note()}"
    if split.unknown:
        return _none_i_know_of(split, asked, res)
    return f"No {group_phrase(res).removeprefix('the ')} are {asked}."


def _how_many(split: _Split, asked: str, res: Resolution) -> str:
    count = len(split.yes)
    if count == 0:
        counted = f"No {plural(res.domain)} are {asked}."
    else:
        noun = singular(res.domain) if count == 1 else plural(res.domain)
        counted = f"{count} {noun} {verb_be(count)} {asked}."
    return counted + split.unknown_note()


_ANSWERS: dict[str, Callable[[_Split, str, Resolution], str]] = {
    "any": _any,
    "all": _all,
    "which": _which,
    "how_many": _how_many,
}


def _describe(entity: Entity, now: CurrentState) -> str:
    """ "The office light is on at 50% brightness.", "The front door is locked."..."""
    state = now.state(entity)
    name = entity.name
    if entity.domain == "climate":
        parts = []
        target, current = now.target_temperature(entity), now.current_temperature(entity)
        if target is not None:
            parts.append(f"set to {num(target)} degrees")
        if current is not None:
            parts.append(f"it is {num(current)} degrees now")
        if parts:
            return f"The {name} is {'; '.join(parts)}."
    if entity.domain == "media_player":
        volume = now.volume_pct(entity)
        if volume is not None:
            return f"The {name} is at {volume}% volume."
    if state is None:
        return f"Sorry, I don't know the state of the {name}."
    if entity.domain == "light" and state == "on":
        brightness = now.brightness_pct(entity)
        if brightness is not None and brightness < 100:
            return f"The {name} is on at {brightness}% brightness."
    return f"The {name} is {state}."
