"""Voice command text → intent, with hassil and home-assistant-intents (design.md §6).

Used exactly as reference/home-automation.md §3 ("API actually used") describes:

* Home Assistant's sentences for the language (``home_assistant_intents.get_intents``) merged
  with ours of that language (:data:`XIAOZHI_INTENTS_PATHS`; in English the device's volume,
  LED and status, relative brightness and temperature, and more phrasings for Home
  Assistant's own intents: "louder", "mute", "is the light on", "set brightness to 40% in
  the bedroom"; in zh-CN brightness without 亮度) by ``hassil.merge_dict``;
* the three slot lists Home Assistant's default agent builds, from the home model: ``name``
  (entity names *and* aliases → entity id, with context ``{"domain": ...}`` so sentences with
  ``requires_context: {domain: light}`` only match lights), ``area`` (names and aliases → area
  id) and ``floor`` (→ floor id);
* ``recognize_best`` with the speaking device's area as ``intent_context``, so "turn on the
  light" and "set volume to 80" work in a room; our sentences carry the ``hass_custom_file``
  metadata key, which ``recognize_best`` ranks first, as Home Assistant does for custom
  sentences.

When nothing matches strictly, a second pass with ``allow_unmatched_entities`` finds what the
user *meant* ("turn on the garage light": HassTurnOn with an unknown name), so the hub can
answer "I don't know a device called garage light" instead of "I didn't understand". The pick
among unmatched readings follows Home Assistant's default agent (only ``name``, ``area`` and
``floor`` may hold unknown words, numbers may be out of range; most literal text, most matched
slots, fewest unmatched), plus one rule of ours: an unknown area directly followed by the
device word ("garage light") is reported as an unknown *device name*.

Two additions of ours around hassil:

* **Device-class words** ("the thermostat", "the heating", "the door", "the lock") join the
  ``name`` list as pseudo-names whose value is :data:`DEVICE_CLASS_PREFIX` + a domain
  (``class:lock``), with that domain as context, so Home Assistant's own sentences ("lock
  [the] {name}", "is [the] {name} locked", "set [the] {name} to {temperature}") take them;
  :mod:`xiaozhi_hub.resolve` picks the one entity they mean, or refuses when several could
  be meant. A word the home already uses as a real name stays that name.
* **Negations** ("don't turn on the kitchen light", "never unlock the door") are refused
  before hassil sees them (:func:`negation`): hassil's skip words would otherwise read them
  as the command they negate. They give a :class:`NoMatch` with reason ``negated``.

Target resolution (name → entity, area + domain → entities) is not hassil's job: see
:mod:`xiaozhi_hub.resolve`. :meth:`IntentEngine.recognize` is a pure function of its input.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import home_assistant_intents
import yaml
from hassil import Intents, SlotList, TextSlotList, merge_dict, recognize_all, recognize_best
from hassil.models import UnmatchedEntity, UnmatchedRangeEntity, UnmatchedTextEntity
from hassil.recognize import MISSING_ENTITY, RecognizeResult

from xiaozhi_hub.home import Home
from xiaozhi_hub.languages import intent_language
from xiaozhi_hub.template_words import NAMING_SLOTS, TemplateWords

__all__ = [
    "BEST_METADATA_KEY",
    "DEVICE_CLASS_PREFIX",
    "DEVICE_CLASS_WORDS",
    "WARM_UP_PHRASES",
    "XIAOZHI_INTENTS_PATH",
    "XIAOZHI_INTENTS_PATHS",
    "IntentEngine",
    "IntentMatch",
    "NoMatch",
    "negation",
]

XIAOZHI_INTENTS_PATH = Path(__file__).with_name("intents_xiaozhi.yaml")
"""Our own English sentences (hassil YAML) for device functions; merged for English only."""

XIAOZHI_INTENTS_PATHS = (
    XIAOZHI_INTENTS_PATH,
    Path(__file__).with_name("intents_xiaozhi_zh-CN.yaml"),
)
"""Every file of our own sentences; each is merged for its own ``language`` only."""

BEST_METADATA_KEY = "hass_custom_file"
"""Sentences whose metadata has this key win in ``recognize_best`` (Home Assistant's key)."""

DEVICE_CLASS_PREFIX = "class:"
"""A ``name`` slot value starting with this names a device class, not an entity."""

DEVICE_CLASS_WORDS: Mapping[str, str] = {
    "thermostat": "climate",
    "heating": "climate",
    "heat": "climate",
    "heater": "climate",
    "lock": "lock",
    "door": "lock",
}
"""Words a household uses for the one device of a kind → its domain (English only).

Not "light": "turn on the light" means every light of the room (Home Assistant's area and
domain sentences), not "the one light", so lights never become a class name.
"""

_NEGATIONS: Mapping[str, re.Pattern[str]] = {
    "en": re.compile(r"\b(?:don'?t|do not|does not|doesn'?t|never|not)\b"),
    "zh-CN": re.compile(r"不要|不用|不必"),
}
"""Words that turn a command into its opposite, per language (module docstring)."""

WARM_UP_PHRASES = (
    "turn on the light",
    "turn off the lights in the kitchen",
    "set the brightness to 50%",
    "what is the temperature",
    "set volume to 50",
    "what is your status",
)
"""Run once at start: hassil parses templates lazily, so the first recognition costs ~100 ms."""


@dataclass(frozen=True, slots=True)
class IntentMatch:
    """A recognized intent.

    ``slots`` maps slot names to values: the entity id for ``name``, the area id for ``area``,
    the floor id for ``floor``, numbers as ``int`` when whole (``brightness: 50``), fixed
    sentence slots as given (``domain: "light"``, ``state: "on"``). ``unmatched`` maps slots
    the user filled with words we do not know to those words (``{"name": "garage light"}``),
    or to ``""`` for a slot that was needed but neither said nor known from context (no area
    for "turn on the light" from a device without one). A match with ``unmatched`` must not
    be executed.
    """

    intent: str
    text: str  # what was recognized, as given
    slots: Mapping[str, Any] = field(default_factory=dict)
    slot_texts: Mapping[str, str] = field(default_factory=dict)  # the words that filled a slot
    from_context: frozenset[str] = frozenset()  # slots filled from the device's area
    unmatched: Mapping[str, str] = field(default_factory=dict)
    sentence: str | None = None  # the template that matched, for debugging
    language: str = "en"
    response: str | None = None  # the sentence's response kind ("one_yesno", "any"...)

    @property
    def complete(self) -> bool:
        """True when every slot matched something we know."""
        return not self.unmatched

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "intent": self.intent,
            "text": self.text,
            "slots": dict(self.slots),
            "unmatched": dict(self.unmatched),
            "from_context": sorted(self.from_context),
            "sentence": self.sentence,
            "language": self.language,
        }


@dataclass(frozen=True, slots=True)
class NoMatch:
    """Nothing matched, not even with unknown names: the text is outside every sentence.

    ``reason`` is ``no_intent``, ``empty`` or ``negated`` (a negated command: never acted on).
    """

    text: str
    language: str = "en"
    reason: str = "no_intent"

    def to_json_dict(self) -> dict[str, Any]:
        return {"intent": None, "text": self.text, "reason": self.reason, "language": self.language}


def negation(text: str, language: str = "en") -> str | None:
    """The negating word in ``text`` ("don't", "never"...), or None.

    Any negation anywhere refuses the whole text: "turn on the light, no, don't" must not
    turn it on, and a refused question ("isn't the door locked") costs only a re-phrasing.
    """
    pattern = _NEGATIONS.get(language)
    if pattern is None:
        return None
    found = pattern.search(text.casefold().replace("\u2019", "'"))
    return found.group(0) if found else None


def _number(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


RECOGNITION_CACHE_SIZE = 4096
"""Distinct (phrase, area) results kept; a few MiB at most."""


class IntentEngine:
    """hassil + home-assistant-intents + our sentences, with slot lists from a home.

    Args:
        home: the home model the ``name``/``area``/``floor`` slot lists come from.
        language: a home-assistant-intents language (``en``, ``zh-CN``; ``zh-cn`` and
            ``en-US`` are normalised: :func:`~xiaozhi_hub.languages.intent_language`).
        extra_intents: our hassil YAML files (:data:`XIAOZHI_INTENTS_PATHS`); each is merged
            only when its ``language`` matches.
        filter_templates: try only the templates that can produce the text's words
            (:class:`~xiaozhi_hub.template_words.TemplateWords`); False: every template, as
            hassil alone does (the reference the filter is tested against).

    Raises:
        ValueError: home-assistant-intents has no sentences for ``language``.

    Loading takes a few ms; call :meth:`warm_up` once at start, since the first recognition
    parses templates (~100 ms).
    """

    def __init__(
        self,
        home: Home,
        language: str = "en",
        *,
        extra_intents: Path | Sequence[Path] | None = XIAOZHI_INTENTS_PATHS,
        filter_templates: bool = True,
    ) -> None:
        language = intent_language(language)
        data = home_assistant_intents.get_intents(language)
        assert data is not None  # intent_language only returns the package's languages
        paths = [extra_intents] if isinstance(extra_intents, Path) else extra_intents or ()
        for path in paths:
            ours = yaml.safe_load(path.read_text(encoding="utf-8"))
            if ours.get("language") == language:
                merge_dict(data, ours)
        self.language = language
        self.intents = Intents.from_dict(data)
        self.home = home
        values = self._slot_values(home)
        self.slot_lists: dict[str, SlotList] = {
            slot: TextSlotList.from_tuples(pairs, allow_template=False)
            for slot, pairs in values.items()
        }
        self.fingerprint = hashlib.sha256(
            json.dumps([language, data, values], sort_keys=True, default=str).encode()
        ).hexdigest()
        """Names everything the engine matches (its sentences and this home's lists): two
        engines with the same fingerprint match the same sentences the same way."""
        # Strict matching only tries the templates that can produce every word of the text
        # (:mod:`xiaozhi_hub.template_words`): the same result, a fraction of the work.
        self.template_words = (
            TemplateWords(self.intents, self.slot_lists, language) if filter_templates else None
        )
        # Recognition is a pure function of (text, area) for a loaded home, and costs ~1-50 ms
        # (docs/benchmarks.md): a fleet repeats its phrases, so remember the recent ones. The
        # cache is one thread's: the pipeline reads and fills it on the event loop only, and
        # only the uncached work (:meth:`recognize_uncached`) goes to its worker thread.
        self._cache: OrderedDict[tuple[str, str | None], IntentMatch | NoMatch] = OrderedDict()
        self._hits = 0
        self._misses = 0

    def _slot_values(self, home: Home) -> dict[str, list[tuple[Any, ...]]]:
        """The (text, value[, context]) of the ``name``, ``area`` and ``floor`` lists."""
        names: list[tuple[Any, ...]] = [
            (name, entity.entity_id, {"domain": entity.domain})
            for entity in home.entities
            for name in entity.names
        ]
        if self.language == "en":
            taken = {name.casefold() for name, *_ in names}
            names += [
                (word, f"{DEVICE_CLASS_PREFIX}{domain}", {"domain": domain})
                for word, domain in DEVICE_CLASS_WORDS.items()
                if word not in taken
            ]
        areas = [(name, area.id) for area in home.areas for name in (area.name, *area.aliases)]
        floors = [(name, f.id) for f in home.floors for name in (f.name, *f.aliases)]
        return {"name": names, "area": areas, "floor": floors}

    def warm_up(self, phrases: Iterable[str] = WARM_UP_PHRASES) -> float:
        """Recognize a few phrases so hassil's lazy parts are ready before the first user;
        seconds spent. Nothing is cached (warm-up runs on the pipeline's worker thread)."""
        started = time.perf_counter()
        area = self.home.areas[0].id if self.home.areas else None
        for phrase in phrases:
            self.recognize_uncached(phrase, device_area=area)
        return time.perf_counter() - started

    def recognize(self, text: str, *, device_area: str | None = None) -> IntentMatch | NoMatch:
        """The best intent for ``text`` said by a device in ``device_area`` (an area id).

        An area id the home does not know is ignored (as if the device had no area).
        Results are shared between calls: treat them as read-only. Cached: call it from one
        thread only (the pipeline's split of :meth:`cached`, :meth:`recognize_uncached` and
        :meth:`remember` keeps the cache on the event loop).
        """
        found = self.cached(text, device_area=device_area)
        if found is None:
            found = self.recognize_uncached(text, device_area=device_area)
            self.remember(text, found, device_area=device_area)
        return found

    def cached(self, text: str, *, device_area: str | None = None) -> IntentMatch | NoMatch | None:
        """The remembered result for ``text`` in ``device_area``, or None (a miss, counted)."""
        key = (text.strip(), device_area)
        found = self._cache.get(key)
        if found is None:
            self._misses += 1
            return None
        self._hits += 1
        self._cache.move_to_end(key)
        return found

    def remember(
        self, text: str, result: IntentMatch | NoMatch, *, device_area: str | None = None
    ) -> None:
        """Keep ``result`` for ``text`` in ``device_area``; the least recently used goes."""
        self._cache[(text.strip(), device_area)] = result
        if len(self._cache) > RECOGNITION_CACHE_SIZE:
            self._cache.popitem(last=False)

    def recognize_uncached(
        self, text: str, *, device_area: str | None = None
    ) -> IntentMatch | NoMatch:
        """:meth:`recognize` without the cache: pure, safe on a worker thread."""
        return self._recognize(text.strip(), device_area)

    def cache_info(self) -> functools._CacheInfo:
        """Hits and misses of the recognition cache (for /metrics and tests)."""
        return functools._CacheInfo(
            self._hits, self._misses, RECOGNITION_CACHE_SIZE, len(self._cache)
        )

    def _recognize(self, text: str, device_area: str | None) -> IntentMatch | NoMatch:
        if not text:
            return NoMatch(text=text, language=self.language, reason="empty")
        if negation(text, self.language) is not None:
            return NoMatch(text=text, language=self.language, reason="negated")
        area = self.home.area(device_area)
        context = {"area": {"value": area.id, "text": area.name}} if area else None
        words = self.template_words
        result = recognize_best(
            text,
            words.restrict(text) if words is not None else self.intents,
            slot_lists=self.slot_lists,
            intent_context=context,
            language=self.language,
            best_metadata_key=BEST_METADATA_KEY,
            best_slot_name="name",
        )
        if result is None:
            result = self._best_unmatched(text, context)
        if result is None:
            return NoMatch(text=text, language=self.language)
        return self._to_match(text, result, context)

    def _best_unmatched(self, text: str, context: dict[str, Any] | None) -> RecognizeResult | None:
        """The likeliest reading with unknown names (Home Assistant's default agent, simplified)."""
        candidates: list[tuple[tuple[int, int, int], RecognizeResult]] = []
        words = self.template_words
        for result in recognize_all(
            text,
            words.restrict(text, unmatched=True) if words is not None else self.intents,
            slot_lists=self.slot_lists,
            intent_context=context,
            allow_unmatched_entities=True,
            language=self.language,
        ):
            if result.text_chunks_matched < 1:
                continue  # matched no literal words at all: not a reading of this sentence
            if not _plausibly_unknown(result):
                continue
            matched = sum(
                1 for e in result.entities_list if e.name not in result.unmatched_entities
            )
            said_count = len(_said_unmatched(result))
            candidates.append(((result.text_chunks_matched, matched, -said_count), result))
        if not candidates:
            return None
        best = max(candidates, key=lambda pair: pair[0])[1]
        # "turn on the garage light" reads best as area "garage" + lights; but "garage light"
        # is what the user called the device, so answer about that name.
        said = _said_unmatched(best)
        place = said.get("area") or said.get("floor")
        if place and "name" not in said:
            for _, other in candidates:
                other_said = _said_unmatched(other)
                name = other_said.get("name", "")
                if (
                    other.intent.name == best.intent.name
                    and set(other_said) == {"name"}
                    and name.startswith(place + " ")
                    and text.casefold().rstrip(" .!?").endswith(name)
                ):
                    return other
        return best

    def _to_match(
        self, text: str, result: RecognizeResult, context: dict[str, Any] | None
    ) -> IntentMatch:
        slots: dict[str, Any] = {}
        slot_texts: dict[str, str] = {}
        from_context: set[str] = set()
        for entity in result.entities_list:
            if entity.name in result.unmatched_entities:
                continue
            slots[entity.name] = _number(entity.value)
            slot_texts[entity.name] = entity.text_clean
            if entity.text_span is None and context and entity.name in context:
                from_context.add(entity.name)
        unmatched = {e.name: _unmatched_words(e) for e in result.unmatched_entities_list}
        return IntentMatch(
            intent=result.intent.name,
            text=text,
            slots=slots,
            slot_texts=slot_texts,
            from_context=frozenset(from_context),
            unmatched=unmatched,
            sentence=result.intent_sentence.text if result.intent_sentence else None,
            language=self.language,
            response=result.response,
        )


def _clean(words: str) -> str:
    """Unmatched words without a leading article: "the garage " → "garage"."""
    words = words.strip().casefold()
    for article in ("the ", "my ", "our "):
        if words.startswith(article):
            words = words[len(article) :]
    return words.strip()


def _unmatched_words(entity: UnmatchedEntity) -> str:
    """What the user said for an unmatched slot: words, a number, or "" when not said."""
    if isinstance(entity, UnmatchedRangeEntity):
        return str(_number(entity.value))
    assert isinstance(entity, UnmatchedTextEntity)  # hassil's only other kind
    text = entity.text.strip()
    return "" if text == MISSING_ENTITY else _clean(text)


_NAMING_SLOTS = NAMING_SLOTS
"""The slots whose words can be a name we do not know (Home Assistant's default agent)."""


def _plausibly_unknown(result: RecognizeResult) -> bool:
    """Unknown words only where a name goes: "is the garage door open" is no "{direction}
    {name}" sentence with "is" as the direction. Numbers out of range and slots nobody said
    (``<missing>``) are fine."""
    return not any(
        isinstance(entity, UnmatchedTextEntity)
        and entity.name not in _NAMING_SLOTS
        and entity.text.strip() != MISSING_ENTITY
        for entity in result.unmatched_entities_list
    )


def _said_unmatched(result: RecognizeResult) -> dict[str, str]:
    """Unmatched slots the user actually said something for (not the ``<missing>`` ones)."""
    words = {e.name: _unmatched_words(e) for e in result.unmatched_entities_list}
    return {name: said for name, said in words.items() if said}
