"""The sentences a home's voice commands can take, as plain lower-case words.

The offline recogniser (:mod:`xiaozhi_speech.offline`) only knows the words and word orders
it is trained on: it is built from this corpus every time the home model changes. The corpus
is what the hub's intent engine can match for *this* home: hassil's templates
(home-assistant-intents plus ours), their expansion rules, the home's slot lists (entity
names and aliases, areas, floors) and the number ranges, spelled as a speaker says them.

Fully expanding the templates is impossible (``HassTurnOn`` alone has well over 200,000
sentences for the small demo home, because optional words, alternatives and permutations
multiply), so each template is enumerated when it is small and sampled at random (with a fixed
seed, so the same home always gives the same corpus) when it is large. An n-gram model only
needs every short word sequence to occur somewhere, which sampling gives.

Templates that can never match in this home are left out: those with wildcards (free text
such as shopping list items cannot be recognised from a closed vocabulary) and those that
require a ``{name}`` of a domain the home has no entity of (``requires_context: domain: fan``
in a home without fans).
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from hassil import Intents, SlotList
from hassil.expression import (
    Alternative,
    Expression,
    ListReference,
    Permutation,
    RuleReference,
    Sentence,
    Sequence,
    TextChunk,
)
from hassil.intents import RangeSlotList, TextSlotList, WildcardSlotList
from hassil.numbers import get_rbnf_engine

__all__ = [
    "BACKGROUND_AREAS",
    "BACKGROUND_NAMES",
    "DEFAULT_BACKGROUND_LIMIT",
    "DEFAULT_CORPUS_LIMIT",
    "background_from_intents",
    "corpus_from_intents",
    "normalize_words",
    "number_words",
]

DEFAULT_CORPUS_LIMIT = 50_000
"""Sentences kept at most: enough for the word sequences of a home, built in about a second."""

DEFAULT_BACKGROUND_LIMIT = 20_000
"""Background sentences of each kind (:func:`background_from_intents`)."""

BACKGROUND_NAMES = (
    "garage light", "attic fan", "basement light", "porch light", "hallway light",
    "garden light", "bathroom light", "dining room light", "ceiling fan", "desk lamp",
    "floor lamp", "tv", "television", "heater", "kettle", "coffee maker", "oven",
    "washing machine", "dishwasher", "fridge", "computer", "radio", "blinds", "curtains",
    "window", "gate", "garage door", "back door", "sprinkler", "christmas tree",
    "air conditioner", "printer", "alarm", "camera", "doorbell", "music",
)  # fmt: skip
"""Things homes commonly have, for the decoder to hear when a home lacks them (English)."""

BACKGROUND_AREAS = (
    "garage", "attic", "basement", "hallway", "garden", "porch", "patio", "bathroom",
    "dining room", "nursery", "study", "laundry room", "hall", "upstairs", "downstairs",
    "guest room", "kids room", "backyard", "driveway", "shed", "toilet", "cellar",
)  # fmt: skip
"""Rooms homes commonly have, for the decoder to hear when a home lacks them (English)."""

_BACKGROUND_DOMAINS = ("light", "switch", "fan", "lock", "climate", "media_player", "cover")

_SEED = 20_261_201
_ENUMERATE_UP_TO = 200
"""A template with at most this many sentences is enumerated whole; larger ones are sampled."""

_SYMBOLS = {"%": " percent ", "°": " degrees ", "&": " and ", "+": " plus "}
_NOT_WORD = re.compile(r"[^a-z0-9' ]+")
_DIGITS = re.compile(r"\d+(?:\.\d+)?")

_Lists = Mapping[str, SlotList]
_Rules = Mapping[str, Sentence]


def number_words(value: float, language: str = "en") -> str:
    """``21`` → ``"twenty one"``, ``7.5`` → ``"seven point five"``: numbers as spoken."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    spelled = get_rbnf_engine(language).format_number(value).text_by_ruleset
    text = spelled.get("spellout-cardinal") or next(iter(spelled.values()))
    return text.replace("-", " ")


def normalize_words(text: str, language: str = "en") -> str:
    """Text as the recogniser's words: lower case, numbers spelled out, symbols as words,
    no punctuation but the apostrophes inside words (``what's``)."""
    text = text.lower()
    for symbol, word in _SYMBOLS.items():
        text = text.replace(symbol, word)
    text = _DIGITS.sub(lambda m: f" {number_words(float(m.group()), language)} ", text)
    text = _NOT_WORD.sub(" ", text.replace("-", " "))
    return " ".join(word.strip("'") for word in text.split() if word.strip("'"))


def corpus_from_intents(
    intents: Intents,
    slot_lists: Mapping[str, SlotList],
    *,
    language: str = "en",
    limit: int = DEFAULT_CORPUS_LIMIT,
    intent_names: Collection[str] | None = None,
) -> list[str]:
    """Every sentence the intent engine can match for this home, bounded (module docstring).

    Args:
        intents: the engine's intents (``IntentEngine.intents``).
        slot_lists: the home's lists (``IntentEngine.slot_lists``: ``name``, ``area``,
            ``floor``); they override the intents' own lists of the same name.
        language: for spelling numbers.
        limit: most sentences returned; the share of each template is kept when cut.
        intent_names: only these intents (say, the ones the hub can act on); None: all.
            A narrower domain is recognised better and rejects more of what is outside it.

    Returns:
        Distinct sentences of lower-case words (``"set the office light brightness to fifty
        percent"``), in a stable order: the same input gives the same corpus.
    """
    lists: dict[str, SlotList] = {**intents.slot_lists, **slot_lists}
    templates = list(_templates(intents, lists, intent_names))
    if not templates or limit <= 0:
        return []
    share = max(1, limit // len(templates))
    rng = random.Random(_SEED)
    seen: dict[str, None] = {}
    per_template: list[list[str]] = []
    for expression, local_lists, rules in templates:
        sampler = _Sampler(local_lists, rules, language, rng)
        found: dict[str, None] = {}
        if sampler.count(expression) <= max(share, _ENUMERATE_UP_TO):
            texts: Iterator[str] = sampler.enumerate(expression)
        else:
            texts = (sampler.draw(expression) for _ in range(share * 2))
        for text in texts:
            words = normalize_words(text, language)
            if words:
                found[words] = None
        per_template.append(list(found))
    # Round robin over templates so a cut keeps every template's first sentences.
    for batch in itertools.zip_longest(*per_template):
        for words in batch:
            if words is not None and words not in seen:
                seen[words] = None
                if len(seen) >= limit:
                    return list(seen)
    return list(seen)


def background_from_intents(
    intents: Intents,
    slot_lists: Mapping[str, SlotList],
    *,
    intent_names: Collection[str],
    language: str = "en",
    limit: int = DEFAULT_BACKGROUND_LIMIT,
) -> list[str]:
    """Sentences the decoder may hear but the home must never act on: somewhere to go for
    speech that is not one of the home's commands.

    A closed-vocabulary decoder forces every sound into the home's words: "turn on the attic
    fan" in a home without an attic came out as "turn on the fan" and switched the office fan
    on. With these in its language model (never in the corpus a hypothesis is checked
    against) the words come out as themselves and the hypothesis is refused.

    Two kinds, up to ``limit`` each: the ``intent_names`` templates with the names and rooms
    of :data:`BACKGROUND_NAMES` and :data:`BACKGROUND_AREAS` the home does not have (English
    only; other languages get the second kind), and every other intent's templates with the
    home's lists (timers, weather, the time: what a household also says to a speaker).
    """
    names = {_value_words(v) for v in _text_values(slot_lists.get("name"))}
    areas = {_value_words(v) for v in _text_values(slot_lists.get("area"))}
    out: list[str] = []
    if language == "en":
        unknown = {
            "name": TextSlotList.from_tuples(
                [
                    (name, f"background.{name}", {"domain": domain})
                    for name in BACKGROUND_NAMES
                    if name not in names
                    for domain in _BACKGROUND_DOMAINS
                ],
                allow_template=False,
            ),
            "area": TextSlotList.from_tuples(
                [(area, area) for area in BACKGROUND_AREAS if area not in areas],
                allow_template=False,
            ),
        }
        out += corpus_from_intents(
            intents,
            {**slot_lists, **unknown},
            language=language,
            limit=limit,
            intent_names=intent_names,
        )
    others = [name for name in intents.intents if name not in intent_names]
    if others:
        out += corpus_from_intents(
            intents, slot_lists, language=language, limit=limit, intent_names=others
        )
    return out


def _text_values(slot_list: SlotList | None) -> list[Any]:
    return list(slot_list.values) if isinstance(slot_list, TextSlotList) else []


def _value_words(value: Any) -> str:
    text_in = value.text_in
    return normalize_words(text_in.text if isinstance(text_in, TextChunk) else str(value.value))


def _templates(
    intents: Intents, lists: dict[str, SlotList], intent_names: Collection[str] | None
) -> Iterator[tuple[Expression, dict[str, SlotList], dict[str, Sentence]]]:
    """(expression, slot lists, expansion rules) of every template that can match here."""
    for name, intent in intents.intents.items():
        if intent_names is not None and name not in intent_names:
            continue
        for data in intent.data:
            rules = {**intents.expansion_rules, **data.expansion_rules}
            local = {**lists, **data.slot_lists}
            names = _names_for(local.get("name"), data.requires_context.get("domain"))
            if names is not None:
                local["name"] = names
            for sentence in data.sentences:
                used = sentence.list_names(rules)
                if any(
                    list_name in data.wildcard_list_names
                    or isinstance(local.get(list_name), WildcardSlotList)
                    for list_name in used
                ):
                    continue  # free text cannot come out of a closed vocabulary
                if any(_empty(local.get(list_name)) for list_name in used):
                    continue  # needs a name (or list) this home does not have
                yield sentence.expression, local, rules


def _names_for(names: SlotList | None, domains: Any) -> TextSlotList | None:
    """The ``name`` list cut to the domains a template requires; None: no requirement."""
    if domains is None or not isinstance(names, TextSlotList):
        return None
    wanted = {domains} if isinstance(domains, str) else set(domains)
    values = [v for v in names.values if (v.context or {}).get("domain") in wanted]
    return TextSlotList(name=names.name, values=values)


def _empty(slot_list: SlotList | None) -> bool:
    return slot_list is None or (isinstance(slot_list, TextSlotList) and not slot_list.values)


class _Sampler:
    """Counts, enumerates and randomly draws the texts of one template's expression."""

    def __init__(
        self, lists: Mapping[str, SlotList], rules: _Rules, language: str, rng: random.Random
    ) -> None:
        self.lists, self.rules, self.language, self.rng = lists, rules, language, rng

    def _numbers(self, ranged: RangeSlotList) -> list[str]:
        return [str(n) for n in ranged.get_numbers()]

    def count(self, expression: Expression) -> int:
        """How many texts the expression has (permutation orders and repeats included)."""
        if isinstance(expression, TextChunk):
            return 1
        if isinstance(expression, Alternative):
            return sum(self.count(item) for item in expression.items)
        if isinstance(expression, Permutation):
            inner = math.prod(self.count(item) for item in expression.items)
            return math.factorial(len(expression.items)) * inner
        if isinstance(expression, Sequence):
            return math.prod(self.count(item) for item in expression.items)
        if isinstance(expression, RuleReference):
            return self.count(self.rules[expression.rule_name].expression)
        if isinstance(expression, ListReference):
            slot_list = self.lists[expression.list_name]
            if isinstance(slot_list, RangeSlotList):
                return len(self._numbers(slot_list))
            assert isinstance(slot_list, TextSlotList)
            return sum(self.count(value.text_in) for value in slot_list.values)
        raise TypeError(f"unexpected hassil expression {expression!r}")

    def enumerate(self, expression: Expression) -> Iterator[str]:
        """Every text of the expression (only called when :meth:`count` is small)."""
        if isinstance(expression, TextChunk):
            yield expression.original_text
        elif isinstance(expression, Alternative):
            for item in expression.items:
                yield from self.enumerate(item)
        elif isinstance(expression, Permutation):
            parts = [list(self.enumerate(item)) for item in expression.items]
            for order in itertools.permutations(parts):
                for words in itertools.product(*order):
                    yield " ".join(words)
        elif isinstance(expression, Sequence):
            for words in itertools.product(*(list(self.enumerate(i)) for i in expression.items)):
                yield "".join(words)
        elif isinstance(expression, RuleReference):
            yield from self.enumerate(self.rules[expression.rule_name].expression)
        elif isinstance(expression, ListReference):
            yield from self._enumerate_list(self.lists[expression.list_name])

    def _enumerate_list(self, slot_list: SlotList) -> Iterator[str]:
        if isinstance(slot_list, RangeSlotList):
            yield from self._numbers(slot_list)
        else:
            assert isinstance(slot_list, TextSlotList)
            for value in slot_list.values:
                yield from self.enumerate(value.text_in)

    def draw(self, expression: Expression) -> str:
        """One text of the expression, each choice uniform at random."""
        if isinstance(expression, TextChunk):
            return expression.original_text
        if isinstance(expression, Alternative):
            return self.draw(self.rng.choice(expression.items))
        if isinstance(expression, Permutation):
            items = list(expression.items)
            self.rng.shuffle(items)
            return " ".join(self.draw(item) for item in items)
        if isinstance(expression, Sequence):
            return "".join(self.draw(item) for item in expression.items)
        if isinstance(expression, RuleReference):
            return self.draw(self.rules[expression.rule_name].expression)
        if isinstance(expression, ListReference):
            slot_list = self.lists[expression.list_name]
            if isinstance(slot_list, RangeSlotList):
                return self.rng.choice(self._numbers(slot_list))
            assert isinstance(slot_list, TextSlotList)
            return self.draw(self.rng.choice(slot_list.values).text_in)
        raise TypeError(f"unexpected hassil expression {expression!r}")
