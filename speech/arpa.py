"""A small ARPA trigram language model, built from a corpus in pure Python.

pocketsphinx reads ARPA text, and the models we need are tiny (a home's corpus has a few
hundred words and tens of thousands of sentences), so no toolkit is needed: counts, absolute
discounting and Katz-style back-off weights fit in a page and build in about a second.

Smoothing: each seen n-gram gives up a fixed ``discount`` (0.5 of a count, as pocketsphinx's own
``ArpaBoLM`` does); what is given up goes to the lower order through the back-off weight, so
every context's probabilities sum to one. Unigrams are not discounted: the vocabulary is closed
(every word the decoder may output is in the corpus), so there is no unknown word to reserve
mass for. ``<s>`` and ``</s>`` mark the sentence ends, as pocketsphinx expects.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable

__all__ = ["SENTENCE_END", "SENTENCE_START", "arpa_trigram"]

SENTENCE_START = "<s>"
SENTENCE_END = "</s>"
_NO_PROBABILITY = -99.0  # log10 "never": pocketsphinx's convention for <s> as a unigram


def arpa_trigram(sentences: Iterable[str], *, discount: float = 0.5) -> str:
    """The ARPA text of a back-off trigram model of ``sentences`` (words split on spaces).

    Args:
        sentences: one sentence per item; duplicates count as more evidence.
        discount: the count each seen bigram and trigram gives to its back-off, 0 < d < 1.

    Raises:
        ValueError: no words, or a discount outside (0, 1).
    """
    if not 0 < discount < 1:
        raise ValueError(f"discount {discount} outside (0, 1)")
    grams: list[Counter[tuple[str, ...]]] = [Counter(), Counter(), Counter()]
    for sentence in sentences:
        words = [SENTENCE_START, *sentence.split(), SENTENCE_END]
        if len(words) == 2:
            continue
        for order in range(3):
            for i in range(len(words) - order):
                grams[order][tuple(words[i : i + order + 1])] += 1
    if not grams[0]:
        raise ValueError("no words to build a language model from")
    # <s> opens every sentence but is never predicted: leave it out of the unigram mass.
    total = sum(count for gram, count in grams[0].items() if gram[0] != SENTENCE_START)
    prob: list[dict[tuple[str, ...], float]] = [
        {g: c / total for g, c in grams[0].items() if g[0] != SENTENCE_START},
        {},
        {},
    ]
    backoff: list[dict[tuple[str, ...], float]] = [{}, {}]
    for order in (1, 2):
        by_context: defaultdict[tuple[str, ...], list[tuple[tuple[str, ...], int]]]
        by_context = defaultdict(list)
        for gram, count in grams[order].items():
            by_context[gram[:-1]].append((gram, count))
        for context, seen in by_context.items():
            context_count = sum(count for _, count in seen)
            kept = 0.0
            lower_kept = 0.0
            for gram, count in seen:
                p = (count - discount) / context_count
                prob[order][gram] = p
                kept += p
                lower_kept += _lower(prob, backoff, gram[1:])
            left = 1.0 - kept
            # All the lower order's mass was seen in this context: nothing to back off to.
            backoff[order - 1][context] = left / (1.0 - lower_kept) if lower_kept < 1 else 1e-9
    return _format(prob, backoff)


def _lower(
    prob: list[dict[tuple[str, ...], float]],
    backoff: list[dict[tuple[str, ...], float]],
    gram: tuple[str, ...],
) -> float:
    """P(last word | shorter context) by the model built so far (recursive back-off)."""
    order = len(gram) - 1
    if gram in prob[order]:
        return prob[order][gram]
    return backoff[order - 1].get(gram[:-1], 1.0) * _lower(prob, backoff, gram[1:])


def _format(
    prob: list[dict[tuple[str, ...], float]], backoff: list[dict[tuple[str, ...], float]]
) -> str:
    unigrams = dict(prob[0])
    unigrams[(SENTENCE_START,)] = 0.0  # placeholder, written as -99 below
    counts = [len(unigrams), len(prob[1]), len(prob[2])]
    lines = ["\\data\\", *(f"ngram {n + 1}={c}" for n, c in enumerate(counts)), ""]
    for order, table in enumerate((unigrams, prob[1], prob[2])):
        lines.append(f"\\{order + 1}-grams:")
        for gram in sorted(table):
            p = table[gram]
            log_p = _NO_PROBABILITY if gram == (SENTENCE_START,) else math.log10(p)
            text = f"{log_p:.4f}\t{' '.join(gram)}"
            if order < 2 and gram in backoff[order]:
                text += f"\t{math.log10(max(backoff[order][gram], 1e-99)):.4f}"
            lines.append(text)
        lines.append("")
    lines.append("\\end\\")
    return "\n".join(lines) + "\n"
