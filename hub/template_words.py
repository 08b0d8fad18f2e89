"""Which hassil templates can possibly match a text, from the words each template can produce.

hassil tries every template of every intent against a text (946 templates in English with
ours; its own required-fragment filter keeps about a twentieth of them), and that costs
5-10 ms per recognition (docs/benchmarks.md). Most of that time is spent matching templates
that share a fragment with the text ("turn on") but cannot produce one of its words
("kitchen" from a media player template).

:class:`TemplateWords` is built once per engine: for each template, the set of words any of
its expansions can contain, with the home's slot lists (entity names and aliases, areas,
floors), hassil's number ranges (digits and spelled-out numbers) and expansion rules. A text
can only match a template that has every one of its words. The filter only ever drops
templates that cannot produce the text, so hassil, run on the templates left in their
original order, gives the same result as on all of them (checked against hassil itself in
``tests/hub/test_template_words.py``). Conservative everywhere it cannot be exact:

* a template with a wildcard list, a list or rule it cannot find, or too many ways of
  gluing words together is always kept;
* words of the text that hassil may drop (skip words) or that hold a digit (hassil finds
  numbers anywhere in the text) are not required;
* a language written without spaces (``ignore_whitespace``, zh-CN) is not filtered at all.

Words are what is left between characters that are not letters or digits, case-folded, on
both sides; a template piece glued to its neighbour ("light[s]", "{brightness}%") is
followed through the glue, so "lights" is a word of "light[s]".

With unmatched entities (the engine's second pass, for names the home lacks) hassil may put
any words in a slot it cannot fill. The engine keeps only readings whose unknown words are in
a naming slot (``name``, ``area``, ``floor``) or are digits out of range, so for that pass
(``restrict(text, unmatched=True)``) every template with a naming slot is kept, and the others
still need every word of the text.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

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
from hassil.intents import Intent, RangeSlotList, TextSlotList
from hassil.numbers import get_rbnf_engine
from hassil.util import normalize_for_matching

__all__ = ["NAMING_SLOTS", "TemplateWords", "words_of"]

_SEPARATOR = re.compile(r"[^\w]|_")
"""What separates words: anything but a letter or a digit (hassil breaks words at - and _)."""

_MAX_GLUE = 4096
"""Most distinct partial words a template piece may have; beyond, the template is kept."""

_MAX_PERMUTED = 5
"""Most items of a permutation followed through every order; beyond, the template is kept."""

_RESTRICTED_KEPT = 1024
"""Restricted ``Intents`` remembered, by the set of templates kept."""

NAMING_SLOTS = frozenset({"name", "area", "floor"})
"""Slots the unmatched pass lets hold unknown words (the engine's ``_plausibly_unknown``)."""


def words_of(text: str) -> list[str]:
    """The words of ``text`` as the filter compares them: hassil's normalisation, case-folded,
    split at anything but letters and digits."""
    folded = normalize_for_matching(text).text.casefold()
    return [word for word in _SEPARATOR.split(folded) if word]


class _Unbounded(Exception):
    """A template the filter cannot describe: it is always kept."""


@dataclass
class _Pieces:
    """What an expression's expansions look like, word-wise (a superset of them).

    ``solid``: whole expansions without a separator ("s", "", "light"); ``heads`` / ``tails``:
    the partial word before the first / after the last separator of the others; ``words``:
    complete words inside.
    """

    solid: set[str] = field(default_factory=set)
    heads: set[str] = field(default_factory=set)
    tails: set[str] = field(default_factory=set)
    words: set[str] = field(default_factory=set)

    def all_words(self) -> set[str]:
        return (self.solid | self.heads | self.tails | self.words) - {""}


def _text(text: str) -> _Pieces:
    parts = _SEPARATOR.split(text.casefold())
    if len(parts) == 1:
        return _Pieces(solid={parts[0]})
    return _Pieces(heads={parts[0]}, tails={parts[-1]}, words=set(parts[1:-1]))


def _check(pieces: _Pieces) -> _Pieces:
    if max(len(pieces.solid), len(pieces.heads), len(pieces.tails)) > _MAX_GLUE:
        raise _Unbounded
    return pieces


def _concat(left: _Pieces, right: _Pieces) -> _Pieces:
    return _check(
        _Pieces(
            solid={a + b for a in left.solid for b in right.solid},
            heads=left.heads | {a + h for a in left.solid for h in right.heads},
            tails=right.tails | {t + b for t in left.tails for b in right.solid},
            words=left.words | right.words | {t + h for t in left.tails for h in right.heads},
        )
    )


def _union(all_pieces: Iterable[_Pieces]) -> _Pieces:
    result = _Pieces()
    for pieces in all_pieces:
        result.solid |= pieces.solid
        result.heads |= pieces.heads
        result.tails |= pieces.tails
        result.words |= pieces.words
    return _check(result)


class _Walker:
    """Pieces of expressions with one template's slot lists and expansion rules."""

    def __init__(
        self,
        lists: Mapping[str, SlotList],
        rules: dict[str, Sentence],
        language: str,
        shared: dict[int, _Pieces],
    ) -> None:
        self.lists, self.rules, self.language = lists, rules, language
        self._depth = 0
        # Pieces of a slot list or rule object, shared by every template's walker: the same
        # lists and rules recur in hundreds of templates (the number ranges cost most).
        self._shared = shared

    def pieces(self, expression: Expression) -> _Pieces:
        self._depth += 1
        try:
            if self._depth > 50:
                raise _Unbounded  # a rule that refers to itself
            return self._pieces(expression)
        finally:
            self._depth -= 1

    def _pieces(self, expression: Expression) -> _Pieces:
        if isinstance(expression, TextChunk):
            return _text(expression.text)
        if isinstance(expression, Alternative):
            return _union(self.pieces(item) for item in expression.items)
        if isinstance(expression, Permutation):
            if len(expression.items) > _MAX_PERMUTED:
                raise _Unbounded
            each = [self.pieces(item) for item in expression.items]
            return _union(
                self._sequence(order) for order in itertools.permutations(each)
            )  # hassil puts spaces around each item; every order is followed anyway
        if isinstance(expression, Sequence):
            return self._sequence(self.pieces(item) for item in expression.items)
        if isinstance(expression, RuleReference):
            rule = self.rules.get(expression.rule_name)
            if rule is None:
                raise _Unbounded
            return self._memo(rule, lambda: self.pieces(rule.expression))
        if isinstance(expression, ListReference):
            return self._list(expression)
        raise _Unbounded

    def _sequence(self, items: Iterable[_Pieces]) -> _Pieces:
        result = _Pieces(solid={""})
        for pieces in items:
            result = _concat(result, pieces)
        return result

    def _list(self, reference: ListReference) -> _Pieces:
        if reference.prefix or reference.suffix:
            raise _Unbounded
        slot_list = self.lists.get(reference.list_name)
        if isinstance(slot_list, TextSlotList):
            values = slot_list.values
            return self._memo(slot_list, lambda: _union(self.pieces(v.text_in) for v in values))
        if isinstance(slot_list, RangeSlotList):
            ranged = slot_list
            return self._memo(ranged, lambda: self._range(ranged))
        raise _Unbounded  # a wildcard, or a list hassil would take from elsewhere

    def _memo(self, source: object, make: Callable[[], _Pieces]) -> _Pieces:
        pieces = self._shared.get(id(source))
        if pieces is None:
            pieces = self._shared[id(source)] = make()
        return pieces

    def _range(self, ranged: RangeSlotList) -> _Pieces:
        # Digits are never required of a text (words_of's callers drop them); the words
        # are every spelling hassil accepts (its range trie: each rule set's text).
        engine = get_rbnf_engine(ranged.words_language or self.language)
        spelled: set[str] = set()
        if ranged.words:
            for number in ranged.get_numbers():
                spelled.update(engine.format_number(number).text_by_ruleset.values())
        spelled.update(str(number) for number in ranged.get_numbers())
        return _union(_text(text) for text in spelled)


class TemplateWords:
    """The words each template of ``intents`` can produce, and the templates a text can match.

    Args:
        intents: the engine's intents.
        slot_lists: the lists passed to hassil at recognition (they override the intents').
        language: for spelling numbers.
    """

    def __init__(self, intents: Intents, slot_lists: Mapping[str, SlotList], language: str) -> None:
        self.intents = intents
        self.enabled = not intents.settings.ignore_whitespace
        self._templates: list[tuple[str, int, int]] = []  # (intent, data index, sentence index)
        self._by_word: dict[str, int] = {}  # word -> bit mask of templates that have it
        self._always = 0  # templates kept whatever the text
        self._naming = 0  # templates with a naming slot: kept for the unmatched pass
        self._skip = {word for skip in intents.skip_words for word in words_of(skip)}
        self._restricted: dict[int, Intents] = {}
        if self.enabled:
            self._index(slot_lists, language)

    @property
    def template_count(self) -> int:
        return len(self._templates)

    @property
    def always_kept(self) -> int:
        """Templates the filter cannot describe (wildcards...): kept for every text."""
        return self._always.bit_count()

    def _index(self, slot_lists: Mapping[str, SlotList], language: str) -> None:
        intents = self.intents
        merged = {**intents.slot_lists, **slot_lists}
        shared: dict[int, _Pieces] = {}  # the objects stay alive in intents: ids are stable
        for name, intent in intents.intents.items():
            for data_index, data in enumerate(intent.data):
                walker = _Walker(
                    {**merged, **data.slot_lists},
                    {**intents.expansion_rules, **data.expansion_rules},
                    language,
                    shared,
                )
                wildcards = set(data.wildcard_list_names)
                for sentence_index, sentence in enumerate(data.sentences):
                    bit = 1 << len(self._templates)
                    self._templates.append((name, data_index, sentence_index))
                    try:
                        if wildcards & set(sentence.list_names(walker.rules)):
                            raise _Unbounded
                        if _names_a_slot(sentence.expression, walker.rules):
                            self._naming |= bit
                        words = walker.pieces(sentence.expression).all_words()
                    except _Unbounded:
                        self._always |= bit
                        continue
                    for word in words:
                        self._by_word[word] = self._by_word.get(word, 0) | bit

    def candidates(self, text: str) -> int:
        """Bit mask of the templates that can match ``text`` (bit i: template i)."""
        mask = (1 << len(self._templates)) - 1
        for word in words_of(text):
            if word in self._skip or any(char.isdigit() for char in word):
                continue
            mask &= self._by_word.get(word, 0) | self._always
            if not mask:
                break
        return mask

    def restrict(self, text: str, *, unmatched: bool = False) -> Intents:
        """``intents`` with only the templates that can match ``text``, in their order.

        Each kept intent data block keeps everything but its sentences, so hassil checks
        contexts, fills slots and ranks results exactly as it does with all of them.
        ``unmatched``: for the pass with unmatched entities (module docstring).
        """
        if not self.enabled:
            return self.intents
        mask = self.candidates(text)
        if unmatched:
            mask |= self._naming
        restricted = self._restricted.get(mask)
        if restricted is None:
            restricted = self._build(mask)
            if len(self._restricted) >= _RESTRICTED_KEPT:
                self._restricted.pop(next(iter(self._restricted)))
            self._restricted[mask] = restricted
        return restricted

    def _build(self, mask: int) -> Intents:
        kept: dict[tuple[str, int], list[int]] = {}
        for index, (name, data_index, sentence_index) in enumerate(self._templates):
            if mask >> index & 1:
                kept.setdefault((name, data_index), []).append(sentence_index)
        intents: dict[str, Intent] = {}
        for name, intent in self.intents.intents.items():
            blocks = []
            for data_index, data in enumerate(intent.data):
                sentence_indexes = kept.get((name, data_index))
                if sentence_indexes is None:
                    continue
                block = copy.copy(data)
                # IntentData.sentences is a cached_property: the copy's own list.
                block.__dict__["sentences"] = [data.sentences[i] for i in sentence_indexes]
                blocks.append(block)
            if blocks:
                intents[name] = Intent(name=name, data=blocks)
        return replace(self.intents, intents=intents)


def _names_a_slot(expression: Expression, rules: Mapping[str, Sentence], depth: int = 0) -> bool:
    """True when a list reference of ``expression`` (rules followed) fills, or reads from, a
    naming slot: the unmatched pass may put unknown words there."""
    if depth > 50:
        raise _Unbounded
    if isinstance(expression, ListReference):
        try:
            slot = expression.slot_name
        except AssertionError:  # hassil sets it when parsing; keep the template otherwise
            raise _Unbounded from None
        return bool({expression.list_name, slot} & NAMING_SLOTS)
    if isinstance(expression, RuleReference):
        rule = rules.get(expression.rule_name)
        if rule is None:
            raise _Unbounded
        return _names_a_slot(rule.expression, rules, depth + 1)
    if isinstance(expression, (Alternative, Permutation, Sequence)):
        return any(_names_a_slot(item, rules, depth + 1) for item in expression.items)
    return False
