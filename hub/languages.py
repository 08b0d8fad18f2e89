"""Language codes: what the hub accepts for ``XIAOZHI_LANGUAGE`` and a device's ``language``.

home-assistant-intents names its languages with case-sensitive codes (``en``, ``zh-CN``,
``zh-HK``, ``zh-TW``, ``vi``, ``pt-BR``...). People and devices write them in other ways
(``zh-cn``, ``zh_CN``, ``en-US``, a seed device's bare ``zh``), so every code is normalised to
the package's own before it is used: case and ``_`` do not matter, a region the package does
not have falls back to the language (``en-US`` → ``en``, as Home Assistant does), and the
Chinese tags without a region name the package's Chinese of that script or speech.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import home_assistant_intents

__all__ = ["ENGLISH", "INTENT_LANGUAGES", "intent_language", "is_english"]

ENGLISH: Final = "en"
"""The language of our own wording (:mod:`xiaozhi_hub.wording`) and sentences."""

INTENT_LANGUAGES: Final = tuple(home_assistant_intents.get_languages())
"""Every language home-assistant-intents has sentences and answers for."""

_BY_FOLDED: Final = {code.casefold(): code for code in INTENT_LANGUAGES}

_ALIASES: Final[Mapping[str, str]] = {
    "zh": "zh-CN",
    "zh-hans": "zh-CN",
    "zh-hans-cn": "zh-CN",
    "zh-sg": "zh-CN",
    "cmn": "zh-CN",
    "zh-hant": "zh-TW",
    "zh-hant-tw": "zh-TW",
    "zh-hant-hk": "zh-HK",
    "zh-mo": "zh-HK",
    "yue": "zh-HK",
}
"""Tags (folded) that name one of the package's Chinese languages in another way."""


def intent_language(code: str) -> str:
    """``code`` as home-assistant-intents spells it: ``zh-cn`` → ``zh-CN``, ``en-US`` → ``en``.

    Raises:
        ValueError: the package has no sentences for that language.
    """
    folded = code.strip().replace("_", "-").casefold()
    found = _BY_FOLDED.get(folded) or _ALIASES.get(folded)
    if found is None and "-" in folded:
        found = _BY_FOLDED.get(folded.split("-", 1)[0])
    if found is None:
        known = ", ".join(INTENT_LANGUAGES)
        raise ValueError(f"no intents for language {code!r} (known: {known})")
    return found


def is_english(language: str) -> bool:
    """True for the language our own wording speaks."""
    return language == ENGLISH
