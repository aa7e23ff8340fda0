import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from model.corpus import (
    base_split,
    corpus_languages,
    load_base_corpus,
    split_conversations,
    unique,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus():
    return load_base_corpus()


def _scripts(text):
    return {unicodedata.name(ch, "?").split()[0] for ch in text if ch.isalpha()}


def test_corpus_loads_every_language(corpus):
    languages = corpus_languages()
    assert {"english", "chinese", "persian", "russian"} <= set(languages)
    assert len(corpus) > 5000
    assert all(len(turns) >= 2 for turns in corpus)
    assert all(isinstance(t, str) and t and t == t.strip() for turns in corpus for t in turns)
    scripts = _scripts("".join(t for turns in corpus for t in turns))
    assert {"LATIN", "CJK", "ARABIC", "CYRILLIC", "HEBREW", "DEVANAGARI"} <= scripts


def test_languages_can_be_chosen(corpus):
    persian = load_base_corpus(["persian"])
    chinese = load_base_corpus("chinese")
    assert "ARABIC" in _scripts("".join(t for turns in persian for t in turns))
    assert "CJK" in _scripts("".join(t for turns in chinese for t in turns))
    both = load_base_corpus(["persian", "chinese"])
    assert both == chinese + persian  # sorted path order, whatever order was asked
    assert len(corpus) > len(both)
    with pytest.raises(ValueError, match="klingon"):
        load_base_corpus(["klingon"])


def test_callers_get_their_own_lists():
    mine = load_base_corpus()
    mine[0].append("changed")
    assert load_base_corpus()[0][-1] != "changed"


def test_split_is_a_partition():
    items = list(range(1000))
    train, heldout = split_conversations(items)
    assert len(heldout) == 100
    assert sorted(train + heldout) == items
    assert train == sorted(train) and heldout == sorted(heldout)  # input order kept
    assert split_conversations(items) == (train, heldout)
    assert split_conversations(items, seed=7) != (train, heldout)


@pytest.mark.parametrize("n", [2, 3, 5, 19])
def test_split_keeps_both_parts_non_empty(n):
    train, heldout = split_conversations(list(range(n)), holdout=0.1)
    assert train and heldout and len(train) + len(heldout) == n
    train, heldout = split_conversations(list(range(n)), holdout=0.99)
    assert train and heldout


def test_split_edge_cases():
    assert split_conversations([]) == ([], [])
    assert split_conversations(["only"]) == (["only"], [])
    with pytest.raises(ValueError):
        split_conversations([1, 2, 3], holdout=0.0)


def test_base_split_is_deterministic_across_processes(corpus):
    train, heldout = base_split()
    distinct = unique(corpus)
    assert len(distinct) < len(corpus)  # the data repeats some conversations word for word
    assert len(train) + len(heldout) == len(distinct)
    assert abs(len(heldout) / len(distinct) - 0.1) < 0.01
    assert not {tuple(c) for c in train} & {tuple(c) for c in heldout}  # nothing leaks
    key = sorted(map(tuple, heldout))
    assert base_split() == (train, heldout)
    code = (
        "import json; from model.corpus import base_split; "
        "print(json.dumps(sorted(base_split()[1])))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert [tuple(turns) for turns in json.loads(out.stdout)] == key
