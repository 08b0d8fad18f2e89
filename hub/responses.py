"""Answers in a language other than English: home-assistant-intents' own response templates.

English answers are ours (:mod:`xiaozhi_hub.wording` and the planner's helpers). In any other
language the hub answers as Home Assistant's default agent would: the intent's response
template for that language (``get_intents(lang)["responses"]["intents"][intent][key]``), a
Jinja2 template rendered here in a :class:`~jinja2.sandbox.SandboxedEnvironment` with the
context Home Assistant gives it:

* ``slots``: each recognised slot as the user's words (``name``, ``area``, ``floor``; the
  entity's or area's own name when it was not said), numbers as numbers, and ``name`` set to
  the targets' names when the user named a place;
* ``state``: the first target's state object (``state``, ``state_with_unit``, ``domain``,
  ``entity_id``, ``object_id``, ``name``, ``attributes``), its state word translated as Home
  Assistant's translations do for the languages in ``responses_xiaozhi.yaml``;
* ``query``: ``matched`` and ``unmatched`` lists of state objects (a question's yes and no);
* ``state_attr(entity_id, attribute)``.

The response key is the one Home Assistant's sentence files pick for what was done:
``HassTurnOn``/``Off`` ``default``, ``lights_area``, ``lights_floor``, ``lights_all``,
``fans_area``, ``lock``, ``cover``...; ``HassLightSet`` ``brightness``, ``brightness_area``,
``color``...; ``HassGetState`` the sentence's own (``one``, ``one_yesno``, ``any``, ``all``,
``which``, ``how_many``); ``default`` for the temperature, volume and mute intents. Failures
use the language's error templates (``responses["errors"]``: ``no_intent``, ``no_entity``,
``no_area``, ``no_domain_in_area``...) as Home Assistant's default agent does.

**Answers stay true.** A template is used only where what it says is what happened: where
Home Assistant has no template, or its template would say more than the hub knows (a state
the hub cannot read, a volume already at its limit, a temperature out of the thermostat's
range), the hub says it with its own sentence for the language
(:data:`XIAOZHI_RESPONSES_PATH`: Chinese and Vietnamese), else with the language's generic
``no_intent`` error, and only as a last resort in English.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import home_assistant_intents
import structlog
import yaml
from jinja2 import TemplateError
from jinja2.sandbox import SandboxedEnvironment

from xiaozhi.payloads import Action
from xiaozhi_hub.current_state import CurrentState
from xiaozhi_hub.home import Entity
from xiaozhi_hub.intents import IntentMatch, NoMatch
from xiaozhi_hub.resolve import Refusal, Resolution, ResolutionError, Scope
from xiaozhi_hub.wording import num

__all__ = [
    "XIAOZHI_RESPONSES_PATH",
    "LanguageAnswers",
    "TemplateState",
    "answers_for",
    "own_sentence",
]

log = structlog.get_logger("xiaozhi.hub")

XIAOZHI_RESPONSES_PATH: Final = Path(__file__).with_name("responses_xiaozhi.yaml")
"""Our own sentences per language, for what home-assistant-intents has no true answer for."""


@functools.cache
def _own_tables() -> Mapping[str, Mapping[str, Any]]:
    data = yaml.safe_load(XIAOZHI_RESPONSES_PATH.read_text(encoding="utf-8"))
    return data or {}


def own_sentence(language: str, key: str, **facts: Any) -> str | None:
    """Our own sentence ``key`` in ``language`` with ``facts`` filled in, or None when the
    language has none (``responses_xiaozhi.yaml``: ``offline``, ``no_answer``, ``refused``,
    ``error`` for a device that did not act, ``not_heard``, ``negated``...)."""
    template = _own_tables().get(language, {}).get(key)
    if not isinstance(template, str):
        return None
    try:
        return template.format(**facts)
    except (KeyError, IndexError):  # a sentence needing a fact this caller does not have
        return None


@dataclass(frozen=True, slots=True)
class TemplateState:
    """What a response template sees of an entity (Home Assistant's state object)."""

    entity_id: str
    domain: str
    object_id: str
    name: str
    state: str
    state_with_unit: str
    attributes: Mapping[str, Any]


class LanguageAnswers:
    """The answers of one language; :func:`answers_for` keeps one per language.

    Args:
        language: a home-assistant-intents language code (not ``en``: English is ours).
    """

    def __init__(self, language: str) -> None:
        data = home_assistant_intents.get_intents(language) or {}
        responses = data.get("responses", {})
        self.language = language
        self.intent_templates: Mapping[str, Mapping[str, str]] = responses.get("intents", {})
        self.error_templates: Mapping[str, str] = responses.get("errors", {})
        self._own: Mapping[str, Any] = _own_tables().get(language, {})
        self._env = SandboxedEnvironment()
        self._env.globals["state_attr"] = self._no_attribute
        self._compiled: dict[str, Any] = {}

    # -- the three kinds of answer -----------------------------------------------------------

    def answer(
        self,
        match: IntentMatch,
        res: Resolution,
        now: CurrentState,
        actions: Sequence[Action],
        english: str,
    ) -> str:
        """What to say for a planned intent (``english`` is the English answer)."""
        handler = _HANDLERS.get(match.intent)
        text = handler(self, match, res, now, actions) if handler is not None else None
        if text is None and actions:
            text = self.own("done")
        return text or english

    def error(self, match: IntentMatch | NoMatch, res: Resolution, english: str) -> str:
        """What to say when nothing can be done (``res.error``)."""
        error = res.error
        said = _said(match)
        text: str | None = None
        if error is ResolutionError.UNKNOWN_NAME:
            if "area" in said:
                text = self.ha_error("no_entity_in_area", entity=res.unknown, area=said["area"])
            elif "floor" in said:
                text = self.ha_error("no_entity_in_floor", entity=res.unknown, floor=said["floor"])
            text = text or self.ha_error("no_entity", entity=res.unknown)
        elif error is ResolutionError.UNKNOWN_AREA:
            text = self.ha_error("no_area", area=res.unknown)
        elif error is ResolutionError.UNKNOWN_FLOOR:
            text = self.ha_error("no_floor", floor=res.unknown)
        elif error is ResolutionError.NO_TARGETS:
            text = self._no_targets(res)
        elif error is ResolutionError.AMBIGUOUS:
            text = self._ambiguous(res) or self.ha_error("duplicate_targets")
        elif error is ResolutionError.OUT_OF_RANGE:
            text = self.own("out_of_range", value=res.unknown)
        elif error in _OWN_ERRORS:
            text = self.own(_OWN_ERRORS[error])
        return text or self.ha_error("no_intent") or english

    def refusal(self, refused: Refusal, english: str) -> str:
        """What to say when the current state refuses the request (:class:`Refusal`)."""
        facts = dict(refused.facts)
        text = None
        if refused.error is ResolutionError.OUT_OF_RANGE and "high" in facts:
            text = self.own(
                "temperature_range",
                name=facts["name"],
                low=num(facts["low"]),
                high=num(facts["high"]),
            )
        if text is None and refused.error in _OWN_ERRORS:
            text = self.own(_OWN_ERRORS[refused.error])
        return text or self.ha_error("no_intent") or english

    # -- rendering ---------------------------------------------------------------------------

    def own(self, key: str, **facts: Any) -> str | None:
        """Our own sentence ``key`` for this language, or None."""
        return own_sentence(self.language, key, **facts)

    def ha_error(self, key: str, **values: Any) -> str | None:
        """home-assistant-intents' error answer ``key``, rendered, or None."""
        source = self.error_templates.get(key)
        return self._render(source, values) if source else None

    def template(
        self,
        intent: str,
        keys: Iterable[str],
        *,
        slots: Mapping[str, Any],
        matched: Sequence[TemplateState] = (),
        unmatched: Sequence[TemplateState] = (),
    ) -> str | None:
        """The first of ``keys`` the intent has a template for, rendered; None if none."""
        templates = self.intent_templates.get(intent, {})
        source = next((templates[key] for key in keys if templates.get(key)), None)
        if source is None:
            return None
        every = {state.entity_id: state for state in (*matched, *unmatched)}

        def state_attr(entity_id: str, attribute: str) -> Any:
            state = every.get(entity_id)
            return state.attributes.get(attribute) if state is not None else None

        first = matched[0] if matched else (unmatched[0] if unmatched else None)
        context = {
            "slots": dict(slots),
            "state": first,
            "query": {"matched": list(matched), "unmatched": list(unmatched)},
            "state_attr": state_attr,
        }
        return self._render(source, context)

    def _render(self, source: str, context: Mapping[str, Any]) -> str | None:
        try:
            compiled = self._compiled.get(source)
            if compiled is None:
                compiled = self._compiled[source] = self._env.from_string(source)
            text = compiled.render(context)
        except (TemplateError, TypeError, ValueError, ArithmeticError) as err:
            log.warning("response_template_failed", language=self.language, error=str(err)[:200])
            return None
        return " ".join(text.split()) or None  # Home Assistant normalises whitespace too

    @staticmethod
    def _no_attribute(entity_id: str, attribute: str) -> None:
        return None

    # -- what templates see ------------------------------------------------------------------

    def state_of(self, entity: Entity, now: CurrentState) -> TemplateState:
        """The entity as Home Assistant's state object, its state word translated."""
        attributes = dict(now.of(entity) or {})
        raw = attributes.get("state")
        word = raw if isinstance(raw, str) else "unknown"
        word = self._own.get("states", {}).get(word, word)
        unit = attributes.get("unit_of_measurement")
        return TemplateState(
            entity_id=entity.entity_id,
            domain=entity.domain,
            object_id=entity.entity_id.split(".", 1)[1],
            name=entity.name,
            state=word,
            state_with_unit=f"{word} {unit}" if unit else word,
            attributes=attributes,
        )

    def names(self, entities: Iterable[Entity]) -> str:
        """ "客厅灯、卧室灯和书房灯": names sorted as Home Assistant lists them."""
        items = sorted((e.name for e in entities), key=str.casefold)
        separator = self._own.get("list_separator", ", ")
        last = self._own.get("list_last", separator)
        if len(items) <= 1:
            return "".join(items)
        return f"{separator.join(items[:-1])}{last}{items[-1]}"

    def noun(self, domain: str | None) -> str:
        """What the language calls a domain's devices ("灯"), else the domain itself."""
        domain = domain or "device"
        nouns: Mapping[str, str] = self._own.get("domains", {})
        return nouns.get(domain, domain.replace("_", " "))

    def slots(self, match: IntentMatch, res: Resolution) -> dict[str, Any]:
        """The ``slots`` a template sees: the user's words, or the names they resolved to."""
        slots: dict[str, Any] = {}
        for slot, value in match.slots.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                slots[slot] = value
            else:
                slots[slot] = match.slot_texts.get(slot) or value
        said = _said(match)
        if res.area is not None:
            slots["area"] = said.get("area") or res.area.name
        if res.floor is not None:
            slots["floor"] = said.get("floor") or res.floor.name
        if "name" in said and res.scope is Scope.NAME:
            slots["name"] = said["name"]
        elif res.targets:
            slots["name"] = self.names(res.targets)
        return slots

    # -- refusals ----------------------------------------------------------------------------

    def _no_targets(self, res: Resolution) -> str | None:
        domain = self.noun(res.domain)
        if res.area is not None:
            return self.ha_error("no_domain_in_area", domain=domain, area=res.area.name)
        if res.floor is not None:
            return self.ha_error("no_domain_in_floor", domain=domain, floor=res.floor.name)
        return self.ha_error("no_domain", domain=domain)

    def _ambiguous(self, res: Resolution) -> str | None:
        return self.own(
            "ambiguous",
            count=len(res.candidates),
            noun=self.noun(res.domain),
            names=self.names(res.candidates),
        )


_OWN_ERRORS: Final[Mapping[ResolutionError | None, str]] = {
    ResolutionError.NEGATED: "negated",
    ResolutionError.UNSUPPORTED: "unsupported",
    ResolutionError.NO_AREA: "no_area",
    ResolutionError.NO_DEVICE: "no_device",
}
"""Refusals Home Assistant has no error answer for: our own sentence says them."""


def _said(match: IntentMatch | NoMatch) -> dict[str, str]:
    """The naming slots the user said, in their words (not those from the device's area)."""
    if not isinstance(match, IntentMatch):
        return {}
    return {
        slot: words
        for slot in ("name", "area", "floor")
        if slot in match.slots
        and slot not in match.from_context
        and (words := match.slot_texts.get(slot, ""))
    }


@functools.cache
def answers_for(language: str) -> LanguageAnswers:
    """The answers of ``language`` (a home-assistant-intents code), loaded once."""
    return LanguageAnswers(language)


# -- per intent ------------------------------------------------------------------------------


def _turn(
    lang: LanguageAnswers,
    match: IntentMatch,
    res: Resolution,
    now: CurrentState,
    _: Sequence[Action],
) -> str | None:
    keys: list[str] = []
    several = len(res.targets) > 1
    if res.domain == "lock":
        keys = ["lock_all", "lock"] if res.scope is Scope.ALL and several else ["lock"]
    elif res.domain == "cover":
        keys = ["cover"]
    elif res.domain in ("light", "fan"):
        noun = f"{res.domain}s"
        if res.scope is Scope.AREA:
            keys = [f"{noun}_area"]
        elif res.scope is Scope.FLOOR:
            keys = [f"{noun}_floor"]
        elif res.scope is Scope.ALL and several:
            keys = [f"{noun}_all", f"{res.domain}_all"]  # vi spells it light_all
    states = [lang.state_of(e, now) for e in res.targets]
    return lang.template(
        match.intent, [*keys, "default"], slots=lang.slots(match, res), matched=states
    )


def _light_set(
    lang: LanguageAnswers,
    match: IntentMatch,
    res: Resolution,
    now: CurrentState,
    _: Sequence[Action],
) -> str | None:
    area = res.scope is Scope.AREA
    if "brightness" in match.slots:
        keys = ["brightness_area", "brightness"] if area else ["brightness"]
    elif "color" in match.slots:
        keys = ["color_area", "color"] if area else ["color"]
    elif "temperature" in match.slots:
        keys = ["temperature"]
    else:
        return None
    states = [lang.state_of(e, now) for e in res.targets]
    return lang.template(match.intent, keys, slots=lang.slots(match, res), matched=states)


def _default(
    lang: LanguageAnswers,
    match: IntentMatch,
    res: Resolution,
    now: CurrentState,
    _: Sequence[Action],
) -> str | None:
    states = [lang.state_of(e, now) for e in res.targets]
    return lang.template(match.intent, ["default"], slots=lang.slots(match, res), matched=states)


def _set_volume(
    lang: LanguageAnswers,
    match: IntentMatch,
    res: Resolution,
    now: CurrentState,
    _: Sequence[Action],
) -> str | None:
    slots = lang.slots(match, res)
    if "volume" in slots and "volume_level" not in slots:
        slots["volume_level"] = slots["volume"]
    if res.scope is Scope.DEVICE:  # the speaking device's own volume: no place, no name
        slots.pop("area", None)
        slots.pop("name", None)
    elif res.scope is Scope.AREA:
        slots.pop("name", None)
    states = [lang.state_of(e, now) for e in res.targets]
    return lang.template(match.intent, ["default"], slots=slots, matched=states)


def _volume_relative(
    lang: LanguageAnswers,
    match: IntentMatch,
    res: Resolution,
    now: CurrentState,
    actions: Sequence[Action],
) -> str | None:
    if not actions:  # already at its limit: "the volume was adjusted" would not be true
        levels = {now.volume_pct(e) for e in res.targets}
        if len(levels) == 1 and None not in levels:
            return lang.own("volume_unchanged", level=levels.pop())
        return lang.own("done")
    return _default(lang, match, res, now, actions)


def _get_temperature(
    lang: LanguageAnswers,
    match: IntentMatch,
    res: Resolution,
    now: CurrentState,
    _: Sequence[Action],
) -> str | None:
    for entity in res.targets:
        if now.current_temperature(entity) is not None:
            state = lang.state_of(entity, now)
            return lang.template(
                match.intent, ["default"], slots=lang.slots(match, res), matched=[state]
            )
    where = res.area.name if res.scope is Scope.AREA and res.area else res.targets[0].name
    return lang.own("unknown_temperature", name=where)


def _get_state(
    lang: LanguageAnswers,
    match: IntentMatch,
    res: Resolution,
    now: CurrentState,
    _: Sequence[Action],
) -> str | None:
    """The template where the known states decide the answer; what is unknown is said."""
    kind = match.response or "one"
    asked = match.slots.get("state")
    slots = lang.slots(match, res)
    if not isinstance(asked, str):  # "what is the state of the X": the first target's state
        first = res.targets[0]
        if now.state(first) is None:
            return lang.own("unknown_state", names=first.name)
        state = lang.state_of(first, now)
        return lang.template(match.intent, [kind, "default"], slots=slots, matched=[state])
    known = [e for e in res.targets if now.state(e) is not None]
    unknown = [e for e in res.targets if now.state(e) is None]
    matched = [lang.state_of(e, now) for e in known if now.state(e) == asked]
    unmatched = [lang.state_of(e, now) for e in known if now.state(e) != asked]
    note = lang.own("unknown_state", names=lang.names(unknown)) if unknown else None
    # "are all the lights off": one that is on says no; "is any light on", "is the light
    # on": one that is says yes; "which lights are on", "how many": those that are.
    decided = bool(unmatched) if kind.endswith("all") else bool(matched)
    if unknown and not decided:
        return note
    text = lang.template(
        match.intent, [kind, "default"], slots=slots, matched=matched, unmatched=unmatched
    )
    if text is not None and note is not None and kind.endswith(("which", "how_many")):
        return f"{text}{lang.own('sentence_join') or ' '}{note}"
    return text


_Handler = Callable[
    [LanguageAnswers, IntentMatch, Resolution, CurrentState, Sequence[Action]], str | None
]

_HANDLERS: Mapping[str, _Handler] = {
    "HassTurnOn": _turn,
    "HassTurnOff": _turn,
    "HassLightSet": _light_set,
    "HassClimateSetTemperature": _default,
    "HassClimateGetTemperature": _get_temperature,
    "HassGetState": _get_state,
    "HassSetVolume": _set_volume,
    "HassSetVolumeRelative": _volume_relative,
    "HassMediaPlayerMute": _default,
    "HassMediaPlayerUnmute": _default,
}
