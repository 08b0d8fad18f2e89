"""Pronunciations for the recogniser: pocketsphinx's CMU dictionary, espeak-ng for the rest.

The recogniser's dictionary holds only the corpus's words (a few hundred), which keeps the
decoder small. Most come from the CMU pronouncing dictionary that the pocketsphinx wheel ships
(``cmudict-en-us.dict``, 134,000 entries, alternates written ``word(2)``). Words it lacks, the
home's own names ("xiaozhi", "unmute", a brand) are phonemised by espeak-ng (``--ipa``, all
words in one call) and the IPA is mapped onto the 39 CMU phones the acoustic model knows.
The mapping is deliberately coarse (British and American vowels fall together, flaps become
``T``): a recogniser needs a close pronunciation, not a phonetician's one.
"""

from __future__ import annotations

import functools
import subprocess
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import pocketsphinx

__all__ = [
    "CMUDICT_PATH",
    "ESPEAK_TIMEOUT_S",
    "cmudict",
    "ipa_to_cmu",
    "lexicon",
]

CMUDICT_PATH = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
ESPEAK_TIMEOUT_S = 20.0

# Longest IPA sequences first; stress marks and length are dropped before matching, except in
# the vowels whose length changes the CMU phone.
_IPA_TO_CMU: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    sorted(
        {
            "aɪə": ("AY", "AH"),
            "aʊə": ("AW", "AH"),
            "aɪ": ("AY",),
            "aʊ": ("AW",),
            "eɪ": ("EY",),
            "oʊ": ("OW",),
            "əʊ": ("OW",),
            "ɔɪ": ("OY",),
            "ɪə": ("IH", "R"),
            "eə": ("EH", "R"),
            "ʊə": ("UH", "R"),
            "tʃ": ("CH",),
            "dʒ": ("JH",),
            "ɜː": ("ER",),
            "ɜ": ("ER",),
            "ɚ": ("ER",),
            "ɝ": ("ER",),
            "iː": ("IY",),
            "uː": ("UW",),
            "ɑː": ("AA",),
            "ɔː": ("AO",),
            "i": ("IY",),
            "ɪ": ("IH",),
            "ᵻ": ("IH",),
            "e": ("EH",),
            "ɛ": ("EH",),
            "æ": ("AE",),
            "a": ("AE",),
            "ɑ": ("AA",),
            "ɒ": ("AA",),
            "ɔ": ("AO",),
            "o": ("OW",),
            "ʊ": ("UH",),
            "u": ("UW",),
            "ʌ": ("AH",),
            "ə": ("AH",),
            "ɐ": ("AH",),
            "p": ("P",),
            "b": ("B",),
            "t": ("T",),
            "d": ("D",),
            "k": ("K",),
            "g": ("G",),
            "ɡ": ("G",),
            "f": ("F",),
            "v": ("V",),
            "θ": ("TH",),
            "ð": ("DH",),
            "s": ("S",),
            "z": ("Z",),
            "ʃ": ("SH",),
            "ʒ": ("ZH",),
            "h": ("HH",),
            "x": ("HH",),
            "m": ("M",),
            "n": ("N",),
            "ŋ": ("NG",),
            "l": ("L",),
            "ɫ": ("L",),
            "ɹ": ("R",),
            "r": ("R",),
            "ɾ": ("T",),
            "ʔ": ("T",),
            "w": ("W",),
            "j": ("Y",),
        }.items(),
        key=lambda pair: -len(pair[0]),
    )
)
_DROPPED = set("ˈˌ.‿|-_ ")


def ipa_to_cmu(ipa: str) -> list[str]:
    """espeak-ng's IPA for one word → CMU phones (``kˈɪtʃən`` → ``K IH CH AH N``).

    Symbols with no CMU counterpart are skipped; combining marks (syllabic, nasal) are dropped.
    """
    text = "".join(
        ch
        for ch in unicodedata.normalize("NFD", ipa)
        if ch not in _DROPPED and not unicodedata.combining(ch)
    )
    phones: list[str] = []
    i = 0
    while i < len(text):
        for ipa_part, cmu in _IPA_TO_CMU:
            if text.startswith(ipa_part, i):
                phones.extend(cmu)
                i += len(ipa_part)
                break
        else:
            if text[i] == "ː" and phones and phones[-1] in {"IH", "UH"}:
                phones[-1] = {"IH": "IY", "UH": "UW"}[phones[-1]]
            i += 1  # a length mark after an unlisted vowel, or a symbol we do not map
    return phones


@functools.cache
def cmudict() -> dict[str, tuple[str, ...]]:
    """The shipped CMU dictionary: word → its pronunciations (alternates in file order)."""
    entries: dict[str, list[str]] = {}
    with CMUDICT_PATH.open(encoding="utf-8") as lines:
        for line in lines:
            word, _, phones = line.strip().partition(" ")
            if not phones:
                continue
            word = word.split("(", 1)[0]
            entries.setdefault(word, []).append(phones.split("#", 1)[0].strip())
    return {word: tuple(prons) for word, prons in entries.items()}


def espeak_phones(words: list[str], *, voice: str = "en-us") -> dict[str, str]:
    """CMU phones for each word by espeak-ng (one process for them all); words it cannot
    phonemise are left out.

    Raises:
        OSError: espeak-ng is not installed (``apt-get install espeak-ng``).
        subprocess.SubprocessError: it failed or took longer than :data:`ESPEAK_TIMEOUT_S`.
    """
    if not words:
        return {}
    done = subprocess.run(
        ["espeak-ng", "-q", "--ipa", "-v", voice],
        input="\n".join(words) + "\n",
        capture_output=True,
        text=True,
        timeout=ESPEAK_TIMEOUT_S,
        check=True,
    )
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if len(lines) != len(words):  # espeak joined or split lines: ask word by word
        lines = [_espeak_one(word, voice) for word in words]
    found = {}
    for word, ipa in zip(words, lines, strict=True):
        phones = ipa_to_cmu(ipa)
        if phones:
            found[word] = " ".join(phones)
    return found


def _espeak_one(word: str, voice: str) -> str:
    done = subprocess.run(
        ["espeak-ng", "-q", "--ipa", "-v", voice, word],
        capture_output=True,
        text=True,
        timeout=ESPEAK_TIMEOUT_S,
        check=True,
    )
    return done.stdout.replace("\n", " ").strip()


def lexicon(words: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Pronunciations of ``words``: the CMU dictionary's, else espeak-ng's.

    A word neither knows (no letters espeak can read) is left out; the caller must drop
    sentences that use it.

    Raises:
        OSError: espeak-ng is needed for a word and is not installed.
    """
    known = cmudict()
    result: dict[str, tuple[str, ...]] = {}
    missing: list[str] = []
    for word in dict.fromkeys(words):
        if word in known:
            result[word] = known[word]
        else:
            missing.append(word)
    for word, phones in espeak_phones(missing).items():
        result[word] = (phones,)
    return result
