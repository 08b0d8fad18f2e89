"""Corpus, language model and pronunciations: pure functions, checked against literal values."""

from __future__ import annotations

import math

import pytest
from hassil import Intents, TextSlotList

from xiaozhi_hub.home import DEMO_HOME_PATH, load_home
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_speech.arpa import arpa_trigram
from xiaozhi_speech.corpus import corpus_from_intents, normalize_words, number_words
from xiaozhi_speech.lexicon import ipa_to_cmu, lexicon


@pytest.fixture(scope="module")
def demo() -> IntentEngine:
    return IntentEngine(load_home(DEMO_HOME_PATH), "en")


def test_numbers_and_symbols_become_words() -> None:
    assert number_words(21) == "twenty one"
    assert number_words(7.5) == "seven point five"
    assert normalize_words("Set it to 50%!") == "set it to fifty percent"
    assert (
        normalize_words("What's the  TEMP? 21.5°")
        == "what's the temp twenty one point five degrees"
    )
    assert normalize_words("'quoted' --") == "quoted"


def test_demo_corpus_has_the_homes_commands_in_plain_words(demo: IntentEngine) -> None:
    corpus = corpus_from_intents(demo.intents, demo.slot_lists, limit=20_000)
    assert len(corpus) == 20_000
    assert len(set(corpus)) == len(corpus)
    assert corpus == corpus_from_intents(demo.intents, demo.slot_lists, limit=20_000)
    sentences = set(corpus)
    for command in ("turn on the living room light", "lock the front door", "what is your status"):
        assert command in sentences
    assert all(s == normalize_words(s) for s in corpus)  # lower case, no digits or symbols
    words = {w for s in corpus for w in s.split()}
    assert {"lounge", "downstairs", "thermostat", "fifty"} <= words


def test_intent_names_narrow_the_corpus(demo: IntentEngine) -> None:
    corpus = corpus_from_intents(
        demo.intents, demo.slot_lists, intent_names={"XiaozhiDeviceStatus"}
    )
    assert sorted(corpus) == [
        "a status report",
        "give me a status report",
        "give me status report",
        "give me the status report",
        "give me your status report",
        "how are you doing",
        "status report",
        "the status report",
        "what is your status",
        "what's your status",
        "your status report",
    ]


def test_templates_needing_a_missing_domain_or_free_text_are_left_out() -> None:
    intents = Intents.from_dict(
        {
            "language": "en",
            "intents": {
                "Fan": {
                    "data": [{"sentences": ["spin {name}"], "requires_context": {"domain": "fan"}}]
                },
                "Light": {
                    "data": [
                        {"sentences": ["light {name}"], "requires_context": {"domain": "light"}}
                    ]
                },
                "Note": {"data": [{"sentences": ["note {text}"]}]},
            },
            "lists": {"text": {"wildcard": True}},
        }
    )
    names = TextSlotList.from_tuples([("desk lamp", "light.desk", {"domain": "light"})])
    assert corpus_from_intents(intents, {"name": names}) == ["light desk lamp"]


def test_arpa_probabilities_of_each_context_sum_to_one() -> None:
    arpa = arpa_trigram(["turn on the light", "turn off the light", "turn on the fan"])
    assert arpa.startswith("\\data\\\nngram 1=8\nngram 2=")
    assert arpa.rstrip().endswith("\\end\\")
    section = arpa.split("\\1-grams:\n")[1].split("\n\n")[0]
    unigrams = {line.split("\t")[1]: float(line.split("\t")[0]) for line in section.splitlines()}
    assert unigrams["<s>"] == -99.0
    total = sum(10**p for word, p in unigrams.items() if word != "<s>")
    assert math.isclose(total, 1.0, rel_tol=1e-3)
    with pytest.raises(ValueError, match="no words"):
        arpa_trigram(["", " "])
    with pytest.raises(ValueError, match="discount"):
        arpa_trigram(["a"], discount=1.0)


def test_ipa_maps_onto_cmu_phones() -> None:
    assert ipa_to_cmu("kˈɪtʃən pˈaɪ") == ["K", "IH", "CH", "AH", "N", "P", "AY"]
    assert ipa_to_cmu("θˈɜːməstˌæt") == ["TH", "ER", "M", "AH", "S", "T", "AE", "T"]


def test_lexicon_takes_cmudict_then_espeak() -> None:
    prons = lexicon(["kitchen", "xiaozhi", "read"])
    assert prons["kitchen"] == ("K IH CH AH N",)
    assert prons["read"] == ("R EH D", "R IY D")  # alternates kept
    assert prons["xiaozhi"][0].split()[0] == "Z"  # espeak-ng: zˌaɪəˈɑːʒi
