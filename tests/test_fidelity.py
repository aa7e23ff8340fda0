"""Language fidelity (model.fidelity) with stand-in generators: no TensorFlow, no model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from model.corpus import base_split, load_base_corpus
from model.fidelity import (
    MAX_PROMPTS,
    MIN_BASE_BYTES,
    TEMPERATURES,
    every_piece_in,
    format_fidelity,
    identify,
    measure_fidelity,
    prompt_sets,
)

LANGUAGES = ["english", "hinglish", "spanish"]


@dataclass(frozen=True)
class Said:
    text: str


class Echo:
    """Answers every prompt with the prompt itself; records each call."""

    def __init__(self):
        self.calls = []

    def reply(self, contexts, temperatures, seed=None):
        self.calls.append((list(contexts), list(temperatures), seed))
        return [Said(turns[-1]) for turns in contexts]


ENGLISH = "I am very well, thank you for asking me that."
DRIFTING = "I am working of yemek isterdimento e un computer. Ich continent?"  # a real reply


class AlwaysEnglish:
    def __init__(self, text: str = ENGLISH):
        self.text = text

    def reply(self, contexts, temperatures, seed=None):
        return [Said(self.text) for _ in contexts]


@pytest.fixture(scope="module")
def sets():
    return prompt_sets(LANGUAGES)


def by_language(report):
    return {f.prompts.language: f for f in report.languages}


def test_prompts_are_first_turns_of_the_languages_held_out_conversations(sets):
    _, heldout = base_split()
    for s in sets:
        own = {tuple(c) for c in load_base_corpus([s.language])}
        firsts = [c[0] for c in heldout if tuple(c) in own]
        assert len(s.candidates) <= MAX_PROMPTS
        assert list(s.candidates) == list(dict.fromkeys(firsts))[:MAX_PROMPTS]
        assert set(s.prompts) <= set(s.candidates)
        assert all(identify(p) == s.code for p in s.prompts)
    english, hinglish, spanish = sets
    assert len(english.prompts) >= 6 and len(spanish.prompts) >= 6
    assert hinglish.code is None and hinglish.prompts == ()  # no py3langid code: not measured
    assert prompt_sets(LANGUAGES) == sets  # the same set on every run


def test_a_generator_that_echoes_the_prompt_scores_everywhere(sets):
    echo = Echo()
    report = measure_fidelity(echo, sets, seed=5)
    kept = [p for s in sets for p in s.prompts]
    # One call per temperature, every prompt a new conversation of one turn.
    assert echo.calls == [([[p] for p in kept], [t] * len(kept), 5) for t in TEMPERATURES]
    for f in report.languages:
        if f.prompts.prompts:
            assert [f.share(t) for t in TEMPERATURES] == [1.0, 1.0]
    assert [report.overall(t) for t in TEMPERATURES] == [1.0, 1.0]


def test_a_generator_that_always_answers_in_english(sets):
    report = measure_fidelity(AlwaysEnglish(), sets)
    languages = by_language(report)
    for t in TEMPERATURES:
        assert languages["english"].share(t) == 1.0
        assert languages["spanish"].share(t) == 0.0
        assert languages["hinglish"].share(t) is None


def test_a_reply_that_drifts_inside_counts_whole_but_not_piece_by_piece(sets):
    assert identify(DRIFTING) == "en" and not every_piece_in(DRIFTING, "en")
    assert every_piece_in(ENGLISH, "en")
    assert every_piece_in("Hello", "en") == (identify("Hello") == "en")  # too short to cut
    drifting = measure_fidelity(AlwaysEnglish(DRIFTING), sets)
    plain = measure_fidelity(AlwaysEnglish(), sets)
    english = len(by_language(plain)["english"].prompts.prompts)
    for t in TEMPERATURES:
        assert by_language(drifting)["english"].in_language[t] == english
        assert by_language(drifting)["english"].pieces_in_language[t] == 0
        assert by_language(plain)["english"].pieces_in_language[t] == english
        assert drifting.overall(t) == plain.overall(t) > 0
        assert drifting.overall(t, pieces=True) == 0.0 < plain.overall(t, pieces=True)
    assert drifting.overall(None, pieces=True) == plain.overall(None, pieces=True) > 0.5


def test_only_languages_with_enough_base_text_count(sets):
    english, hinglish, spanish = sets
    assert english.base_bytes >= MIN_BASE_BYTES and spanish.base_bytes >= MIN_BASE_BYTES

    def overall(english_bytes, spanish_bytes):
        resized = [
            dataclasses.replace(english, base_bytes=english_bytes),
            hinglish,
            dataclasses.replace(spanish, base_bytes=spanish_bytes),
        ]
        return measure_fidelity(AlwaysEnglish(), resized).overall(0.0)

    assert overall(MIN_BASE_BYTES, MIN_BASE_BYTES - 1) == 1.0
    assert overall(MIN_BASE_BYTES - 1, MIN_BASE_BYTES) == 0.0
    n_en, n_es = len(english.prompts), len(spanish.prompts)
    assert overall(MIN_BASE_BYTES, MIN_BASE_BYTES) == pytest.approx(n_en / (n_en + n_es))
    assert overall(0, 0) is None


def test_the_report_prints_the_table_the_headline_and_samples(sets):
    lines = format_fidelity(measure_fidelity(AlwaysEnglish(), sets))
    text = "\n".join(lines)
    assert "languages with >= 30 KB of base text: " in text
    assert "every 4-word piece of a reply in the prompt's language" in text
    assert "(py3langid has no code for it)" in text  # hinglish
    row = next(line for line in lines if "* spanish" in line)
    assert row.split()[-2:] == ["0%", "0%"]
    assert text.count("[spanish] > ") == 2  # two sample prompts per language
