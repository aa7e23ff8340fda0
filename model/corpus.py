"""The base dialog corpus (the conversations `chatterbot-corpus` ships) and held-out splits.

The base model is pretrained on these conversations, and a held-out slice of them
guards every fine-tune against forgetting. Each conversation is a list of turns;
`codec.encode_turns` turns one into ids.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import yaml

T = TypeVar("T")

BASE_HOLDOUT = 0.1  # share of base conversations kept out of training (the forgetting check)
BASE_SEED = 1234  # fixed, so the base held-out slice is the same on every install and run


def corpus_dir() -> Path:
    """The package's data directory, holding `<language>/<topic>.yml`."""
    try:
        from chatterbot_corpus.corpus import DATA_DIRECTORY
    except ImportError as exc:
        raise FileNotFoundError(
            "the base corpus is missing: install the chatterbot-corpus package "
            "(pip install chatterbot-corpus)"
        ) from exc
    path = Path(DATA_DIRECTORY)
    if not any(path.glob("*/*.yml")):
        raise FileNotFoundError(
            f"the base corpus is missing: no <language>/<topic>.yml files under {path} "
            "(reinstall the chatterbot-corpus package)"
        )
    return path


def corpus_languages() -> list[str]:
    """Names of the corpus languages (`english`, `persian`, ...), sorted."""
    return sorted({path.parent.name for path in corpus_dir().glob("*/*.yml")})


def load_base_corpus(languages: Sequence[str] | None = None) -> list[list[str]]:
    """Every conversation of the corpus (all languages by default) as lists of turns.

    Files are read in sorted path order, so the result is the same on every run.
    Turns are stripped; empty turns are dropped, and so are conversations left with
    fewer than two turns (a few entries in the data are single strings, not lists).
    """
    available = corpus_languages()
    if languages is None:
        chosen = available
    else:
        if isinstance(languages, str):  # one name, not a sequence of one-letter names
            languages = [languages]
        unknown = sorted(set(languages) - set(available))
        if unknown:
            raise ValueError(
                f"unknown corpus language(s) {', '.join(unknown)}; "
                f"available: {', '.join(available)}"
            )
        chosen = sorted(set(languages))
    return [list(turns) for turns in _load(tuple(chosen))]


@functools.cache
def _load(languages: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    # Parsing all files takes about a second; callers get fresh lists from this cache.
    root = corpus_dir()
    paths = sorted(path for lang in languages for path in (root / lang).glob("*.yml"))
    conversations = []
    for path in paths:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a readable corpus file: {exc}") from exc
        entries = data.get("conversations") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if not isinstance(entry, list):  # a bare string: one turn, not a dialog
                continue
            turns = tuple(text for text in map(_turn_text, entry) if text)
            if len(turns) >= 2:
                conversations.append(turns)
    return tuple(conversations)


def _turn_text(value: object) -> str:
    """A turn's text, or "" when the YAML value is not text (None, a list, a mapping)."""
    if value is None or isinstance(value, list | dict):
        return ""
    return str(value).strip()  # numbers and booleans become their text


def split_conversations(
    items: Sequence[T], holdout: float = 0.1, seed: int = 1234
) -> tuple[list[T], list[T]]:
    """(train, heldout): a seeded random `holdout` share of whole items is held out.

    The same items, holdout and seed always give the same split: the permutation
    comes from numpy's legacy `RandomState`, whose stream numpy keeps frozen across
    versions, and nothing depends on hashing. Both parts keep the input order, and
    each gets at least one item when there are two or more.
    """
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be between 0 and 1, got {holdout}")
    n = len(items)
    if n < 2:
        return list(items), []
    n_held = min(max(round(n * holdout), 1), n - 1)
    held = np.zeros(n, dtype=bool)
    held[np.random.RandomState(seed).permutation(n)[:n_held]] = True
    train = [item for item, h in zip(items, held, strict=True) if not h]
    heldout = [item for item, h in zip(items, held, strict=True) if h]
    return train, heldout


def base_split(seed: int = BASE_SEED) -> tuple[list[list[str]], list[list[str]]]:
    """(train, heldout) conversations of the whole base corpus, BASE_HOLDOUT held out.

    Exact duplicate conversations (about 1 in 6 in the data) are kept once, before
    splitting, so no held-out conversation is also a training conversation.
    """
    return split_conversations(unique(load_base_corpus()), BASE_HOLDOUT, seed)


def unique(conversations: Sequence[list[str]]) -> list[list[str]]:
    """The conversations without exact repeats, first occurrence kept, order unchanged."""
    seen: set[tuple[str, ...]] = set()
    out = []
    for conversation in conversations:
        key = tuple(conversation)
        if key not in seen:
            seen.add(key)
            out.append(conversation)
    return out
