"""The base corpus' n-gram, one per language: what keeps a reply in the chat's language.

A byte n-gram sees the last few bytes (11 for the base 12-gram), too few to tell
Spanish from Italian, so one n-gram over every language pulls a reply toward whichever
language those bytes are most common in (benchmarks/README.md: 72% of replies in the
prompt's language at T 0.6, with 9-grams). Here each corpus language has its own
n-gram, fitted on its conversations of the training split, and each reply reads the one
of the language its prompt is in; table 0 is the n-gram over all languages, read where
there is no prompt to tell (a conversation's first turn).

The language is told from the whole prompt (the chat's last turns, as the generator
reads them) by a byte trigram per language (Kneser-Ney, as the n-grams), with the
languages' shares of the corpus as prior: about 0.1 ms per language for a batch.
(Bigrams took Russian for Ukrainian; trigrams tell them apart.)

Everything that scores the model "as served" reads the base n-gram through `served`,
which tells each turn's language from the turns before it exactly as the generator
does from its prompt.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import numpy as np

from model.codec import MAX_PROMPT_BYTES, PAD, SEP, Encoded, encode_turns
from model.corpus import base_split, corpus_languages, load_base_corpus, unique
from model.modelfile import ModelFile
from model.ngram import ByteNGram

# The base n-gram's order. Mixed with the network on the held-out split, order 12 gains
# 71% of what the best order (25) gains over 9, with tables the generator holds of 116
# MB (62 at order 9, 196 at 16): each level above 9 adds ~20 MB (benchmarks/README.md).
# At most modelfile.MAX_MIX_ORDER, which older charbots check too, so that they can
# still load the models this one writes.
MIX_ORDER = 12
DETECT_ORDER = 3  # the order of the n-grams that tell a prompt's language
# The likeliest language must beat the next by this many nats (a likelihood ratio of
# about 55), or the prompt reads the n-gram over all languages: "Hello", "Ok" and "How
# are you?" are too short to tell (they came out Persian, Portuguese and Swedish), while
# every held-out prompt of the languages charbot eval counts clears it but a few Chinese
# ones, which the n-gram over all languages answers in Chinese anyway.
DETECT_MARGIN = 4.0
DETECT_MIN_BYTES = 8  # of text in the prompt: "Hello" alone came out Persian by 5 nats
# Languages with less of the corpus than this share are never told: their few KB make
# detectors that mistake English for Swedish. They still veto (a Hindi prompt must not
# go to Marathi): when one beats the best told language by the margin, the prompt reads
# the n-gram over all.
DETECT_MIN_SHARE = 0.005


class BaseNGrams:
    """ngrams[0] over every language, ngrams[1:] one per language in `names` order."""

    def __init__(
        self,
        ngrams: Sequence[ByteNGram],
        names: Sequence[str],
        detectors: Sequence[ByteNGram] = (),
        prior: np.ndarray | None = None,
    ):
        orders = {n.order for n in ngrams}
        if len(orders) != 1:
            raise ValueError(f"the base n-grams must share one order, got {sorted(orders)}")
        self.ngrams = list(ngrams)
        self.names = list(names)
        self.order = orders.pop()
        self._detectors = list(detectors)  # one per language (ngrams[1:])
        self._prior = prior  # log share of each language's text
        self._told = None if prior is None else np.exp(prior) >= DETECT_MIN_SHARE

    @classmethod
    def single(cls, ngram: ByteNGram) -> BaseNGrams:
        """One n-gram for every prompt (tests, and models that name their own)."""
        return cls([ngram], ["all"])

    def detect(self, prompts: Sequence[Sequence[int]]) -> np.ndarray:
        """The table index for each prompt (codec ids; PAD ignored): 1 + the likeliest
        language, or 0 when there is no text, one table, or no clear winner."""
        out = np.zeros(len(prompts), dtype=np.int32)
        if not self._detectors:
            return out
        texts, rows = [], []
        for row, prompt in enumerate(prompts):
            ids = np.asarray(prompt, dtype=np.int64)
            ids = ids[ids != PAD][-MAX_PROMPT_BYTES:]
            if np.count_nonzero(ids != SEP) >= DETECT_MIN_BYTES:
                texts.append(ids if ids[0] == SEP else np.concatenate([[SEP], ids]))
                rows.append(row)
        if not texts:
            return out
        ends = np.cumsum([len(t) - 1 for t in texts])  # each prompt's targets, joined
        scores = (
            np.stack(
                [
                    np.add.reduceat(np.log(d.target_probs(texts)), np.concatenate([[0], ends[:-1]]))
                    for d in self._detectors
                ]
            )
            + self._prior[:, None]
        )  # (languages, prompts)
        # The likeliest told language must beat every other told language by the margin,
        # and no language too small to tell may beat it by as much (that one's chats
        # read the n-gram over all languages).
        told = np.where(self._told[:, None], scores, -np.inf)
        untold = np.where(self._told[:, None], -np.inf, scores)
        best = np.argmax(told, axis=0)
        top = np.sort(told, axis=0)
        lead = top[-1] - top[-2] if len(told) > 1 else np.full(len(rows), np.inf)
        sure = (lead >= DETECT_MARGIN) & (untold.max(axis=0) < top[-1] + DETECT_MARGIN)
        out[rows] = np.where(sure, 1 + best, 0)
        return out

    def turn_tables(self, sequences: Sequence[np.ndarray]) -> list[np.ndarray]:
        """For each sequence (codec ids), the table that reads each of its bytes after
        the first: each turn's, told from the turns before it (as a reply is written)."""
        seps = [np.flatnonzero(ids == SEP) for ids in sequences]
        prompts = [ids[: s + 1] for ids, cut in zip(sequences, seps, strict=True) for s in cut[:-1]]
        told = iter(self.detect(prompts))  # all turns at once: one call per language
        tables = []
        for ids, cut in zip(sequences, seps, strict=True):
            per_target = np.zeros(len(ids) - 1, dtype=np.int32)  # target i+1's table
            for start, end in itertools.pairwise(cut):
                per_target[start:end] = next(told)
            tables.append(per_target)
        return tables

    def served(self, encoded: Sequence[Encoded]) -> tuple[np.ndarray, np.ndarray]:
        """(P(target), evidence) at each target byte (mask[1:]) of each conversation, each
        turn read by the n-gram of the language told from the turns before it."""
        sequences = [np.asarray(ids) for ids, _ in encoded]
        tables = self.turn_tables(sequences)
        flat_tables = np.concatenate(tables) if tables else np.zeros(0, np.int32)
        p = np.zeros(flat_tables.size)
        evidence = np.zeros(flat_tables.size, dtype=np.int32)
        starts = np.cumsum([0, *(len(t) for t in tables)])
        for table in np.unique(flat_tables):
            users = [n for n, t in enumerate(tables) if (t == table).any()]
            probs, ev = self.ngrams[table].target_evidence([sequences[n] for n in users])
            at = np.concatenate([np.arange(starts[n], starts[n + 1]) for n in users])
            mine = flat_tables[at] == table
            p[at[mine]], evidence[at[mine]] = probs[mine], ev[mine]
        keep = np.concatenate([np.asarray(m[1:], dtype=bool) for _, m in encoded])
        return p[keep], evidence[keep]


def served_mix(model: ModelFile) -> tuple[int, float]:
    """(base n-gram order, network weight) `model` is served with: its mixture entry, or
    for a model without one (served as the network alone) the base n-grams at weight 1,
    which a chat memory's weights are fitted with (model.mixture.Mixer)."""
    return model.mix if model.mix is not None else (MIX_ORDER, 1.0)


@functools.cache
def base_ngram(order: int) -> ByteNGram:
    """The n-gram of the base corpus' training split, every language (once per process:
    ~2 s for order 12, reading the corpus included)."""
    train, _ = base_split()
    return ByteNGram(order).fit(encode_turns(c) for c in train)


@functools.cache
def base_ngrams(order: int) -> BaseNGrams:
    """The base n-grams of the training split (once per process: ~3.5 s for order 12)."""
    return count_base_ngrams(order, base_ngram(order))


def count_base_ngrams(order: int, every: ByteNGram | None = None) -> BaseNGrams:
    """The base n-grams of the training split, counted now and held by no cache
    (model.ngram_cache keeps them in a file instead); `every`: the n-gram over every
    language if counted already."""
    train, _ = base_split()
    if every is None:
        every = ByteNGram(order).fit(encode_turns(c) for c in train)
    by_language = {}
    for name in corpus_languages():
        members = {tuple(c) for c in unique(load_base_corpus([name]))}
        by_language[name] = [encode_turns(c) for c in train if tuple(c) in members]
    return fit_base_ngrams(every, by_language)


def fit_base_ngrams(
    every: ByteNGram, by_language: dict[str, Sequence[Sequence[int]]]
) -> BaseNGrams:
    """`every` (the n-gram over all languages) and one n-gram of its order per language,
    fitted on that language's sequences, with the detector's trigrams and prior."""
    names = list(by_language)
    ngrams, detectors, sizes = [every], [], []
    for name in names:
        own = by_language[name]
        ngrams.append(ByteNGram(every.order).fit(own))
        detectors.append(ByteNGram(DETECT_ORDER).fit(own))
        sizes.append(sum(len(ids) for ids in own))
    share = np.array(sizes, dtype=np.float64) / max(sum(sizes), 1)
    return BaseNGrams(ngrams, ["all", *names], detectors, np.log(np.maximum(share, 1e-12)))
